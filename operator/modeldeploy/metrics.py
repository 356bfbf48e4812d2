"""The operator's Prometheus metrics. Names and labels are part of the interface: change them only additively."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("modeldeploy_reconcile_total", "Reconcile passes, by outcome (success or error).", ["outcome"])
RECONCILE_DURATION = Histogram(
    "modeldeploy_reconcile_duration_seconds",
    "Time one reconcile pass takes, API calls included.",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
API_WRITES = Counter(
    "modeldeploy_api_writes_total",
    "Writes the operator sent to the API server, by verb and kind.",
    ["verb", "kind"],
)
QUEUE_DEPTH = Gauge("modeldeploy_queue_depth", "Resources waiting for a reconcile pass.")
