"""Where a reaction's time goes: the operator's stage histograms, the reaction path in the audit log, memory at rest.

Pure functions and small records (the `scale` and `canary` benchmarks feed them what they read), so that the maths is
unit-tested without a cluster (tests/unit/test_bench.py):

- Histograms: the operator's Prometheus histograms (operator/modeldeploy/metrics.py) as read from its /metrics,
  subtracted between two readings to cover one run, and their quantiles estimated as Prometheus'
  `histogram_quantile` does (linear within a bucket).
- The reaction path: for each resource created one at a time, from the API server's audit log (its timestamps are
  microseconds of this machine's clock) and the benchmark's own watches (`time.time()` at receipt): when the
  resource was stored, when the operator's first write of its Deployment reached the API server, and when it was
  answered.
- Memory at rest: a process's resident memory sampled until it stops moving.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Manifest = dict[str, Any]

# --- histograms -----------------------------------------------------------------------------------------------------

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_labels(text: str) -> dict[str, str]:
    """`{kind="resource",le="0.005"}` -> {"kind": "resource", "le": "0.005"}."""
    return {name: value.replace('\\"', '"').replace("\\\\", "\\") for name, value in _LABEL.findall(text)}


@dataclass(frozen=True)
class Histogram:
    """One histogram (or the sum of several label sets of one): cumulative counts by upper bound, sum and count."""

    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count), ascending; +Inf last
    total: float = 0.0  # the _sum: seconds
    count: float = 0.0

    def __sub__(self, earlier: Histogram) -> Histogram:
        """What was observed between two readings of the same histogram (the earlier one may be empty)."""
        before = dict(earlier.buckets)
        return Histogram(
            tuple((bound, value - before.get(bound, 0.0)) for bound, value in self.buckets),
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None

    def quantile(self, fraction: float) -> float | None:
        """Estimated like Prometheus' histogram_quantile: the bucket holding the rank, linear within it; in the +Inf
        bucket, the highest finite bound. None when nothing was observed."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = fraction * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank and cumulative > below:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            if not math.isinf(bound):
                lower = bound
            below = cumulative
        return lower


def histogram(
    buckets: Mapping[str, float], sums: Mapping[str, float], counts: Mapping[str, float], match: Mapping[str, str]
) -> Histogram:
    """The histogram of every label set that has the labels of `match`, summed, from `metric_lines()` of the
    `_bucket`, `_sum` and `_count` series (label text -> value)."""

    def matching(labels: dict[str, str]) -> bool:
        return all(labels.get(name) == value for name, value in match.items())

    by_bound: dict[float, float] = {}
    for text, value in buckets.items():
        labels = parse_labels(text)
        if "le" in labels and matching(labels):
            bound = float(labels["le"])  # "+Inf" parses as inf
            by_bound[bound] = by_bound.get(bound, 0.0) + value
    total = sum(value for text, value in sums.items() if matching(parse_labels(text)))
    count = sum(value for text, value in counts.items() if matching(parse_labels(text)))
    return Histogram(tuple(sorted(by_bound.items())), total, count)


@dataclass(frozen=True)
class Stage:
    """One stage of a reaction, as one of the operator's histograms (restricted to some labels) measures it."""

    label: str
    metric: str
    match: tuple[tuple[str, str], ...] = ()
    on_path: bool = False  # on the way from a new resource's event to its first write: counted in the rest's maths


STAGES = (
    Stage(
        "watch event -> queue hand-off (ModelDeployment)",
        "modeldeploy_event_handoff_seconds",
        (("kind", "resource"),),
        on_path=True,
    ),
    Stage("watch event -> queue hand-off (child)", "modeldeploy_event_handoff_seconds", (("kind", "child"),)),
    Stage("queue wait", "modeldeploy_queue_wait_seconds", on_path=True),
    Stage("worker -> thread hand-off", "modeldeploy_thread_handoff_seconds", on_path=True),
    Stage("pass compute (no API round trips)", "modeldeploy_reconcile_compute_seconds", on_path=True),
    Stage(
        "API round trip, PATCH (apply, scale, status)",
        "modeldeploy_api_request_duration_seconds",
        (("method", "PATCH"),),
    ),
    Stage("API round trip, POST (Event)", "modeldeploy_api_request_duration_seconds", (("method", "POST"),)),
    Stage("API round trip, GET (reads, Lease)", "modeldeploy_api_request_duration_seconds", (("method", "GET"),)),
    Stage("whole pass (compute + API round trips)", "modeldeploy_reconcile_duration_seconds"),
)

Reading = dict[str, Histogram]
"""Each stage's histogram at one moment, by stage label."""


def read_stages(metric_lines: Callable[[str], dict[str, float]], stages: Iterable[Stage] = STAGES) -> Reading:
    """Every stage's histogram now; `metric_lines` is OperatorProcess.metric_lines (one scrape per series name)."""
    scraped: dict[str, dict[str, float]] = {}

    def lines(name: str) -> dict[str, float]:
        if name not in scraped:
            scraped[name] = metric_lines(name)
        return scraped[name]

    return {
        stage.label: histogram(
            lines(stage.metric + "_bucket"),
            lines(stage.metric + "_sum"),
            lines(stage.metric + "_count"),
            dict(stage.match),
        )
        for stage in stages
    }


def between(before: Reading, after: Reading) -> Reading:
    return {label: value - before.get(label, Histogram()) for label, value in after.items()}


@dataclass(frozen=True)
class StageFigure:
    label: str
    p50_ms: float | None
    mean_ms: float | None
    count: int


def stage_figures(reading: Reading, stages: Iterable[Stage] = STAGES) -> list[StageFigure]:
    figures = []
    for stage in stages:
        found = reading.get(stage.label, Histogram())
        p50, mean = found.quantile(0.5), found.mean()
        figures.append(
            StageFigure(
                stage.label,
                None if p50 is None else p50 * 1000,
                None if mean is None else mean * 1000,
                round(found.count),
            )
        )
    return figures


def operator_side_ms(figures: Iterable[StageFigure], stages: Iterable[Stage] = STAGES) -> float | None:
    """The p50s of the stages on a new resource's path (hand-off, queue, thread, compute), added: the operator's own
    part of the way to its first write, but the API reads it makes on the way. None when one of them is missing."""
    on_path = {stage.label for stage in stages if stage.on_path}
    values = [figure.p50_ms for figure in figures if figure.label in on_path]
    if len(values) != len(on_path) or any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None)


# --- the reaction path, from the audit log -------------------------------------------------------------------------


def audit_time(event: Manifest, key: str) -> float | None:
    """An audit timestamp (RFC 3339, microseconds) as seconds since the epoch, like time.time()."""
    text = event.get(key)
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class PathSample:
    """One new resource's way to its first Deployment, in seconds since the epoch (this machine's clock)."""

    name: str
    stored: float | None = None  # the write that created the resource answered (audit stageTimestamp)
    seen: float | None = None  # the benchmark's watch received the resource (time.time())
    write_received: float | None = None  # the operator's first write of its Deployment reached the API server
    write_answered: float | None = None  # ... and was answered
    child_seen: float | None = None  # the benchmark's watch received the Deployment

    def stretches(self) -> dict[str, float | None]:
        """The stretches of the way, in ms; each None when one of its ends is unknown."""

        def span(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else (end - start) * 1000

        return {
            "stored -> seen by the benchmark": span(self.stored, self.seen),
            "stored -> operator's Deployment write received": span(self.stored, self.write_received),
            "Deployment write received -> answered": span(self.write_received, self.write_answered),
            "Deployment write answered -> seen by the benchmark": span(self.write_answered, self.child_seen),
        }


PATH_STRETCHES = tuple(PathSample("").stretches())


def reaction_paths(
    events: Iterable[Manifest],
    namespace: str,
    names: Iterable[str],
    creator_agent: str,
    operator_agents: tuple[str, ...],
) -> dict[str, PathSample]:
    """From audit events: for each resource name, when the creator's write of it (user agent `creator_agent`) was
    answered, and when the operator's first write of one of its Deployments (named `<name>-<revision>`) was
    received and answered. Only completed requests in `namespace` count; the earliest of each wins."""
    samples = {name: PathSample(name) for name in names}
    by_prefix = {f"{name}-": sample for name, sample in samples.items()}
    for event in events:
        if event.get("stage") not in (None, "ResponseComplete"):
            continue
        reference = event.get("objectRef") or {}
        if reference.get("namespace") != namespace or reference.get("subresource"):
            continue
        agent, resource, name = str(event.get("userAgent", "")), reference.get("resource"), str(reference.get("name"))
        if resource == "modeldeployments" and agent.startswith(creator_agent) and name in samples:
            answered = audit_time(event, "stageTimestamp")
            sample = samples[name]
            if answered is not None and (sample.stored is None or answered < sample.stored):
                sample.stored = answered
        elif resource == "deployments" and agent.startswith(operator_agents):
            owner = next((sample for prefix, sample in by_prefix.items() if name.startswith(prefix)), None)
            received = audit_time(event, "requestReceivedTimestamp")
            if owner is None or received is None:
                continue
            if owner.write_received is None or received < owner.write_received:
                owner.write_received = received
                owner.write_answered = audit_time(event, "stageTimestamp")
    return samples


def first_write_after(
    events: Iterable[Manifest], namespace: str, name: str, agent_prefix: str, resource: str, moments: Iterable[float]
) -> list[float | None]:
    """For each moment (time.time()), when the API server received the first write of `resource` `name` in
    `namespace` by a user agent starting with `agent_prefix` at or after it; None when there was none."""
    received = []
    for event in events:
        reference = event.get("objectRef") or {}
        if (
            event.get("stage") in (None, "ResponseComplete")
            and str(event.get("userAgent", "")).startswith(agent_prefix)
            and reference.get("resource") == resource
            and reference.get("namespace") == namespace
            and reference.get("name") == name
        ):
            moment = audit_time(event, "requestReceivedTimestamp")
            if moment is not None:
                received.append(moment)
    received.sort()
    found: list[float | None] = []
    for moment in moments:
        index = bisect.bisect_left(received, moment)
        found.append(received[index] if index < len(received) else None)
    return found


def median(values: Iterable[float | None]) -> float | None:
    known = sorted(value for value in values if value is not None)
    if not known:
        return None
    middle = len(known) // 2
    return known[middle] if len(known) % 2 else (known[middle - 1] + known[middle]) / 2


def path_medians(samples: Iterable[PathSample]) -> dict[str, float | None]:
    """The median of each stretch over the samples that know both of its ends (ms)."""
    stretches = [sample.stretches() for sample in samples]
    return {label: median(stretch[label] for stretch in stretches) for label in PATH_STRETCHES}


# --- memory at rest -------------------------------------------------------------------------------------------------


@dataclass
class Settling:
    """Samples of a process's resident memory (KiB), until the last `window` of them lie within `tolerance_kib`."""

    window: int = 6
    tolerance_kib: int = 512
    samples: list[int] = field(default_factory=list)

    def add(self, rss_kib: int) -> bool:
        """Record one sample; True once memory has settled."""
        self.samples.append(rss_kib)
        return self.settled()

    def settled(self) -> bool:
        recent = self.samples[-self.window :]
        return len(recent) >= self.window and max(recent) - min(recent) <= self.tolerance_kib
