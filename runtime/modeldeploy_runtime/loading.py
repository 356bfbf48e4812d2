"""Getting from the configuration to a verified, loaded model, in the background, without ever exiting.

Why in the background: seldon runs the model's load() inside gunicorn's worker start-up. An exception there
fails the worker's boot, and gunicorn then stops the whole server (exit code 3 within a second: a crash loop).
A slow download there keeps the worker from answering anything, liveness probes included, until the kubelet
restarts the container (a restart loop for any model slower to fetch than the probe's patience). Here load()
only starts a thread; the server comes up at once, answers liveness, and reports readiness from the loader's
state.

A failure leaves the process up, live and not ready, with the reason in one log line and in /health/status.
Only a network failure is retried (with capped exponential backoff): a wrong digest, a missing file or a
corrupt artifact will not fix itself, and the operator rolls back on a revision that never becomes ready.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from modeldeploy_runtime.artifacts import DownloadLimits, fetch_artifact, parse_model_uri, verify_sha256
from modeldeploy_runtime.config import ConfigError, ModelFormat, ModelIdentity, RuntimeConfig
from modeldeploy_runtime.errors import LoadFailure, ModelLoadError
from modeldeploy_runtime.frameworks import Predictor, load_predictor
from modeldeploy_runtime.logs import kv
from modeldeploy_runtime.metrics import RuntimeMetrics
from modeldeploy_runtime.redaction import redact

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 2.0
# Formats whose loading runs code from the artifact (pickle, a Python module): without MODEL_SHA256 nothing pins
# what runs to what was reviewed, which deserves a warning of its own.
CODE_EXECUTING_FORMATS = frozenset({ModelFormat.SKLEARN, ModelFormat.CUSTOM})
MAX_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class LoadedModel:
    predictor: Predictor
    sha256: str


def load_model(config: RuntimeConfig) -> LoadedModel:
    """Fetch, verify and load; every expected failure is a ModelLoadError with its reason."""
    try:
        location = parse_model_uri(config.uri, config.pvc_root)
    except ConfigError as error:
        raise ModelLoadError(LoadFailure.INVALID_CONFIG, str(error)) from error
    path = fetch_artifact(
        location,
        config.cache_dir,
        expected_sha256=config.sha256,
        limits=DownloadLimits(
            timeout_seconds=config.download_timeout_seconds,
            max_bytes=config.max_bytes,
            headers=config.http_headers,
            anonymous=config.anonymous_storage,
        ),
    )
    try:
        sha256 = verify_sha256(path, config.sha256)
    except OSError as error:
        raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"cannot read {path}: {error}") from error
    return LoadedModel(predictor=load_predictor(config, path), sha256=sha256)


class State(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class Status:
    state: State
    attempts: int = 0
    # Set after a failure; kept while a retry runs so the reason never disappears from the health response.
    failure: LoadFailure | None = None
    message: str = ""
    retry_in_seconds: float | None = None
    sha256: str = ""


class ModelLoader:
    """Holds the served model and the state of getting it; start() is safe to call more than once."""

    def __init__(
        self,
        identity: ModelIdentity,
        config: RuntimeConfig | None,
        config_error: str,
        metrics: RuntimeMetrics,
    ):
        self._identity = identity
        self._config = config
        self._config_error = config_error
        self._metrics = metrics
        self._lock = threading.Lock()
        self._status = Status(State.LOADING)
        self._model: LoadedModel | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def status(self) -> Status:
        with self._lock:
            return self._status

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._metrics.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float) -> Status:
        """For in-process callers (tests, the benchmark): block until the loader has settled or timed out."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def _run(self) -> None:
        if self._config is None:
            self._fail(ModelLoadError(LoadFailure.INVALID_CONFIG, self._config_error), attempt=1, retry_in=None)
            return
        config = self._config
        delay = FIRST_RETRY_SECONDS
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            with self._lock:
                self._status = Status(State.LOADING, attempt, self._status.failure, self._status.message, None)
            started = time.monotonic()
            try:
                loaded = load_model(config)
            except ModelLoadError as error:
                retry_in = delay if error.reason.retryable else None
                self._fail(error, attempt, retry_in)
                if retry_in is None or self._stop.wait(retry_in):
                    return
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            except Exception as error:
                # A bug of ours or a library's: still no crash, and the traceback goes to the log.
                logger.exception(kv("Unexpected error while loading the model", model=self._identity.name))
                self._fail(
                    ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"{type(error).__name__}: {error}"),
                    attempt,
                    None,
                )
                return
            self._succeed(loaded, attempt, time.monotonic() - started)
            return

    def _succeed(self, loaded: LoadedModel, attempt: int, seconds: float) -> None:
        assert self._config is not None
        with self._lock:
            self._model = loaded
            self._status = Status(State.READY, attempt, sha256=loaded.sha256)
        self._metrics.mark_ready(self._config.format.value, loaded.sha256)
        logger.info(
            kv(
                "Loaded model",
                model=self._identity.name,
                version=self._identity.version,
                format=self._config.format.value,
                uri=self._config.uri,
                sha256=loaded.sha256,
                verified=self._config.sha256 is not None,
                seconds=round(seconds, 3),
            )
        )
        if self._config.sha256 is None and self._config.format in CODE_EXECUTING_FORMATS:
            logger.warning(
                kv(
                    "Loaded an unverified artifact whose loading runs code: set MODEL_SHA256 to pin it",
                    model=self._identity.name,
                    version=self._identity.version,
                    format=self._config.format.value,
                    sha256=loaded.sha256,
                )
            )

    def _fail(self, error: ModelLoadError, attempt: int, retry_in: float | None) -> None:
        # The message is served by /health/status as well as logged: a library's message may quote a signed URL.
        message = redact(error.message)
        with self._lock:
            self._status = Status(State.FAILED, attempt, error.reason, message, retry_in)
        fields: dict[str, object] = {
            "model": self._identity.name,
            "version": self._identity.version,
            "reason": error.reason.value,
            "err": message,
            "attempt": attempt,
        }
        if self._config is not None:
            fields["uri"] = self._config.uri
        if retry_in is not None:
            fields["retryInSeconds"] = retry_in
        logger.error(kv("Model load failed, not ready", **fields))
