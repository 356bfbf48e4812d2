"""The rollout state machine and status computation: pure functions of spec, previous status, observed state, time.

`plan()` decides which revision serves, which is rolling out and at which step, how many replicas each revision's
Deployment gets, and what the status says. It does no I/O: the reconciler applies its result, so every transition
is unit-tested without a cluster, and a restarted operator reaches the same decision from the status it left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modeldeploy.analysis import measure as analysis
from modeldeploy.api import models as api
from modeldeploy.api.times import format_time, parse_duration, parse_time
from modeldeploy.traffic.routers import ReplicaRatioRouter, Split, TrafficRouter, stable_replicas_keeping_capacity

FIRST_REVISION = "FirstRevision"

Condition = api.Condition
TrackStatus = api.TrackStatus
CanaryStatus = api.CanaryStatus


@dataclass(frozen=True)
class ObservedRevision:
    """What the cluster says about one revision's Deployment."""

    revision: str
    version: str
    replicas: int
    ready_replicas: int
    up_to_date: bool = True
    """The Deployment controller has seen the current Deployment spec (observedGeneration caught up)."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


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


def set_condition(
    conditions: list[Condition],
    kind: api.ConditionType,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Conditions with `kind` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == kind), None)
    since = previous.lastTransitionTime if previous is not None and previous.status == value else format_time(now)
    updated = Condition(
        type=str(kind),
        status=value,
        reason=reason,
        message=message,
        lastTransitionTime=since,
        observedGeneration=generation,
    )
    return [c for c in conditions if c.type != kind] + [updated]


def _sorted_conditions(conditions: list[Condition]) -> list[Condition]:
    order = [str(kind) for kind in api.ConditionType]
    return sorted(conditions, key=lambda c: order.index(c.type) if c.type in order else len(order))


def retained_revisions(history: list[api.HistoryEntry], keep: int) -> list[str]:
    """The most recent distinct revisions in history, newest first."""
    seen: list[str] = []
    for entry in history:
        if entry.revision not in seen:
            seen.append(entry.revision)
    return seen[:keep]


def recently_served(history: list[api.HistoryEntry], window: int) -> list[str]:
    """Revisions that served (were promoted) most recently, newest first, at most `window` of them."""
    served: list[str] = []
    for entry in history:
        if entry.outcome == api.Outcome.PROMOTED and entry.revision not in served:
            served.append(entry.revision)
    return served[:window]


def effective_steps(rollout: api.RolloutSpec) -> list[api.CanaryStep]:
    return list(rollout.steps) if rollout.strategy == api.Strategy.CANARY else []


def pending(commands: api.Commands | None, acknowledged: api.Acknowledged, name: str) -> api.Command | None:
    """A request made with `kubectl mdep NAME` that the operator has not acted on yet."""
    command: api.Command | None = getattr(commands, name, None) if commands is not None else None
    if command is None or not command.id or command.id == getattr(acknowledged, name):
        return None
    return command


class _Planner:
    """One planning pass. Holds the evolving state so each rule reads as a sentence."""

    def __init__(
        self,
        resource: api.ModelDeployment,
        desired_revision: str,
        observed: dict[str, ObservedRevision],
        now: datetime,
        model: str,
        history_limit: int,
        router: TrafficRouter,
        measurements: Mapping[str, api.Measurement],
    ) -> None:
        self.spec = resource.spec
        self.previous = resource.status
        self.generation = int(resource.metadata.get("generation", 0))
        self.desired = desired_revision
        self.observed = observed
        self.now = now
        self.model = model
        self.history_limit = history_limit
        self.router = router
        self.replicas = self.spec.replicas
        self.deadline = timedelta(seconds=self.spec.rollout.progressDeadlineSeconds)
        self.steps = effective_steps(self.spec.rollout)

        self.events: list[Event] = []
        self.history = list(self.previous.history)
        self.stable = self.previous.stable
        self.canary = self.previous.canary
        self.aborted = self.previous.aborted
        self.step_index = self.previous.currentStepIndex
        self.step_started = self.previous.stepStartedAt
        self.pause: api.PauseStatus | None = self.previous.pause
        self.acknowledged = self.previous.acknowledged.model_copy()
        self.requeue_after: float | None = None
        self.analysis = self.previous.analysis
        self.measurements = measurements
        self.awaiting: list[str] = []
        """Metrics the current step waits for (a Successful measurement taken during the step) before it ends."""

    # --- bookkeeping ----------------------------------------------------------------------------------------------

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    def record(self, track: TrackStatus, outcome: api.Outcome, reason: str) -> None:
        entry = api.HistoryEntry(
            revision=track.revision,
            version=track.version,
            outcome=str(outcome),
            reason=reason,
            time=format_time(self.now),
        )
        self.history = [entry, *self.history][: self.history_limit]

    def wake_in(self, seconds: float) -> None:
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)

    def acknowledge(self, name: str, command: api.Command) -> None:
        setattr(self.acknowledged, name, command.id)

    def ready(self, revision: str) -> int:
        seen = self.observed.get(revision)
        return seen.ready_replicas if seen is not None and seen.up_to_date else 0

    def scaled_to(self, revision: str) -> int | None:
        seen = self.observed.get(revision)
        return seen.replicas if seen is not None else None

    # --- transitions ----------------------------------------------------------------------------------------------

    def start_canary(self) -> None:
        assert self.stable is not None
        if self.canary is not None:
            self.record(self.canary, api.Outcome.SUPERSEDED, "NewerRevision")
            self.event(
                "Normal",
                "Superseded",
                f"{self.canary.version} (revision {self.canary.revision}) replaced by a newer spec",
            )
        fast = self.desired in recently_served(self.history, self.spec.rollout.rollbackWindow)
        self.canary = CanaryStatus(
            version=self.spec.model.version, revision=self.desired, since=format_time(self.now), fastTrack=fast
        )
        self.step_index = 0
        self.step_started = format_time(self.now)
        self.pause = None
        how = "at once: it served recently" if fast or not self.steps else f"in {len(self.steps)} steps"
        self.event(
            "Normal",
            "RolloutStarted",
            f"Rolling out {self.spec.model.version} (revision {self.desired}) {how}, replacing {self.stable.version}",
        )

    def end_canary(self) -> None:
        self.canary = None
        self.step_index = None
        self.step_started = None
        self.pause = None

    def abort(self, reason: str, message: str) -> None:
        assert self.canary is not None
        self.record(self.canary, api.Outcome.ABORTED if reason == "Aborted" else api.Outcome.ROLLED_BACK, reason)
        self.aborted = api.AbortedRevision(
            revision=self.canary.revision,
            version=self.canary.version,
            reason=reason,
            message=message,
            time=format_time(self.now),
        )
        self.event("Warning", reason, message)
        self.end_canary()

    def promote(self) -> None:
        assert self.canary is not None
        assert self.stable is not None
        if self.analysis is not None and self.analysis.revision == self.canary.revision:
            measured = sum(metric.successful for metric in self.analysis.metrics)
            self.analysis = self.analysis.model_copy(
                update={
                    "phase": str(api.AnalysisPhase.SUCCESSFUL),
                    "message": f"promoted with {measured} Successful measurements",
                    "nextMeasurementAt": None,
                }
            )
        self.record(self.canary, api.Outcome.PROMOTED, "RevisionReady")
        self.event(
            "Normal",
            "Promoted",
            f"{self.canary.version} (revision {self.canary.revision}) is promoted and serves all traffic; "
            f"{self.stable.version} (revision {self.stable.revision}) scaled to zero",
        )
        self.stable = TrackStatus(
            version=self.canary.version,
            revision=self.canary.revision,
            since=format_time(self.now),
            readyAt=format_time(self.now),
        )
        self.end_canary()

    # --- the rules --------------------------------------------------------------------------------------------------

    def run(self) -> None:
        if self.stable is None:
            # The first revision serves from the start: there is nothing to protect yet.
            self.stable = TrackStatus(
                version=self.spec.model.version, revision=self.desired, since=format_time(self.now)
            )
            self.record(self.stable, api.Outcome.PROMOTED, FIRST_REVISION)
            self.event(
                "Normal", "RevisionCreated", f"Serving {self.model} {self.spec.model.version} (revision {self.desired})"
            )

        retry = pending(self.previous.commands, self.acknowledged, "retry")
        if retry is not None:
            self.acknowledge("retry", retry)
            if self.aborted is not None and self.aborted.revision == self.desired:
                self.event("Normal", "RetryRequested", f"Retrying {self.aborted.version} (revision {self.desired})")
                self.aborted = None

        if self.stable.revision == self.desired:
            if self.canary is not None:
                # The spec went back to what serves: stop at once, no steps.
                self.record(self.canary, api.Outcome.ROLLED_BACK, "SpecReverted")
                self.event(
                    "Normal",
                    "RolledBack",
                    f"Spec returned to {self.stable.version} (revision {self.stable.revision}); "
                    f"{self.canary.version} (revision {self.canary.revision}) scaled to zero",
                )
                self.end_canary()
            self.aborted = None
        elif self.aborted is not None and self.aborted.revision == self.desired:
            self.end_canary()  # Not retried until the spec asks for another revision or a retry.
        else:
            self.aborted = None
            if self.canary is None or self.canary.revision != self.desired:
                self.start_canary()
            self.advance()

        # Requests that found nothing to act on are still answered once.
        for name in ("promote", "abort"):
            command = pending(self.previous.commands, self.acknowledged, name)
            if command is not None:
                self.acknowledge(name, command)
                self.event("Normal", f"{name.capitalize()}Ignored", f"No rollout in progress to {name}")

    def target_weight(self) -> int:
        """The weight the current step asks for: the last setWeight reached so far, 100 once past every step."""
        assert self.step_index is not None
        if self.step_index >= len(self.steps):
            return 100
        weight = 0
        for step in self.steps[: self.step_index + 1]:
            if step.setWeight is not None:
                weight = step.setWeight
        return weight

    def advance(self) -> None:
        """Walk the canary through its steps as far as the observed state allows, in this one pass."""
        assert self.canary is not None
        assert self.step_index is not None
        abort = pending(self.previous.commands, self.acknowledged, "abort")
        if abort is not None:
            self.acknowledge("abort", abort)
            self.abort(
                "Aborted",
                f"Rollout of {self.canary.version} (revision {self.canary.revision}) aborted on request; "
                f"{self.stable.version if self.stable else ''} takes all traffic",
            )
            return
        if self.canary.fastTrack:
            self.step_index = len(self.steps)
        promote = pending(self.previous.commands, self.acknowledged, "promote")
        if promote is not None:
            self.acknowledge("promote", promote)
            if self.pause is not None and self.pause.reason == analysis.ANALYSIS_PAUSE:
                self.pause = None
                self.resume_analysis()
                if not promote.full:
                    promote = None
        if promote is not None:
            if promote.full:
                self.step_index = len(self.steps)
                self.pause = None
                self.event("Normal", "PromotedFully", f"Skipping the remaining steps of {self.canary.version}")
            elif self.step_index < len(self.steps) and self.steps[self.step_index].pause is not None:
                self.step_index += 1
                self.step_started = format_time(self.now)
                self.pause = None
                self.event("Normal", "PauseEnded", f"Promoted past the pause of {self.canary.version}")

        if not self.judge():
            return

        if self.spec.rollout.paused:
            if self.pause is None or self.pause.reason != "SpecPaused":
                self.pause = api.PauseStatus(reason="SpecPaused", startedAt=format_time(self.now))
                self.event("Normal", "Paused", f"Rollout of {self.canary.version} paused by spec.rollout.paused")
            return
        if self.pause is not None and self.pause.reason == "SpecPaused":
            # Resumed: the step in progress starts its clock again.
            self.pause = None
            self.step_started = format_time(self.now)
            self.event("Normal", "Resumed", f"Rollout of {self.canary.version} resumed")

        while self.canary is not None and self.step_index is not None:
            started = parse_time(self.step_started) if self.step_started else self.now
            if self.step_index >= len(self.steps):
                self.finish(started)
                return
            step = self.steps[self.step_index]
            if step.pause is not None:
                if step.pause.duration is None:
                    if self.pause is None or self.pause.reason != "PromotionRequired":
                        self.pause = api.PauseStatus(reason="PromotionRequired", startedAt=format_time(started))
                    return
                ends = started + parse_duration(step.pause.duration)
                if self.now < ends:
                    self.pause = api.PauseStatus(
                        reason="PauseStep", startedAt=format_time(started), endsAt=format_time(ends)
                    )
                    self.wake_in((ends - self.now).total_seconds())
                    return
                self.pause = None
                self.awaiting = self.awaited(started)
                if self.awaiting:
                    return
                self.step_index += 1
                # A pause right after a pause starts when the first was due to end, so pauses never drift; any
                # other step starts now, so its deadline counts from when its scale is first asked for. Under
                # analysis every step starts now: the first pause may have been held past its end, and the next
                # must not count the measurement that released it as one of its own.
                next_is_pause = self.step_index < len(self.steps) and self.steps[self.step_index].pause is not None
                analysed = self.analysis is not None and self.analysis.startedAt is not None
                self.step_started = format_time(ends if next_is_pause and not analysed else self.now)
                continue
            # setWeight: done when the canary has its pods ready and the stable has given up its share.
            split = self.router.split(self.replicas, self.target_weight())
            stable = self.stable_revision()
            stable_seen = self.observed.get(stable)
            # The stable's own count, read only once its controller has seen the scale-down: a stale status would
            # otherwise count as "no pods left" and the step would end while its old pods still take traffic.
            stable_gave_way = (
                stable_seen is not None
                and stable_seen.up_to_date
                and stable_seen.replicas == split.stable
                and stable_seen.ready_replicas <= split.stable
            )
            if self.ready(self.canary.revision) >= split.canary and stable_gave_way:
                self.pause = None
                # Only the analysis holds the step now: its own limits end the wait, not the progress deadline.
                self.awaiting = self.awaited(started) if split.canary > 0 else []
                if self.awaiting:
                    return
                self.step_index += 1
                self.step_started = format_time(self.now)
                continue
            self.check_deadline(started)
            return

    # --- analysis -------------------------------------------------------------------------------------------------

    def judge(self) -> bool:
        """Start, update and act on the canary's analysis. False when the rollout stops in this pass (rolled back,
        or paused for a person)."""
        assert self.canary is not None
        assert self.stable is not None
        spec = self.spec.rollout.analysis
        if spec is None or self.canary.fastTrack:
            self.analysis = None
            return True
        current = self.analysis
        if current is None or current.revision != self.canary.revision:
            current = api.AnalysisStatus(
                revision=self.canary.revision,
                version=self.canary.version,
                phase=str(api.AnalysisPhase.PENDING),
                message="waiting for the canary's first Ready pod",
                metrics=analysis.record([], spec, {}),
            )
        else:
            current = current.model_copy(deep=True)
        self.analysis = current
        if current.startedAt is None:
            if self.ready(self.canary.revision) == 0:
                return True
            first = analysis.first_measurement_at(spec, self.now)
            current.startedAt = format_time(self.now)
            current.phase = str(api.AnalysisPhase.RUNNING)
            current.nextMeasurementAt = format_time(first)
            current.message = f"first measurement at {format_time(first)[11:19]}Z, then every {spec.interval}"
        if self.pause is not None and self.pause.reason == analysis.ANALYSIS_PAUSE:
            return False
        if current.phase != api.AnalysisPhase.RUNNING:
            return True
        if self.measurements:
            current.metrics = analysis.record(current.metrics, spec, self.measurements)
            current.lastMeasuredAt = format_time(self.now)
            current.nextMeasurementAt = format_time(self.now + analysis.interval_of(spec))
            for name, measurement in self.measurements.items():
                if measurement.phase == api.MeasurementPhase.FAILED:
                    self.event("Warning", "AnalysisMeasurementFailed", f"{name}: {measurement.message}")
                elif measurement.phase == api.MeasurementPhase.ERROR:
                    self.event("Warning", "AnalysisMeasurementError", f"{name}: {measurement.message}")
            current.message = "latest: " + ", ".join(f"{metric.name} {metric.phase}" for metric in current.metrics)
        judged = analysis.verdict(current.metrics, spec)
        if judged.phase in (api.AnalysisPhase.FAILED, api.AnalysisPhase.ERROR):
            current.phase = str(judged.phase)
            current.message = judged.message
            current.nextMeasurementAt = None
            self.abort(
                "AnalysisFailed",
                f"Analysis of {self.canary.version} (revision {self.canary.revision}) failed: {judged.message}; "
                f"rolled back, {self.stable.version} takes all traffic",
            )
            return False
        if judged.phase == api.AnalysisPhase.INCONCLUSIVE:
            current.phase = str(judged.phase)
            current.message = judged.message
            current.nextMeasurementAt = None
            self.pause = api.PauseStatus(reason=analysis.ANALYSIS_PAUSE, startedAt=format_time(self.now))
            self.event(
                "Warning",
                analysis.ANALYSIS_PAUSE,
                f"Rollout of {self.canary.version} paused: {judged.message}; promote to go on measuring, or abort",
            )
            return False
        if current.nextMeasurementAt is not None:
            self.wake_in(max((parse_time(current.nextMeasurementAt) - self.now).total_seconds(), 0.0))
        return True

    def resume_analysis(self) -> None:
        """After a person promoted past an inconclusive analysis: count inconclusive measurements afresh, go on."""
        spec = self.spec.rollout.analysis
        if self.analysis is None or spec is None:
            return
        self.analysis = self.analysis.model_copy(
            update={
                "phase": str(api.AnalysisPhase.RUNNING),
                "message": "resumed by promote",
                "nextMeasurementAt": format_time(self.now + analysis.interval_of(spec)),
                "metrics": [metric.model_copy(update={"inconclusive": 0}) for metric in self.analysis.metrics],
            },
            deep=True,
        )
        self.event("Normal", "AnalysisResumed", f"Promoted past the inconclusive analysis of {self.analysis.version}")

    def awaited(self, since: datetime) -> list[str]:
        """Metrics without a Successful measurement taken since `since`; empty when nothing is analysed."""
        if self.analysis is None or self.analysis.startedAt is None or self.spec.rollout.analysis is None:
            return []
        return analysis.awaited(self.analysis.metrics, since)

    def stable_revision(self) -> str:
        assert self.stable is not None
        return self.stable.revision

    def finish(self, started: datetime) -> None:
        """Past the last step: the canary gets every replica and is promoted once they are all ready."""
        assert self.canary is not None
        canary_ready = self.ready(self.canary.revision)
        if (self.scaled_to(self.canary.revision) or 0) >= self.replicas and canary_ready >= self.replicas:
            self.promote()
            return
        self.check_deadline(started)

    def check_deadline(self, started: datetime) -> None:
        assert self.canary is not None
        if self.now >= started + self.deadline:
            ready = self.ready(self.canary.revision)
            self.abort(
                "ProgressDeadlineExceeded",
                f"{self.canary.version} (revision {self.canary.revision}) did not get Ready within "
                f"{self.spec.rollout.progressDeadlineSeconds}s ({ready} ready) and was rolled back; "
                f"{self.stable.version if self.stable else ''} keeps serving",
            )
        else:
            self.wake_in((started + self.deadline - self.now).total_seconds())

    # --- replicas -------------------------------------------------------------------------------------------------

    def desired_replicas(self, retained: int) -> dict[str, int]:
        assert self.stable is not None
        replicas = {self.stable.revision: self.replicas}
        if self.canary is not None:
            assert self.step_index is not None
            canary_ready = self.ready(self.canary.revision)
            if self.step_index >= len(self.steps):
                # Final stage: the canary comes up in full; the stable gives up a pod for each canary pod ready.
                replicas[self.canary.revision] = self.replicas
                replicas[self.stable.revision] = stable_replicas_keeping_capacity(
                    Split(stable=0, canary=self.replicas), self.replicas, canary_ready
                )
            else:
                split = self.router.split(self.replicas, self.target_weight())
                replicas[self.canary.revision] = split.canary
                replicas[self.stable.revision] = stable_replicas_keeping_capacity(split, self.replicas, canary_ready)
        keep = set(retained_revisions(self.history, retained))
        keep.update(recently_served(self.history, self.spec.rollout.rollbackWindow))
        if self.aborted is not None:
            keep.add(self.aborted.revision)
        for revision in self.observed:
            if revision not in replicas and revision in keep:
                replicas[revision] = 0
        return replicas


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
    planner = _Planner(
        resource,
        desired_revision,
        observed,
        now,
        model,
        history_limit,
        router or ReplicaRatioRouter(),
        measurements or {},
    )
    planner.run()
    replicas = planner.desired_replicas(retained)
    status, requeue = _status(planner, url)
    if requeue is not None:
        planner.wake_in(requeue)
    return Plan(
        status=status,
        replicas=replicas,
        apply_revision=desired_revision if desired_revision in replicas else None,
        events=planner.events,
        requeue_after=planner.requeue_after,
    )


def _status(p: _Planner, url: str) -> tuple[api.ModelDeploymentStatus, float | None]:
    """Tracks, conditions, phase and message from the planner's decisions and the observed pods."""
    assert p.stable is not None
    spec = p.spec
    requeue: float | None = None
    stable_seen = p.observed.get(p.stable.revision)
    stable_ready = stable_seen.ready_replicas if stable_seen is not None else 0
    stable_track = p.stable.model_copy(
        update={"replicas": stable_seen.replicas if stable_seen is not None else 0, "readyReplicas": stable_ready}
    )
    canary_track = None
    if p.canary is not None:
        canary_seen = p.observed.get(p.canary.revision)
        canary_ready = canary_seen.ready_replicas if canary_seen is not None else 0
        desired_weight = p.target_weight()
        canary_track = p.canary.model_copy(
            update={
                "replicas": canary_seen.replicas if canary_seen is not None else 0,
                "readyReplicas": canary_ready,
                "desiredWeight": desired_weight,
                "actualWeight": p.router.actual_weight(stable_ready, canary_ready),
            }
        )

    # The very first revision has nothing to fall back to: past its deadline it stays, and says it is failing.
    stable_started = parse_time(p.stable.since) if p.stable.since else p.now
    stable_settled = (
        stable_seen is not None
        and stable_seen.up_to_date
        and stable_seen.replicas == spec.replicas
        and stable_ready >= spec.replicas
    )
    if stable_settled and stable_track.readyAt is None:
        stable_track.readyAt = format_time(p.now)
    # Only a revision that has never been Ready can miss its deadline; one that lost pods later is scaling.
    first_revision_late = not stable_settled and p.canary is None and stable_track.readyAt is None
    if first_revision_late and p.now < stable_started + p.deadline:
        requeue = (stable_started + p.deadline - p.now).total_seconds()
        first_revision_late = False

    conditions = list(p.previous.conditions)

    def setc(kind: api.ConditionType, value: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, kind, value, reason, message, generation=p.generation, now=p.now)

    serving = f"{p.model} {p.stable.version}"
    available = stable_ready >= 1 or spec.replicas == 0 or (canary_track is not None and canary_track.readyReplicas > 0)
    setc(
        api.ConditionType.AVAILABLE,
        available,
        "MinimumReplicasAvailable" if available else "NoReplicasReady",
        f"{stable_ready}/{spec.replicas} replicas of {serving} ready",
    )
    no_problem = ("AsExpected", "No problems found")
    if p.aborted is not None:
        phase, message = api.Phase.DEGRADED, p.aborted.message
        setc(api.ConditionType.DEGRADED, True, p.aborted.reason, p.aborted.message)
        setc(api.ConditionType.PROGRESSING, False, p.aborted.reason, f"Rollout of {p.aborted.version} stopped")
    elif first_revision_late:
        message = (
            f"{serving} (revision {p.stable.revision}) was not Ready within {spec.rollout.progressDeadlineSeconds}s: "
            f"{stable_ready}/{spec.replicas} replicas ready"
        )
        phase = api.Phase.DEGRADED
        setc(api.ConditionType.DEGRADED, True, "ProgressDeadlineExceeded", message)
        setc(api.ConditionType.PROGRESSING, False, "ProgressDeadlineExceeded", message)
    elif canary_track is not None:
        assert p.step_index is not None
        step = f"step {min(p.step_index + 1, len(p.steps))}/{len(p.steps)}" if p.steps else "no steps"
        message = (
            f"canary {canary_track.version} at {canary_track.actualWeight}% "
            f"(desired {canary_track.desiredWeight}%, {step}); {p.stable.version} serving"
        )
        if p.step_index >= len(p.steps):
            message = (
                f"promoting {canary_track.version}: {canary_track.readyReplicas}/{spec.replicas} ready; "
                f"{p.stable.version} serving"
            )
        phase = api.Phase.PROGRESSING
        if p.awaiting:
            message += f"; waiting for a Successful measurement of {', '.join(p.awaiting)}"
        if p.pause is not None:
            phase = api.Phase.PAUSED
            if p.pause.reason == "PauseStep" and p.pause.endsAt:
                # The end time, not the time left: a message that changed every pass would be written every pass.
                message += f"; paused until {p.pause.endsAt[11:19]}Z"
            elif p.pause.reason == "PromotionRequired":
                message += "; paused until promoted (kubectl mdep promote)"
            elif p.pause.reason == analysis.ANALYSIS_PAUSE:
                detail = p.analysis.message if p.analysis is not None else ""
                message += f"; paused, analysis inconclusive ({detail}): promote to go on measuring, or abort"
            else:
                message += "; paused by spec.rollout.paused"
        setc(api.ConditionType.DEGRADED, False, *no_problem)
        setc(
            api.ConditionType.PROGRESSING,
            True,
            "RolloutPaused" if phase == api.Phase.PAUSED else "RevisionProgressing",
            message,
        )
    elif not stable_settled:
        phase = api.Phase.PROGRESSING
        message = f"{stable_ready}/{spec.replicas} replicas of {serving} ready"
        setc(api.ConditionType.DEGRADED, False, *no_problem)
        setc(api.ConditionType.PROGRESSING, True, "ScalingReplicas", message)
    else:
        phase = api.Phase.HEALTHY
        message = f"{stable_ready}/{spec.replicas} replicas of {serving} ready"
        setc(api.ConditionType.DEGRADED, False, *no_problem)
        setc(api.ConditionType.PROGRESSING, False, "RolloutComplete", f"{serving} is rolled out")
    ready = phase == api.Phase.HEALTHY
    setc(api.ConditionType.READY, ready, "AllReplicasReady" if ready else str(phase), message)

    if p.previous.phase != phase and p.previous.phase is not None:
        p.event("Warning" if phase == api.Phase.DEGRADED else "Normal", f"Phase{phase}", message)

    status = p.previous.model_copy(
        update={
            "observedGeneration": p.generation,
            "phase": str(phase),
            "message": message,
            "model": p.model,
            "conditions": _sorted_conditions(conditions),
            "stable": stable_track,
            "canary": canary_track,
            "currentStepIndex": p.step_index,
            "stepStartedAt": p.step_started,
            "pause": p.pause,
            "acknowledged": p.acknowledged,
            "aborted": p.aborted,
            "analysis": p.analysis,
            "url": url,
            "history": p.history,
        }
    )
    return status, requeue
