"""What one planning pass starts from (`Situation`) and what it decides (`Decision`).

The decision steps (planner, transitions, steps, judging) each take a Decision and return a new one; nothing is
changed in place. The status is then computed from the final Decision in one go (status.build_status), so what a
pass decided and what it says about it cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from modeldeploy.analysis.smoke import SmokeRound
from modeldeploy.api import models as api
from modeldeploy.traffic.routers import RouteState, TrafficRouter


@dataclass(frozen=True)
class ObservedRevision:
    """What the cluster says about one revision's Deployment."""

    revision: str
    version: str
    replicas: int
    ready_replicas: int
    up_to_date: bool = True
    """The Deployment controller has seen the current Deployment spec (observedGeneration caught up)."""
    owned: bool = True
    """Its controller owner reference names this very resource (by uid): evidence that this operator made it."""
    smoke_passed: str = ""
    """The value of the annotation the operator writes once the revision's smoke test passed: the `since` of the
    rollout it passed in (rollout/smoke.py)."""

    def settled(self, replicas: int) -> bool:
        """Exactly `replicas` asked for, all of them Ready, and the controller caught up with the spec."""
        return self.up_to_date and self.replicas == replicas and self.ready_replicas >= replicas


@dataclass(frozen=True)
class Serving:
    """Which revision this operator last made serve, as a Service it owns says it. Only the operator writes that
    Service, in the same pass as the status, so it is evidence a status patch cannot forge."""

    revision: str
    service: str
    """The Service whose selector names the revision: `<name>-stable` while a rollout is in progress, else
    `<name>`."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def effective_steps(rollout: api.RolloutSpec) -> list[api.CanaryStep]:
    """The steps a rollout walks: none under the Immediate strategy."""
    return list(rollout.steps) if rollout.strategy == api.Strategy.CANARY else []


def pending(commands: api.Commands | None, acknowledged: api.Acknowledged, name: str) -> api.Command | None:
    """A request made with `kubectl mdep NAME` that the operator has not acted on yet."""
    command: api.Command | None = getattr(commands, name, None) if commands is not None else None
    if command is None or not command.id or command.id == getattr(acknowledged, name):
        return None
    return command


@dataclass(frozen=True)
class Situation:
    """The inputs of one planning pass: the resource as stored, what the cluster shows, the time, the settings."""

    resource: api.ModelDeployment
    desired: str
    """The revision the current spec defines."""
    observed: Mapping[str, ObservedRevision]
    now: datetime
    model: str
    router: TrafficRouter
    measurements: Mapping[str, api.Measurement]
    """The analysis results of this pass, when a measurement was due."""
    history_limit: int = 10
    retained: int = 3
    serving: Serving | None = None
    """The revision a Service of this resource says serves, when one does (see Serving)."""
    route: RouteState | None = None
    """What the router's object holds, with a router that has one (Gateway API, Istio) and once it exists."""
    smoke: SmokeRound | None = None
    """The smoke round of this pass, when one was due and has been judged (see rollout/smoke.py)."""

    @property
    def spec(self) -> api.ModelDeploymentSpec:
        return self.resource.spec

    @property
    def previous(self) -> api.ModelDeploymentStatus:
        return self.resource.status

    @property
    def generation(self) -> int:
        return int(self.resource.metadata.get("generation", 0))

    @property
    def replicas(self) -> int:
        return self.spec.serving_replicas()

    @property
    def deadline(self) -> timedelta:
        return timedelta(seconds=self.spec.rollout.progressDeadlineSeconds)

    @property
    def steps(self) -> list[api.CanaryStep]:
        return effective_steps(self.spec.rollout)

    def pending(self, name: str, acknowledged: api.Acknowledged) -> api.Command | None:
        return pending(self.previous.commands, acknowledged, name)

    def ready(self, revision: str) -> int:
        """Ready pods of the revision, counted only once its controller has seen the current spec."""
        seen = self.observed.get(revision)
        return seen.ready_replicas if seen is not None and seen.up_to_date else 0

    def evidenced(self, revision: str) -> bool:
        """A Deployment of the revision exists and belongs to this resource: more than status can claim."""
        seen = self.observed.get(revision)
        return seen is not None and seen.owned

    def scaled_to(self, revision: str) -> int | None:
        seen = self.observed.get(revision)
        return seen.replicas if seen is not None else None


@dataclass(frozen=True)
class Decision:
    """Everything a pass decided; the status, the Deployments' replicas, the Events and the requeue follow from it.

    The pydantic values it holds are never changed once in it: a step that changes one puts a copy in a new
    Decision (dataclasses.replace).
    """

    stable: api.TrackStatus
    """The revision that serves."""
    canary: api.CanaryStatus | None = None
    """The revision rolling out, if any."""
    step_index: int | None = None
    """The canary's current step; len(steps) once past every step (the final scale-up)."""
    step_started: str | None = None
    pause: api.PauseStatus | None = None
    aborted: api.AbortedRevision | None = None
    """The revision last rolled back or aborted, not tried again until the spec or a retry asks for it."""
    acknowledged: api.Acknowledged = field(default_factory=api.Acknowledged)
    analysis: api.AnalysisStatus | None = None
    awaiting: tuple[str, ...] = ()
    """Metrics the current step waits for (a Successful measurement taken during the step) before it ends."""
    first_revision_late: bool = False
    """The very first revision missed its progress deadline: there is nothing to roll back to, so it stays."""
    history: tuple[api.HistoryEntry, ...] = ()
    """Newest first, with this pass's outcomes."""
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until the decision may change with no event (a pause, deadline or measurement coming due)."""
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Desired replicas for every revision that keeps a Deployment."""
    desired_weight: int = 0
    """The canary's share of traffic its current step asks for, in percent (0 without a canary)."""
    actual_weight: int = 0
    """The canary's share of the traffic now, in percent (0 without a canary): of the ready pods, or what its
    accepted route holds."""
    route_weight: int = 0
    """The canary weight the router's object should hold after this pass (0 without a canary)."""
    mirror: bool = False
    """Whether the router's object should mirror every request to the canary after this pass."""

    def with_event(self, kind: str, reason: str, message: str) -> Decision:
        return replace(self, events=(*self.events, Event(kind, reason, message)))

    def waking_in(self, seconds: float) -> Decision:
        """Wake up in `seconds` at the latest: the earliest of every timer this pass found wins."""
        soonest = seconds if self.requeue_after is None else min(self.requeue_after, seconds)
        return replace(self, requeue_after=soonest)

    def acknowledging(self, name: str, command: api.Command) -> Decision:
        return replace(self, acknowledged=self.acknowledged.model_copy(update={name: command.id}))

    def rolling_out(self) -> tuple[api.CanaryStatus, int]:
        """The canary and its step index, for the steps that only run while one rolls out."""
        assert self.canary is not None
        assert self.step_index is not None
        return self.canary, self.step_index
