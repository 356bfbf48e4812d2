"""The operator's Prometheus metrics. Names and labels are part of the interface: change them only additively."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from modeldeploy.api.models import Phase

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
ANALYSIS_MEASUREMENTS = Counter(
    "modeldeploy_analysis_measurements_total",
    "Canary analysis measurements taken, by builtin (or query) and phase.",
    ["metric_kind", "phase"],
)
LEADER = Gauge(
    "modeldeploy_leader",
    "1 while this replica holds the leader Lease and runs the controller, 0 while it stands by.",
    ["identity"],
)
QUEUE_DEPTH = Gauge("modeldeploy_queue_depth", "Resources waiting for a reconcile pass.")

# Per-resource series, labelled by namespace and name. They mirror each ModelDeployment's status as the watch shows
# it and are removed when the resource is deleted, so their number follows the number of resources.
PHASES = tuple(phase.value for phase in Phase)
WEIGHT_KINDS = ("desired", "actual")


class ResourceMetrics:
    """The per-resource gauges and the bookkeeping that removes label sets nobody reports any more. Thread-safe."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.phase = Gauge(
            "modeldeploy_resource_phase",
            "1 for the ModelDeployment's current status.phase, 0 for the other phases.",
            ["namespace", "name", "phase"],
            registry=registry,
        )
        self.info = Gauge(
            "modeldeploy_resource_info",
            "Always 1; the labels name the model and the versions serving (stable) and rolling out (canary).",
            ["namespace", "name", "model", "stable_version", "canary_version"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "modeldeploy_canary_weight_percent",
            "Share of traffic of the canary: desired (what the current step asks for) and actual (ready pods).",
            ["namespace", "name", "kind"],
            registry=registry,
        )
        self._lock = threading.Lock()
        self._info_labels: dict[tuple[str, str], tuple[str, str, str]] = {}

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """Set the series of one resource from its status (as stored; absent before the first reconcile)."""
        status = status or {}
        phase = status.get("phase")
        stable = status.get("stable") or {}
        canary = status.get("canary") or {}
        info = (str(status.get("model") or ""), str(stable.get("version") or ""), str(canary.get("version") or ""))
        with self._lock:
            for candidate in PHASES:
                self.phase.labels(namespace, name, candidate).set(1 if candidate == phase else 0)
            previous = self._info_labels.get((namespace, name))
            if previous is not None and previous != info:
                self.info.remove(namespace, name, *previous)
            self.info.labels(namespace, name, *info).set(1)
            self._info_labels[(namespace, name)] = info
            self.canary_weight.labels(namespace, name, "desired").set(int(canary.get("desiredWeight") or 0))
            self.canary_weight.labels(namespace, name, "actual").set(int(canary.get("actualWeight") or 0))

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted resource."""
        with self._lock:
            info = self._info_labels.pop((namespace, name), None)
            if info is None:
                return  # never observed, or already forgotten
            self.info.remove(namespace, name, *info)
            for phase in PHASES:
                self.phase.remove(namespace, name, phase)
            for kind in WEIGHT_KINDS:
                self.canary_weight.remove(namespace, name, kind)


RESOURCES = ResourceMetrics()
