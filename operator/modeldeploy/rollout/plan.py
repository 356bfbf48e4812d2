"""The rollout state machine: a pure function of spec, previous status, observed state and time.

`plan()` decides which revision serves, which is rolling out and at which step, how many replicas each revision's
Deployment gets, and what the status says. It does no I/O: the reconciler applies its result, so every transition
is unit-tested without a cluster, and a restarted operator reaches the same decision from the status it left.

The work is split the way it flows: trust.check_status() makes the status it resumes from one the rules can use
(status is untrusted input, see trust.py), planner.decide() runs the rules (transitions, steps, judging) into a
frozen Decision, status.build_status() says what that Decision is, and the replica maths lives with the routers in
modeldeploy.traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from modeldeploy.analysis.smoke import SmokeRound
from modeldeploy.api import models as api
from modeldeploy.rollout import smoke
from modeldeploy.rollout.decision import Event, ObservedRevision, Serving, Situation
from modeldeploy.rollout.planner import decide
from modeldeploy.rollout.status import build_status, phase_change_event
from modeldeploy.rollout.trust import Repair, check_status, read_status
from modeldeploy.traffic.routers import ExactRouter, ReplicaRatioRouter, RouteState, TrafficRouter

# plan()'s inputs and outputs, importable from here with it.
__all__ = ["Event", "ObservedRevision", "Plan", "Repair", "RouteState", "Serving", "plan", "read_status", "trusted"]


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
    route_weight: int = 0
    """The canary weight the router's object should hold (0 at rest)."""
    mirror: bool = False
    """Whether the router's object should mirror every request to the canary."""
    canary_admitted: bool = True
    """Whether the canary may take traffic: False while its smoke test has not passed (rollout/smoke.py), when the
    Service `<name>` must select the stable revision alone."""
    smoke_evidence: tuple[str, str] | None = None
    """(revision, since) of a canary whose smoke test passed: its Deployment carries `since` in
    SMOKE_PASSED_ANNOTATION, the evidence a status patch cannot forge (rollout/smoke.py, trust.py)."""


def trusted(
    resource: api.ModelDeployment,
    desired_revision: str,
    observed: Mapping[str, ObservedRevision],
    now: datetime,
    *,
    model: str,
    serving: Serving | None = None,
    history_limit: int = 10,
    retained: int = 3,
    router: TrafficRouter | None = None,
    route: RouteState | None = None,
) -> tuple[api.ModelDeployment, tuple[Repair, ...]]:
    """`resource` with its status checked against what is observed (see trust.py), and what was repaired. plan()
    does the same itself; the reconciler calls this first because it reads status before planning (whether a
    measurement is due)."""
    situation = _situation(
        resource, desired_revision, observed, now, model, router, {}, history_limit, retained, serving, route
    )
    status, repairs = check_status(situation)
    if not repairs:
        return resource, ()
    return resource.model_copy(update={"status": status}), repairs


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
    serving: Serving | None = None,
    route: RouteState | None = None,
    smoke_round: SmokeRound | None = None,
) -> Plan:
    """Decide the next state. Level-based: the same inputs always give the same plan. `measurements` are the
    analysis results of this pass, when one was due (see analysis.measurement_due); `serving` is the revision a
    Service of the resource says serves, when the caller knows one; `route` what the router's object holds, with a
    router that has one."""
    situation = _situation(
        resource,
        desired_revision,
        observed,
        now,
        model,
        router,
        measurements or {},
        history_limit,
        retained,
        serving,
        route,
    )
    situation = replace(situation, smoke=smoke_round)
    checked, repairs = check_status(situation)
    if repairs:
        # Decided from, and built on, the repaired status: the repairs are written with it, so they are made once.
        resource = resource.model_copy(update={"status": checked})
        situation = replace(situation, resource=resource)
    decision = decide(situation)
    status = build_status(decision, resource, observed, now, model=model, url=url)
    events = [repair.event() for repair in repairs] + list(decision.events)
    phase_change = phase_change_event(resource.status, status)
    if phase_change is not None:
        events.append(phase_change)
    return Plan(
        status=status,
        replicas=dict(decision.replicas),
        apply_revision=desired_revision if desired_revision in decision.replicas else None,
        events=events,
        requeue_after=decision.requeue_after,
        route_weight=decision.route_weight if decision.canary is not None else 0,
        mirror=decision.mirror and decision.canary is not None,
        canary_admitted=not smoke.gated(resource.spec.rollout, decision.canary),
        smoke_evidence=smoke.evidence(decision.canary),
    )


def _situation(
    resource: api.ModelDeployment,
    desired_revision: str,
    observed: Mapping[str, ObservedRevision],
    now: datetime,
    model: str,
    router: TrafficRouter | None,
    measurements: Mapping[str, api.Measurement],
    history_limit: int,
    retained: int,
    serving: Serving | None,
    route: RouteState | None = None,
) -> Situation:
    return Situation(
        resource=resource,
        desired=desired_revision,
        observed=observed,
        now=now,
        model=model,
        router=router or router_for(resource.spec),
        measurements=measurements,
        history_limit=history_limit,
        retained=retained,
        serving=serving,
        route=route,
    )


def router_for(spec: api.ModelDeploymentSpec) -> TrafficRouter:
    """The router the spec asks for: exact weights at a gateway or mesh, else the ratio of ready pods."""
    return ExactRouter() if spec.trafficRouting is not None else ReplicaRatioRouter()
