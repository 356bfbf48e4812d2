"""How traffic is shared between the serving (stable) and the new (canary) revision. Pure maths, table-tested.

Without a gateway or a mesh, the Service `<name>` spreads requests over every ready pod of the resource, so a
revision's share of traffic is its share of the ready pods (ReplicaRatioRouter). With one (Gateway API, Istio), the
split is set in a route object the operator owns and is exact (ExactRouter): the replicas are only capacity. The
route objects themselves are built in modeldeploy.children.routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Split:
    stable: int
    """Replicas the serving revision should have."""
    canary: int
    """Replicas the new revision should have."""


@dataclass(frozen=True)
class RouteState:
    """What a router's object (an HTTPRoute, a VirtualService) holds, as observed: the canary's weight in its spec,
    whether it mirrors to the canary, and whether its controller has accepted that very generation."""

    weight: int
    mirror: bool
    accepted: bool


class TrafficRouter(Protocol):
    @property
    def exact(self) -> bool:
        """Whether the split is set at a gateway or mesh, independent of replicas (else it follows ready pods)."""
        ...

    def split(self, replicas: int, weight: int, *, mirror: bool = False) -> Split:
        """Replica counts that give the canary `weight` percent of the traffic with `replicas` of capacity (and, when
        `mirror`, a copy of every request)."""
        ...

    def actual_weight(self, stable_ready: int, canary_ready: int, route: RouteState | None = None) -> int | None:
        """The canary's real share of the traffic, in percent, from what is ready and what the route holds; None
        when it cannot be known now (a route its controller has not accepted yet)."""
        ...

    def in_force(self, route: RouteState | None, weight: int, *, mirror: bool) -> bool:
        """Whether the traffic is where a step wants it: `weight` percent to the canary, mirrored or not."""
        ...


def canary_replicas_for(replicas: int, weight: int) -> int:
    """The canary count whose share of `replicas` is closest to `weight`%.

    A weight above 0 always gets at least one pod (a canary that takes no traffic proves nothing), and a weight
    below 100 leaves the stable revision at least one (it still serves part of the traffic). Ties round up.
    With a single replica both bounds cannot hold; see ReplicaRatioRouter.split.
    """
    if replicas <= 0 or weight <= 0:
        return 0
    if weight >= 100:
        return replicas
    # Round half up in integers, avoiding float error at exact halves.
    closest = (2 * replicas * weight + 100) // 200
    return max(1, min(closest, replicas - 1))


class ReplicaRatioRouter:
    """Traffic follows the ratio of ready replicas behind one Service."""

    exact = False

    def split(self, replicas: int, weight: int, *, mirror: bool = False) -> Split:
        # No mirror without a router (admission refuses it): a mirror step here is a weight step at its weight.
        if replicas == 1 and 0 < weight < 100:
            # One pod cannot be shared: run one of each, the closest a single replica gets to a split.
            return Split(stable=1, canary=1)
        canary = canary_replicas_for(replicas, weight)
        return Split(stable=replicas - canary, canary=canary)

    def actual_weight(self, stable_ready: int, canary_ready: int, route: RouteState | None = None) -> int | None:
        total = stable_ready + canary_ready
        if total == 0:
            return 0
        return round(100 * canary_ready / total)

    def in_force(self, route: RouteState | None, weight: int, *, mirror: bool) -> bool:
        return True  # The ready pods are the split: once they are in place, so is the traffic.


class ExactRouter:
    """A gateway or a mesh sets the split (Gateway API, Istio): weight and replicas are independent.

    The canary runs the pods its share of the load needs (at least one), all of them while it is mirrored to (it
    gets a copy of every request); the stable keeps its full count until the canary is promoted, so that taking
    the canary's weight away (a revert, an abort, a failed analysis) needs no pod to start.
    """

    exact = True

    def split(self, replicas: int, weight: int, *, mirror: bool = False) -> Split:
        if replicas <= 0:
            return Split(stable=0, canary=0)
        if mirror:
            return Split(stable=replicas, canary=replicas)
        if weight <= 0:
            return Split(stable=replicas, canary=0)
        # Round up in integers: the canary must carry its share, and never less than one pod.
        canary = max(1, min(replicas, -(-replicas * weight // 100)))
        return Split(stable=replicas, canary=canary)

    def actual_weight(self, stable_ready: int, canary_ready: int, route: RouteState | None = None) -> int | None:
        if route is None or not route.accepted:
            return None
        if canary_ready == 0:
            return 0  # Whatever the route says, a backend with no ready pod answers nothing.
        return route.weight

    def in_force(self, route: RouteState | None, weight: int, *, mirror: bool) -> bool:
        return route is not None and route.accepted and route.weight == weight and route.mirror == mirror


def route_weight(target: Split, weight: int, canary_ready: int, in_force: int) -> int:
    """The canary weight to write into a router's object now, on the way to `weight`.

    Traffic moves to the canary only once the pods its share needs are ready (a weight on a backend without ready
    pods is failed requests), and moves back at once: a lower weight never waits. Until then the weight the route
    holds stays; with no ready canary pod at all (a canary just replaced by another), it is 0.
    """
    if target.canary > 0 and canary_ready == 0:
        return 0
    if weight <= in_force or canary_ready >= target.canary:
        return weight  # (with no canary pod asked for at all, scaled to zero, there is nothing to wait for)
    return in_force


def stable_replicas_keeping_capacity(target: Split, replicas: int, canary_ready: int) -> int:
    """Stable replicas to ask for now: the target, but never so few that ready capacity drops below `replicas`.

    The stable revision gives up a pod only once a canary pod is ready to take its place.
    """
    return min(replicas, max(target.stable, replicas - canary_ready))


def split_keeping_capacity(target: Split, replicas: int, canary_ready: int) -> Split:
    """The replicas to ask for now on the way to `target`: the canary's count at once, the stable's only as far as
    ready canary pods make up for the pods it gives up."""
    return Split(stable=stable_replicas_keeping_capacity(target, replicas, canary_ready), canary=target.canary)
