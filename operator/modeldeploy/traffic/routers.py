"""How traffic is shared between the serving (stable) and the new (canary) revision. Pure maths, table-tested.

Without a service mesh, the Service `<name>` spreads requests over every ready pod of the resource, so a
revision's share of traffic is its share of the ready pods. Other routers (Gateway API, Istio, Seldon) set the
split directly; they implement the same interface and keep replica counts for capacity only.
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


class TrafficRouter(Protocol):
    def split(self, replicas: int, weight: int) -> Split:
        """Replica counts that give the canary `weight` percent of the traffic with `replicas` of capacity."""
        ...

    def actual_weight(self, stable_ready: int, canary_ready: int) -> int:
        """The canary's real share of the traffic, in percent, from what is ready now."""
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

    def split(self, replicas: int, weight: int) -> Split:
        if replicas == 1 and 0 < weight < 100:
            # One pod cannot be shared: run one of each, the closest a single replica gets to a split.
            return Split(stable=1, canary=1)
        canary = canary_replicas_for(replicas, weight)
        return Split(stable=replicas - canary, canary=canary)

    def actual_weight(self, stable_ready: int, canary_ready: int) -> int:
        total = stable_ready + canary_ready
        if total == 0:
            return 0
        return round(100 * canary_ready / total)


def stable_replicas_keeping_capacity(target: Split, replicas: int, canary_ready: int) -> int:
    """Stable replicas to ask for now: the target, but never so few that ready capacity drops below `replicas`.

    The stable revision gives up a pod only once a canary pod is ready to take its place.
    """
    return min(replicas, max(target.stable, replicas - canary_ready))


def split_keeping_capacity(target: Split, replicas: int, canary_ready: int) -> Split:
    """The replicas to ask for now on the way to `target`: the canary's count at once, the stable's only as far as
    ready canary pods make up for the pods it gives up."""
    return Split(stable=stable_replicas_keeping_capacity(target, replicas, canary_ready), canary=target.canary)
