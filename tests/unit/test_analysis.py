"""Analysis maths and judgement: queries, bounds, conditions, the prediction-shift distance, counting, verdicts.

A table stands in for Prometheus here (`Answers`): these tests are about what the operator makes of an answer.
The real Prometheus answers the same queries in tests/e2e/test_analysis.py.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import Any

import pytest

from modeldeploy.analysis import measure as analysis
from modeldeploy.analysis import prometheus
from modeldeploy.analysis.measure import QueryError, Sample
from modeldeploy.api import models as api

NOW = "2025-03-01T12:00:00.000000Z"
TARGET = analysis.Target(
    namespace="models",
    name="fraud",
    model="fraud-detector",
    canary_version="2.0",
    canary_revision="rb20000000",
    stable_version="1.0",
    stable_revision="ra10000000",
)


class Answers:
    """Answers by the first key found in the query; a QueryError value is raised. Records what was asked."""

    def __init__(self, answers: dict[str, list[Sample] | QueryError]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def query(self, promql: str, timeout: float) -> list[Sample]:
        self.asked.append(promql)
        for key, answer in self.answers.items():
            if key in promql:
                if isinstance(answer, QueryError):
                    raise answer
                return answer
        return []


def one(value: float) -> list[Sample]:
    return [Sample({}, value)]


def metric(**fields: Any) -> api.AnalysisMetric:
    return api.AnalysisMetric.model_validate({"name": "m", **fields})


def spec(**fields: Any) -> api.AnalysisSpec:
    return api.AnalysisSpec.model_validate({"metrics": [{"name": "m", "builtin": "successRate", "min": 0.9}], **fields})


def buckets(version_counts: dict[float, float], output: str = "0") -> list[Sample]:
    """Cumulative bucket samples from per-bucket counts."""
    samples, total = [], 0.0
    for bound in sorted(version_counts):
        total += version_counts[bound]
        samples.append(Sample({"output": output, "le": "+Inf" if math.isinf(bound) else str(bound)}, total))
    return samples


# --- queries ------------------------------------------------------------------------------------------------------


def test_builtin_queries_select_namespace_model_and_version() -> None:
    series = analysis.selector(TARGET, "2.0")
    assert series == 'namespace="models", model="fraud-detector", version="2.0"'
    assert analysis.success_rate_query(series, "30s") == (
        'sum(rate(modeldeploy_model_requests_total{namespace="models", model="fraud-detector", version="2.0", '
        'outcome="success"}[30s])) / sum(rate(modeldeploy_model_requests_total{namespace="models", '
        'model="fraud-detector", version="2.0"}[30s]))'
    )
    assert "histogram_quantile(0.99, sum by (le)" in analysis.latency_p99_query(series, "30s")
    assert analysis.prediction_buckets_query(series, "1m").startswith("sum by (output, le) (increase(")


def test_label_values_are_escaped() -> None:
    odd = analysis.Target(**{**TARGET.__dict__, "model": 'a"b\\c'})
    assert 'model="a\\"b\\\\c"' in analysis.selector(odd, "1")


@pytest.mark.parametrize(
    ("interval", "window", "expected"),
    [("5s", None, "60s"), ("2m", None, "120s"), ("5s", "10s", "10s"), ("30s", "1h", "3600s")],
    ids=["floor", "interval-above-floor", "explicit", "hours"],
)
def test_window(interval: str, window: str | None, expected: str) -> None:
    assert analysis.window_of(spec(interval=interval, window=window)) == expected


def test_render_query_fills_every_placeholder() -> None:
    template = (
        "{{ .canary.version }}|{{.canary.revision}}|{{ .stable.version }}|{{ .stable.revision }}|{{ .model }}|"
        "{{ .namespace }}|{{ .name }}|{{ .window }}"
    )
    assert (
        analysis.render_query(template, TARGET, "30s")
        == "2.0|rb20000000|1.0|ra10000000|fraud-detector|models|fraud|30s"
    )


def test_unknown_placeholders_are_refused_when_the_spec_is_read() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{\{ \.canary\.image \}\}"):
        metric(query="up{v='{{ .canary.image }}'}", successCondition="result > 0")


def test_conditions_are_checked_when_the_spec_is_read() -> None:
    with pytest.raises(ValueError, match="successCondition"):
        metric(query="up", successCondition="result >")


# --- judging ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "phase", "message"),
    [
        (0.995, 0.99, None, "Successful", "x 0.995 >= min 0.99"),
        (0.99, 0.99, None, "Successful", "x 0.99 >= min 0.99"),
        (0.8, 0.99, None, "Failed", "x 0.8 is below min 0.99"),
        (0.3, None, 0.25, "Failed", "x 0.3 is above max 0.25"),
        (0.1, 0.0, 0.25, "Successful", "x 0.1 >= min 0 and <= max 0.25"),
        (math.inf, None, 0.25, "Failed", "x inf is above max 0.25"),
    ],
)
def test_judge_bounds(value: float, minimum: float | None, maximum: float | None, phase: str, message: str) -> None:
    assert analysis.judge_bounds(value, minimum, maximum, "x") == (phase, message)


@pytest.mark.parametrize(
    ("value", "success", "failure", "phase"),
    [
        (0.97, "result >= 0.95", "result < 0.5", "Successful"),
        (0.3, "result >= 0.95", "result < 0.5", "Failed"),
        (0.7, "result >= 0.95", "result < 0.5", "Inconclusive"),
        (0.7, "result >= 0.95", None, "Failed"),
        (0.7, None, "result < 0.5", "Successful"),
        (0.3, None, "result < 0.5", "Failed"),
        (0.99, "result > 0.5", "result > 0.9", "Failed"),
    ],
    ids=[
        "success",
        "failure",
        "neither",
        "only-success-unmet",
        "only-failure-unmet",
        "only-failure-met",
        "failure-wins",
    ],
)
def test_judge_conditions(value: float, success: str | None, failure: str | None, phase: str) -> None:
    assert analysis.judge_conditions(value, success, failure)[0] == phase


# Non-finite values are never Successful. NaN is "no data": Inconclusive, conditions not evaluated. An infinity is
# judged like any number, Failed where it crosses a bound (or meets failureCondition), and Inconclusive where a
# finite value would have been Successful.
INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "phase", "message"),
    [
        (NAN, 0.99, None, "Inconclusive", "no data: x is NaN"),
        (NAN, None, 0.25, "Inconclusive", "no data: x is NaN"),
        (INF, None, 0.25, "Failed", "x inf is above max 0.25"),
        (INF, 0.99, None, "Inconclusive", "x inf is not a finite number, which is never Successful"),
        (INF, 0.0, 0.25, "Failed", "x inf is above max 0.25"),
        (-INF, 0.99, None, "Failed", "x -inf is below min 0.99"),
        (-INF, None, 0.25, "Inconclusive", "x -inf is not a finite number, which is never Successful"),
        (-INF, -1.0, 1.0, "Failed", "x -inf is below min -1"),
    ],
    ids=[
        "nan-min",
        "nan-max",
        "inf-above-max",
        "inf-above-min-only",
        "inf-both",
        "minus-inf-below-min",
        "minus-inf-below-max-only",
        "minus-inf-both",
    ],
)
def test_judge_bounds_of_non_finite_values(
    value: float, minimum: float | None, maximum: float | None, phase: str, message: str
) -> None:
    assert analysis.judge_bounds(value, minimum, maximum, "x") == (phase, message)


@pytest.mark.parametrize(
    ("value", "success", "failure", "phase"),
    [
        (NAN, "result >= 0.95", "result < 0.5", "Inconclusive"),
        (NAN, None, "not (result >= 0.5)", "Inconclusive"),
        (NAN, "isNaN(result) or result > 0", None, "Inconclusive"),
        (INF, "result >= 0.95", None, "Inconclusive"),
        (INF, "result >= 0.95", "result < 0.5", "Inconclusive"),
        (INF, None, "result < 0.5", "Inconclusive"),
        (INF, None, "result > 10", "Failed"),
        (INF, "result < 0.5", None, "Failed"),
        (-INF, "result >= 0.95", "result < 0.5", "Failed"),
        (-INF, "result < 0.5", None, "Inconclusive"),
        (-INF, None, "result > 10", "Inconclusive"),
    ],
    ids=[
        "nan-both",
        "nan-negated-failure",
        "nan-isnan-success",
        "inf-meets-success",
        "inf-meets-success-both",
        "inf-misses-failure",
        "inf-meets-failure",
        "inf-misses-success",
        "minus-inf-meets-failure",
        "minus-inf-meets-success",
        "minus-inf-misses-failure",
    ],
)
def test_judge_conditions_of_non_finite_values(
    value: float, success: str | None, failure: str | None, phase: str
) -> None:
    assert analysis.judge_conditions(value, success, failure)[0] == phase


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [
        ({0.5: 10, 1.0: 10}, {0.5: 10, 1.0: 10}, 0.0),
        ({0.5: 20, 1.0: 0}, {0.5: 0, 1.0: 20}, 1.0),
        ({0.5: 15, 1.0: 5}, {0.5: 5, 1.0: 15}, 0.5),
        ({0.5: 1, 1.0: 1}, {0.5: 100, 1.0: 100}, 0.0),
        ({0.5: 0, 1.0: 0}, {0.5: 10, 1.0: 10}, None),
    ],
    ids=["same", "disjoint", "half", "scale-free", "no-canary-data"],
)
def test_ks_distance(canary: dict[float, float], stable: dict[float, float], expected: float | None) -> None:
    def cumulative(counts: dict[float, float]) -> list[tuple[float, float]]:
        return [(sample_bound(s), s.value) for s in buckets(counts)]

    result = analysis.ks_distance(cumulative(canary), cumulative(stable))
    assert result == (pytest.approx(expected) if expected is not None else None)


def sample_bound(sample: Sample) -> float:
    return float(sample.labels["le"])


def test_prediction_shift_takes_the_worst_output_and_needs_enough_predictions() -> None:
    same = {0.5: 30, 1.0: 30, math.inf: 0}
    shifted = {0.5: 0, 1.0: 60, math.inf: 0}
    canary = buckets(same, "0") + buckets(shifted, "1")
    stable = buckets(same, "0") + buckets(same, "1")
    distance, detail = analysis.prediction_shift(canary, stable)
    assert distance == pytest.approx(0.5)
    assert detail == "output 1"
    few = buckets({0.5: 5, 1.0: 5, math.inf: 0})
    distance, detail = analysis.prediction_shift(few, stable)
    assert distance is None
    assert "too few predictions to compare on output 0: canary 10, stable 60" in detail


# --- measuring ----------------------------------------------------------------------------------------------------


SUCCESS = 'outcome="success"'
CANARY = 'version="2.0"'
STABLE = 'version="1.0"'


@pytest.mark.parametrize(
    ("fields", "answers", "phase", "value", "message"),
    [
        (
            {"builtin": "successRate", "min": 0.99},
            {CANARY: one(0.8)},
            "Failed",
            0.8,
            "success rate 0.8 is below min 0.99",
        ),
        (
            {"builtin": "successRate", "min": 0.99},
            {CANARY: one(math.nan)},
            "Inconclusive",
            None,
            "no data: no requests",
        ),
        ({"builtin": "successRate", "min": 0.99}, {}, "Inconclusive", None, "no data"),
        (
            {"builtin": "latencyP99", "max": 0.25},
            {CANARY: one(0.1)},
            "Successful",
            0.1,
            "p99 latency (s) 0.1 <= max 0.25",
        ),
        ({"builtin": "latencyP99", "max": 0.25}, {CANARY: one(math.inf)}, "Failed", None, "is above max 0.25"),
        (
            {"builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"},
            {CANARY: one(0.3), STABLE: one(0.2)},
            "Failed",
            pytest.approx(0.1),
            "p99 latency (s) minus stable's 0.1 is above max 0.05 (0.3 vs 0.2)",
        ),
        (
            {"builtin": "successRate", "min": -0.01, "relativeTo": "stable"},
            {CANARY: one(0.95), STABLE: one(0.955)},
            "Successful",
            pytest.approx(-0.005),
            "(0.95 vs 0.955)",
        ),
        (
            {"builtin": "successRate", "min": -0.01, "relativeTo": "stable"},
            {CANARY: one(0.95)},
            "Inconclusive",
            None,
            "no requests to stable 1.0 to compare with",
        ),
        (
            {"query": "sum(x)", "successCondition": "result >= 0.95"},
            {"sum(x)": one(0.97)},
            "Successful",
            0.97,
            "meets successCondition",
        ),
        (
            {"query": "x", "successCondition": "result >= 0.95"},
            {"x": [Sample({"a": "1"}, 1.0), Sample({"a": "2"}, 1.0)]},
            "Error",
            None,
            "the query returned 2 series",
        ),
        (
            {"query": "x", "successCondition": "result >= 0.95"},
            {"x": QueryError("Prometheus at http://p did not answer: refused")},
            "Error",
            None,
            "did not answer",
        ),
        ({"query": "x", "successCondition": "result >= 0.95"}, {}, "Inconclusive", None, "no data"),
        (
            {"builtin": "successRate", "min": 0.99},
            {CANARY: one(math.inf)},
            "Inconclusive",
            None,
            "success rate inf is not a finite number",
        ),
        (
            {"builtin": "latencyP99", "max": 0.25},
            {CANARY: one(math.nan)},
            "Inconclusive",
            None,
            "no data",
        ),
        (
            {"builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"},
            {CANARY: one(math.inf), STABLE: one(0.2)},
            "Failed",
            None,
            "p99 latency (s) minus stable's inf is above max 0.05 (inf vs 0.2)",
        ),
        (
            {"builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"},
            {CANARY: one(0.1), STABLE: one(math.inf)},
            "Inconclusive",
            None,
            "stable's p99 latency (s) inf is not a finite number to compare with",
        ),
        (
            {"builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"},
            {CANARY: one(math.inf), STABLE: one(math.inf)},
            "Inconclusive",
            None,
            "not a finite number",
        ),
        (
            {"builtin": "successRate", "min": -0.01, "relativeTo": "stable"},
            {CANARY: one(-math.inf), STABLE: one(0.99)},
            "Failed",
            None,
            "is below min -0.01",
        ),
        (
            {"builtin": "successRate", "min": -0.01, "relativeTo": "stable"},
            {CANARY: one(math.inf), STABLE: one(0.99)},
            "Inconclusive",
            None,
            "not a finite number",
        ),
        (
            {"query": "x", "successCondition": "result >= 0.95"},
            {"x": one(math.inf)},
            "Inconclusive",
            None,
            "result inf is not a finite number",
        ),
        (
            {"query": "x", "successCondition": "result >= 0.95", "failureCondition": "result < 0.5"},
            {"x": one(-math.inf)},
            "Failed",
            None,
            "meets failureCondition",
        ),
        (
            {"query": "x", "successCondition": "result >= 0.95"},
            {"x": one(math.nan)},
            "Inconclusive",
            None,
            "no data",
        ),
    ],
    ids=[
        "success-rate-low",
        "success-rate-nan",
        "success-rate-no-series",
        "latency-ok",
        "latency-inf-not-stored",
        "latency-relative",
        "success-rate-relative-ok",
        "relative-without-stable",
        "query-success",
        "query-many-series",
        "query-error",
        "query-empty",
        "success-rate-inf",
        "latency-nan",
        "latency-relative-canary-inf",
        "latency-relative-stable-inf",
        "latency-relative-both-inf",
        "success-rate-relative-minus-inf",
        "success-rate-relative-inf",
        "query-inf",
        "query-minus-inf",
        "query-nan",
    ],
)
def test_measure(fields: dict[str, Any], answers: dict[str, Any], phase: str, value: Any, message: str) -> None:
    measurement = analysis.measure(metric(**fields), TARGET, "30s", Answers(answers), 5.0, NOW)
    assert measurement.phase == phase
    assert measurement.value == value
    assert message in measurement.message
    assert measurement.time == NOW


def test_prediction_shift_measurement_queries_both_versions() -> None:
    answers = Answers({CANARY: buckets({0.5: 0, 1.0: 40}), STABLE: buckets({0.5: 40, 1.0: 0})})
    measurement = analysis.measure(metric(builtin="predictionShift", max=0.1), TARGET, "30s", answers, 5.0, NOW)
    assert (measurement.phase, measurement.value) == ("Failed", 1.0)
    assert measurement.message == "prediction shift from stable (output 0) 1 is above max 0.1"
    assert len(answers.asked) == 2


def test_builtins_cannot_tell_a_canary_of_the_stable_version_apart() -> None:
    same = analysis.Target(**{**TARGET.__dict__, "canary_version": "1.0"})
    answers = Answers({})
    measurement = analysis.measure(metric(builtin="successRate", min=0.9), same, "30s", answers, 5.0, NOW)
    assert measurement.phase == "Inconclusive"
    assert "both version 1.0" in measurement.message
    assert answers.asked == []


class Clock:
    """A monotonic clock that moves only when a query takes time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowAnswers(Answers):
    """Answers that each take `seconds` of the fake clock; records the timeout every query was given."""

    def __init__(self, answers: dict[str, list[Sample] | QueryError], clock: Clock, seconds: float) -> None:
        super().__init__(answers)
        self.clock, self.seconds = clock, seconds
        self.timeouts: list[float] = []

    def query(self, promql: str, timeout: float) -> list[Sample]:
        self.timeouts.append(timeout)
        self.clock.now += self.seconds
        return super().query(promql, timeout)


def test_measure_all_shares_one_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(analysis.time, "monotonic", clock)
    three = spec(
        metrics=[{"name": name, "builtin": "successRate", "min": 0.9} for name in ("a", "b", "c")],
    )
    answers = SlowAnswers({CANARY: one(1.0)}, clock, 6.0)
    results = analysis.measure_all(three, TARGET, answers, 10.0, NOW)
    assert [m.phase for m in results.values()] == ["Successful", "Successful", "Error"]
    assert answers.timeouts == [10.0, 4.0], "each query gets what is left of the round"
    assert results["c"].message == "not measured: Prometheus used up the 10s budget"


def test_the_queries_of_one_metric_share_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """relativeTo and predictionShift ask twice: the second query gets the rest, not a fresh timeout."""
    clock = Clock()
    monkeypatch.setattr(analysis.time, "monotonic", clock)
    relative = metric(builtin="latencyP99", max=0.05, relativeTo="stable")
    answers = SlowAnswers({CANARY: one(0.1), STABLE: one(0.1)}, clock, 3.0)
    assert analysis.measure(relative, TARGET, "30s", answers, 5.0, NOW).phase == "Successful"
    assert answers.timeouts == [5.0, 2.0]
    answers = SlowAnswers({CANARY: one(0.1), STABLE: one(0.1)}, clock, 6.0)
    measurement = analysis.measure(relative, TARGET, "30s", answers, 5.0, NOW)
    assert (measurement.phase, measurement.message) == ("Error", "not measured: Prometheus used up the 5s budget")
    assert answers.timeouts == [5.0]


class Broken:
    def query(self, promql: str, timeout: float) -> list[Sample]:
        raise AttributeError("'str' object has no attribute 'get'")


def test_an_unexpected_exception_is_an_error_measurement_not_a_failed_pass(caplog: pytest.LogCaptureFixture) -> None:
    two = spec(
        metrics=[
            {"name": "a", "builtin": "successRate", "min": 0.9},
            {"name": "b", "query": "x", "successCondition": "result > 0"},
        ]
    )
    results = analysis.measure_all(two, TARGET, Broken(), 5.0, NOW)
    assert [m.phase for m in results.values()] == ["Error", "Error"]
    assert results["a"].message == "not measured: AttributeError: 'str' object has no attribute 'get'"
    [record, _] = [r for r in caplog.records if r.name == "modeldeploy.analysis"]
    assert record.getMessage() == 'Measuring failed namespace="models" name="fraud" metric="a"'
    assert record.exc_info is not None, "logged with its traceback"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("short", "short"),
        ("x" * 256, "x" * 256),
        ("x" * 257, "x" * 253 + "\u2026"),
        ("line one\nline two\r\x1b[31m", "line one line two [31m"),
        ("\u00e9" * 200, "\u00e9" * 126 + "\u2026"),
    ],
    ids=["short", "at-the-cap", "over", "control-characters", "multi-byte"],
)
def test_cap_message(text: str, expected: str) -> None:
    capped = analysis.cap_message(text)
    assert capped == expected
    assert len(capped.encode()) <= analysis.MAX_MESSAGE_BYTES


def test_measurement_messages_are_capped_whatever_prometheus_says() -> None:
    huge = QueryError("Prometheus refused the query: " + "A" * 100_000)
    measurement = analysis.measure(
        metric(query="x", successCondition="result > 0"), TARGET, "30s", Answers({"x": huge}), 5.0, NOW
    )
    assert measurement.phase == "Error"
    assert len(measurement.message.encode()) <= analysis.MAX_MESSAGE_BYTES
    assert measurement.message.startswith("Prometheus refused the query: AAA")
    assert measurement.message.endswith("\u2026")
    label = "o" * 10_000
    shifted = Answers({CANARY: buckets({0.5: 0, 1.0: 40}, label), STABLE: buckets({0.5: 40, 1.0: 0}, label)})
    measurement = analysis.measure(metric(builtin="predictionShift", max=0.1), TARGET, "30s", shifted, 5.0, NOW)
    assert measurement.phase == "Failed"
    assert len(measurement.message.encode()) <= analysis.MAX_MESSAGE_BYTES


def test_prediction_buckets_that_are_not_numbers_are_an_error_or_no_data() -> None:
    bad_bound = [Sample({"output": "0", "le": "high"}, 30.0)]
    measurement = analysis.measure(
        metric(builtin="predictionShift", max=0.1),
        TARGET,
        "30s",
        Answers({CANARY: bad_bound, STABLE: bad_bound}),
        5.0,
        NOW,
    )
    assert (measurement.phase, measurement.message) == ("Error", "a bucket's le label is not a number: 'high'")
    infinite = buckets({0.5: math.inf, 1.0: 40})
    measurement = analysis.measure(
        metric(builtin="predictionShift", max=0.1),
        TARGET,
        "30s",
        Answers({CANARY: infinite, STABLE: infinite}),
        5.0,
        NOW,
    )
    assert measurement.phase == "Inconclusive"


# --- counting and verdicts ----------------------------------------------------------------------------------------


def m(phase: str, message: str = "") -> api.Measurement:
    return api.Measurement(phase=phase, message=message or phase, time=NOW)


def test_record_counts_and_keeps_the_latest_measurements() -> None:
    one_metric = spec()
    statuses: list[api.MetricStatus] = []
    for phase in ["Error", "Error", "Successful", "Failed", "Inconclusive", "Error"] + ["Successful"] * 10:
        statuses = analysis.record(statuses, one_metric, {"m": m(phase)})
    (status,) = statuses
    assert (status.successful, status.failed, status.inconclusive, status.errors) == (11, 1, 1, 3)
    assert status.consecutiveErrors == 0
    assert status.phase == "Successful"
    assert len(status.measurements) == analysis.MAX_MEASUREMENTS


def test_record_follows_the_spec_order_and_drops_metrics_no_longer_in_it() -> None:
    two = spec(metrics=[{"name": n, "builtin": "successRate", "min": 0.9} for n in ("b", "a")])
    previous = [api.MetricStatus(name="gone", failed=3), api.MetricStatus(name="a", successful=2)]
    assert [(s.name, s.successful) for s in analysis.record(previous, two, {})] == [("b", 0), ("a", 2)]


Verdicts = Callable[..., analysis.Verdict]


@pytest.mark.parametrize(
    ("counts", "limits", "phase", "message"),
    [
        ({"failed": 1}, {}, "Failed", "metric m: Failed (1 failed measurements, failureLimit 0)"),
        ({"failed": 1}, {"failureLimit": 1}, "Running", ""),
        ({"consecutiveErrors": 5, "errors": 5}, {}, "Error", "metric m: 5 query errors in a row"),
        ({"consecutiveErrors": 4, "errors": 9}, {}, "Running", ""),
        ({"inconclusive": 1}, {}, "Inconclusive", "metric m: Inconclusive (1 inconclusive, inconclusiveLimit 0)"),
        ({"inconclusive": 1, "failed": 1}, {}, "Failed", "failed measurements"),
    ],
    ids=["failed", "failed-within-limit", "errors", "errors-within-limit", "inconclusive", "failure-first"],
)
def test_verdict(counts: dict[str, int], limits: dict[str, int], phase: str, message: str) -> None:
    measurements = [
        m(kind)
        for kind, key in (("Failed", "failed"), ("Error", "errors"), ("Inconclusive", "inconclusive"))
        if counts.get(key)
    ]
    status = api.MetricStatus(name="m", measurements=measurements, **counts)
    judged = analysis.verdict([status], spec(**limits))
    assert judged.phase == phase
    assert message in judged.message


@pytest.mark.parametrize(
    ("counts", "phase", "tail"),
    [
        ({"failed": 1}, "Failed", "(1 failed measurements, failureLimit 0)"),
        ({"consecutiveErrors": 5, "errors": 5}, "Error", "\u2026"),
        ({"inconclusive": 1}, "Inconclusive", "(1 inconclusive, inconclusiveLimit 0)"),
    ],
    ids=["failed", "errors", "inconclusive"],
)
def test_verdict_messages_are_capped_and_keep_the_counts(counts: dict[str, int], phase: str, tail: str) -> None:
    name = "m" * 63
    huge = "B" * 5000
    measurements = [m(p, huge) for p in ("Failed", "Error", "Inconclusive")]
    status = api.MetricStatus(name=name, measurements=measurements, **counts)
    judged = analysis.verdict([status], spec(metrics=[{"name": name, "builtin": "successRate", "min": 0.9}]))
    assert judged.phase == phase
    assert judged.message.startswith(f"metric {name}: ")
    assert judged.message.endswith(tail)
    assert len(judged.message.encode()) <= analysis.MAX_MESSAGE_BYTES


# --- Prometheus answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, [Sample({}, 3.0)]),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {"a": "b"}, "value": [1, "0.5"]}]},
            },
            [Sample({"a": "b"}, 0.5)],
        ),
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, []),
    ],
    ids=["scalar", "vector", "empty"],
)
def test_parse_result(payload: dict[str, Any], expected: list[Sample]) -> None:
    assert prometheus.parse_result(payload) == expected


def test_parse_result_reads_prometheus_special_values() -> None:
    payload = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, v]} for v in ("NaN", "+Inf", "-Inf")]},
    }
    values = [sample.value for sample in prometheus.parse_result(payload)]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"status": "error", "error": "parse error"}, "Prometheus refused the query: parse error"),
        (
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
            r"Prometheus refused the query: parse error \(bad_data\)",
        ),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "not matrix"),
        ("not an object", "JSON that is not an object"),
        (None, "JSON that is not an object"),
        ([1, 2], "JSON that is not an object"),
        ({"status": "success", "data": "x"}, "no data object"),
        ({"status": "success"}, "no data object"),
        ({"status": "success", "data": []}, "no data object"),
        ({"status": "weird", "data": {}}, "answered status 'weird', not success"),
        ({"status": "error"}, "answered status 'error', not success"),
        ({"data": {"resultType": "vector", "result": []}}, "answered status None"),
        ({"status": "success", "data": {"resultType": None, "result": []}}, "not None"),
        ({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}, "not string"),
        ({"status": "success", "data": {"resultType": "vector", "result": "x"}}, "no result list"),
        ({"status": "success", "data": {"resultType": "vector", "result": {}}}, "no result list"),
        ({"status": "success", "data": {"resultType": "vector", "result": ["x"]}}, "not an object"),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": "1"}]}},
            r"not a \[time, value\] pair",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1]}]}},
            r"not a \[time, value\] pair",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]}},
            "a sample value is not a number: 'x'",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, None]}]}},
            "a sample value is not a number: None",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, True]}]}},
            "a sample value is not a number: True",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": "x", "value": [1, "1"]}]}},
            "labels are not an object of strings",
        ),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {"a": 1}, "value": [1, "1"]}]},
            },
            "labels are not an object of strings",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "histogram": [1, {}]}]}},
            "no float value",
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": "1"}}, r"not a \[time, value\] pair"),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, {}]}}, "not a number"),
        (
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {"i": str(i)}, "value": [1, "1"]} for i in range(prometheus.MAX_SERIES + 1)],
                },
            },
            f"the query returned {prometheus.MAX_SERIES + 1} series, more than {prometheus.MAX_SERIES}",
        ),
        ({"status": "error", "error": "E" * 100_000}, "Prometheus refused the query: EEEE"),
    ],
    ids=[
        "error",
        "error-type",
        "matrix",
        "string",
        "null",
        "list",
        "data-string",
        "data-missing",
        "data-list",
        "status-unknown",
        "status-error-without-text",
        "status-missing",
        "result-type-null",
        "result-type-string",
        "result-string",
        "result-object",
        "series-string",
        "value-string",
        "value-short",
        "value-not-a-number",
        "value-null",
        "value-bool",
        "labels-string",
        "labels-not-strings",
        "native-histogram",
        "scalar-string",
        "scalar-object",
        "too-many-series",
        "huge-error",
    ],
)
def test_parse_result_refuses(payload: Any, message: str) -> None:
    with pytest.raises(QueryError, match=message) as raised:
        prometheus.parse_result(payload)
    assert len(str(raised.value).encode()) < 1024, "an answer's text is quoted in part only"


def test_a_missing_address_is_an_error_that_says_how_to_set_one() -> None:
    with pytest.raises(QueryError, match=r"set spec\.rollout\.analysis\.prometheus\.address"):
        prometheus.PrometheusClient("").query("up", 1.0)


def test_a_prometheus_that_never_answers_is_an_error_not_a_hang() -> None:
    """A loopback socket that accepts connections and never replies: the query gives up at its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(QueryError, match=r"did not answer within the 0\.2s deadline"):
            prometheus.PrometheusClient(address).query("up", 0.2)
