"""Weight maths: replica splits that approximate a weight, and the capacity guarantee while traffic moves."""

from __future__ import annotations

import pytest

from modeldeploy.traffic.routers import (
    ReplicaRatioRouter,
    Split,
    canary_replicas_for,
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
