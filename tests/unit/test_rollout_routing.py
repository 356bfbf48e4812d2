"""The rollout behind an exact router (Gateway API, Istio): replicas for capacity, weights in the route.

Driven pass by pass like test_rollout.py, with the route's observed state fed in as the router's controller would
leave it. What must hold: the stable keeps its full count until the promotion; traffic moves to the canary only
onto ready pods and only once the route holding it is accepted; a mirror step gives the canary every request and
no answers; a revert or an abort takes the canary's weight away in the very pass that sees it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.api import models as api
from modeldeploy.rollout import plan as rollout
from modeldeploy.rollout.plan import ObservedRevision, Plan, RouteState

from .conftest import build_resource

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
REV = {"1.0": "ra10000000", "2.0": "rb20000000", "3.0": "rc30000000"}
V1, V2, V3 = REV["1.0"], REV["2.0"], REV["3.0"]
ROUTING = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}
STEPS: list[dict[str, Any]] = [
    {"setMirror": {}},
    {"pause": {"duration": "60s"}},
    {"setWeight": 5},
    {"setWeight": 50},
]


def seen(version: str, replicas: int, ready: int) -> ObservedRevision:
    return ObservedRevision(revision=REV[version], version=version, replicas=replicas, ready_replicas=ready)


def held(weight: int, mirror: bool = False, accepted: bool = True) -> RouteState:
    return RouteState(weight=weight, mirror=mirror, accepted=accepted)


def step(
    version: str,
    *observed: ObservedRevision,
    route: RouteState | None,
    status: api.ModelDeploymentStatus | None = None,
    seconds: float = 0,
    steps: list[dict[str, Any]] | None = None,
    commands: dict[str, Any] | None = None,
    replicas: int = 4,
) -> Plan:
    status_body = status.model_dump(mode="json") if status is not None else None
    if commands is not None:
        status_body = {**(status_body or {}), "commands": commands}
    resource = build_resource(
        {
            "model": {"version": version},
            "replicas": replicas,
            "rollout": {"steps": STEPS if steps is None else steps},
            "trafficRouting": ROUTING,
        },
        status=status_body,
    )
    return rollout.plan(
        resource,
        REV[version],
        {o.revision: o for o in observed},
        T0 + timedelta(seconds=seconds),
        model="m",
        url="http://m",
        route=route,
    )


def serving_v1() -> api.ModelDeploymentStatus:
    first = step("1.0", route=None)
    return step("1.0", seen("1.0", 4, 4), route=held(0), status=first.status).status


def test_a_whole_rollout_behind_a_gateway() -> None:
    v1 = seen("1.0", 4, 4)
    # The new version: its canary comes up in full for the mirror (a copy of every request), the stable stays.
    p = step("2.0", v1, route=held(0), status=serving_v1())
    assert p.replicas == {V1: 4, V2: 4}
    assert (p.route_weight, p.mirror) == (0, True)
    assert p.status.canary is not None
    assert p.status.canary.actualWeight == 0
    # Pods ready, but the route does not mirror yet: the step holds.
    p = step("2.0", v1, seen("2.0", 4, 4), route=held(0), status=p.status, seconds=5)
    assert p.status.currentStepIndex == 0
    # The route mirrors, accepted: the mirror step ends and the pause begins, still mirroring.
    p = step("2.0", v1, seen("2.0", 4, 4), route=held(0, mirror=True), status=p.status, seconds=6)
    assert p.status.currentStepIndex == 1
    assert (p.route_weight, p.mirror) == (0, True)
    assert p.replicas == {V1: 4, V2: 4}
    # Past the pause: setWeight 5 needs one canary pod; the route takes 5 % at once (pods are ready), no mirror.
    p = step("2.0", v1, seen("2.0", 4, 4), route=held(0, mirror=True), status=p.status, seconds=67)
    assert p.status.currentStepIndex == 2
    assert p.replicas == {V1: 4, V2: 1}
    assert (p.route_weight, p.mirror) == (5, False)
    assert p.status.canary is not None
    assert (p.status.canary.desiredWeight, p.status.canary.actualWeight) == (5, 0)
    # The route holds 5 %, accepted: the step ends; setWeight 50 asks for two canary pods, the route waits for them.
    p = step("2.0", v1, seen("2.0", 1, 1), route=held(5), status=p.status, seconds=68)
    assert p.status.currentStepIndex == 3
    assert p.replicas == {V1: 4, V2: 2}
    assert p.route_weight == 5
    assert p.status.canary is not None
    assert p.status.canary.actualWeight == 5
    p = step("2.0", v1, seen("2.0", 2, 2), route=held(5), status=p.status, seconds=70)
    assert (p.status.currentStepIndex, p.route_weight) == (3, 50)
    # 50 % accepted: past the last step the canary comes up in full and takes every request once all are ready.
    p = step("2.0", v1, seen("2.0", 2, 2), route=held(50), status=p.status, seconds=71)
    assert p.status.currentStepIndex == 4
    assert p.replicas == {V1: 4, V2: 4}
    assert p.route_weight == 50
    p = step("2.0", v1, seen("2.0", 4, 4), route=held(50), status=p.status, seconds=75)
    assert p.route_weight == 100
    assert p.status.stable is not None
    assert p.status.stable.revision == V1
    # The route gives the canary everything: promoted; the old revision is kept at zero, the route back to stable.
    p = step("2.0", v1, seen("2.0", 4, 4), route=held(100), status=p.status, seconds=76)
    assert p.status.stable is not None
    assert p.status.stable.revision == V2
    assert p.status.canary is None
    assert p.replicas == {V2: 4, V1: 0}
    assert (p.route_weight, p.mirror) == (0, False)


def test_the_route_waits_for_acceptance() -> None:
    v1 = seen("1.0", 4, 4)
    p = step("2.0", v1, route=held(0), status=serving_v1(), steps=[{"setWeight": 20}])
    p = step("2.0", v1, seen("2.0", 1, 1), route=held(0), status=p.status, steps=[{"setWeight": 20}], seconds=2)
    assert p.route_weight == 20
    pending = held(20, accepted=False)
    p = step("2.0", v1, seen("2.0", 1, 1), route=pending, status=p.status, steps=[{"setWeight": 20}], seconds=3)
    assert p.status.currentStepIndex == 0  # written, not yet accepted by the gateway: the step holds
    assert p.status.canary is not None
    assert p.status.canary.actualWeight == 0
    p = step("2.0", v1, seen("2.0", 1, 1), route=held(20), status=p.status, steps=[{"setWeight": 20}], seconds=4)
    assert p.status.currentStepIndex == 1
    assert p.status.canary is not None
    assert p.status.canary.actualWeight == 20


def test_a_revert_takes_the_weight_away_at_once_with_no_pod_to_start() -> None:
    v1 = seen("1.0", 4, 4)
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
    p = step("2.0", v1, route=held(0), status=serving_v1(), steps=steps)
    p = step("2.0", v1, seen("2.0", 2, 2), route=held(50), status=p.status, steps=steps, seconds=3)
    assert p.status.pause is not None  # at 50 %, paused for a person
    reverted = step("1.0", v1, seen("2.0", 2, 2), route=held(50), status=p.status, steps=steps, seconds=10)
    assert reverted.status.canary is None
    assert (reverted.route_weight, reverted.mirror) == (0, False)
    assert reverted.replicas[V1] == 4  # never below its count: nothing to wait for
    assert reverted.replicas[V2] == 0
    assert reverted.status.phase == api.Phase.HEALTHY


def test_an_abort_takes_the_weight_away_at_once() -> None:
    v1 = seen("1.0", 4, 4)
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
    p = step("2.0", v1, route=held(0), status=serving_v1(), steps=steps)
    p = step("2.0", v1, seen("2.0", 2, 2), route=held(50), status=p.status, steps=steps, seconds=3)
    aborted = step(
        "2.0",
        v1,
        seen("2.0", 2, 2),
        route=held(50),
        status=p.status,
        steps=steps,
        seconds=9,
        commands={"abort": {"id": "a1"}},
    )
    assert aborted.status.canary is None
    assert (aborted.route_weight, aborted.replicas[V1], aborted.replicas[V2]) == (0, 4, 0)


def test_a_new_version_mid_rollout_starts_from_no_weight() -> None:
    v1 = seen("1.0", 4, 4)
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
    p = step("2.0", v1, route=held(0), status=serving_v1(), steps=steps)
    p = step("2.0", v1, seen("2.0", 2, 2), route=held(50), status=p.status, steps=steps, seconds=3)
    replaced = step("3.0", v1, seen("2.0", 2, 2), route=held(50), status=p.status, steps=steps, seconds=9)
    assert replaced.status.canary is not None
    assert replaced.status.canary.revision == V3
    assert replaced.route_weight == 0  # no pod of 3.0 ready: nothing for it, and nothing left on 2.0's pods
    assert replaced.replicas[V1] == 4


def test_a_forged_step_index_needs_the_route_of_the_step_before() -> None:
    v1 = seen("1.0", 4, 4)
    steps: list[dict[str, Any]] = [{"setWeight": 5}, {"setWeight": 25}, {"pause": {}}]
    p = step("2.0", v1, route=held(0), status=serving_v1(), steps=steps)
    p = step("2.0", v1, seen("2.0", 1, 1), route=held(0), status=p.status, steps=steps, seconds=1)
    assert p.route_weight == 5
    assert p.status.currentStepIndex == 0
    # Someone writes currentStepIndex 2 (the open pause, past 25 %); one pod carries 5 % or 25 %, so the replicas
    # cannot tell, but the route holds 5 %, not the 25 % that step 1 had to reach first.
    forged = p.status.model_copy(update={"currentStepIndex": 2})
    p = step("2.0", v1, seen("2.0", 1, 1), route=held(5), status=forged, steps=steps, seconds=2)
    assert p.status.currentStepIndex is not None
    assert p.status.currentStepIndex <= 1
    assert p.route_weight <= 25


def test_scaled_to_zero_a_rollout_still_ends() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}]
    first = step("1.0", route=None, replicas=0, steps=steps)
    rest = step("1.0", seen("1.0", 0, 0), route=held(0), status=first.status, replicas=0, steps=steps)
    p = step("2.0", seen("1.0", 0, 0), route=held(0), status=rest.status, replicas=0, steps=steps)
    assert p.route_weight == 50  # no pod to wait for
    p = step("2.0", seen("1.0", 0, 0), seen("2.0", 0, 0), route=held(50), status=p.status, replicas=0, steps=steps)
    assert p.route_weight == 100
    p = step("2.0", seen("1.0", 0, 0), seen("2.0", 0, 0), route=held(100), status=p.status, replicas=0, steps=steps)
    assert p.status.stable is not None
    assert p.status.stable.version == "2.0"


def test_the_scale_subresource_counts_every_pod_asked_for_and_selects_every_revision() -> None:
    """An autoscaler scales from status.replicas over the pods status.selector finds: behind a gateway the stable
    keeps its four while the canary runs its own, so both are counted (utilisation is averaged over them all)."""
    at_rest = serving_v1()
    assert at_rest.replicas == 4
    assert at_rest.selector == "app.kubernetes.io/component=model-server,app.kubernetes.io/instance=fraud-detector"
    mirrored = step("2.0", seen("1.0", 4, 4), route=held(0), status=at_rest)
    assert mirrored.replicas == {V1: 4, V2: 4}
    assert mirrored.status.replicas == 8
    assert mirrored.status.selector == at_rest.selector
