"""The rollout state machine: a pure function of spec, previous status, observed state and time.

`plan()` decides which revision serves, which is rolling out and at which step, how many replicas each revision's
Deployment gets, and what the status says. It does no I/O: the reconciler applies its result, so every transition
is unit-tested without a cluster, and a restarted operator reaches the same decision from the status it left.

The work is split the way it flows: planner.decide() runs the rules (transitions, steps, judging) into a frozen
Decision, status.build_status() says what that Decision is, and the replica maths lives with the routers in
modeldeploy.traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modeldeploy.api import models as api
from modeldeploy.rollout.decision import Event, ObservedRevision, Situation
from modeldeploy.rollout.planner import decide
from modeldeploy.rollout.status import build_status, phase_change_event
from modeldeploy.traffic.routers import ReplicaRatioRouter, TrafficRouter

# plan()'s inputs and outputs, importable from here with it.
__all__ = ["Event", "ObservedRevision", "Plan", "plan"]


@dataclass
class Plan:
    status: api.ModelDeploymentStatus
    replicas: dict[str, int]
    """Desired replicas for every revision that keeps a Deployment; revisions absent here are deleted."""
    apply_revision: str | None
    """The revision whose Deployment is (re)built from the current spec; the others are only scaled."""
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    """Seconds until the decision may change with no event (a pause or deadline running out)."""


def plan(
    resource: api.ModelDeployment,
    desired_revision: str,
    observed: dict[str, ObservedRevision],
    now: datetime,
    *,
    model: str,
    url: str,
    history_limit: int = 10,
    retained: int = 3,
    router: TrafficRouter | None = None,
    measurements: Mapping[str, api.Measurement] | None = None,
) -> Plan:
    """Decide the next state. Level-based: the same inputs always give the same plan. `measurements` are the
    analysis results of this pass, when one was due (see analysis.measurement_due)."""
    situation = Situation(
        resource=resource,
        desired=desired_revision,
        observed=observed,
        now=now,
        model=model,
        router=router or ReplicaRatioRouter(),
        measurements=measurements or {},
        history_limit=history_limit,
        retained=retained,
    )
    decision = decide(situation)
    status = build_status(decision, resource, observed, now, model=model, url=url)
    events = list(decision.events)
    phase_change = phase_change_event(resource.status, status)
    if phase_change is not None:
        events.append(phase_change)
    return Plan(
        status=status,
        replicas=dict(decision.replicas),
        apply_revision=desired_revision if desired_revision in decision.replicas else None,
        events=events,
        requeue_after=decision.requeue_after,
    )
