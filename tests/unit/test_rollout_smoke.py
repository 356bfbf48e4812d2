"""The smoke gate in the planner: a canary with spec.rollout.smokeTest takes no traffic, mirrored or not, until a
round on its first pods passed; a failed round rolls it back before any traffic; a Passed verdict counts only with
the evidence on the canary's Deployment. Driven pass by pass like test_rollout.py, the rounds' verdicts fed in as
the reconciler would (no requests here: test_smoke.py sends real ones)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy.analysis.smoke import SmokeRound, Verdict
from modeldeploy.api import models as api
from modeldeploy.rollout import plan as rollout
from modeldeploy.rollout import smoke as gate
from modeldeploy.rollout.plan import ObservedRevision, Plan, RouteState

from .conftest import build_resource

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
REV = {"1.0": "ra10000000", "2.0": "rb20000000"}
V1, V2 = REV["1.0"], REV["2.0"]
SMOKE = {"cases": [{"name": "typical", "input": [[0.5, 1.0]], "expected": [[0.5]]}]}
ROUTING = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}


def seen(version: str, replicas: int, ready: int, smoke_passed: str = "") -> ObservedRevision:
    return ObservedRevision(
        revision=REV[version], version=version, replicas=replicas, ready_replicas=ready, smoke_passed=smoke_passed
    )


def passed(revision: str = V2) -> SmokeRound:
    return SmokeRound(revision, ("c-1",), (Verdict("typical", "c-1", True),))


def failed(revision: str = V2) -> SmokeRound:
    verdicts = (Verdict("typical", "c-1", False, "output 0 is 1.5, the reference 0.5"),)
    return SmokeRound(revision, ("c-1",), verdicts, "case typical (input [0.5, 1]) on pod c-1: output 0 is 1.5")


def step(
    version: str,
    *observed: ObservedRevision,
    status: api.ModelDeploymentStatus | None = None,
    seconds: float = 0,
    smoke_round: SmokeRound | None = None,
    steps: list[dict[str, Any]] | None = None,
    routed: bool = False,
    route: RouteState | None = None,
) -> Plan:
    spec: dict[str, Any] = {
        "model": {"version": version},
        "replicas": 4,
        "rollout": {"steps": steps or [{"setWeight": 25}, {"pause": {}}], "smokeTest": SMOKE},
    }
    if routed:
        spec["trafficRouting"] = ROUTING
    resource = build_resource(spec, status=status.model_dump(mode="json") if status is not None else None)
    return rollout.plan(
        resource,
        REV[version],
        {o.revision: o for o in observed},
        T0 + timedelta(seconds=seconds),
        model="m",
        url="http://m",
        route=route,
        smoke_round=smoke_round,
    )


def serving_v1(routed: bool = False) -> api.ModelDeploymentStatus:
    route = RouteState(weight=0, mirror=False, accepted=True) if routed else None
    first = step("1.0", routed=routed, route=route)
    return step("1.0", seen("1.0", 4, 4), status=first.status, routed=routed, route=route).status


def test_the_canary_is_smoke_tested_before_any_traffic_then_walks_its_steps() -> None:
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1())
    # Gated: the pods of its first traffic step (25 % of 4: one), the stable keeps all four, no traffic.
    assert started.replicas == {V1: 4, V2: 1}
    assert not started.canary_admitted
    assert started.status.canary is not None
    assert (started.status.canary.desiredWeight, started.status.canary.actualWeight) == (25, 0)
    # The canary's pod is Ready: still gated until a round is judged (the reconciler runs it once smoke_due).
    waiting = step("2.0", v1, seen("2.0", 1, 1), status=started.status, seconds=5)
    assert (waiting.replicas, waiting.canary_admitted) == ({V1: 4, V2: 1}, False)
    assert waiting.status.currentStepIndex == 0
    # Passed: the walk begins in the same pass; the stable gives way as the ratio router asks.
    admitted = step("2.0", v1, seen("2.0", 1, 1), status=waiting.status, seconds=6, smoke_round=passed())
    assert admitted.canary_admitted
    assert admitted.replicas == {V1: 3, V2: 1}
    assert admitted.smoke_evidence == (V2, admitted.status.canary.since if admitted.status.canary else None)
    assert admitted.status.canary is not None
    assert admitted.status.canary.smokeTest is not None
    verdict = admitted.status.canary.smokeTest
    assert (verdict.phase, verdict.requests, verdict.failures, verdict.pods) == ("Passed", 1, 0, ["c-1"])
    assert [event.reason for event in admitted.events] == ["SmokeTestPassed"]
    # Later passes carry the verdict on, with the evidence on the canary's Deployment.
    since = admitted.status.canary.since or ""
    later = step("2.0", seen("1.0", 3, 3), seen("2.0", 1, 1, since), status=admitted.status, seconds=7)
    assert later.canary_admitted
    assert later.status.currentStepIndex == 1  # the open pause after 25 %
    assert later.status.canary is not None
    assert later.status.canary.smokeTest == verdict


def test_a_failed_round_rolls_the_canary_back_before_any_traffic() -> None:
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1())
    after = step("2.0", v1, seen("2.0", 1, 1), status=started.status, seconds=5, smoke_round=failed())
    assert after.status.canary is None
    assert after.status.aborted is not None
    assert after.status.aborted.reason == gate.SMOKE_TEST_FAILED
    assert "failed its smoke test" in after.status.aborted.message
    assert "case typical (input [0.5, 1]) on pod c-1: output 0 is 1.5" in after.status.aborted.message
    assert after.replicas == {V1: 4, V2: 0}
    warnings = [event for event in after.events if event.type == "Warning"]
    assert [event.reason for event in warnings] == [gate.SMOKE_TEST_FAILED, "PhaseDegraded"]
    degraded = next(c for c in after.status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", gate.SMOKE_TEST_FAILED)


def test_a_round_for_another_revision_is_not_taken_for_this_ones() -> None:
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1())
    after = step("2.0", v1, seen("2.0", 1, 1), status=started.status, seconds=5, smoke_round=passed(V1))
    assert not after.canary_admitted


def test_pods_that_never_get_ready_end_at_the_progress_deadline() -> None:
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1())
    late = step("2.0", v1, seen("2.0", 1, 0), status=started.status, seconds=601)
    assert late.status.aborted is not None
    assert late.status.aborted.reason == "ProgressDeadlineExceeded"


def test_behind_a_gateway_the_route_holds_nothing_and_mirrors_nothing_until_passed() -> None:
    steps: list[dict[str, Any]] = [{"setMirror": {}}, {"pause": {"duration": "60s"}}, {"setWeight": 5}]
    route = RouteState(weight=0, mirror=False, accepted=True)
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1(routed=True), steps=steps, routed=True, route=route)
    # The mirror step runs the canary at full size: all four are smoke-tested before the mirror starts.
    assert started.replicas == {V1: 4, V2: 4}
    assert (started.route_weight, started.mirror, started.canary_admitted) == (0, False, False)
    ready = seen("2.0", 4, 4)
    admitted = step(
        "2.0", v1, ready, status=started.status, seconds=5, smoke_round=passed(), steps=steps, routed=True, route=route
    )
    assert (admitted.route_weight, admitted.mirror, admitted.canary_admitted) == (0, True, True)


@pytest.mark.parametrize("evidence", ["", "2025-01-01T00:00:00.000000Z"])
def test_a_passed_verdict_without_evidence_for_this_rollout_is_removed_and_the_gate_holds(evidence: str) -> None:
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1())
    assert started.status.canary is not None
    forged_canary = started.status.canary.model_copy(
        update={"smokeTest": api.SmokeTestStatus(phase="Passed", requests=1, time=started.status.canary.since)}
    )
    forged = started.status.model_copy(update={"canary": forged_canary})
    after = step("2.0", v1, seen("2.0", 1, 1, evidence), status=forged, seconds=5)
    assert not after.canary_admitted
    assert after.replicas == {V1: 4, V2: 1}
    assert after.status.canary is not None
    assert after.status.canary.smokeTest is None
    repairs = [event.message for event in after.events if event.reason == "StatusRepaired"]
    assert repairs == [
        "status.canary.smokeTest: Passed, but the canary's Deployment carries no evidence of it for this rollout; "
        "removed, the smoke test runs"
    ]


def test_a_round_is_due_once_every_pod_the_gate_asks_for_is_ready() -> None:
    v1 = seen("1.0", 4, 4)
    started = step("2.0", v1, status=serving_v1())
    spec = {"model": {"version": "2.0"}, "replicas": 4, "rollout": {"smokeTest": SMOKE}}
    resource = build_resource(spec, status=started.status.model_dump(mode="json"))
    assert not gate.smoke_due(resource, V2, {V1: v1, V2: seen("2.0", 1, 0)})
    assert not gate.smoke_due(resource, V2, {V1: v1, V2: replace(seen("2.0", 1, 1), up_to_date=False)})
    assert gate.smoke_due(resource, V2, {V1: v1, V2: seen("2.0", 1, 1)})
    assert not gate.smoke_due(resource, V1, {V1: v1, V2: seen("2.0", 1, 1)})  # the spec asks for another revision
    without = build_resource(
        {"model": {"version": "2.0"}, "replicas": 4}, status=started.status.model_dump(mode="json")
    )
    assert not gate.smoke_due(without, V2, {V1: v1, V2: seen("2.0", 1, 1)})


def test_analysis_starts_once_the_canary_is_admitted_not_while_its_pods_wait() -> None:
    v1 = seen("1.0", 4, 4)
    analysis = {"interval": "30s", "metrics": [{"name": "ok", "builtin": "successRate", "min": 0.99}]}
    spec: dict[str, Any] = {
        "model": {"version": "2.0"},
        "replicas": 4,
        "rollout": {"steps": [{"setWeight": 25}, {"pause": {}}], "smokeTest": SMOKE, "analysis": analysis},
    }

    def pass_at(status: api.ModelDeploymentStatus, seconds: float, round_: SmokeRound | None = None) -> Plan:
        resource = build_resource(spec, status=status.model_dump(mode="json"))
        # The evidence the pass that judged the round wrote on the canary's Deployment.
        evidence = status.canary.since or "" if status.canary is not None and status.canary.smokeTest else ""
        observed = {V1: v1, V2: seen("2.0", 1, 1, evidence)}
        now = T0 + timedelta(seconds=seconds)
        return rollout.plan(resource, V2, observed, now, model="m", url="http://m", smoke_round=round_)

    started = step("2.0", v1, status=serving_v1())
    waiting = pass_at(started.status, 5)
    assert waiting.status.analysis is not None
    assert (waiting.status.analysis.phase, waiting.status.analysis.startedAt) == ("Pending", None)
    assert waiting.status.analysis.message == "waiting for the canary's smoke test"
    admitted = pass_at(waiting.status, 6, passed())
    measured = pass_at(admitted.status, 7)
    assert measured.status.analysis is not None
    assert measured.status.analysis.phase == "Running"
