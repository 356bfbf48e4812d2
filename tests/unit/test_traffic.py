"""Weight maths: replica splits that approximate a weight, and the capacity guarantee while traffic moves."""

from __future__ import annotations

import pytest

from modeldeploy.traffic.routers import (
    ExactRouter,
    ReplicaRatioRouter,
    RouteState,
    Split,
    canary_replicas_for,
    route_weight,
    split_keeping_capacity,
    stable_replicas_keeping_capacity,
)

router = ReplicaRatioRouter()


@pytest.mark.parametrize(
    ("replicas", "weight", "expected"),
    [
        (0, 50, Split(0, 0)),
        (1, 0, Split(1, 0)),
        (1, 20, Split(1, 1)),  # one pod cannot be shared: one of each
        (1, 100, Split(0, 1)),
        (2, 20, Split(1, 1)),  # a canary gets at least one pod...
        (2, 90, Split(1, 1)),  # ...and the stable keeps one below 100%
        (2, 100, Split(0, 2)),
        (3, 50, Split(1, 2)),  # ties round up
        (4, 25, Split(3, 1)),
        (4, 50, Split(2, 2)),
        (4, 75, Split(1, 3)),
        (5, 10, Split(4, 1)),
        (10, 0, Split(10, 0)),
        (10, 5, Split(9, 1)),
        (10, 15, Split(8, 2)),
        (10, 33, Split(7, 3)),
        (10, 99, Split(1, 9)),
        (1000, 1, Split(990, 10)),
    ],
)
def test_split_approximates_the_weight(replicas: int, weight: int, expected: Split) -> None:
    assert router.split(replicas, weight) == expected


@pytest.mark.parametrize("replicas", [2, 3, 4, 7, 10, 64])
@pytest.mark.parametrize("weight", range(0, 101, 5))
def test_split_keeps_the_total_and_is_closest(replicas: int, weight: int) -> None:
    split = router.split(replicas, weight)
    assert split.stable + split.canary == replicas
    if 0 < weight < 100:
        assert 1 <= split.canary <= replicas - 1
        # Nothing allowed by the bounds is closer to the weight.
        error = abs(split.canary / replicas - weight / 100)
        assert all(error <= abs(c / replicas - weight / 100) + 1e-9 for c in range(1, replicas))


@pytest.mark.parametrize(
    ("stable_ready", "canary_ready", "actual"),
    [(0, 0, 0), (4, 0, 0), (3, 1, 25), (2, 2, 50), (1, 2, 67), (0, 3, 100), (9, 1, 10)],
)
def test_actual_weight_comes_from_ready_pods(stable_ready: int, canary_ready: int, actual: int) -> None:
    assert router.actual_weight(stable_ready, canary_ready) == actual


@pytest.mark.parametrize(
    ("target", "replicas", "canary_ready", "stable"),
    [
        (Split(3, 1), 4, 0, 4),  # no canary pod ready yet: the stable keeps all of its pods
        (Split(3, 1), 4, 1, 3),
        (Split(2, 2), 4, 1, 3),  # one pod at a time
        (Split(2, 2), 4, 2, 2),
        (Split(2, 2), 4, 3, 2),  # never below the target
        (Split(0, 4), 4, 4, 0),
        (Split(1, 1), 1, 0, 1),
    ],
)
def test_stable_gives_up_a_pod_only_for_a_ready_canary_pod(
    target: Split, replicas: int, canary_ready: int, stable: int
) -> None:
    assert stable_replicas_keeping_capacity(target, replicas, canary_ready) == stable
    assert stable + canary_ready >= min(replicas, target.stable + canary_ready)


@pytest.mark.parametrize(
    ("target", "replicas", "canary_ready", "asked"),
    [
        (Split(4, 0), 4, 0, Split(4, 0)),  # no canary asked for: nothing moves
        (Split(3, 1), 4, 0, Split(4, 1)),  # the canary pod is asked for at once, the stable waits for it
        (Split(3, 1), 4, 1, Split(3, 1)),
        (Split(2, 2), 4, 1, Split(3, 2)),  # one stable pod per ready canary pod
        (Split(2, 2), 4, 2, Split(2, 2)),
        (Split(1, 3), 4, 0, Split(4, 3)),
        (Split(0, 4), 4, 0, Split(4, 4)),  # the final scale-up: up to twice the capacity for a moment
        (Split(0, 4), 4, 3, Split(1, 4)),
        (Split(0, 4), 4, 4, Split(0, 4)),
        (Split(1, 1), 1, 0, Split(1, 1)),  # one replica: one of each, the stable keeps its pod
        (Split(1, 1), 1, 1, Split(1, 1)),
        (Split(0, 0), 0, 0, Split(0, 0)),
    ],
)
def test_split_keeping_capacity_asks_for_the_canary_at_once_and_lets_the_stable_go_pod_by_pod(
    target: Split, replicas: int, canary_ready: int, asked: Split
) -> None:
    assert split_keeping_capacity(target, replicas, canary_ready) == asked
    assert asked.canary == target.canary
    assert asked.stable + canary_ready >= min(replicas, target.stable + canary_ready)


def test_canary_replicas_for_edges() -> None:
    assert canary_replicas_for(0, 100) == 0
    assert canary_replicas_for(5, 0) == 0
    assert canary_replicas_for(5, 100) == 5


# ---------------------------------------------------------------------------------------------------------------
# The exact router (Gateway API, Istio): weights at the gateway, replicas for capacity only.

exact = ExactRouter()


@pytest.mark.parametrize(
    ("replicas", "weight", "mirror", "expected"),
    [
        (0, 50, False, Split(0, 0)),
        (4, 0, False, Split(4, 0)),  # before any weight: no canary pod
        (4, 5, False, Split(4, 1)),  # a 5 % canary needs one pod, not twenty
        (4, 25, False, Split(4, 1)),
        (4, 26, False, Split(4, 2)),  # its share rounds up: the pods must carry the load
        (4, 50, False, Split(4, 2)),
        (4, 100, False, Split(4, 4)),  # the stable keeps every pod until the promotion
        (1, 5, False, Split(1, 1)),
        (10, 33, False, Split(10, 4)),
        (4, 0, True, Split(4, 4)),  # mirrored: the canary gets a copy of every request
        (4, 20, True, Split(4, 4)),
    ],
)
def test_exact_split_keeps_the_stable_whole(replicas: int, weight: int, mirror: bool, expected: Split) -> None:
    assert exact.split(replicas, weight, mirror=mirror) == expected


def test_the_ratio_router_ignores_a_mirror() -> None:
    assert router.split(4, 20, mirror=True) == router.split(4, 20)
    assert router.in_force(None, 50, mirror=True)


@pytest.mark.parametrize(
    ("route", "canary_ready", "actual"),
    [
        (None, 3, None),  # no route yet: unknown
        (RouteState(weight=20, mirror=False, accepted=False), 3, None),  # not accepted: unknown
        (RouteState(weight=20, mirror=False, accepted=True), 3, 20),
        (RouteState(weight=20, mirror=False, accepted=True), 0, 0),  # no ready pod answers nothing
        (RouteState(weight=0, mirror=True, accepted=True), 4, 0),  # a mirror is not a share of the answers
    ],
)
def test_exact_actual_weight_is_what_the_accepted_route_holds(
    route: RouteState | None, canary_ready: int, actual: int | None
) -> None:
    assert exact.actual_weight(4, canary_ready, route) == actual


@pytest.mark.parametrize(
    ("route", "weight", "mirror", "in_force"),
    [
        (None, 0, False, False),
        (RouteState(weight=5, mirror=False, accepted=True), 5, False, True),
        (RouteState(weight=5, mirror=False, accepted=False), 5, False, False),
        (RouteState(weight=5, mirror=False, accepted=True), 20, False, False),
        (RouteState(weight=0, mirror=False, accepted=True), 0, True, False),
        (RouteState(weight=0, mirror=True, accepted=True), 0, True, True),
        (RouteState(weight=0, mirror=True, accepted=True), 0, False, False),
    ],
)
def test_exact_in_force_needs_weight_mirror_and_acceptance(
    route: RouteState | None, weight: int, mirror: bool, in_force: bool
) -> None:
    assert exact.in_force(route, weight, mirror=mirror) is in_force


@pytest.mark.parametrize(
    ("target_canary", "weight", "canary_ready", "held", "expected"),
    [
        (1, 5, 0, 0, 0),  # no canary pod ready: nothing for it
        (1, 5, 1, 0, 5),  # its pods ready: the step's weight
        (2, 50, 1, 5, 5),  # not all the pods the next weight needs: the route keeps what it holds
        (2, 50, 2, 5, 50),
        (2, 20, 1, 50, 20),  # a lower weight never waits
        (4, 100, 3, 50, 50),  # the final 100 % only with every canary pod ready
        (4, 100, 4, 50, 100),
        (2, 50, 0, 50, 0),  # a replaced canary (no ready pod of the new one): 0 at once
        (0, 50, 0, 0, 50),  # scaled to zero: no pod to wait for, the steps go on
    ],
)
def test_route_weight_moves_up_only_with_ready_pods(
    target_canary: int, weight: int, canary_ready: int, held: int, expected: int
) -> None:
    assert route_weight(Split(4, target_canary), weight, canary_ready, held) == expected
