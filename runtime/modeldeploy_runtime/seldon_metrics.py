"""seldon's metrics endpoint, widened to include the runtime's own metrics.

seldon 1.19 answers its metrics port with `SeldonMetrics.generate_metrics()`, which renders only the custom
metrics a model returns from `metrics()`, with seldon's own fixed labels. The runtime's metrics need their own
names, labels and buckets, so the cli hands seldon this subclass (seldon_core.microservice creates its
SeldonMetrics by that module-level name), which appends the runtime's multiprocess metrics to every scrape.

Import this module only after PROMETHEUS_MULTIPROC_DIR is set: it imports prometheus_client.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from seldon_core.metrics import SeldonMetrics

from modeldeploy_runtime.metrics import add_runtime_metrics


class RuntimeSeldonMetrics(SeldonMetrics):  # type: ignore[misc]  # seldon_core ships no type hints
    def update(self, custom_metrics: list[dict[str, Any]], method: str) -> None:
        # seldon calls this on every request and health check, and each call is a round trip to its metrics
        # manager process even with nothing to record, which is always the case here (no metrics() method).
        if custom_metrics:
            super().update(custom_metrics, method)

    def generate_metrics(self) -> tuple[str, str]:
        registry = CollectorRegistry()
        registry.register(self)  # seldon's own: whatever a model reports through metrics(), none here
        add_runtime_metrics(registry)
        return generate_latest(registry).decode("utf-8"), CONTENT_TYPE_LATEST
