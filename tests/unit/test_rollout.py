"""rollout.plan(): the rollout state machine, driven pass by pass with a fixed clock and hand-made observations.

Every pass feeds the previous pass's status back through a JSON round trip, as the API server would, so these
tests also show that a restarted operator resumes from the status it left behind. Most use the Immediate strategy
(the new revision comes up in full beside the serving one and takes over once all its replicas are Ready), so the
revision lifecycle is tested apart from the canary steps; the last section covers the steps, pauses and requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.api.times import format_time
from modeldeploy.rollout import plan as rollout
from modeldeploy.rollout.plan import ObservedRevision, Plan

from .conftest import build_resource

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
DEADLINE = 600
MODEL = "fraud-detector"
URL = "http://fraud-detector.models.svc.cluster.local:80"
# plan() takes the desired revision as given; one fixed revision per version keeps the tables readable.
REV = {
    "1.0": "ra10000000",
    "2.0": "rb20000000",
    "3.0": "rc30000000",
    "4.0": "rd40000000",
    "5.0": "re50000000",
}
V1, V2, V3 = REV["1.0"], REV["2.0"], REV["3.0"]
CAMEL_CASE = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*$")
CONDITION_ORDER = ["Ready", "Available", "Progressing", "Degraded"]

Status = api.ModelDeploymentStatus | None


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    return format_time(at(seconds))


def seen(version: str, replicas: int, ready: int, *, up_to_date: bool = True) -> ObservedRevision:
    return ObservedRevision(
        revision=REV[version], version=version, replicas=replicas, ready_replicas=ready, up_to_date=up_to_date
    )


def step(
    version: str,
    *observed: ObservedRevision,
    status: Status = None,
    now: datetime = T0,
    replicas: int = 3,
    generation: int = 1,
    deadline: int = DEADLINE,
    retained: int = 3,
    history_limit: int = 10,
    rollback_window: int = 3,
    steps: list[dict[str, Any]] | None = None,
    paused: bool = False,
    commands: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
    measurements: dict[str, api.Measurement] | None = None,
) -> Plan:
    """One reconcile pass: the spec asks for `version`, the cluster shows `observed`, the last status was `status`.

    Without `steps` the strategy is Immediate; with them, Canary. `commands` are the requests a person wrote into
    status.commands since the last pass.
    """
    rollout_spec: dict[str, Any] = {
        "strategy": "Immediate" if steps is None else "Canary",
        "progressDeadlineSeconds": deadline,
        "rollbackWindow": rollback_window,
        "paused": paused,
    }
    if steps is not None:
        rollout_spec["steps"] = steps
    if analysis is not None:
        rollout_spec["analysis"] = analysis
    status_body = status.model_dump(mode="json") if status is not None else None
    if commands is not None:
        status_body = {**(status_body or {}), "commands": commands}
    resource = build_resource(
        {"model": {"version": version}, "replicas": replicas, "rollout": rollout_spec},
        generation=generation,
        status=status_body,
    )
    result = rollout.plan(
        resource,
        REV[version],
        {o.revision: o for o in observed},
        now,
        model=MODEL,
        url=URL,
        history_limit=history_limit,
        retained=retained,
        measurements=measurements,
    )
    check_invariants(result, resource)
    return result


def check_invariants(result: Plan, resource: api.ModelDeployment) -> None:
    """What holds after every pass, whatever the state."""
    status = result.status
    generation = resource.metadata["generation"]
    assert status.observedGeneration == generation
    assert [c.type for c in status.conditions] == CONDITION_ORDER
    for c in status.conditions:
        assert CAMEL_CASE.match(c.reason), c
        assert c.status in ("True", "False")
        assert c.observedGeneration == generation
    assert status.phase in {p.value for p in api.Phase}
    ready = cond(status, "Ready").status == "True"
    assert ready == (status.phase == "Healthy")
    assert status.stable is not None
    if ready:
        assert status.stable.readyReplicas >= resource.spec.replicas
        assert status.canary is None
    if status.canary is None:
        assert result.replicas[status.stable.revision] == resource.spec.replicas
    else:
        if resource.spec.rollout.strategy == "Immediate":
            assert result.replicas[status.canary.revision] == resource.spec.replicas
        assert result.replicas[status.canary.revision] <= resource.spec.replicas
        # The serving revision gives up a pod only for a ready pod of the new one: capacity never drops.
        stable_replicas = result.replicas[status.stable.revision]
        assert stable_replicas + status.canary.readyReplicas >= resource.spec.replicas
        assert stable_replicas <= resource.spec.replicas
    assert status.model == MODEL
    assert status.url == URL
    for event in result.events:
        assert event.type in ("Normal", "Warning")
        assert CAMEL_CASE.match(event.reason), event


def cond(status: api.ModelDeploymentStatus, kind: str) -> api.Condition:
    [found] = [c for c in status.conditions if c.type == kind]
    return found


def conds(status: api.ModelDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def reasons(events: Iterable[rollout.Event]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in events]


def track(found: api.TrackStatus | None) -> tuple[str, str, int, int, str | None] | None:
    """The fields every track has: (version, revision, replicas, readyReplicas, since)."""
    if found is None:
        return None
    return found.version, found.revision, found.replicas, found.readyReplicas, found.since


def history(status: api.ModelDeploymentStatus) -> list[tuple[str, str, str]]:
    return [(h.revision, h.outcome, h.reason) for h in status.history]


# Scenarios, each a short sequence of passes.


def first_visit(replicas: int = 3) -> Plan:
    return step("1.0", now=T0, replicas=replicas)


def healthy_v1(replicas: int = 3) -> Plan:
    return step(
        "1.0", seen("1.0", replicas, replicas), status=first_visit(replicas).status, now=at(30), replicas=replicas
    )


def rolling_v2() -> Plan:
    """2.0 rolling out since at(100) while 1.0 serves."""
    return step("2.0", seen("1.0", 3, 3), status=healthy_v1().status, now=at(100))


def promoted_v2() -> Plan:
    return step("2.0", seen("1.0", 3, 3), seen("2.0", 3, 3), status=rolling_v2().status, now=at(200))


def aborted_v2() -> Plan:
    return step("2.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=rolling_v2().status, now=at(100 + DEADLINE))


# ---------------------------------------------------------------------------------------------------------------
# First revision


def test_first_visit() -> None:
    result = step("1.0", now=T0, generation=4)
    status = result.status
    # Its Deployment is created in this pass: the status says what it asks for, none of it ready yet.
    assert track(status.stable) == ("1.0", V1, 3, 0, ts(0))
    assert status.canary is None
    assert status.aborted is None
    assert status.history == [
        api.HistoryEntry(revision=V1, version="1.0", outcome="Promoted", reason="FirstRevision", time=ts(0))
    ]
    assert status.phase == "Progressing"
    assert status.observedGeneration == 4
    assert conds(status) == {
        "Ready": ("False", "Progressing"),
        "Available": ("False", "NoReplicasReady"),
        "Progressing": ("True", "ScalingReplicas"),
        "Degraded": ("False", "AsExpected"),
    }
    assert all(c.observedGeneration == 4 and c.lastTransitionTime == ts(0) for c in status.conditions)
    assert result.replicas == {V1: 3}
    assert result.apply_revision == V1
    assert reasons(result.events) == [("Normal", "RevisionCreated")]
    # The first revision's own deadline is the next timed re-check.
    assert result.requeue_after == DEADLINE


def test_first_revision_partly_ready_is_progressing_and_available() -> None:
    result = step("1.0", seen("1.0", 3, 1), status=first_visit().status, now=at(20))
    assert result.status.phase == "Progressing"
    assert result.status.stable is not None
    assert result.status.stable.readyReplicas == 1
    assert conds(result.status)["Available"] == ("True", "MinimumReplicasAvailable")
    assert conds(result.status)["Ready"] == ("False", "Progressing")
    assert result.requeue_after == DEADLINE - 20


def test_all_replicas_ready_is_healthy() -> None:
    result = healthy_v1()
    status = result.status
    assert status.phase == "Healthy"
    assert conds(status) == {
        "Ready": ("True", "AllReplicasReady"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.stable is not None
    assert (status.stable.replicas, status.stable.readyReplicas) == (3, 3)
    assert status.stable.since == ts(0)
    assert len(status.history) == 1
    assert result.requeue_after is None
    assert reasons(result.events) == [("Normal", "PhaseHealthy")]


@pytest.mark.parametrize(
    ("observed", "phase"),
    [
        pytest.param(seen("1.0", 3, 3, up_to_date=False), "Progressing", id="deployment-not-caught-up"),
        pytest.param(seen("1.0", 2, 2), "Progressing", id="deployment-not-scaled-yet"),
        pytest.param(seen("1.0", 4, 4), "Progressing", id="deployment-still-larger"),
        pytest.param(seen("1.0", 3, 2), "Progressing", id="one-not-ready"),
        pytest.param(seen("1.0", 3, 3), "Healthy", id="settled"),
    ],
)
def test_healthy_only_when_the_deployment_has_settled(observed: ObservedRevision, phase: str) -> None:
    assert step("1.0", observed, status=first_visit().status, now=at(30)).status.phase == phase


def test_first_revision_never_ready_is_degraded_without_rollback() -> None:
    before = step("1.0", seen("1.0", 3, 0), status=first_visit().status, now=at(DEADLINE - 1))
    assert before.status.phase == "Progressing"
    assert before.requeue_after == pytest.approx(1.0)

    result = step("1.0", seen("1.0", 3, 0), status=before.status, now=at(DEADLINE))
    status = result.status
    assert status.phase == "Degraded"
    assert conds(status) == {
        "Ready": ("False", "Degraded"),
        "Available": ("False", "NoReplicasReady"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
        "Degraded": ("True", "ProgressDeadlineExceeded"),
    }
    assert "0/3" in status.message
    # Nothing to fall back to: it keeps its replicas and is not marked aborted.
    assert status.aborted is None
    assert status.stable is not None
    assert status.stable.revision == V1
    assert result.replicas == {V1: 3}
    assert result.apply_revision == V1
    assert history(status) == [(V1, "Promoted", "FirstRevision")]
    assert reasons(result.events) == [("Warning", "PhaseDegraded")]
    assert result.requeue_after is None

    # When the pods come up after all, it recovers.
    recovered = step("1.0", seen("1.0", 3, 3), status=status, now=at(DEADLINE + 60))
    assert recovered.status.phase == "Healthy"
    assert reasons(recovered.events) == [("Normal", "PhaseHealthy")]


# ---------------------------------------------------------------------------------------------------------------
# Conditions and idempotence


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = first_visit().status
    partly = step("1.0", seen("1.0", 3, 1), status=first, now=at(10)).status
    healthy = step("1.0", seen("1.0", 3, 3), status=partly, now=at(30)).status
    later = step("1.0", seen("1.0", 3, 3), status=healthy, now=at(90)).status

    def times(status: api.ModelDeploymentStatus) -> dict[str, str]:
        return {c.type: c.lastTransitionTime for c in status.conditions}

    assert times(first) == dict.fromkeys(CONDITION_ORDER, ts(0))
    # Available flips at 10 s; Progressing stays True though its message changes.
    assert times(partly) == {"Ready": ts(0), "Available": ts(10), "Progressing": ts(0), "Degraded": ts(0)}
    assert cond(partly, "Progressing").message != cond(first, "Progressing").message
    assert times(healthy) == {"Ready": ts(30), "Available": ts(10), "Progressing": ts(30), "Degraded": ts(0)}
    assert times(later) == times(healthy)


def test_same_inputs_same_plan() -> None:
    status = rolling_v2().status
    first = step("2.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=status, now=at(150))
    second = step("2.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=status, now=at(150))
    assert first == second


# Each case: (pass that produced a status, the observations of the next passes, the version asked for, when). Fed
# its own status back with the same observations, a settled pass changes nothing: no status change, no events.
STEADY_STATES: dict[str, tuple[Any, tuple[ObservedRevision, ...], str, float]] = {
    "first-revision-starting": (first_visit, (seen("1.0", 3, 1),), "1.0", 60),
    "first-revision-never-ready": (first_visit, (seen("1.0", 3, 0),), "1.0", 700),
    "healthy": (healthy_v1, (seen("1.0", 3, 3),), "1.0", 60),
    "rolling": (rolling_v2, (seen("1.0", 3, 3), seen("2.0", 3, 1)), "2.0", 150),
    "promoted": (promoted_v2, (seen("1.0", 0, 0), seen("2.0", 3, 3)), "2.0", 300),
    "aborted": (aborted_v2, (seen("1.0", 3, 3), seen("2.0", 0, 0)), "2.0", 800),
}


@pytest.mark.parametrize("name", list(STEADY_STATES))
def test_a_pass_over_its_own_status_changes_nothing(name: str) -> None:
    produce, observed, version, when = STEADY_STATES[name]
    previous: Plan = produce()
    # Promotion and abort rescale the old revision; the next pass sees the result of that write.
    settled = step(version, *observed, status=previous.status, now=at(when))
    again = step(version, *observed, status=settled.status, now=at(when + 10))
    assert again.status == settled.status
    assert again.events == []
    assert again.replicas == settled.replicas
    assert again.apply_revision == settled.apply_revision
    assert settled.status.phase == previous.status.phase or name == "first-revision-never-ready"


# ---------------------------------------------------------------------------------------------------------------
# Rolling out a new revision


def test_replica_change_keeps_the_revision() -> None:
    result = step("1.0", seen("1.0", 3, 3), status=healthy_v1().status, now=at(60), replicas=5)
    status = result.status
    assert status.canary is None
    assert status.stable is not None
    assert status.stable.revision == V1
    assert result.replicas == {V1: 5}
    assert result.apply_revision == V1
    assert status.phase == "Progressing"
    assert conds(status)["Progressing"] == ("True", "ScalingReplicas")
    assert conds(status)["Ready"][0] == "False"
    assert ("Normal", "RolloutStarted") not in reasons(result.events)
    assert history(status) == [(V1, "Promoted", "FirstRevision")]

    scaled = step("1.0", seen("1.0", 5, 5), status=status, now=at(90), replicas=5)
    assert scaled.status.phase == "Healthy"


def test_new_version_starts_a_canary() -> None:
    result = rolling_v2()
    status = result.status
    assert status.stable is not None
    assert (status.stable.revision, status.stable.version, status.stable.readyReplicas) == (V1, "1.0", 3)
    assert track(status.canary) == ("2.0", V2, 3, 0, ts(100))
    assert result.replicas == {V1: 3, V2: 3}
    assert result.apply_revision == V2
    assert status.phase == "Progressing"
    assert conds(status) == {
        "Ready": ("False", "Progressing"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "RevisionProgressing"),
        "Degraded": ("False", "AsExpected"),
    }
    assert result.requeue_after == DEADLINE
    assert reasons(result.events) == [("Normal", "RolloutStarted"), ("Normal", "PhaseProgressing")]
    assert history(status) == [(V1, "Promoted", "FirstRevision")]


def test_canary_progress_counts_down_the_deadline() -> None:
    result = step("2.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=rolling_v2().status, now=at(160))
    assert result.status.canary is not None
    assert result.status.canary.since == ts(100)
    assert (result.status.canary.replicas, result.status.canary.readyReplicas) == (3, 1)
    assert result.replicas == {V2: 3, V1: 2}
    assert result.requeue_after == DEADLINE - 60
    assert result.events == []


@pytest.mark.parametrize(
    "canary",
    [
        pytest.param(seen("2.0", 3, 2), id="not-all-ready"),
        pytest.param(seen("2.0", 3, 3, up_to_date=False), id="deployment-not-caught-up"),
        pytest.param(seen("2.0", 2, 2), id="deployment-smaller-than-spec"),
    ],
)
def test_canary_not_yet_ready_is_not_promoted(canary: ObservedRevision) -> None:
    result = step("2.0", seen("1.0", 3, 3), canary, status=rolling_v2().status, now=at(200))
    assert result.status.canary is not None
    assert result.status.canary.revision == V2
    assert result.status.stable is not None
    assert result.status.stable.revision == V1
    assert result.status.phase == "Progressing"


def test_a_canary_whose_controller_has_not_caught_up_leaves_the_stable_where_it_is() -> None:
    """Just after the canary is scaled (at the final stage, say) its ready count is unknown until its controller
    sees the new spec: the stable neither takes pods back (they would start and stop for nothing) nor gives any up."""
    canary = seen("2.0", 3, 1, up_to_date=False)
    result = step("2.0", seen("1.0", 2, 2), canary, status=rolling_v2().status, now=at(150))
    assert result.replicas == {V2: 3, V1: 2}
    caught_up = step("2.0", seen("1.0", 2, 2), seen("2.0", 3, 2), status=rolling_v2().status, now=at(151))
    assert caught_up.replicas == {V2: 3, V1: 1}, "once it has, the stable gives up a pod per ready canary pod"


def test_canary_all_ready_is_promoted() -> None:
    result = promoted_v2()
    status = result.status
    assert status.stable is not None
    assert (status.stable.revision, status.stable.version, status.stable.since) == (V2, "2.0", ts(200))
    assert status.canary is None
    assert status.aborted is None
    # The old revision is kept at zero for a fast return.
    assert result.replicas == {V2: 3, V1: 0}
    assert result.apply_revision == V2
    assert history(status) == [(V2, "Promoted", "RevisionReady"), (V1, "Promoted", "FirstRevision")]
    assert status.history[0].time == ts(200)
    assert status.phase == "Healthy"
    assert conds(status)["Ready"] == ("True", "AllReplicasReady")
    assert reasons(result.events) == [("Normal", "Promoted"), ("Normal", "PhaseHealthy")]
    assert result.requeue_after is None


def test_canary_past_deadline_is_aborted() -> None:
    just_before = step(
        "2.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=rolling_v2().status, now=at(100 + DEADLINE - 0.001)
    )
    assert just_before.status.canary is not None
    assert just_before.requeue_after == pytest.approx(0.001)

    result = aborted_v2()
    status = result.status
    assert status.aborted is not None
    assert (status.aborted.revision, status.aborted.version, status.aborted.reason) == (
        V2,
        "2.0",
        "ProgressDeadlineExceeded",
    )
    assert status.aborted.time == ts(100 + DEADLINE)
    assert "2.0" in status.aborted.message
    assert V2 in status.aborted.message
    assert status.canary is None
    assert status.stable is not None
    assert (status.stable.revision, status.stable.since) == (V1, ts(0))
    assert result.replicas == {V1: 3, V2: 0}
    assert status.phase == "Degraded"
    assert status.message == status.aborted.message
    assert conds(status) == {
        "Ready": ("False", "Degraded"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
        "Degraded": ("True", "ProgressDeadlineExceeded"),
    }
    assert history(status)[0] == (V2, "RolledBack", "ProgressDeadlineExceeded")
    assert ("Warning", "ProgressDeadlineExceeded") in reasons(result.events)
    assert all(e.type == "Warning" for e in result.events)
    assert result.requeue_after is None


def test_deadline_survives_a_restart_to_the_microsecond() -> None:
    start = at(100.123456)
    rolling = step("2.0", seen("1.0", 3, 3), status=healthy_v1().status, now=start)
    assert rolling.status.canary is not None
    assert rolling.status.canary.since == format_time(start)
    edge = start + timedelta(seconds=DEADLINE)
    before = step("2.0", seen("2.0", 3, 0), status=rolling.status, now=edge - timedelta(microseconds=1))
    assert before.status.canary is not None
    after = step("2.0", seen("2.0", 3, 0), status=rolling.status, now=edge)
    assert after.status.aborted is not None


def test_aborted_revision_is_not_retried() -> None:
    aborted = aborted_v2().status
    result = step("2.0", seen("1.0", 3, 3), seen("2.0", 0, 0), status=aborted, now=at(5000))
    status = result.status
    assert status.canary is None
    assert status.aborted == aborted.aborted
    assert status.phase == "Degraded"
    assert result.replicas == {V1: 3, V2: 0}
    assert status.history == aborted.history
    assert result.events == []
    assert result.requeue_after is None


def test_new_version_after_abort_rolls_out() -> None:
    result = step("3.0", seen("1.0", 3, 3), seen("2.0", 0, 0), status=aborted_v2().status, now=at(1000))
    status = result.status
    assert status.aborted is None
    assert status.canary is not None
    assert (status.canary.revision, status.canary.since) == (V3, ts(1000))
    assert status.phase == "Progressing"
    assert conds(status)["Degraded"] == ("False", "AsExpected")
    # The aborted revision is still in the history, so it is kept at zero.
    assert result.replicas == {V1: 3, V3: 3, V2: 0}
    assert reasons(result.events) == [("Normal", "RolloutStarted"), ("Normal", "PhaseProgressing")]


def test_spec_back_to_stable_after_abort_is_healthy() -> None:
    result = step("1.0", seen("1.0", 3, 3), seen("2.0", 0, 0), status=aborted_v2().status, now=at(1000))
    assert result.status.aborted is None
    assert result.status.phase == "Healthy"
    assert result.replicas == {V1: 3, V2: 0}
    assert reasons(result.events) == [("Normal", "PhaseHealthy")]


def test_spec_reverted_mid_rollout_drops_the_canary() -> None:
    result = step("1.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=rolling_v2().status, now=at(150))
    status = result.status
    assert status.canary is None
    assert status.aborted is None
    assert status.stable is not None
    assert status.stable.revision == V1
    assert history(status)[0] == (V2, "RolledBack", "SpecReverted")
    assert status.history[0].time == ts(150)
    assert result.replicas == {V1: 3, V2: 0}
    assert result.apply_revision == V1
    assert status.phase == "Healthy"
    assert reasons(result.events) == [("Normal", "RolledBack"), ("Normal", "PhaseHealthy")]


def test_third_version_mid_rollout_supersedes_the_canary() -> None:
    result = step("3.0", seen("1.0", 3, 3), seen("2.0", 3, 1), status=rolling_v2().status, now=at(300))
    status = result.status
    assert history(status)[0] == (V2, "Superseded", "NewerRevision")
    assert status.canary is not None
    assert (status.canary.revision, status.canary.version, status.canary.since) == (V3, "3.0", ts(300))
    assert status.stable is not None
    assert status.stable.revision == V1
    assert result.replicas == {V1: 3, V3: 3, V2: 0}
    assert result.apply_revision == V3
    assert result.requeue_after == DEADLINE
    assert status.phase == "Progressing"
    assert reasons(result.events) == [("Normal", "Superseded"), ("Normal", "RolloutStarted")]


def test_back_to_an_old_revision_rolls_it_out_again() -> None:
    result = step("1.0", seen("1.0", 0, 0), seen("2.0", 3, 3), status=promoted_v2().status, now=at(400))
    status = result.status
    assert status.canary is not None
    assert (status.canary.revision, status.canary.since) == (V1, ts(400))
    assert result.replicas == {V2: 3, V1: 3}
    promoted = step("1.0", seen("1.0", 3, 3), seen("2.0", 3, 3), status=status, now=at(450))
    assert promoted.status.stable is not None
    assert promoted.status.stable.revision == V1
    assert promoted.replicas == {V1: 3, V2: 0}


# ---------------------------------------------------------------------------------------------------------------
# Retention and history


def promoted_chain(versions: list[str]) -> api.ModelDeploymentStatus:
    """A status whose history has each version promoted in turn, the last one serving."""
    entries = [
        api.HistoryEntry(
            revision=REV[v],
            version=v,
            outcome="Promoted",
            reason="FirstRevision" if i == 0 else "RevisionReady",
            time=ts(i * 100),
        )
        for i, v in enumerate(versions)
    ]
    last = versions[-1]
    return api.ModelDeploymentStatus(
        stable=api.TrackStatus(version=last, revision=REV[last], since=ts((len(versions) - 1) * 100)),
        history=list(reversed(entries)),
    )


@pytest.mark.parametrize(
    ("retained", "kept"),
    [
        # The count is of distinct revisions in history, newest first, the serving one included.
        (1, ["5.0"]),
        (2, ["5.0", "4.0"]),
        (3, ["5.0", "4.0", "3.0"]),
        (5, ["5.0", "4.0", "3.0", "2.0", "1.0"]),
    ],
)
def test_revisions_beyond_retention_are_deleted(retained: int, kept: list[str]) -> None:
    versions = ["1.0", "2.0", "3.0", "4.0", "5.0"]
    status = promoted_chain(versions)
    observed = [seen(v, 0, 0) for v in versions[:-1]] + [seen("5.0", 3, 3)]
    result = step("5.0", *observed, status=status, now=at(1000), retained=retained, rollback_window=0)
    assert result.replicas == {REV[v]: 3 if v == "5.0" else 0 for v in kept}
    assert result.status.phase == "Healthy"


@pytest.mark.parametrize(
    ("window", "kept"),
    [
        (0, ["5.0"]),
        (2, ["5.0", "4.0"]),
        (4, ["5.0", "4.0", "3.0", "2.0"]),
    ],
)
def test_rollback_window_keeps_recently_served_revisions(window: int, kept: list[str]) -> None:
    versions = ["1.0", "2.0", "3.0", "4.0", "5.0"]
    observed = [seen(v, 0, 0) for v in versions[:-1]] + [seen("5.0", 3, 3)]
    result = step("5.0", *observed, status=promoted_chain(versions), now=at(1000), retained=1, rollback_window=window)
    assert result.replicas == {REV[v]: 3 if v == "5.0" else 0 for v in kept}


def test_return_to_a_recently_served_revision_is_fast_tracked() -> None:
    status = promoted_chain(["1.0", "2.0", "3.0"])
    back = step("2.0", seen("2.0", 0, 0), seen("3.0", 3, 3), status=status, now=at(1000))
    assert back.status.canary is not None
    assert back.status.canary.fastTrack is True
    new = step("4.0", seen("3.0", 3, 3), status=status, now=at(1000))
    assert new.status.canary is not None
    assert new.status.canary.fastTrack is False
    outside = step("1.0", seen("3.0", 3, 3), status=status, now=at(1000), rollback_window=2)
    assert outside.status.canary is not None
    assert outside.status.canary.fastTrack is False


def test_unknown_revisions_are_deleted() -> None:
    stray = ObservedRevision(revision="rzzzzzzzzz", version="0.1", replicas=1, ready_replicas=1)
    result = step("1.0", seen("1.0", 3, 3), stray, status=healthy_v1().status, now=at(60))
    assert result.replicas == {V1: 3}


def test_aborted_revision_is_kept_beyond_retention() -> None:
    result = step("2.0", seen("1.0", 3, 3), seen("2.0", 3, 0), status=rolling_v2().status, now=at(800), retained=1)
    assert result.status.aborted is not None
    assert result.replicas == {V1: 3, V2: 0}


def test_history_is_newest_first_and_limited() -> None:
    status = promoted_chain(["1.0", "2.0", "3.0"])
    result = step("4.0", seen("3.0", 3, 3), status=status, now=at(1000), history_limit=3)
    result = step("4.0", seen("3.0", 3, 3), seen("4.0", 3, 3), status=result.status, now=at(1100), history_limit=3)
    assert [h.version for h in result.status.history] == ["4.0", "3.0", "2.0"]
    assert result.status.history[0].time == ts(1100)


# ---------------------------------------------------------------------------------------------------------------
# Zero replicas and the Ready invariant


def test_zero_replicas_is_healthy_and_available() -> None:
    first = first_visit(replicas=0)
    assert first.replicas == {V1: 0}
    result = step("1.0", seen("1.0", 0, 0), status=first.status, now=at(5), replicas=0)
    assert result.status.phase == "Healthy"
    assert conds(result.status)["Available"] == ("True", "MinimumReplicasAvailable")
    assert conds(result.status)["Ready"] == ("True", "AllReplicasReady")


def test_zero_replicas_promotes_a_new_revision_at_once() -> None:
    healthy = step("1.0", seen("1.0", 0, 0), status=first_visit(replicas=0).status, now=at(5), replicas=0)
    # No pod to wait for: promoted in the pass that starts it.
    promoted = step("2.0", seen("1.0", 0, 0), status=healthy.status, now=at(10), replicas=0)
    assert promoted.status.canary is None
    assert promoted.status.stable is not None
    assert promoted.status.stable.revision == V2
    assert history(promoted.status)[0] == (V2, "Promoted", "RevisionReady")
    assert promoted.replicas == {V2: 0, V1: 0}
    assert promoted.apply_revision == V2
    settled = step("2.0", seen("1.0", 0, 0), seen("2.0", 0, 0), status=promoted.status, now=at(11), replicas=0)
    assert settled.status.phase == "Healthy"


def ready_invariant_cases() -> Iterable[Any]:
    for replicas in (1, 3):
        for ready in range(replicas + 1):
            for up_to_date in (True, False):
                for when in (60, 5000):
                    yield pytest.param(
                        replicas, ready, up_to_date, when, id=f"replicas{replicas}-ready{ready}-{up_to_date}-{when}s"
                    )


@pytest.mark.parametrize(("replicas", "ready", "up_to_date", "when"), list(ready_invariant_cases()))
def test_ready_is_never_true_while_replicas_are_missing(replicas: int, ready: int, up_to_date: bool, when: int) -> None:
    observed = seen("1.0", replicas, ready, up_to_date=up_to_date)
    results = [
        step("1.0", observed, status=first_visit(replicas).status, now=at(when), replicas=replicas),
        step("1.0", observed, status=healthy_v1(replicas).status, now=at(when), replicas=replicas),
    ]
    # Mid-rollout and after a promotion, with the serving revision in the same state.
    rolling = step(
        "2.0", seen("1.0", replicas, replicas), status=healthy_v1(replicas).status, now=at(50), replicas=replicas
    )
    results.append(
        step(
            "2.0",
            seen("1.0", replicas, ready, up_to_date=up_to_date),
            status=rolling.status,
            now=at(55),
            replicas=replicas,
        )
    )
    promoted = step(
        "2.0",
        seen("1.0", replicas, replicas),
        seen("2.0", replicas, replicas),
        status=rolling.status,
        now=at(60),
        replicas=replicas,
    )
    results.append(
        step(
            "2.0",
            seen("2.0", replicas, ready, up_to_date=up_to_date),
            status=promoted.status,
            now=at(when),
            replicas=replicas,
        )
    )
    readiness = [cond(result.status, "Ready").status for result in results]
    if ready < replicas or not up_to_date:
        assert readiness == ["False"] * 4
    else:
        # Everything ready: Ready, except while a rollout is still going on.
        assert readiness == ["True", "True", "False", "True"]


# ---------------------------------------------------------------------------------------------------------------
# Known defect


@pytest.mark.parametrize(
    ("observed", "replicas"),
    [
        pytest.param(seen("1.0", 3, 3), 5, id="scale-up"),
        pytest.param(seen("1.0", 3, 3), 1, id="scale-down-not-applied-yet"),
        pytest.param(seen("1.0", 3, 2), 3, id="pod-lost"),
    ],
)
def test_healthy_first_revision_changing_scale_later_is_progressing(observed: ObservedRevision, replicas: int) -> None:
    # Healthy since 30 s; two hours later the replica count changes (or a pod dies).
    result = step("1.0", observed, status=healthy_v1().status, now=at(7200), replicas=replicas)
    # What a promoted revision reports in the same situation:
    assert result.status.phase == "Progressing"
    assert conds(result.status)["Degraded"] == ("False", "AsExpected")
    assert conds(result.status)["Progressing"] == ("True", "ScalingReplicas")


@pytest.mark.parametrize(
    ("observed", "replicas"),
    [
        pytest.param(seen("2.0", 3, 3), 5, id="scale-up"),
        pytest.param(seen("2.0", 3, 3), 1, id="scale-down-not-applied-yet"),
        pytest.param(seen("2.0", 3, 2), 3, id="pod-lost"),
    ],
)
def test_promoted_revision_changing_scale_later_is_progressing(observed: ObservedRevision, replicas: int) -> None:
    settled = step("2.0", seen("1.0", 0, 0), seen("2.0", 3, 3), status=promoted_v2().status, now=at(210))
    result = step("2.0", observed, status=settled.status, now=at(7200), replicas=replicas)
    assert result.status.phase == "Progressing"
    assert conds(result.status)["Degraded"] == ("False", "AsExpected")
    assert conds(result.status)["Progressing"] == ("True", "ScalingReplicas")


# ---------------------------------------------------------------------------------------------------------------
# Canary strategy: steps, pauses and requests


STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {"duration": "60s"}},
    {"setWeight": 50},
    {"pause": {"duration": "60s"}},
]
OPEN_PAUSE: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}]


def canary_step(*observed: ObservedRevision, status: Status, now: datetime, **kwargs: Any) -> Plan:
    kwargs.setdefault("steps", STEPS)
    return step("2.0", *observed, status=status, now=now, replicas=5, **kwargs)


def weights(status: api.ModelDeploymentStatus) -> tuple[int | None, int, int]:
    """(currentStepIndex, desiredWeight, actualWeight)."""
    assert status.canary is not None
    return status.currentStepIndex, status.canary.desiredWeight, status.canary.actualWeight


def canary_started(steps: list[dict[str, Any]] = STEPS) -> Plan:
    """2.0 started at 100 s with `steps`, 1.0 serving 5 replicas."""
    return canary_step(seen("1.0", 5, 5), status=healthy_v1(5).status, now=at(100), steps=steps)


def test_canary_walks_through_its_steps() -> None:
    p = canary_started()
    assert weights(p.status) == (0, 20, 0)
    # 20% of 5 replicas is one pod; the stable keeps all five until it is ready.
    assert p.replicas == {V1: 5, V2: 1}
    assert p.status.phase == "Progressing"
    assert conds(p.status)["Progressing"] == ("True", "RevisionProgressing")
    assert p.requeue_after == DEADLINE
    assert ("Normal", "RolloutStarted") in reasons(p.events)

    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 1), status=p.status, now=at(110))
    assert p.replicas == {V1: 4, V2: 1}
    # The step is done only once the stable has given up its share.
    assert weights(p.status) == (0, 20, 17)

    p = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(120))
    assert weights(p.status) == (1, 20, 20)
    assert p.status.pause is not None
    assert (p.status.pause.reason, p.status.pause.startedAt, p.status.pause.endsAt) == ("PauseStep", ts(120), ts(180))
    assert p.status.phase == "Paused"
    assert conds(p.status)["Progressing"] == ("True", "RolloutPaused")
    assert conds(p.status)["Ready"] == ("False", "Paused")
    assert p.requeue_after == 60
    assert p.replicas == {V1: 4, V2: 1}
    assert [(e.reason, e.message) for e in p.events] == [
        ("StepCompleted", "Step 1/4 of 2.0 completed (setWeight 20)"),
        ("PhasePaused", p.status.message),
    ]

    p = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(150))
    assert p.status.phase == "Paused"
    assert p.requeue_after == 30
    assert p.events == []

    # Noticed 5 s late: a setWeight step starts when it is first asked for, so its deadline is whole.
    p = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(185))
    assert weights(p.status) == (2, 50, 20)
    assert p.status.pause is None
    assert p.status.stepStartedAt == ts(185)
    assert p.status.phase == "Progressing"
    assert p.replicas == {V1: 4, V2: 3}
    assert p.requeue_after == DEADLINE
    assert [(e.reason, e.message) for e in p.events] == [
        ("StepCompleted", "Step 2/4 of 2.0 completed (pause 60s)"),
        ("PhaseProgressing", p.status.message),
    ]

    p = canary_step(seen("1.0", 4, 4), seen("2.0", 3, 3), status=p.status, now=at(200))
    assert p.replicas == {V1: 2, V2: 3}
    p = canary_step(seen("1.0", 2, 2), seen("2.0", 3, 3), status=p.status, now=at(210))
    assert weights(p.status) == (3, 50, 60)
    assert p.status.phase == "Paused"

    # Past the last step the canary comes up in full; the stable goes as its pods get ready.
    p = canary_step(seen("1.0", 2, 2), seen("2.0", 3, 3), status=p.status, now=at(270))
    assert weights(p.status) == (4, 100, 60)
    assert p.replicas == {V1: 2, V2: 5}
    assert p.status.phase == "Progressing"

    p = canary_step(seen("1.0", 2, 2), seen("2.0", 5, 5), status=p.status, now=at(300))
    assert p.status.canary is None
    assert track(p.status.stable) == ("2.0", V2, 5, 5, ts(300))
    assert p.status.currentStepIndex is None
    assert p.status.pause is None
    assert p.replicas == {V2: 5, V1: 0}
    assert p.status.phase == "Healthy"
    assert history(p.status)[0] == (V2, "Promoted", "RevisionReady")


def test_setweight_step_has_its_own_deadline() -> None:
    p = canary_started()
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 0), status=p.status, now=at(100 + DEADLINE))
    assert p.status.aborted is not None
    assert p.status.aborted.reason == "ProgressDeadlineExceeded"
    assert p.replicas == {V1: 5, V2: 0}
    assert p.status.phase == "Degraded"


def test_open_pause_waits_for_a_promote_request() -> None:
    p = canary_started(OPEN_PAUSE)
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 1), status=p.status, now=at(110), steps=OPEN_PAUSE)
    p = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(120), steps=OPEN_PAUSE)
    assert p.status.pause is not None
    assert (p.status.pause.reason, p.status.pause.endsAt) == ("PromotionRequired", None)
    assert p.status.phase == "Paused"
    # An open pause has no deadline and no timer.
    assert p.requeue_after is None
    p = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(50_000), steps=OPEN_PAUSE)
    assert p.status.phase == "Paused"
    assert p.status.aborted is None
    assert p.events == []

    request = {"promote": {"id": "promote-1"}}
    p = canary_step(
        seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(50_010), steps=OPEN_PAUSE, commands=request
    )
    assert p.status.acknowledged.promote == "promote-1"
    assert reasons(p.events) == [("Normal", "PauseEnded"), ("Normal", "PhaseProgressing")], "not StepCompleted too"
    assert weights(p.status) == (2, 100, 20)
    assert p.replicas == {V1: 4, V2: 5}
    assert p.status.stepStartedAt == ts(50_010)

    # The same request again is not acted on twice.
    p = canary_step(
        seen("1.0", 4, 4), seen("2.0", 5, 5), status=p.status, now=at(50_020), steps=OPEN_PAUSE, commands=request
    )
    assert ("Normal", "PauseEnded") not in reasons(p.events)
    assert p.status.stable is not None
    assert p.status.stable.revision == V2


def test_full_promote_skips_every_step() -> None:
    p = canary_started()
    p = canary_step(
        seen("1.0", 5, 5), status=p.status, now=at(110), commands={"promote": {"id": "promote-9", "full": True}}
    )
    assert ("Normal", "PromotedFully") in reasons(p.events)
    assert weights(p.status) == (len(STEPS), 100, 0)
    assert p.replicas == {V1: 5, V2: 5}


def test_spec_paused_freezes_the_rollout_and_resuming_restarts_the_step_clock() -> None:
    p = canary_started()
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 0), status=p.status, now=at(200), paused=True)
    assert p.status.pause is not None
    assert (p.status.pause.reason, p.status.pause.startedAt) == ("SpecPaused", ts(200))
    assert p.status.phase == "Paused"
    assert ("Normal", "Paused") in reasons(p.events)
    assert p.replicas == {V1: 5, V2: 1}
    # Paused long past the deadline: nothing is aborted.
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 0), status=p.status, now=at(5000), paused=True)
    assert p.status.aborted is None
    assert p.status.phase == "Paused"
    assert p.events == []

    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 0), status=p.status, now=at(5100))
    assert ("Normal", "Resumed") in reasons(p.events)
    assert p.status.pause is None
    assert p.status.stepStartedAt == ts(5100)
    assert p.status.phase == "Progressing"
    assert p.requeue_after == DEADLINE


def test_abort_request_then_retry_request() -> None:
    p = canary_started()
    requests: dict[str, Any] = {"abort": {"id": "abort-1"}}
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 1), status=p.status, now=at(150), commands=requests)
    assert p.status.aborted is not None
    assert (p.status.aborted.revision, p.status.aborted.reason) == (V2, "Aborted")
    assert history(p.status)[0] == (V2, "Aborted", "Aborted")
    assert p.status.canary is None
    assert p.status.acknowledged.abort == "abort-1"
    assert p.replicas == {V1: 5, V2: 0}
    assert p.status.phase == "Degraded"
    assert ("Warning", "Aborted") in reasons(p.events)

    # Not retried on its own.
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 0, 0), status=p.status, now=at(200), commands=requests)
    assert p.status.canary is None
    assert p.events == []

    requests["retry"] = {"id": "retry-1"}
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 0, 0), status=p.status, now=at(300), commands=requests)
    assert p.status.aborted is None
    assert p.status.acknowledged.retry == "retry-1"
    assert p.status.canary is not None
    assert (p.status.canary.revision, p.status.canary.since) == (V2, ts(300))
    assert weights(p.status) == (0, 20, 0)
    assert reasons(p.events)[:2] == [("Normal", "RetryRequested"), ("Normal", "RolloutStarted")]


def test_requests_without_a_rollout_are_answered_once() -> None:
    healthy = healthy_v1(5).status
    requests = {"promote": {"id": "p-1"}, "abort": {"id": "a-1"}}
    p = step("1.0", seen("1.0", 5, 5), status=healthy, now=at(60), replicas=5, steps=STEPS, commands=requests)
    assert reasons(p.events) == [("Normal", "PromoteIgnored"), ("Normal", "AbortIgnored")]
    assert (p.status.acknowledged.promote, p.status.acknowledged.abort) == ("p-1", "a-1")
    assert p.status.phase == "Healthy"
    again = step("1.0", seen("1.0", 5, 5), status=p.status, now=at(70), replicas=5, steps=STEPS, commands=requests)
    assert again.events == []


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}], id="open-pause"),
        pytest.param([{"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 50}], id="timed-pause"),
    ],
)
def test_promote_past_a_pause_clears_it(steps: list[dict[str, Any]]) -> None:
    p = canary_started(steps)
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 1, 1), status=p.status, now=at(110), steps=steps)
    p = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=p.status, now=at(120), steps=steps)
    assert p.status.phase == "Paused"
    p = canary_step(
        seen("1.0", 4, 4),
        seen("2.0", 1, 1),
        status=p.status,
        now=at(130),
        steps=steps,
        commands={"promote": {"id": "x"}},
    )
    assert weights(p.status)[:2] == (2, 50)
    assert p.status.pause is None
    assert p.status.phase == "Progressing"
    assert conds(p.status)["Progressing"] == ("True", "RevisionProgressing")


def test_a_late_pass_does_not_abort_a_step_that_has_not_started_yet() -> None:
    steps: list[dict[str, Any]] = [{"pause": {"duration": "60s"}}, {"setWeight": 50}]
    p = canary_started(steps)
    assert p.replicas == {V1: 5, V2: 0}
    # The operator was down from just after the start until after pause end + deadline.
    p = canary_step(seen("1.0", 5, 5), seen("2.0", 0, 0), status=p.status, now=at(100 + 60 + DEADLINE), steps=steps)
    assert p.status.aborted is None
    assert weights(p.status)[:2] == (1, 50)
    assert p.replicas[V2] == 3


def test_a_setweight_step_waits_for_the_stable_controller_to_see_its_scale_down() -> None:
    p = canary_started()
    # The canary pod is ready and the stable asked for 4, but its controller has not caught up: still 5 ready.
    stale = canary_step(seen("1.0", 4, 5, up_to_date=False), seen("2.0", 1, 1), status=p.status, now=at(101))
    assert stale.status.currentStepIndex == 0
    # Caught up: the stable gave way, the step is done and the pause begins.
    done = canary_step(seen("1.0", 4, 4), seen("2.0", 1, 1), status=stale.status, now=at(102))
    assert done.status.currentStepIndex == 1
    assert done.status.phase == "Paused"
