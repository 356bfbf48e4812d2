"""The rollout state machine and status computation: pure functions of spec, previous status, observed state, time.

`plan()` decides which revision serves, which is rolling out, how many replicas each revision's Deployment gets,
and what the status says. It does no I/O: the reconciler applies its result, so every transition is unit-tested
without a cluster, and a restarted operator reaches the same decision from the status it left behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from modeldeploy import api

FIRST_REVISION = "FirstRevision"

Condition = api.Condition
TrackStatus = api.TrackStatus


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
    """Seconds until the decision may change with no event (a deadline running out)."""


def format_time(moment: datetime) -> str:
    # Microseconds: timed decisions (deadlines, pauses) resume exactly after a restart.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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


def _record(
    history: list[api.HistoryEntry],
    track: TrackStatus,
    outcome: api.Outcome,
    reason: str,
    now: datetime,
    limit: int,
) -> list[api.HistoryEntry]:
    entry = api.HistoryEntry(
        revision=track.revision,
        version=track.version,
        outcome=str(outcome),
        reason=reason,
        time=format_time(now),
    )
    return [entry, *history][:limit]


def retained_revisions(history: list[api.HistoryEntry], keep: int) -> list[str]:
    """The most recent distinct revisions in history, newest first."""
    seen: list[str] = []
    for entry in history:
        if entry.revision not in seen:
            seen.append(entry.revision)
    return seen[:keep]


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
) -> Plan:
    """Decide the next state. Level-based: the same inputs always give the same plan."""
    spec = resource.spec
    previous = resource.status
    generation = int(resource.metadata.get("generation", 0))
    version = spec.model.version
    deadline = timedelta(seconds=spec.rollout.progressDeadlineSeconds)
    events: list[Event] = []
    history = list(previous.history)
    stable = previous.stable
    canary = previous.canary
    aborted = previous.aborted
    requeue_after: float | None = None

    if stable is None:
        # The first revision serves from the start: there is nothing to protect yet.
        stable = TrackStatus(version=version, revision=desired_revision, since=format_time(now))
        history = _record(history, stable, api.Outcome.PROMOTED, FIRST_REVISION, now, history_limit)
        events.append(Event("Normal", "RevisionCreated", f"Serving {model} {version} (revision {desired_revision})"))

    if stable.revision == desired_revision:
        if canary is not None:
            history = _record(history, canary, api.Outcome.ROLLED_BACK, "SpecReverted", now, history_limit)
            events.append(
                Event(
                    "Normal",
                    "RolledBack",
                    f"Spec returned to {stable.version} (revision {stable.revision}); "
                    f"{canary.version} (revision {canary.revision}) scaled to zero",
                )
            )
            canary = None
        aborted = None
    elif aborted is not None and aborted.revision == desired_revision:
        canary = None  # Rolled back already: not retried until the spec asks for another revision.
    else:
        aborted = None
        if canary is None or canary.revision != desired_revision:
            if canary is not None:
                history = _record(history, canary, api.Outcome.SUPERSEDED, "NewerRevision", now, history_limit)
            canary = TrackStatus(version=version, revision=desired_revision, since=format_time(now))
            events.append(
                Event(
                    "Normal",
                    "RolloutStarted",
                    f"Rolling out {version} (revision {desired_revision}) to replace {stable.version}",
                )
            )
        seen = observed.get(canary.revision)
        ready = seen.ready_replicas if seen is not None and seen.up_to_date else 0
        started = parse_time(canary.since) if canary.since else now
        if seen is not None and seen.replicas >= spec.replicas and ready >= spec.replicas:
            history = _record(history, canary, api.Outcome.PROMOTED, "RevisionReady", now, history_limit)
            events.append(
                Event(
                    "Normal",
                    "Promoted",
                    f"{canary.version} (revision {canary.revision}) is Ready and serves; "
                    f"{stable.version} (revision {stable.revision}) scaled to zero",
                )
            )
            stable = TrackStatus(version=canary.version, revision=canary.revision, since=format_time(now))
            canary = None
        elif now >= started + deadline:
            message = (
                f"{canary.version} (revision {canary.revision}) was not Ready within "
                f"{spec.rollout.progressDeadlineSeconds}s ({ready}/{spec.replicas} ready) and was rolled back; "
                f"{stable.version} keeps serving"
            )
            history = _record(history, canary, api.Outcome.ROLLED_BACK, "ProgressDeadlineExceeded", now, history_limit)
            aborted = api.AbortedRevision(
                revision=canary.revision,
                version=canary.version,
                reason="ProgressDeadlineExceeded",
                message=message,
                time=format_time(now),
            )
            events.append(Event("Warning", "ProgressDeadlineExceeded", message))
            canary = None
        else:
            requeue_after = (started + deadline - now).total_seconds()

    # Replicas per revision: the serving one and the one rolling out get the full count; recent others stay at
    # zero for a fast return; older ones are deleted.
    replicas = {stable.revision: spec.replicas}
    if canary is not None:
        replicas[canary.revision] = spec.replicas
    keep = set(retained_revisions(history, retained))
    if aborted is not None:
        keep.add(aborted.revision)
    for revision in observed:
        if revision not in replicas and revision in keep:
            replicas[revision] = 0

    stable_seen = observed.get(stable.revision)
    stable_ready = stable_seen.ready_replicas if stable_seen is not None else 0
    stable_track = stable.model_copy(
        update={
            "replicas": stable_seen.replicas if stable_seen is not None else 0,
            "readyReplicas": stable_ready,
        }
    )
    canary_track = None
    if canary is not None:
        canary_seen = observed.get(canary.revision)
        canary_track = canary.model_copy(
            update={
                "replicas": canary_seen.replicas if canary_seen is not None else 0,
                "readyReplicas": canary_seen.ready_replicas if canary_seen is not None else 0,
            }
        )

    # The very first revision has nothing to fall back to: past its deadline it stays, and says it is failing.
    stable_started = parse_time(stable.since) if stable.since else now
    stable_settled = (
        stable_seen is not None
        and stable_seen.up_to_date
        and stable_seen.replicas == spec.replicas
        and stable_ready >= spec.replicas
    )
    first_revision_late = (
        not stable_settled
        and canary is None
        and not any(e.outcome == api.Outcome.PROMOTED and e.reason != FIRST_REVISION for e in history)
    )
    if first_revision_late and now < stable_started + deadline:
        remaining = (stable_started + deadline - now).total_seconds()
        requeue_after = remaining if requeue_after is None else min(requeue_after, remaining)
        first_revision_late = False

    conditions = list(previous.conditions)

    def setc(kind: api.ConditionType, value: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, kind, value, reason, message, generation=generation, now=now)

    serving = f"{model} {stable.version}"
    available = stable_ready >= 1 or spec.replicas == 0
    setc(
        api.ConditionType.AVAILABLE,
        available,
        "MinimumReplicasAvailable" if available else "NoReplicasReady",
        f"{stable_ready}/{spec.replicas} replicas of {serving} ready",
    )
    if aborted is not None:
        phase, message = api.Phase.DEGRADED, aborted.message
        setc(api.ConditionType.DEGRADED, True, aborted.reason, aborted.message)
        setc(api.ConditionType.PROGRESSING, False, aborted.reason, f"Rollout of {aborted.version} stopped")
    elif first_revision_late:
        message = (
            f"{serving} (revision {stable.revision}) was not Ready within {spec.rollout.progressDeadlineSeconds}s: "
            f"{stable_ready}/{spec.replicas} replicas ready"
        )
        phase = api.Phase.DEGRADED
        setc(api.ConditionType.DEGRADED, True, "ProgressDeadlineExceeded", message)
        setc(api.ConditionType.PROGRESSING, False, "ProgressDeadlineExceeded", message)
    elif canary_track is not None:
        phase = api.Phase.PROGRESSING
        message = (
            f"rolling out {canary_track.version} (revision {canary_track.revision}): "
            f"{canary_track.readyReplicas}/{spec.replicas} ready; {stable.version} serving"
        )
        setc(api.ConditionType.DEGRADED, False, "AsExpected", "No problems found")
        setc(api.ConditionType.PROGRESSING, True, "RevisionProgressing", message)
    elif not stable_settled:
        phase = api.Phase.PROGRESSING
        message = f"{stable_ready}/{spec.replicas} replicas of {serving} ready"
        setc(api.ConditionType.DEGRADED, False, "AsExpected", "No problems found")
        setc(api.ConditionType.PROGRESSING, True, "ScalingReplicas", message)
    else:
        phase = api.Phase.HEALTHY
        message = f"{stable_ready}/{spec.replicas} replicas of {serving} ready"
        setc(api.ConditionType.DEGRADED, False, "AsExpected", "No problems found")
        setc(api.ConditionType.PROGRESSING, False, "RolloutComplete", f"{serving} is rolled out")
    ready = phase == api.Phase.HEALTHY
    setc(api.ConditionType.READY, ready, "AllReplicasReady" if ready else str(phase), message)

    previous_phase = previous.phase
    if previous_phase != phase and previous_phase is not None:
        kind = "Warning" if phase == api.Phase.DEGRADED else "Normal"
        events.append(Event(kind, f"Phase{phase}", message))

    status = api.ModelDeploymentStatus(
        observedGeneration=generation,
        phase=str(phase),
        message=message,
        model=model,
        conditions=_sorted_conditions(conditions),
        stable=stable_track,
        canary=canary_track,
        aborted=aborted,
        url=url,
        history=history,
    )
    return Plan(
        status=status,
        replicas=replicas,
        apply_revision=desired_revision if desired_revision in replicas else None,
        events=events,
        requeue_after=requeue_after,
    )
