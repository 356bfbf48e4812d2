"""rollout.plan() with spec.rollout.analysis: when measuring starts, how steps wait for it, and what its verdicts do.

The measurements are given, as the reconciler would pass them after querying Prometheus; every pass round-trips
the status through JSON (see test_rollout.step), so a restarted operator would make the same decisions.
"""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.analysis import measure as analysis
from modeldeploy.api import models as api
from modeldeploy.rollout.plan import ObservedRevision, Plan

from .conftest import build_resource
from .test_rollout import REV, V1, V2, at, cond, step, ts

STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "10s"}}]
METRICS = ["success-rate", "latency"]


def analysis_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "interval": "5s",
        "metrics": [
            {"name": "success-rate", "builtin": "successRate", "min": 0.99},
            {"name": "latency", "builtin": "latencyP99", "max": 0.5},
        ],
        **overrides,
    }


def measured(phase: str, seconds: float, value: float | None = None, message: str = "") -> api.Measurement:
    return api.Measurement(phase=phase, value=value, message=message or f"{phase} at {seconds}s", time=ts(seconds))


def every(phase: str, seconds: float, **kwargs: Any) -> dict[str, api.Measurement]:
    return {name: measured(phase, seconds, **kwargs) for name in METRICS}


def settled(plan: Plan) -> list[ObservedRevision]:
    """The cluster once it did what the plan asked: every Deployment at its replicas, all Ready."""
    version_of = {revision: version for version, revision in REV.items()}
    return [
        ObservedRevision(revision=rev, version=version_of[rev], replicas=count, ready_replicas=count)
        for rev, count in plan.replicas.items()
    ]


def events(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def start_canary(**spec_overrides: Any) -> tuple[Plan, dict[str, Any]]:
    """1.0 serving, 2.0 applied at t=0 and its pods Ready at t=1: the analysis has started."""
    spec = analysis_spec(**spec_overrides)
    serving = step("1.0", ObservedRevision(V1, "1.0", 3, 3))
    serving = step("1.0", ObservedRevision(V1, "1.0", 3, 3), status=serving.status)
    asked = step("2.0", *settled(serving), status=serving.status, steps=STEPS, analysis=spec)
    assert asked.status.analysis is not None
    assert asked.status.analysis.phase == "Pending", "no Ready canary pod, nothing to measure"
    ready = step("2.0", *settled(asked), status=asked.status, now=at(1), steps=STEPS, analysis=spec)
    # The stable gives up its share once the canary's pods are Ready.
    ready = step("2.0", *settled(ready), status=ready.status, now=at(1), steps=STEPS, analysis=spec)
    return ready, spec


def test_measuring_starts_when_the_canary_takes_traffic_and_the_step_waits_for_it() -> None:
    ready, _ = start_canary()
    state = ready.status.analysis
    assert state is not None
    assert state.phase == "Running"
    assert state.startedAt == ts(1)
    assert state.nextMeasurementAt == ts(6)
    assert [m.name for m in state.metrics] == METRICS
    assert ready.status.currentStepIndex == 0, "pods are ready but nothing was measured during the step yet"
    assert "waiting for a Successful measurement of success-rate, latency" in ready.status.message
    assert ready.requeue_after == 5.0


def test_a_step_advances_on_successful_measurements_taken_during_it_and_the_canary_is_promoted() -> None:
    ready, spec = start_canary()
    first = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Successful", 6, value=1.0),
    )
    assert first.status.currentStepIndex == 1, "setWeight done: into the pause"
    assert first.status.pause is not None
    assert first.status.pause.reason == "PauseStep"
    state = first.status.analysis
    assert state is not None
    assert [(m.successful, m.phase) for m in state.metrics] == [(1, "Successful"), (1, "Successful")]
    assert state.nextMeasurementAt == ts(11)

    # The pause ends at 16; its last measurement (11) was taken during it, so the step may end.
    over = step("2.0", *settled(first), status=first.status, now=at(16), steps=STEPS, analysis=spec)
    assert over.status.currentStepIndex == 1, "measured at 6 only: before the pause began at 6.0 exactly counts"
    again = step(
        "2.0",
        *settled(over),
        status=over.status,
        now=at(16),
        steps=STEPS,
        analysis=spec,
        measurements=every("Successful", 16, value=1.0),
    )
    assert again.status.currentStepIndex == 2
    final = step("2.0", *settled(again), status=again.status, now=at(17), steps=STEPS, analysis=spec)
    promoted = step("2.0", *settled(final), status=final.status, now=at(18), steps=STEPS, analysis=spec)
    assert promoted.status.stable is not None
    assert promoted.status.stable.version == "2.0"
    assert promoted.status.analysis is not None
    assert promoted.status.analysis.phase == "Successful"
    assert "promoted with 4 Successful measurements" in promoted.status.analysis.message


@pytest.mark.parametrize(
    ("phases", "warnings"),
    [
        pytest.param(["Failed"], [["AnalysisMeasurementFailed"]], id="first-failure"),
        pytest.param(["Failed", "Failed", "Failed"], [["AnalysisMeasurementFailed"], [], []], id="keeps-failing"),
        pytest.param(
            ["Successful", "Failed", "Successful", "Failed"],
            [[], ["AnalysisMeasurementFailed"], [], ["AnalysisMeasurementFailed"]],
            id="fails-again-after-a-success",
        ),
        pytest.param(
            ["Error", "Error", "Failed", "Error"],
            [["AnalysisMeasurementError"], [], ["AnalysisMeasurementFailed"], ["AnalysisMeasurementError"]],
            id="errors-then-failures",
        ),
        pytest.param(["Inconclusive", "Successful"], [[], []], id="no-warning-otherwise"),
    ],
)
def test_a_warning_when_a_metric_starts_failing_not_per_measurement(
    phases: list[str], warnings: list[list[str]]
) -> None:
    """Limits high enough that nothing stops the canary: only the Warnings are looked at."""
    plan, spec = start_canary(failureLimit=10, consecutiveErrorLimit=10, inconclusiveLimit=10)
    seen = []
    for n, phase in enumerate(phases):
        seconds = 6 + 5 * n
        measurements = {"success-rate": measured(phase, seconds, 0.5 if phase == "Failed" else None)}
        plan = step(
            "2.0",
            *settled(plan),
            status=plan.status,
            now=at(seconds),
            steps=[{"setWeight": 50}, {"pause": {}}],
            analysis=spec,
            measurements=measurements,
        )
        assert plan.status.canary is not None
        seen.append([reason for reason in events(plan) if reason.startswith("AnalysisMeasurement")])
    assert seen == warnings


def test_a_failed_measurement_over_the_limit_rolls_back_naming_metric_value_and_threshold() -> None:
    ready, spec = start_canary(failureLimit=1)
    failing = {
        "success-rate": measured("Failed", 6, 0.8, "success rate 0.8 is below min 0.99"),
        "latency": measured("Successful", 6, 0.01),
    }
    tolerated = step(
        "2.0", *settled(ready), status=ready.status, now=at(6), steps=STEPS, analysis=spec, measurements=failing
    )
    assert tolerated.status.canary is not None, "one failure is within failureLimit 1"
    assert events(tolerated) == ["AnalysisMeasurementFailed"]
    assert tolerated.status.currentStepIndex == 0, "a failed latest measurement holds the step"

    failing = {name: m.model_copy(update={"time": ts(11)}) for name, m in failing.items()}
    aborted = step(
        "2.0",
        *settled(tolerated),
        status=tolerated.status,
        now=at(11),
        steps=STEPS,
        analysis=spec,
        measurements=failing,
    )
    status = aborted.status
    assert status.canary is None
    assert status.aborted is not None
    assert status.aborted.reason == "AnalysisFailed"
    assert "metric success-rate: success rate 0.8 is below min 0.99" in status.aborted.message
    assert "(2 failed measurements, failureLimit 1)" in status.aborted.message
    assert status.phase == "Degraded"
    assert cond(status, "Degraded").reason == "AnalysisFailed"
    assert status.history[0].outcome == "RolledBack"
    assert status.history[0].reason == "AnalysisFailed"
    assert aborted.replicas == {V1: 3, V2: 0}
    assert "AnalysisMeasurementFailed" not in events(aborted), "said when the metric began failing, not again"
    assert "AnalysisFailed" in events(aborted)
    assert status.analysis is not None
    assert status.analysis.phase == "Failed"
    assert status.analysis.metrics[0].failed == 2
    # Evidence stays; nothing is measured for a canary that is gone.
    resource = build_resource(
        {"model": {"version": "2.0"}, "rollout": {"analysis": spec}}, status=status.model_dump(mode="json")
    )
    assert not analysis.measurement_due(resource, V2, at(100))


def test_query_errors_in_a_row_over_the_limit_roll_back_and_a_success_resets_the_run() -> None:
    ready, spec = start_canary(consecutiveErrorLimit=1)
    plan = ready
    for seconds, phase in [(6, "Error"), (11, "Successful"), (16, "Error")]:
        plan = step(
            "2.0",
            *settled(plan),
            status=plan.status,
            now=at(seconds),
            steps=STEPS,
            analysis=spec,
            measurements=every(phase, seconds),
        )
        assert plan.status.canary is not None, f"at {seconds}s: no two errors in a row yet"
    assert plan.status.analysis is not None
    assert [m.consecutiveErrors for m in plan.status.analysis.metrics] == [1, 1]
    plan = step(
        "2.0",
        *settled(plan),
        status=plan.status,
        now=at(21),
        steps=STEPS,
        analysis=spec,
        measurements=every("Error", 21, message="Prometheus at http://127.0.0.1:1 did not answer"),
    )
    assert plan.status.aborted is not None
    assert plan.status.aborted.reason == "AnalysisFailed"
    assert "2 query errors in a row, consecutiveErrorLimit 1" in plan.status.aborted.message
    assert "did not answer" in plan.status.aborted.message
    assert plan.status.analysis is not None
    assert plan.status.analysis.phase == "Error"


def test_inconclusive_over_the_limit_pauses_and_promote_goes_on_measuring() -> None:
    ready, spec = start_canary()
    paused = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Inconclusive", 6, message="result 0.5 meets neither successCondition nor failureCondition"),
    )
    status = paused.status
    assert status.phase == "Paused"
    assert status.pause is not None
    assert status.pause.reason == analysis.ANALYSIS_PAUSE
    assert status.analysis is not None
    assert status.analysis.phase == "Inconclusive"
    assert "meets neither" in status.message
    assert "AnalysisInconclusive" in events(paused)
    assert paused.replicas[V2] > 0, "a pause keeps the canary where it is"
    resource = build_resource(
        {"model": {"version": "2.0"}, "rollout": {"steps": STEPS, "analysis": spec}},
        status=status.model_dump(mode="json"),
    )
    assert not analysis.measurement_due(resource, V2, at(60)), "nothing is measured while a person decides"

    still = step("2.0", *settled(paused), status=status, now=at(30), steps=STEPS, analysis=spec)
    assert still.status.phase == "Paused"
    resumed = step(
        "2.0",
        *settled(still),
        status=still.status,
        now=at(31),
        steps=STEPS,
        analysis=spec,
        commands={"promote": {"id": "p1"}},
    )
    assert resumed.status.pause is None
    assert resumed.status.phase == "Progressing"
    assert resumed.status.analysis is not None
    assert resumed.status.analysis.phase == "Running"
    assert resumed.status.analysis.nextMeasurementAt == ts(36)
    assert [m.inconclusive for m in resumed.status.analysis.metrics] == [0, 0]
    assert resumed.status.currentStepIndex == 0, "promote ends the analysis pause, not the step"
    assert "AnalysisResumed" in events(resumed)


def test_measurement_due_follows_next_measurement_time_and_the_canary_it_belongs_to() -> None:
    ready, spec = start_canary()
    body = ready.status.model_dump(mode="json")
    resource = build_resource({"model": {"version": "2.0"}, "rollout": {"steps": STEPS, "analysis": spec}}, status=body)
    assert not analysis.measurement_due(resource, V2, at(5.9))
    assert analysis.measurement_due(resource, V2, at(6))
    assert not analysis.measurement_due(resource, REV["3.0"], at(6)), "the spec moved on: that canary is replaced"
    without = build_resource({"model": {"version": "2.0"}, "rollout": {"steps": STEPS}}, status=body)
    assert not analysis.measurement_due(without, V2, at(6))


def test_promote_full_skips_the_wait_and_removing_analysis_lets_steps_go_on() -> None:
    ready, spec = start_canary()
    full = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(2),
        steps=STEPS,
        analysis=spec,
        commands={"promote": {"id": "p1", "full": True}},
    )
    assert full.status.currentStepIndex == len(STEPS)

    dropped = step("2.0", *settled(ready), status=ready.status, now=at(2), steps=STEPS)
    assert dropped.status.analysis is None
    assert dropped.status.currentStepIndex == 1


def test_a_fast_tracked_return_is_not_analysed() -> None:
    ready, spec = start_canary()
    ok = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Successful", 6, value=1.0),
    )
    plan = ok
    for seconds in (16, 16, 17, 18):
        plan = step(
            "2.0",
            *settled(plan),
            status=plan.status,
            now=at(seconds),
            steps=STEPS,
            analysis=spec,
            measurements=every("Successful", seconds, value=1.0) if seconds == 16 else None,
        )
    assert plan.status.stable is not None
    assert plan.status.stable.version == "2.0"
    back = step("1.0", *settled(plan), status=plan.status, now=at(20), steps=STEPS, analysis=spec)
    assert back.status.canary is not None
    assert back.status.canary.fastTrack
    assert back.status.analysis is None


def test_a_pause_after_a_pause_needs_a_measurement_of_its_own() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"pause": {"duration": "1s"}}]
    spec = analysis_spec(interval="3s")
    serving = step("1.0", ObservedRevision(V1, "1.0", 3, 3))
    asked = step("2.0", *settled(serving), status=serving.status, steps=steps, analysis=spec)
    plan = step("2.0", *settled(asked), status=asked.status, now=at(1), steps=steps, analysis=spec)
    plan = step("2.0", *settled(plan), status=plan.status, now=at(1), steps=steps, analysis=spec)
    plan = step(
        "2.0",
        *settled(plan),
        status=plan.status,
        now=at(4),
        steps=steps,
        analysis=spec,
        measurements=every("Successful", 4, value=1.0),
    )
    assert plan.status.currentStepIndex == 1, "setWeight ended at 4: the first pause starts"
    # The first pause was due to end at 5; the analysis holds it until the measurement at 7.
    plan = step(
        "2.0",
        *settled(plan),
        status=plan.status,
        now=at(7),
        steps=steps,
        analysis=spec,
        measurements=every("Successful", 7, value=1.0),
    )
    assert plan.status.currentStepIndex == 2, "one measurement ends one pause, not two"
    assert plan.status.stepStartedAt == ts(7)
    plan = step(
        "2.0",
        *settled(plan),
        status=plan.status,
        now=at(10),
        steps=steps,
        analysis=spec,
        measurements=every("Successful", 10, value=1.0),
    )
    assert plan.status.currentStepIndex == 3


def test_a_retry_after_a_failed_analysis_is_measured_afresh() -> None:
    ready, spec = start_canary()
    failed = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Failed", 6, value=0.1),
    )
    assert failed.status.aborted is not None
    retried = step(
        "2.0",
        *settled(failed),
        status=failed.status,
        now=at(10),
        steps=STEPS,
        analysis=spec,
        commands={"retry": {"id": "retry-1"}},
    )
    # The failed analysis belongs to the first attempt: kept, it would never measure again, and the step would wait
    # for a Successful measurement for good.
    state = retried.status.analysis
    assert state is not None
    assert (state.phase, state.startedAt) == ("Pending", None)
    assert all(metric.failed == 0 for metric in state.metrics)
    plan = retried
    for _ in range(2):
        plan = step("2.0", *settled(plan), status=plan.status, now=at(11), steps=STEPS, analysis=spec)
    assert plan.status.analysis is not None
    assert (plan.status.analysis.phase, plan.status.analysis.nextMeasurementAt) == ("Running", ts(16))
    measured_ok = step(
        "2.0",
        *settled(plan),
        status=plan.status,
        now=at(16),
        steps=STEPS,
        analysis=spec,
        measurements=every("Successful", 16, value=1.0),
    )
    assert measured_ok.status.currentStepIndex == 1


NO_DATA = "no data: no requests to 2.0 in the last 60s"


def test_no_data_in_the_warm_up_is_listed_not_counted_and_after_it_pauses() -> None:
    """Started at t=1 with a 5s interval: the window is 60s, so no data until t=71 is expected, not inconclusive."""
    ready, spec = start_canary()
    early = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Inconclusive", 6, message=NO_DATA),
    )
    assert early.status.phase == "Progressing"
    assert early.status.analysis is not None
    assert early.status.analysis.message.startswith("warming up until 12:01:11Z: no data is not counted yet")
    latency = early.status.analysis.metrics[1]
    assert (latency.inconclusive, latency.measurements[0].counted) == (0, False)
    # A canary that still has no data once the window could hold it: Inconclusive, paused for a person.
    late = step(
        "2.0",
        *settled(early),
        status=early.status,
        now=at(72),
        steps=STEPS,
        analysis=spec,
        measurements=every("Inconclusive", 72, message=NO_DATA),
    )
    assert late.status.phase == "Paused"
    assert late.status.pause is not None
    assert late.status.pause.reason == analysis.ANALYSIS_PAUSE
    assert late.status.analysis is not None
    assert late.status.analysis.metrics[1].inconclusive == 1
    assert late.status.analysis.metrics[1].measurements[0].counted


def test_in_the_warm_up_only_no_data_goes_uncounted() -> None:
    ready, spec = start_canary()
    failing = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Failed", 6, value=0.5, message="success rate 0.5 is below 0.99"),
    )
    assert failing.status.aborted is not None
    assert failing.status.aborted.reason == "AnalysisFailed"
    neither = step(
        "2.0",
        *settled(ready),
        status=ready.status,
        now=at(6),
        steps=STEPS,
        analysis=spec,
        measurements=every("Inconclusive", 6, message="result 0.5 meets neither successCondition nor failureCondition"),
    )
    assert neither.status.phase == "Paused"
