"""The runtime's Prometheus metrics: every name and label is defined here and nowhere else.

Canary analysis queries these series by name, so they are a contract: rename nothing, add labels only with a
bounded set of values, and document every change in runtime/README.md.

seldon answers the metrics port from a separate process (forked before the model loads), while predictions are
served by a gunicorn worker. The worker's values therefore travel through prometheus_client's multiprocess
mode: PROMETHEUS_MULTIPROC_DIR names a directory (under /tmp: the root filesystem is read-only) where each
process keeps its values in memory-mapped files, and the metrics process merges them on every scrape.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from modeldeploy_runtime.config import MULTIPROC_DIR_ENV, ModelIdentity
from modeldeploy_runtime.errors import RequestError

# ---- names and labels: the contract
REQUESTS_TOTAL = "modeldeploy_model_requests_total"
ERRORS_TOTAL = "modeldeploy_model_errors_total"
REQUEST_DURATION_SECONDS = "modeldeploy_model_request_duration_seconds"
MODEL_INFO = "modeldeploy_model_info"
MODEL_READY = "modeldeploy_model_ready"
PREDICTION_VALUE = "modeldeploy_model_prediction_value"

LABEL_MODEL = "model"
LABEL_VERSION = "version"
LABEL_OUTCOME = "outcome"
LABEL_REASON = "reason"
LABEL_FORMAT = "format"
LABEL_SHA256 = "sha256"
LABEL_OUTPUT = "output"

OUTCOME_SUCCESS = "success"
OUTCOME_ERROR = "error"

# From a sub-millisecond in-memory model to a slow one (seconds): latency gates compare the lower buckets,
# the upper ones only have to tell "slow" from "very slow".
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Fine between 0 and 1, where probabilities and class labels 0/1 fall, coarse and symmetric elsewhere for
# regression outputs. Both versions of a canary share the runtime, hence the buckets: their histograms
# compare.
PREDICTION_BUCKETS = (
    -1000.0,
    -100.0,
    -10.0,
    -1.0,
    -0.5,
    0.0,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    2.0,
    5.0,
    10.0,
    100.0,
    1000.0,
)
# Bounds on what one response adds to the output histogram: the first rows of a batch, the first output
# columns (each column is its own `output` label value, so the label's cardinality stays bounded too).
PREDICTION_MAX_ROWS = 100
PREDICTION_MAX_COLUMNS = 8


class RuntimeMetrics:
    """The metrics of one served model version."""

    def __init__(self, identity: ModelIdentity, registry: CollectorRegistry | None = None) -> None:
        target = REGISTRY if registry is None else registry
        self._identity = identity
        self.requests = Counter(
            REQUESTS_TOTAL,
            "Prediction requests by outcome (success or error).",
            [LABEL_MODEL, LABEL_VERSION, LABEL_OUTCOME],
            registry=target,
        )
        self.errors = Counter(
            ERRORS_TOTAL,
            "Failed prediction requests by reason: " + ", ".join(r.value for r in RequestError) + ".",
            [LABEL_MODEL, LABEL_VERSION, LABEL_REASON],
            registry=target,
        )
        self.duration = Histogram(
            REQUEST_DURATION_SECONDS,
            "Seconds spent answering a successful prediction request, payload conversion included.",
            [LABEL_MODEL, LABEL_VERSION],
            buckets=DURATION_BUCKETS,
            registry=target,
        )
        self.info = Gauge(
            MODEL_INFO,
            "1 for the model version this runtime serves, once it is loaded and verified.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_FORMAT, LABEL_SHA256],
            multiprocess_mode="mostrecent",
            registry=target,
        )
        self.ready = Gauge(
            MODEL_READY,
            "1 when the model is loaded and verified and predictions are served, else 0.",
            [LABEL_MODEL, LABEL_VERSION],
            multiprocess_mode="mostrecent",
            registry=target,
        )
        self.prediction_value = Histogram(
            PREDICTION_VALUE,
            f"Numeric prediction outputs, per output column (first {PREDICTION_MAX_ROWS} rows and "
            f"{PREDICTION_MAX_COLUMNS} columns of each response).",
            [LABEL_MODEL, LABEL_VERSION, LABEL_OUTPUT],
            buckets=PREDICTION_BUCKETS,
            registry=target,
        )

    def start(self) -> None:
        """Create every series at zero: rate() and absent() see them before the first request or failure."""
        name, version = self._identity.name, self._identity.version
        for outcome in (OUTCOME_SUCCESS, OUTCOME_ERROR):
            self.requests.labels(name, version, outcome)
        for reason in RequestError:
            self.errors.labels(name, version, reason.value)
        self.duration.labels(name, version)
        self.ready.labels(name, version).set(0)

    def record_success(self, seconds: float, outputs: npt.NDArray[np.float64] | None) -> None:
        name, version = self._identity.name, self._identity.version
        self.requests.labels(name, version, OUTCOME_SUCCESS).inc()
        self.duration.labels(name, version).observe(seconds)
        if outputs is None:
            return
        for column in range(outputs.shape[1]):
            child = self.prediction_value.labels(name, version, str(column))
            for value in outputs[:, column].tolist():
                if math.isfinite(value):  # a NaN or inf would poison the histogram's sum for good
                    child.observe(value)

    def record_error(self, reason: RequestError) -> None:
        name, version = self._identity.name, self._identity.version
        self.requests.labels(name, version, OUTCOME_ERROR).inc()
        self.errors.labels(name, version, reason.value).inc()

    def mark_ready(self, model_format: str, sha256: str) -> None:
        name, version = self._identity.name, self._identity.version
        self.info.labels(name, version, model_format, sha256).set(1)
        self.ready.labels(name, version).set(1)


def add_runtime_metrics(registry: Any) -> None:
    """Add the runtime's multiprocess metrics to a registry seldon builds for one scrape."""
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
