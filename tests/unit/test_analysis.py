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


def test_measure_all_shares_one_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 11.0, 12.0])
    monkeypatch.setattr(analysis.time, "monotonic", lambda: next(clock))
    three = spec(
        metrics=[{"name": name, "builtin": "successRate", "min": 0.9} for name in ("a", "b", "c")],
    )
    results = analysis.measure_all(three, TARGET, Answers({CANARY: one(1.0)}), 10.0, NOW)
    assert [m.phase for m in results.values()] == ["Successful", "Error", "Error"]
    assert results["b"].message == "not measured: Prometheus used up the 10s budget"


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
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "not matrix"),
        ("not an object", "Prometheus refused the query"),
    ],
    ids=["error", "matrix", "garbage"],
)
def test_parse_result_refuses(payload: Any, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        prometheus.parse_result(payload)


def test_a_missing_address_is_an_error_that_says_how_to_set_one() -> None:
    with pytest.raises(QueryError, match=r"set spec\.rollout\.analysis\.prometheus\.address"):
        prometheus.PrometheusClient("").query("up", 1.0)


def test_a_prometheus_that_never_answers_is_an_error_not_a_hang() -> None:
    """A loopback socket that accepts connections and never replies: the query gives up at its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(QueryError, match="did not answer: timed out"):
            prometheus.PrometheusClient(address).query("up", 0.2)
