"""The runtime's configuration, read once from the environment the operator sets on the pod."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# The contract with the operator: it sets these on every serving container.
ENV_MODEL_NAME = "MODEL_NAME"
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_MODEL_URI = "MODEL_URI"
ENV_MODEL_FORMAT = "MODEL_FORMAT"
ENV_MODEL_SHA256 = "MODEL_SHA256"
# Optional knobs a user may set through spec.runtime.env.
ENV_MODEL_CLASS = "MODEL_CLASS"
ENV_MODEL_PREDICT_METHOD = "MODEL_PREDICT_METHOD"
ENV_MODEL_CACHE_DIR = "MODEL_CACHE_DIR"
ENV_MODEL_PVC_ROOT = "MODEL_PVC_ROOT"
ENV_MODEL_DOWNLOAD_TIMEOUT = "MODEL_DOWNLOAD_TIMEOUT_SECONDS"
ENV_MODEL_MAX_BYTES = "MODEL_MAX_BYTES"
ENV_MODEL_STORAGE_ANONYMOUS = "MODEL_STORAGE_ANONYMOUS"
# Graceful shutdown (drain.py): serving after SIGTERM, and the bound on all of it; the operator sets both.
ENV_DRAIN_SECONDS = "MODEL_DRAIN_SECONDS"
ENV_SHUTDOWN_TIMEOUT = "MODEL_SHUTDOWN_TIMEOUT_SECONDS"
# Every variable named MODEL_HTTP_HEADER_<Header-Name> is sent as that header with http(s) downloads; the operator
# fills them from a Secret (envFrom with this prefix), so credentials never sit in the URI or the Deployment.
HTTP_HEADER_ENV_PREFIX = "MODEL_HTTP_HEADER_"

# Under /tmp because the pod's root filesystem is read-only and /tmp is its writable emptyDir.
DEFAULT_CACHE_DIR = Path("/tmp/modeldeploy-models")
# Where the operator mounts pvc://CLAIM/path volumes: /mnt/models/CLAIM/path.
DEFAULT_PVC_ROOT = Path("/mnt/models")
DEFAULT_MODEL_CLASS = "Model"
# One download attempt, all of it: connecting, every object of a prefix, every byte.
DEFAULT_DOWNLOAD_TIMEOUT_SECONDS = 600.0
# The operator sets MODEL_MAX_BYTES from the cache volume's sizeLimit; this is for a runtime started without it.
DEFAULT_MAX_BYTES = 4 * 1024**3
# prometheus_client's own variable: where each process keeps its metric values for the metrics process to
# merge.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_MULTIPROC_DIR = Path("/tmp/modeldeploy-metrics")
# Stand-ins so metric labels and log lines stay well-formed even when the operator's variables are missing.
UNKNOWN = "unknown"

_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_SKLEARN_METHODS = ("predict", "predict_proba", "decision_function")
# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")


class ModelFormat(StrEnum):
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    ONNX = "onnx"
    CUSTOM = "custom"


class ConfigError(ValueError):
    """The environment does not describe a model the runtime can serve."""


@dataclass(frozen=True)
class ModelIdentity:
    """What labels, tags and logs call the model; known even when the rest of the configuration is broken."""

    name: str
    version: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ModelIdentity:
        return cls(
            name=environ.get(ENV_MODEL_NAME, "").strip() or UNKNOWN,
            version=environ.get(ENV_MODEL_VERSION, "").strip() or UNKNOWN,
        )


@dataclass(frozen=True)
class RuntimeConfig:
    identity: ModelIdentity
    uri: str
    format: ModelFormat
    sha256: str | None
    model_class: str
    predict_method: str
    cache_dir: Path
    pvc_root: Path
    download_timeout_seconds: float
    max_bytes: int = DEFAULT_MAX_BYTES
    # Unsigned, credential-less object-store reads: only when asked for, never as a fallback.
    anonymous_storage: bool = False
    http_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeConfig:
        env = os.environ if environ is None else environ
        uri = env.get(ENV_MODEL_URI, "").strip()
        if not uri:
            raise ConfigError(f"{ENV_MODEL_URI} is not set")
        model_format = parse_format(env.get(ENV_MODEL_FORMAT, ""))
        predict_method = env.get(ENV_MODEL_PREDICT_METHOD, "").strip() or "predict"
        if model_format is ModelFormat.SKLEARN:
            if predict_method not in _SKLEARN_METHODS:
                known = ", ".join(_SKLEARN_METHODS)
                raise ConfigError(f"{ENV_MODEL_PREDICT_METHOD}={predict_method!r} is not one of {known}")
        elif predict_method != "predict":
            raise ConfigError(f"{ENV_MODEL_PREDICT_METHOD} applies to the sklearn format only")
        return cls(
            identity=ModelIdentity.from_env(env),
            uri=uri,
            format=model_format,
            sha256=parse_sha256(env.get(ENV_MODEL_SHA256, "")),
            model_class=env.get(ENV_MODEL_CLASS, "").strip() or DEFAULT_MODEL_CLASS,
            predict_method=predict_method,
            cache_dir=Path(env.get(ENV_MODEL_CACHE_DIR, "").strip() or DEFAULT_CACHE_DIR),
            pvc_root=Path(env.get(ENV_MODEL_PVC_ROOT, "").strip() or DEFAULT_PVC_ROOT),
            download_timeout_seconds=parse_timeout(env.get(ENV_MODEL_DOWNLOAD_TIMEOUT, "")),
            max_bytes=parse_max_bytes(env.get(ENV_MODEL_MAX_BYTES, "")),
            anonymous_storage=parse_flag(ENV_MODEL_STORAGE_ANONYMOUS, env.get(ENV_MODEL_STORAGE_ANONYMOUS, "")),
            http_headers=parse_http_headers(env),
        )


def parse_format(raw: str) -> ModelFormat:
    value = raw.strip().lower()
    if not value:
        raise ConfigError(f"{ENV_MODEL_FORMAT} is not set")
    try:
        return ModelFormat(value)
    except ValueError:
        known = ", ".join(f.value for f in ModelFormat)
        raise ConfigError(f"{ENV_MODEL_FORMAT}={raw!r} is not one of {known}") from None


def parse_sha256(raw: str) -> str | None:
    """Empty means 'do not check'; anything else must be a full hex SHA-256 (case is forgiven)."""
    value = raw.strip().lower()
    if value.startswith("sha256:"):
        value = value.removeprefix("sha256:")
    if not value:
        return None
    if not _SHA256_PATTERN.match(value):
        raise ConfigError(f"{ENV_MODEL_SHA256} must be 64 hex characters, got {raw!r}")
    return value


def parse_timeout(raw: str) -> float:
    if not raw.strip():
        return DEFAULT_DOWNLOAD_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_MODEL_DOWNLOAD_TIMEOUT}={raw!r} is not a number") from None
    if seconds <= 0:
        raise ConfigError(f"{ENV_MODEL_DOWNLOAD_TIMEOUT} must be positive")
    return seconds


def parse_max_bytes(raw: str) -> int:
    if not raw.strip():
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{ENV_MODEL_MAX_BYTES}={raw!r} is not a whole number of bytes") from None
    if value <= 0:
        raise ConfigError(f"{ENV_MODEL_MAX_BYTES} must be positive")
    return value


def parse_flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not true or false")


def parse_http_headers(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Headers from MODEL_HTTP_HEADER_<Name> variables, sorted by name. Values are never echoed in errors."""
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if not key.startswith(HTTP_HEADER_ENV_PREFIX):
            continue
        name = key.removeprefix(HTTP_HEADER_ENV_PREFIX)
        if not _HEADER_NAME.match(name):
            raise ConfigError(f"{key}: {name!r} is not a valid HTTP header name")
        # A Secret's value often ends with the newline of the file it was made from.
        value = value.strip()
        if "\r" in value or "\n" in value:
            raise ConfigError(f"{key}: the header value holds a line break")
        headers.append((name, value))
    return tuple(sorted(headers))
