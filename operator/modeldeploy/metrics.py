"""The operator's Prometheus metrics. Names and labels are part of the interface: change them only additively."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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

# Where a reaction's time goes, stage by stage: always on, a few perf_counter() calls per event and per pass. The
# buckets are fine below 30 ms, where the goals are.
STAGE_BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 250, 500, 1000, 2500)
STAGE_BUCKETS = tuple(ms / 1000 for ms in STAGE_BUCKETS_MS)
EVENT_HANDOFF = Histogram(
    "modeldeploy_event_handoff_seconds",
    "From a watch event's handler entering the controller to the resource's hand-off to the work queue "
    "(the Store's update and the per-resource gauges), by the kind of object the event is about.",
    ["kind"],
    buckets=STAGE_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "modeldeploy_queue_wait_seconds",
    "From a resource's hand-off to the work queue to a worker taking it.",
    buckets=STAGE_BUCKETS,
)
THREAD_HANDOFF = Histogram(
    "modeldeploy_thread_handoff_seconds",
    "From a worker handing a pass to a thread to the pass starting in it.",
    buckets=STAGE_BUCKETS,
)
RECONCILE_COMPUTE = Histogram(
    "modeldeploy_reconcile_compute_seconds",
    "Time one reconcile pass takes without the API server's round trips it waited for.",
    buckets=STAGE_BUCKETS,
)
API_REQUEST_DURATION = Histogram(
    "modeldeploy_api_request_duration_seconds",
    "Round trip of one request to the API server, from sending it to its answer read, by HTTP method.",
    ["method"],
    buckets=STAGE_BUCKETS,
)


class ApiWait(threading.local):
    """Seconds the current thread has spent waiting for the API server. A pass runs in one thread from start to
    end, so the difference over the pass is its API time, and what is left of its duration is its own."""

    seconds = 0.0


API_WAIT = ApiWait()


def observe_api_request(method: str, seconds: float) -> None:
    """One request's round trip: into the histogram, and onto the current thread's API time."""
    API_REQUEST_DURATION.labels(method=method).observe(seconds)
    API_WAIT.seconds += seconds


# Per-resource series, labelled by namespace and name. They mirror each ModelDeployment's status as the watch shows
# it and are removed when the resource is deleted, so their number follows the number of resources.
PHASES = tuple(phase.value for phase in Phase)


@dataclass(frozen=True, slots=True)
class _ResourceSeries:
    """What one resource's series say, and all that is kept of it: a few strings and two numbers."""

    phase: str | None
    model: str
    stable_version: str
    canary_version: str
    desired_weight: int
    actual_weight: int


class ResourceMetrics(Collector):
    """The per-resource gauges, made when Prometheus asks (a custom collector) from one small record per resource.

    Seven labelled gauge children per resource (four phases, info, two weights) cost 4-5 KiB each resource in
    prometheus_client's objects (a lock and a value object per child): 1,000 resources held 4-5 MiB, and every scrape
    walked 7,000 children. A record per resource is a tenth of that. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _ResourceSeries] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """Set the series of one resource from its status (as stored; absent before the first reconcile)."""
        status = status or {}
        stable = status.get("stable") or {}
        canary = status.get("canary") or {}
        phase = status.get("phase")
        series = _ResourceSeries(
            phase=str(phase) if phase else None,
            model=str(status.get("model") or ""),
            stable_version=str(stable.get("version") or ""),
            canary_version=str(canary.get("version") or ""),
            desired_weight=int(canary.get("desiredWeight") or 0),
            actual_weight=int(canary.get("actualWeight") or 0),
        )
        with self._lock:
            self._series[(namespace, name)] = series

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted resource (a second call, or one for a resource never seen, is harmless)."""
        with self._lock:
            self._series.pop((namespace, name), None)

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            held = dict(self._series)
        return self._families(held)

    @staticmethod
    def _families(held: Mapping[tuple[str, str], _ResourceSeries]) -> list[Metric]:
        phase = GaugeMetricFamily(
            "modeldeploy_resource_phase",
            "1 for the ModelDeployment's current status.phase, 0 for the other phases.",
            labels=["namespace", "name", "phase"],
        )
        info = GaugeMetricFamily(
            "modeldeploy_resource_info",
            "Always 1; the labels name the model and the versions serving (stable) and rolling out (canary).",
            labels=["namespace", "name", "model", "stable_version", "canary_version"],
        )
        weight = GaugeMetricFamily(
            "modeldeploy_canary_weight_percent",
            "Share of traffic of the canary: desired (what the current step asks for) and actual (ready pods).",
            labels=["namespace", "name", "kind"],
        )
        for (namespace, name), series in held.items():
            for candidate in PHASES:
                phase.add_metric([namespace, name, candidate], 1 if candidate == series.phase else 0)
            info.add_metric([namespace, name, series.model, series.stable_version, series.canary_version], 1)
            weight.add_metric([namespace, name, "desired"], series.desired_weight)
            weight.add_metric([namespace, name, "actual"], series.actual_weight)
        return [phase, info, weight]


RESOURCES = ResourceMetrics()
