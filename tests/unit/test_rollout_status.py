"""status.build_status(): the status as a pure function of a Decision, the resource and the observed pods.

Each row is a Decision as the planner could leave it; the status must say what it is (phase, conditions, message)
without deciding anything itself. The conditions' own rules (when lastTransitionTime moves, their order) and the
Event on a phase change are tables too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy.analysis.measure import ANALYSIS_PAUSE
from modeldeploy.api import models as api
from modeldeploy.api.times import format_time
from modeldeploy.rollout.conditions import set_condition, sorted_conditions
from modeldeploy.rollout.decision import Decision, Event, ObservedRevision
from modeldeploy.rollout.status import build_status, phase_change_event

from .conftest import build_resource

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
MODEL = "fraud-detector"
URL = "http://fraud-detector.models.svc.cluster.local:80"
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "60s"}}, {"setWeight": 50}, {"pause": {}}]

STABLE = api.TrackStatus(version="1.0", revision="ra10000000", since=format_time(T0), readyAt=format_time(T0))
CANARY = api.CanaryStatus(version="2.0", revision="rb20000000", since=format_time(T0 + timedelta(minutes=5)))
CONDITION_TYPES = ["Ready", "Available", "Progressing", "Degraded"]


def seen(track: api.TrackStatus, replicas: int, ready: int) -> ObservedRevision:
    return ObservedRevision(revision=track.revision, version=track.version, replicas=replicas, ready_replicas=ready)


def rolling(step_index: int, **fields: Any) -> Decision:
    """A canary at `step_index` of STEPS, 25% of the ready pods for a step that asks for 20%."""
    values: dict[str, Any] = {
        "stable": STABLE,
        "canary": CANARY,
        "step_index": step_index,
        "step_started": format_time(NOW),
        "desired_weight": 20,
        "actual_weight": 25,
    }
    return Decision(**(values | fields))


def pause(reason: str, ends_at: datetime | None = None) -> api.PauseStatus:
    return api.PauseStatus(
        reason=reason, startedAt=format_time(NOW), endsAt=format_time(ends_at) if ends_at is not None else None
    )


ABORTED = api.AbortedRevision(
    revision=CANARY.revision,
    version=CANARY.version,
    reason="ProgressDeadlineExceeded",
    message="2.0 (revision rb20000000) did not get Ready within 600s (1 ready) and was rolled back; 1.0 keeps serving",
    time=format_time(NOW),
)
INCONCLUSIVE = api.AnalysisStatus(
    revision=CANARY.revision,
    version=CANARY.version,
    phase=str(api.AnalysisPhase.INCONCLUSIVE),
    message="metric latency: no data",
)

SERVING_3_OF_3 = (seen(STABLE, 3, 3),)
CANARY_1_OF_1 = (seen(STABLE, 3, 3), seen(CANARY, 1, 1))

Conditions = dict[str, tuple[str, str]]


def conditions(ready: str, available: str, progressing: tuple[str, str], degraded: tuple[str, str]) -> Conditions:
    """Expected (status, reason) per condition; Ready and Available are True exactly when they name no problem."""
    return {
        "Ready": ("True" if ready == "AllReplicasReady" else "False", ready),
        "Available": ("True" if available == "MinimumReplicasAvailable" else "False", available),
        "Progressing": progressing,
        "Degraded": degraded,
    }


NO_PROBLEM = ("False", "AsExpected")


@pytest.mark.parametrize(
    ("decision", "observed", "replicas", "phase", "expected", "message"),
    [
        pytest.param(
            Decision(stable=STABLE),
            SERVING_3_OF_3,
            3,
            "Healthy",
            conditions("AllReplicasReady", "MinimumReplicasAvailable", ("False", "RolloutComplete"), NO_PROBLEM),
            "3/3 replicas of fraud-detector 1.0 ready",
            id="healthy",
        ),
        pytest.param(
            Decision(stable=STABLE),
            (seen(STABLE, 0, 0),),
            0,
            "Healthy",
            conditions("AllReplicasReady", "MinimumReplicasAvailable", ("False", "RolloutComplete"), NO_PROBLEM),
            "0/0 replicas of fraud-detector 1.0 ready",
            id="healthy-at-zero-replicas",
        ),
        pytest.param(
            Decision(stable=STABLE),
            (seen(STABLE, 3, 2),),
            3,
            "Progressing",
            conditions("Progressing", "MinimumReplicasAvailable", ("True", "ScalingReplicas"), NO_PROBLEM),
            "2/3 replicas of fraud-detector 1.0 ready",
            id="serving-revision-scaling",
        ),
        pytest.param(
            Decision(stable=STABLE),
            (seen(STABLE, 3, 0),),
            3,
            "Progressing",
            conditions("Progressing", "NoReplicasReady", ("True", "ScalingReplicas"), NO_PROBLEM),
            "0/3 replicas of fraud-detector 1.0 ready",
            id="serving-revision-with-no-pod-ready",
        ),
        pytest.param(
            rolling(0),
            CANARY_1_OF_1,
            3,
            "Progressing",
            conditions("Progressing", "MinimumReplicasAvailable", ("True", "RevisionProgressing"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 1/4); 1.0 serving",
            id="canary-at-a-weight",
        ),
        pytest.param(
            rolling(0, awaiting=("success-rate", "latency")),
            CANARY_1_OF_1,
            3,
            "Progressing",
            conditions("Progressing", "MinimumReplicasAvailable", ("True", "RevisionProgressing"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 1/4); 1.0 serving; "
            "waiting for a Successful measurement of success-rate, latency",
            id="canary-waiting-for-the-analysis",
        ),
        pytest.param(
            rolling(4, desired_weight=100, actual_weight=40),
            (seen(STABLE, 1, 3), seen(CANARY, 3, 2)),
            3,
            "Progressing",
            conditions("Progressing", "MinimumReplicasAvailable", ("True", "RevisionProgressing"), NO_PROBLEM),
            "promoting 2.0: 2/3 ready; 1.0 serving",
            id="canary-past-every-step",
        ),
        pytest.param(
            rolling(0),
            (seen(STABLE, 3, 0), seen(CANARY, 1, 1)),
            3,
            "Progressing",
            conditions("Progressing", "MinimumReplicasAvailable", ("True", "RevisionProgressing"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 1/4); 1.0 serving",
            id="available-through-the-canary-alone",
        ),
        pytest.param(
            rolling(1, pause=pause("PauseStep", ends_at=NOW + timedelta(seconds=60))),
            CANARY_1_OF_1,
            3,
            "Paused",
            conditions("Paused", "MinimumReplicasAvailable", ("True", "RolloutPaused"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 2/4); 1.0 serving; paused until 12:11:00Z",
            id="timed-pause",
        ),
        pytest.param(
            rolling(3, pause=pause("PromotionRequired")),
            CANARY_1_OF_1,
            3,
            "Paused",
            conditions("Paused", "MinimumReplicasAvailable", ("True", "RolloutPaused"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 4/4); 1.0 serving; paused until promoted (kubectl mdep promote)",
            id="open-pause",
        ),
        pytest.param(
            rolling(2, pause=pause("SpecPaused")),
            CANARY_1_OF_1,
            3,
            "Paused",
            conditions("Paused", "MinimumReplicasAvailable", ("True", "RolloutPaused"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 3/4); 1.0 serving; paused by spec.rollout.paused",
            id="paused-by-spec",
        ),
        pytest.param(
            rolling(0, pause=pause(ANALYSIS_PAUSE), analysis=INCONCLUSIVE),
            CANARY_1_OF_1,
            3,
            "Paused",
            conditions("Paused", "MinimumReplicasAvailable", ("True", "RolloutPaused"), NO_PROBLEM),
            "canary 2.0 at 25% (desired 20%, step 1/4); 1.0 serving; paused, analysis inconclusive "
            "(metric latency: no data): promote to go on measuring, or abort",
            id="analysis-inconclusive",
        ),
        pytest.param(
            Decision(stable=STABLE, aborted=ABORTED),
            SERVING_3_OF_3,
            3,
            "Degraded",
            conditions(
                "Degraded",
                "MinimumReplicasAvailable",
                ("False", "ProgressDeadlineExceeded"),
                ("True", "ProgressDeadlineExceeded"),
            ),
            ABORTED.message,
            id="canary-rolled-back",
        ),
        pytest.param(
            Decision(stable=STABLE.model_copy(update={"readyAt": None}), first_revision_late=True),
            (seen(STABLE, 3, 1),),
            3,
            "Degraded",
            conditions(
                "Degraded",
                "MinimumReplicasAvailable",
                ("False", "ProgressDeadlineExceeded"),
                ("True", "ProgressDeadlineExceeded"),
            ),
            "fraud-detector 1.0 (revision ra10000000) was not Ready within 600s: 1/3 replicas ready",
            id="first-revision-late",
        ),
    ],
)
def test_status_says_what_the_decision_is(
    decision: Decision,
    observed: tuple[ObservedRevision, ...],
    replicas: int,
    phase: str,
    expected: Conditions,
    message: str,
) -> None:
    resource = build_resource({"replicas": replicas, "rollout": {"steps": STEPS}}, generation=7)
    status = build_status(decision, resource, {o.revision: o for o in observed}, NOW, model=MODEL, url=URL)

    assert status.phase == phase
    assert status.message == message
    assert {c.type: (c.status, c.reason) for c in status.conditions} == expected
    assert [c.type for c in status.conditions] == CONDITION_TYPES
    assert all(c.observedGeneration == 7 for c in status.conditions)
    assert status.observedGeneration == 7
    # The decision's own fields are carried over as they are.
    assert (status.currentStepIndex, status.stepStartedAt, status.pause) == (
        decision.step_index,
        decision.step_started,
        decision.pause,
    )
    assert (status.aborted, status.analysis, status.history) == (decision.aborted, decision.analysis, [])
    assert (status.model, status.url) == (MODEL, URL)


def test_tracks_take_their_pod_counts_from_the_cluster_and_weights_from_the_decision() -> None:
    resource = build_resource({"replicas": 3, "rollout": {"steps": STEPS}})
    observed = {STABLE.revision: seen(STABLE, 2, 2), CANARY.revision: seen(CANARY, 2, 1)}

    status = build_status(
        rolling(2, desired_weight=50, actual_weight=33), resource, observed, NOW, model=MODEL, url=URL
    )

    assert status.stable is not None
    assert (status.stable.version, status.stable.replicas, status.stable.readyReplicas) == ("1.0", 2, 2)
    assert status.canary is not None
    canary = status.canary
    assert (canary.version, canary.replicas, canary.readyReplicas, canary.desiredWeight, canary.actualWeight) == (
        "2.0",
        2,
        1,
        50,
        33,
    )
    assert canary.since == CANARY.since


def test_a_revision_the_cluster_does_not_show_has_no_pods() -> None:
    resource = build_resource({"replicas": 3, "rollout": {"steps": STEPS}})
    status = build_status(rolling(0), resource, {}, NOW, model=MODEL, url=URL)
    assert status.stable is not None
    assert status.canary is not None
    assert (status.stable.replicas, status.stable.readyReplicas) == (0, 0)
    assert (status.canary.replicas, status.canary.readyReplicas) == (0, 0)
    assert (status.phase, status.message) == ("Progressing", "canary 2.0 at 25% (desired 20%, step 1/4); 1.0 serving")
    assert {c.type: c.reason for c in status.conditions}["Available"] == "NoReplicasReady"


def test_a_condition_keeps_its_transition_time_until_its_status_flips() -> None:
    resource = build_resource({"replicas": 3})
    observed = {STABLE.revision: seen(STABLE, 3, 3)}
    first = build_status(Decision(stable=STABLE), resource, observed, T0, model=MODEL, url=URL)
    again = build_resource({"replicas": 3}, status=first)
    scaling = {STABLE.revision: seen(STABLE, 3, 2)}

    later = build_status(Decision(stable=STABLE), again, scaling, NOW, model=MODEL, url=URL)

    times = {c.type: c.lastTransitionTime for c in later.conditions}
    assert times == {
        "Ready": format_time(NOW),  # True -> False
        "Available": format_time(T0),  # True all along
        "Progressing": format_time(NOW),  # False -> True
        "Degraded": format_time(T0),  # False all along
    }


def test_conditions_of_a_newer_operator_are_kept_after_ours() -> None:
    custom = api.Condition(type="Custom", status="True", reason="Newer", lastTransitionTime=format_time(T0))
    previous = api.ModelDeploymentStatus(phase="Healthy", conditions=[custom])
    resource = build_resource({"replicas": 3}, status=previous)

    status = build_status(Decision(stable=STABLE), resource, {}, NOW, model=MODEL, url=URL)

    assert [c.type for c in status.conditions] == [*CONDITION_TYPES, "Custom"]


@pytest.mark.parametrize(
    ("previous", "status", "now", "transition"),
    [
        (None, True, NOW, NOW),  # a new condition starts now
        ("True", True, NOW, T0),  # unchanged: the time it last flipped stays
        ("False", False, NOW, T0),
        ("False", True, NOW, NOW),  # flipped: now
        ("True", False, NOW, NOW),
    ],
)
def test_set_condition_moves_the_transition_time_only_on_a_flip(
    previous: str | None, status: bool, now: datetime, transition: datetime
) -> None:
    existing = (
        []
        if previous is None
        else [api.Condition(type="Ready", status=previous, reason="Before", lastTransitionTime=format_time(T0))]
    )
    updated = set_condition(existing, api.ConditionType.READY, status, "After", "message", generation=3, now=now)
    assert [(c.type, c.status, c.reason, c.lastTransitionTime, c.observedGeneration) for c in updated] == [
        ("Ready", "True" if status else "False", "After", format_time(transition), 3)
    ]


@pytest.mark.parametrize(
    ("types", "ordered"),
    [
        (["Degraded", "Ready"], ["Ready", "Degraded"]),
        (["Progressing", "Available", "Degraded", "Ready"], CONDITION_TYPES),
        (["Zeta", "Degraded", "Alpha", "Ready"], ["Ready", "Degraded", "Zeta", "Alpha"]),  # others keep their order
        ([], []),
    ],
)
def test_sorted_conditions(types: list[str], ordered: list[str]) -> None:
    given = [api.Condition(type=t, status="True", reason="Any", lastTransitionTime=format_time(T0)) for t in types]
    assert [c.type for c in sorted_conditions(given)] == ordered


@pytest.mark.parametrize(
    ("previous", "phase", "event"),
    [
        (None, "Healthy", None),  # the first status is not a change
        ("Healthy", "Healthy", None),
        ("Healthy", "Progressing", Event("Normal", "PhaseProgressing", "the message")),
        ("Progressing", "Paused", Event("Normal", "PhasePaused", "the message")),
        ("Progressing", "Degraded", Event("Warning", "PhaseDegraded", "the message")),
        ("Degraded", "Healthy", Event("Normal", "PhaseHealthy", "the message")),
    ],
)
def test_phase_change_event(previous: str | None, phase: str, event: Event | None) -> None:
    before = api.ModelDeploymentStatus(phase=previous)
    after = api.ModelDeploymentStatus(phase=phase, message="the message")
    assert phase_change_event(before, after) == event
