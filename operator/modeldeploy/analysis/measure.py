"""Canary analysis: what to ask Prometheus, how to judge each answer, and what the running counts decide.

Everything here is pure but `measure_all()`, which asks a `Querier` (the Prometheus client in production, a table in
unit tests). The rollout planner folds the measurements into status and acts on `verdict()`; the reconciler decides
with `measurement_due()` whether to measure at all, so a pass that is not due makes no query.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from modeldeploy.api import models as api
from modeldeploy.api.expressions import ExpressionError, compile_condition
from modeldeploy.api.times import parse_duration, parse_time

MAX_MEASUREMENTS = 10
"""Measurements kept per metric in status, newest first."""
WINDOW_FLOOR = timedelta(seconds=60)
"""Default window when the interval is shorter: rate() needs two scrapes, and 15-30 s scrape intervals are common."""
MIN_PREDICTIONS = 20
"""Predictions each revision must have made in the window before predictionShift compares them."""
ANALYSIS_PAUSE = "AnalysisInconclusive"
NO_DATA = "no data"
"""How a measurement's message begins when it found nothing to judge (no series, NaN, too few predictions)."""
WARM_UP_MARGIN = timedelta(seconds=10)
"""Beyond a window of traffic: Prometheus' target discovery (up to 5 s) and the canary's first request."""
MAX_MESSAGE_BYTES = 256
"""Longest message of a measurement or a verdict, in UTF-8 bytes. They quote what Prometheus answered, which is
untrusted: capped, the whole status stays small (10 metrics x 10 measurements) whatever a server sends."""

log = logging.getLogger("modeldeploy.analysis")

Phase = api.MeasurementPhase

REQUESTS = "modeldeploy_model_requests_total"
DURATION_BUCKETS = "modeldeploy_model_request_duration_seconds_bucket"
PREDICTION_BUCKETS = "modeldeploy_model_prediction_value_bucket"


class QueryError(Exception):
    """Prometheus could not answer: unreachable, timed out, or refused the query."""


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


class Querier(Protocol):
    def query(self, promql: str, timeout: float) -> list[Sample]:
        """Instant query. A scalar result comes back as one sample without labels. Raises QueryError."""
        ...


@dataclass(frozen=True)
class Target:
    """Who is measured: the canary, and the stable revision it is compared with."""

    namespace: str
    name: str
    model: str
    canary_version: str
    canary_revision: str
    stable_version: str
    stable_revision: str


# --- time --------------------------------------------------------------------------------------------------------


def interval_of(spec: api.AnalysisSpec) -> timedelta:
    return max(parse_duration(spec.interval), timedelta(seconds=1))


def window_of(spec: api.AnalysisSpec) -> str:
    """The PromQL range of the built-in queries, in seconds."""
    window = parse_duration(spec.window) if spec.window else max(interval_of(spec), WINDOW_FLOOR)
    return f"{max(int(window.total_seconds()), 1)}s"


def first_measurement_at(spec: api.AnalysisSpec, started: datetime) -> datetime:
    return started + parse_duration(spec.initialDelay) + interval_of(spec)


def warm_until(spec: api.AnalysisSpec, started: datetime) -> datetime:
    """Until when no data is expected: a canary's series appear with its first requests and the next scrape (a new
    pod reaches Prometheus' scrape pools within seconds), and a range query needs two scrapes in its window, which
    the window's own rule (two scrapes or more) gives once the canary has taken traffic for a whole window."""
    return started + parse_duration(spec.initialDelay) + parse_duration(window_of(spec)) + WARM_UP_MARGIN


def measurement_due(resource: api.ModelDeployment, desired_revision: str, now: datetime) -> bool:
    """Whether this pass should query Prometheus: a canary is taking traffic and its next measurement is due."""
    spec = resource.spec.rollout.analysis
    status = resource.status
    canary, analysis = status.canary, status.analysis
    if spec is None or canary is None or analysis is None or canary.fastTrack:
        return False
    if canary.revision != desired_revision or analysis.revision != canary.revision:
        return False
    if analysis.phase != api.AnalysisPhase.RUNNING or analysis.nextMeasurementAt is None:
        return False
    if status.pause is not None and status.pause.reason == ANALYSIS_PAUSE:
        return False
    return now >= parse_time(analysis.nextMeasurementAt)


# --- queries -----------------------------------------------------------------------------------------------------


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def selector(target: Target, version: str) -> str:
    """The series of one version of this resource's model. `namespace` is the target label Prometheus' Kubernetes
    discovery is conventionally relabelled to; `model` and `version` are the runtime's own labels."""
    return (
        f'namespace="{_label_value(target.namespace)}", model="{_label_value(target.model)}", '
        f'version="{_label_value(version)}"'
    )


def success_rate_query(series: str, window: str) -> str:
    # rate() of counters that exist at zero from the start: no traffic gives 0/0, NaN, which is "no data".
    return (
        f'sum(rate({REQUESTS}{{{series}, outcome="success"}}[{window}])) / sum(rate({REQUESTS}{{{series}}}[{window}]))'
    )


def latency_p99_query(series: str, window: str) -> str:
    return f"histogram_quantile(0.99, sum by (le) (rate({DURATION_BUCKETS}{{{series}}}[{window}])))"


def prediction_buckets_query(series: str, window: str) -> str:
    return f"sum by (output, le) (increase({PREDICTION_BUCKETS}{{{series}}}[{window}]))"


def render_query(template: str, target: Target, window: str) -> str:
    values = {
        ".canary.version": target.canary_version,
        ".canary.revision": target.canary_revision,
        ".stable.version": target.stable_version,
        ".stable.revision": target.stable_revision,
        ".model": target.model,
        ".namespace": target.namespace,
        ".name": target.name,
        ".window": window,
    }

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ValueError(f"unknown placeholder {{{{ {key} }}}}")
        # Values land inside PromQL strings: escaped so a version cannot end the string early.
        return _label_value(values[key]) if key != ".window" else values[key]

    return api.PLACEHOLDER_PATTERN.sub(substitute, template)


# --- judging -----------------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.4g}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def cap_message(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`text` on one line, at most `limit` UTF-8 bytes, ending in an ellipsis when cut. Control characters (newlines
    included) become spaces: the message is also a log line's quoted value and an Event's one line."""
    text = _CONTROL.sub(" ", text)
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    ellipsis = "…"
    # A cut inside a multi-byte character drops that character rather than leave half of it.
    return encoded[: limit - len(ellipsis.encode())].decode(errors="ignore") + ellipsis


NOT_FINITE = "is not a finite number, which is never Successful"


def judge_bounds(value: float, minimum: float | None, maximum: float | None, what: str) -> tuple[Phase, str]:
    """A built-in metric's value against its bounds; the message names value and threshold.

    NaN is no data (Inconclusive). An infinity that crosses a bound Failed, like any value there; one that does
    not is Inconclusive, never Successful: +Inf above `min` is a broken query or histogram, not a good canary."""
    if math.isnan(value):
        return Phase.INCONCLUSIVE, f"{NO_DATA}: {what} is NaN"
    if minimum is not None and value < minimum:
        return Phase.FAILED, f"{what} {_number(value)} is below min {_number(minimum)}"
    if maximum is not None and value > maximum:
        return Phase.FAILED, f"{what} {_number(value)} is above max {_number(maximum)}"
    bounds = " and ".join(
        text
        for text in (
            f">= min {_number(minimum)}" if minimum is not None else "",
            f"<= max {_number(maximum)}" if maximum is not None else "",
        )
        if text
    )
    if math.isinf(value):
        return Phase.INCONCLUSIVE, f"{what} {_number(value)} {NOT_FINITE}"
    return Phase.SUCCESSFUL, f"{what} {_number(value)} {bounds}"


def judge_conditions(value: float, success: str | None, failure: str | None) -> tuple[Phase, str]:
    """Argo Rollouts' rules: failure wins; with both set and neither met, Inconclusive; with one, its negation
    decides the other way.

    Non-finite values: NaN is no data (Inconclusive, the conditions are not evaluated); an infinity is judged like
    any number, but where it would be Successful it is Inconclusive (`result >= 0.95` holds for +Inf, which says
    nothing good about a canary)."""
    if math.isnan(value):
        return Phase.INCONCLUSIVE, f"{NO_DATA}: the query returned NaN"
    phase, message = _judge_conditions(value, success, failure)
    if phase == Phase.SUCCESSFUL and math.isinf(value):
        return Phase.INCONCLUSIVE, f"result {_number(value)} {NOT_FINITE}"
    return phase, message


def _judge_conditions(value: float, success: str | None, failure: str | None) -> tuple[Phase, str]:
    shown = _number(value)
    if failure is not None and compile_condition(failure).evaluate(value):
        return Phase.FAILED, f"result {shown} meets failureCondition {failure!r}"
    if success is not None:
        if compile_condition(success).evaluate(value):
            return Phase.SUCCESSFUL, f"result {shown} meets successCondition {success!r}"
        if failure is None:
            return Phase.FAILED, f"result {shown} does not meet successCondition {success!r}"
        return Phase.INCONCLUSIVE, f"result {shown} meets neither successCondition nor failureCondition"
    return Phase.SUCCESSFUL, f"result {shown} does not meet failureCondition {failure!r}"


def _bucket_bound(text: str) -> float:
    try:
        bound = float(text)
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        raise QueryError(f"a bucket's le label is not a number: {text!r}")
    return bound


def cumulative_by_output(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """Bucket counts per output column, as (upper bound, cumulative count) sorted by bound."""
    columns: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        bound = sample.labels.get("le")
        # A count that is not a finite number is no data: an infinite total would make every share NaN.
        if bound is None or not math.isfinite(sample.value):
            continue
        columns.setdefault(sample.labels.get("output", ""), []).append((_bucket_bound(bound), sample.value))
    return {output: sorted(buckets) for output, buckets in columns.items()}


def ks_distance(canary: Sequence[tuple[float, float]], stable: Sequence[tuple[float, float]]) -> float | None:
    """Largest gap between two cumulative distributions given as cumulative bucket counts (Kolmogorov-Smirnov over
    the buckets). None when either side has no observations. Both must use the same bounds (the runtime's are fixed);
    a bound missing on one side counts as that side's previous cumulative share."""
    canary_total = canary[-1][1] if canary else 0.0
    stable_total = stable[-1][1] if stable else 0.0
    if canary_total <= 0 or stable_total <= 0:
        return None
    canary_at = dict(canary)
    stable_at = dict(stable)
    gap = 0.0
    canary_share = stable_share = 0.0
    for bound in sorted(set(canary_at) | set(stable_at)):
        canary_share = min(canary_at.get(bound, canary_share * canary_total) / canary_total, 1.0)
        stable_share = min(stable_at.get(bound, stable_share * stable_total) / stable_total, 1.0)
        gap = max(gap, abs(canary_share - stable_share))
    # Shares are ratios of floats: identical distributions can differ by an ulp, which would read as a shift.
    return round(gap, 9)


def prediction_shift(canary: Sequence[Sample], stable: Sequence[Sample]) -> tuple[float | None, str]:
    """The largest KS distance over the output columns both revisions report, or None with the reason."""
    canary_columns, stable_columns = cumulative_by_output(canary), cumulative_by_output(stable)
    shared = sorted(set(canary_columns) & set(stable_columns))
    if not shared:
        return None, "no predictions from the canary or the stable revision in the window"
    worst: tuple[float, str] | None = None
    for output in shared:
        canary_count = canary_columns[output][-1][1]
        stable_count = stable_columns[output][-1][1]
        if canary_count < MIN_PREDICTIONS or stable_count < MIN_PREDICTIONS:
            return None, (
                f"too few predictions to compare on output {output}: canary {canary_count:.0f}, stable "
                f"{stable_count:.0f} (at least {MIN_PREDICTIONS} each)"
            )
        distance = ks_distance(canary_columns[output], stable_columns[output])
        if distance is not None and (worst is None or distance > worst[0]):
            worst = (distance, output)
    if worst is None:
        return None, "no predictions to compare"
    return worst[0], f"output {worst[1]}"


def _single_value(samples: Sequence[Sample]) -> float | None:
    """The one number a query answered, None for no data (no series, or NaN). More than one series is an error."""
    if len(samples) > 1:
        raise QueryError(f"the query returned {len(samples)} series; aggregate it to one (e.g. with sum)")
    if not samples or math.isnan(samples[0].value):
        return None
    return samples[0].value


class _Budget:
    """What is left of a metric's time: every query gets the rest, in wall-clock terms, not a fresh timeout."""

    def __init__(self, querier: Querier, timeout: float) -> None:
        self.querier = querier
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def query(self, promql: str) -> list[Sample]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QueryError(f"not measured: Prometheus used up the {self.timeout:.3g}s budget")
        return self.querier.query(promql, left)


def measure(
    metric: api.AnalysisMetric, target: Target, window: str, querier: Querier, timeout: float, now: str
) -> api.Measurement:
    """One measurement of one metric, within `timeout` seconds for all its queries. Query failures become an Error
    measurement; they never raise. The message is capped (MAX_MESSAGE_BYTES)."""
    try:
        phase, value, message = _measure(metric, target, window, _Budget(querier, timeout))
    except QueryError as error:
        phase, value, message = Phase.ERROR, None, str(error)
    except (ExpressionError, ValueError) as error:
        phase, value, message = Phase.ERROR, None, f"cannot evaluate: {error}"
    if value is not None and not math.isfinite(value):
        # JSON has no infinities; the message still shows it.
        value = None
    return api.Measurement(phase=str(phase), value=value, message=cap_message(message), time=now)


def _measure(
    metric: api.AnalysisMetric, target: Target, window: str, budget: _Budget
) -> tuple[Phase, float | None, str]:
    if metric.query is not None:
        value = _single_value(budget.query(render_query(metric.query, target, window)))
        if value is None:
            return Phase.INCONCLUSIVE, None, f"{NO_DATA}: the query returned no series or NaN"
        phase, message = judge_conditions(value, metric.successCondition, metric.failureCondition)
        return phase, value, message

    if target.canary_version == target.stable_version:
        return (
            Phase.INCONCLUSIVE,
            None,
            (f"canary and stable are both version {target.canary_version}: their metrics cannot be told apart"),
        )
    canary = selector(target, target.canary_version)
    stable = selector(target, target.stable_version)
    if metric.builtin == api.BuiltinMetric.PREDICTION_SHIFT:
        distance, detail = prediction_shift(
            budget.query(prediction_buckets_query(canary, window)),
            budget.query(prediction_buckets_query(stable, window)),
        )
        if distance is None:
            return Phase.INCONCLUSIVE, None, f"{NO_DATA}: {detail}"
        phase, message = judge_bounds(distance, metric.min, metric.max, f"prediction shift from stable ({detail})")
        return phase, distance, message

    build, what, unit = (
        (success_rate_query, "success rate", "requests")
        if metric.builtin == api.BuiltinMetric.SUCCESS_RATE
        else (latency_p99_query, "p99 latency (s)", "successful requests")
    )
    value = _single_value(budget.query(build(canary, window)))
    if value is None:
        return Phase.INCONCLUSIVE, None, f"{NO_DATA}: no {unit} to {target.canary_version} in the last {window}"
    if metric.relativeTo == api.RelativeTo.STABLE:
        baseline = _single_value(budget.query(build(stable, window)))
        if baseline is None:
            return Phase.INCONCLUSIVE, None, f"{NO_DATA}: no {unit} to stable {target.stable_version} to compare with"
        if math.isinf(baseline):
            # Nothing finite to be relative to: a difference from an infinity says nothing about the canary.
            return (
                Phase.INCONCLUSIVE,
                None,
                f"stable's {what} {_number(baseline)} is not a finite number to compare with",
            )
        difference = value - baseline
        phase, message = judge_bounds(difference, metric.min, metric.max, f"{what} minus stable's")
        return phase, difference, f"{message} ({_number(value)} vs {_number(baseline)})"
    phase, message = judge_bounds(value, metric.min, metric.max, what)
    return phase, value, message


def measure_all(
    spec: api.AnalysisSpec, target: Target, querier: Querier, timeout: float, now: str
) -> dict[str, api.Measurement]:
    """Every metric once, in spec order, within one shared time budget: a Prometheus that stops answering costs a
    reconcile at most `timeout` seconds, whatever the number of metrics.

    It never raises: an unexpected failure while measuring one metric (a bug, or an answer nothing foresaw) is
    that metric's Error measurement, counted toward consecutiveErrorLimit like any query error. Raising instead
    would fail every pass of the resource, and a canary would hold its traffic forever, neither judged nor rolled
    back."""
    window = window_of(spec)
    deadline = time.monotonic() + timeout
    results: dict[str, api.Measurement] = {}
    for metric in spec.metrics:
        left = deadline - time.monotonic()
        if left <= 0:
            results[metric.name] = api.Measurement(
                phase=str(Phase.ERROR), message=f"not measured: Prometheus used up the {timeout:g}s budget", time=now
            )
            continue
        try:
            results[metric.name] = measure(metric, target, window, querier, left, now)
        except Exception as error:
            log.exception(
                'Measuring failed namespace="%s" name="%s" metric="%s"', target.namespace, target.name, metric.name
            )
            results[metric.name] = api.Measurement(
                phase=str(Phase.ERROR),
                message=cap_message(f"not measured: {type(error).__name__}: {error}"),
                time=now,
            )
    return results


# --- counting and deciding ---------------------------------------------------------------------------------------


def is_no_data(measurement: api.Measurement) -> bool:
    return measurement.phase == Phase.INCONCLUSIVE and measurement.message.startswith(NO_DATA)


def record(
    previous: Sequence[api.MetricStatus],
    spec: api.AnalysisSpec,
    measurements: Mapping[str, api.Measurement],
    warming_up: bool = False,
) -> list[api.MetricStatus]:
    """Metric statuses in spec order with the new measurements counted (a metric left out of the spec is dropped).
    While `warming_up`, no data is listed but not counted: the canary's series cannot fill the window yet."""
    by_name = {metric.name: metric for metric in previous}
    updated: list[api.MetricStatus] = []
    for metric in spec.metrics:
        current = by_name.get(metric.name, api.MetricStatus(name=metric.name)).model_copy(deep=True)
        measurement = measurements.get(metric.name)
        if measurement is not None and warming_up and is_no_data(measurement):
            current.phase = measurement.phase
            uncounted = measurement.model_copy(update={"counted": False})
            current.measurements = [uncounted, *current.measurements][:MAX_MEASUREMENTS]
        elif measurement is not None:
            phase = measurement.phase
            current.phase = phase
            current.successful += phase == Phase.SUCCESSFUL
            current.failed += phase == Phase.FAILED
            current.inconclusive += phase == Phase.INCONCLUSIVE
            current.errors += phase == Phase.ERROR
            current.consecutiveErrors = current.consecutiveErrors + 1 if phase == Phase.ERROR else 0
            current.measurements = [measurement, *current.measurements][:MAX_MEASUREMENTS]
        updated.append(current)
    return updated


@dataclass(frozen=True)
class Verdict:
    phase: api.AnalysisPhase
    message: str


def _latest(metric: api.MetricStatus, phase: Phase) -> api.Measurement | None:
    return next((m for m in metric.measurements if m.phase == phase), None)


def _verdict_message(head: str, detail: str, tail: str) -> str:
    """`head detail tail` within MAX_MESSAGE_BYTES: only the quoted measurement is cut, so the metric's name and
    counts always show."""
    room = max(MAX_MESSAGE_BYTES - len(head.encode()) - len(tail.encode()), 16)
    return cap_message(head + cap_message(detail, room) + tail)


def verdict(metrics: Sequence[api.MetricStatus], spec: api.AnalysisSpec) -> Verdict:
    """Failed or Error (roll back), Inconclusive (pause for a person) or Running, from the counts. The message
    quotes the deciding measurement and is capped like it."""
    for metric in metrics:
        if metric.failed > spec.failureLimit:
            failing = _latest(metric, Phase.FAILED)
            return Verdict(
                api.AnalysisPhase.FAILED,
                _verdict_message(
                    f"metric {metric.name}: ",
                    failing.message if failing is not None else "failed",
                    f" ({metric.failed} failed measurements, failureLimit {spec.failureLimit})",
                ),
            )
    for metric in metrics:
        if metric.consecutiveErrors > spec.consecutiveErrorLimit:
            error = _latest(metric, Phase.ERROR)
            return Verdict(
                api.AnalysisPhase.ERROR,
                _verdict_message(
                    f"metric {metric.name}: {metric.consecutiveErrors} query errors in a row, consecutiveErrorLimit "
                    f"{spec.consecutiveErrorLimit}; last: ",
                    error.message if error is not None else "error",
                    "",
                ),
            )
    for metric in metrics:
        if metric.inconclusive > spec.inconclusiveLimit:
            inconclusive = _latest(metric, Phase.INCONCLUSIVE)
            return Verdict(
                api.AnalysisPhase.INCONCLUSIVE,
                _verdict_message(
                    f"metric {metric.name}: ",
                    inconclusive.message if inconclusive is not None else "inconclusive",
                    f" ({metric.inconclusive} inconclusive, inconclusiveLimit {spec.inconclusiveLimit})",
                ),
            )
    return Verdict(api.AnalysisPhase.RUNNING, "")


def awaited(metrics: Sequence[api.MetricStatus], since: datetime) -> list[str]:
    """Names of the metrics whose latest measurement is not a Successful one taken after `since`: what a step
    still waits for before it may end."""
    return [
        metric.name
        for metric in metrics
        if not (
            metric.measurements
            and metric.measurements[0].phase == Phase.SUCCESSFUL
            and parse_time(metric.measurements[0].time) > since
        )
    ]
