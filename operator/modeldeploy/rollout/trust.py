"""Status read as untrusted input: before a pass decides anything, every value the planner uses is checked against
what the Store shows, and a value it cannot use is repaired, never a reason to fail the pass.

Status is the rollout's only memory, and anyone with patch on modeldeployments/status can write all of it (the same
right `kubectl mdep promote` needs). So the rules below keep two promises whatever status says: the revision that
serves keeps its pods, and a revision becomes the serving one only through the steps this operator walks (or a
fast track that rests on evidence status cannot forge). Each repair is reported (a Warning Event with reason
StatusRepaired, and a log line) and written back with the pass's status, so the next pass reads a sane status and
reports nothing again.

- Times must parse, carry a zone and not lie in the future (beyond MAX_CLOCK_SKEW). A bad one is replaced by the
  nearest value the operator can vouch for, mostly now: a clock that starts again delays a step, it never skips one.
  A step cannot have started before its canary.
- The serving revision is what this operator last made serve. Evidence, strongest first: the revision a Service of
  this resource selects (written only by the operator, in the same pass as the status): `<name>-stable` while it
  exists (a rollout is in progress), else `<name>`, which selects the serving revision at rest; then this resource's
  own Deployments (owned by its uid) with pods asked for and Ready, then history's newest promotion. A stable
  revision the evidence contradicts is replaced by the one that serves, which gets a Promoted history entry with
  reason StatusRepaired. While the Store has seen no Deployment yet (just after a start), a missing stable revision
  is taken from history rather than from the spec, so that a pass never points the Services at a revision it has
  not seen serve.
- The canary is another revision than the stable, and one whose Deployment exists or that the spec asks for.
- A fast track (a return to a recently served revision, without steps) needs a Promoted history entry in the
  rollback window AND a Deployment of that revision owned by this resource: the operator keeps exactly those
  Deployments for a fast return, and nobody can make one by writing status.
- History holds only outcomes this operator writes, well-formed revisions, readable past times, no exact
  duplicates, at most the history limit; no Promoted entry is newer than the serving revision's own (the operator
  records every promotion as it makes it); and its newest entries name revisions that still have a Deployment (the
  newest entry is always of a revision the operator keeps, so entries above it that name none were never its own).
- The step index lies within the steps and never past the last step whose weight the canary's Deployment has
  already been asked for: a forged index can skip waiting at a weight already asked for, never a step that raises
  it, so every rise in weight is still a step this operator walks, with its pods Ready and its analysis passed.
- A canary's smoke test counts as Passed only if its Deployment carries the annotation the operator writes in the
  pass that judged it, naming this rollout (rollout/smoke.py); else it is removed and the test runs.
- The analysis of the current canary keeps a phase the planner acts on, a next measurement no further away than one
  initial delay and interval, counts that are not negative and not below the measurements listed.

What the rules cannot tell from a real status: a consistent set of earlier times ends a timed pause early, and a
pause at a weight already asked for can be passed. Both are what `kubectl mdep promote` does with the same right;
admission that keeps status (but status.commands) to the operator closes them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from modeldeploy.analysis import measure as analysis
from modeldeploy.api import models as api
from modeldeploy.api.times import format_time, parse_duration, parse_time
from modeldeploy.rollout.decision import Event, ObservedRevision, Situation
from modeldeploy.rollout.history import may_fast_track
from modeldeploy.rollout.steps import mirroring, target_weight

REPAIRED = "StatusRepaired"
MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a time in status may lie: another operator replica's clock may run a little ahead."""
REVISION = re.compile(rf"^[a-z0-9]{{{api.REVISION_LENGTH}}}$")
OUTCOMES = frozenset(str(outcome) for outcome in api.Outcome)
PAUSE_REASONS = frozenset({"PauseStep", "PromotionRequired", "SpecPaused", analysis.ANALYSIS_PAUSE})
STEP_PAUSES = frozenset({"PauseStep", "PromotionRequired"})
"""Pauses that belong to a pause step: they make no sense at any other step."""
ANALYSIS_PHASES = frozenset(str(phase) for phase in api.AnalysisPhase)
MEASUREMENT_PHASES = frozenset(str(phase) for phase in api.MeasurementPhase)
SHOWN = 64
"""Characters of a bad value quoted in a message: a forged value may be of any size."""


@dataclass(frozen=True)
class Repair:
    field: str
    """Where in status, e.g. stable.revision; empty for the status as a whole."""
    action: str
    """What was wrong and what was done, for a person."""

    @property
    def message(self) -> str:
        return f"status.{self.field}: {self.action}" if self.field else f"status: {self.action}"

    def event(self) -> Event:
        return Event("Warning", REPAIRED, self.message)


def ready_pods(count: int) -> str:
    return f"{count} Ready pod" if count == 1 else f"{count} Ready pods"


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


# --- reading --------------------------------------------------------------------------------------------------------


def read_status(raw: object) -> tuple[api.ModelDeploymentStatus, tuple[Repair, ...]]:
    """The stored status as the models read it. What they cannot read is left out and reported: an unreadable part
    would otherwise fail every pass, for good. status.commands belongs to the people who write requests; a request
    the models cannot read is ignored, never reported (the operator does not write that field, so it would be
    reported every pass)."""
    if raw is None:
        return api.ModelDeploymentStatus(), ()
    if not isinstance(raw, dict):
        return api.ModelDeploymentStatus(), (Repair("", f"{shown(raw)} is not an object; read as empty"),)
    try:
        return api.ModelDeploymentStatus.model_validate(raw), ()
    except ValidationError:
        pass
    kept: dict[str, Any] = {}
    repairs: list[Repair] = []
    for key, value in raw.items():
        if key == "commands":
            if isinstance(value, dict):
                kept[key] = {name: command for name, command in value.items() if _readable({key: {name: command}})}
            continue
        if isinstance(value, list):
            items = [item for item in value if _readable({key: [item]})]
            if len(items) < len(value):
                repairs.append(Repair(key, f"{len(value) - len(items)} unreadable entries dropped"))
            value = items
        if _readable({key: value}):
            kept[key] = value
        else:
            repairs.append(Repair(key, f"{shown(value)} is unreadable; dropped"))
    return api.ModelDeploymentStatus.model_validate(kept), tuple(repairs)


def _readable(fields: dict[str, Any]) -> bool:
    try:
        api.ModelDeploymentStatus.model_validate(fields)
    except ValidationError:
        return False
    return True


# --- checking -------------------------------------------------------------------------------------------------------


def check_status(s: Situation) -> tuple[api.ModelDeploymentStatus, tuple[Repair, ...]]:
    """The status of `s` with every value the planner reads made usable, and what was repaired."""
    found: list[Repair] = []
    status = s.previous
    # In this order: the tracks need readable times, history is judged against the serving revision, a fast track
    # against history, and the step index and pause against the canary that is left.
    status = _times(status, s, found)
    status = _tracks(status, s, found)
    status = _history(status, s, found)
    status = _fast_track(status, s, found)
    status = _smoke(status, s, found)
    status = _progress(status, s, found)
    status = _analysis(status, s, found)
    return status, tuple(found)


def moment(text: str | None) -> datetime | None:
    """The time as status writes it (RFC 3339 with a zone), or None when it is not one."""
    if text is None:
        return None
    try:
        value = parse_time(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _usable(text: str | None, now: datetime) -> datetime | None:
    """The time, when it is one and not in the future."""
    value = moment(text)
    return value if value is not None and value <= now + MAX_CLOCK_SKEW else None


def _fault(text: str) -> str:
    """What is wrong with a time _usable() refused."""
    try:
        value = parse_time(text)
    except ValueError:
        return "is not a time"
    return "has no time zone" if value.tzinfo is None else "lies in the future"


def _owned(s: Situation) -> dict[str, ObservedRevision]:
    return {revision: seen for revision, seen in s.observed.items() if seen.owned}


def _times(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    now = s.now
    stamp = format_time(now)

    def checked(field: str, text: str | None, replacement: str | None) -> str | None:
        if text is None or _usable(text, now) is not None:
            return text
        done = f"set to {replacement}" if replacement is not None else "removed"
        found.append(Repair(field, f"{shown(text)} {_fault(text)}; {done}"))
        return replacement

    step_started = checked("stepStartedAt", status.stepStartedAt, stamp)
    updates: dict[str, Any] = {"stepStartedAt": step_started}
    if status.stable is not None:
        stable = status.stable
        usable_ready = stable.readyAt if _usable(stable.readyAt, now) is not None else None
        since = checked("stable.since", stable.since, usable_ready or stamp)
        # Only whether readyAt is set matters to the planner (the revision was Ready once): keep it set.
        ready_at = checked("stable.readyAt", stable.readyAt, since or stamp)
        updates["stable"] = stable.model_copy(update={"since": since, "readyAt": ready_at})
    if status.canary is not None:
        canary = status.canary
        since = checked("canary.since", canary.since, step_started or stamp)
        ready_at = checked("canary.readyAt", canary.readyAt, None)
        updates["canary"] = canary.model_copy(update={"since": since, "readyAt": ready_at})
    if status.pause is not None:
        pause = status.pause
        started = checked("pause.startedAt", pause.startedAt, step_started or stamp) or stamp
        ends = pause.endsAt
        # A timed pause ends in the future: only a value that is no time at all is bad (the planner writes it anew).
        if ends is not None and moment(ends) is None:
            found.append(Repair("pause.endsAt", f"{shown(ends)} is not a time; removed"))
            ends = None
        updates["pause"] = pause.model_copy(update={"startedAt": started, "endsAt": ends})
    if status.aborted is not None:
        aborted = status.aborted
        updates["aborted"] = aborted.model_copy(update={"time": checked("aborted.time", aborted.time, stamp)})
    updates["conditions"] = [
        condition.model_copy(
            update={
                "lastTransitionTime": checked(
                    f"conditions[{condition.type}].lastTransitionTime", condition.lastTransitionTime, stamp
                )
            }
        )
        for condition in status.conditions
    ]
    return status.model_copy(update=updates)


def _newest_promotion(history: list[api.HistoryEntry]) -> str | None:
    return next((entry.revision for entry in history if entry.outcome == api.Outcome.PROMOTED), None)


def _ranked(candidates: list[ObservedRevision], s: Situation, promoted: str | None) -> ObservedRevision:
    """Which Deployment most likely serves: the one a Service of the resource says serves, then the one history last
    promoted, then one the spec does not ask for (the revision rolling out is the newcomer), then the most Ready
    pods, then the most asked for."""
    return max(
        candidates,
        key=lambda seen: (
            s.serving is not None and seen.revision == s.serving.revision,
            seen.revision == promoted,
            seen.revision != s.desired,
            seen.ready_replicas,
            seen.replicas,
            seen.revision,
        ),
    )


def _serving_now(
    status: api.ModelDeploymentStatus, s: Situation, owned: Mapping[str, ObservedRevision]
) -> tuple[ObservedRevision, str] | None:
    """The Deployment that serves when status names another as stable (or none), and what status got wrong."""
    stable, canary = status.stable, status.canary
    canary_revision = canary.revision if canary is not None else None
    promoted = _newest_promotion(status.history)
    hint = owned.get(s.serving.revision) if s.serving is not None else None
    service = f"Service {s.serving.service}" if s.serving is not None else ""
    if stable is None:
        if hint is not None:
            # The Service selecting the spec's own revision: the planner serves that one anyway, as on a first visit.
            return None if hint.revision == s.desired else (hint, f"missing, while {service} selects {hint.revision}")
        # The spec's own revision alone is a first revision whose first status write did not land: nothing to repair.
        asked = [seen for seen in owned.values() if seen.replicas > 0 and seen.revision != s.desired]
        if asked:
            best = _ranked(asked, s, promoted)
            return best, f"missing, while revision {best.revision} has {best.replicas} pods asked for"
        if owned or promoted is None or promoted == s.desired or not REVISION.match(promoted):
            return None
        # Nothing seen yet (the Store fills after a start) but history tells of a promotion: that revision stands in,
        # so the pass does not make the spec's revision serve (and point the Services at it) unseen.
        version = next(entry.version for entry in status.history if entry.revision == promoted)
        unseen = ObservedRevision(revision=promoted, version=version, replicas=0, ready_replicas=0, owned=False)
        return unseen, f"missing, while history's newest promotion is of revision {promoted}"
    if hint is not None:
        if hint.revision == stable.revision:
            return None
        return hint, f"names revision {stable.revision}, but {service} selects revision {hint.revision}"
    others = [
        seen
        for seen in owned.values()
        if seen.replicas > 0 and seen.ready_replicas > 0 and seen.revision not in (stable.revision, canary_revision)
    ]
    own = owned.get(stable.revision)
    if own is None:
        if not others:
            return None  # Nothing serves that status does not account for (or the Store has not seen it yet).
        best = _ranked(others, s, promoted)
        return best, f"names revision {stable.revision}, which has no Deployment of this resource"
    # Every promotion is recorded as it is made, so the newest one names the stable revision. When it names
    # another that still serves, status contradicts itself, and the pods decide.
    last = next((seen for seen in others if seen.revision == promoted), None)
    if last is not None:
        return last, (
            f"names revision {stable.revision}, but the newest promotion in history is of revision {last.revision}, "
            f"which still serves with {ready_pods(last.ready_replicas)}"
        )
    stronger = [seen for seen in others if seen.ready_replicas > own.ready_replicas]
    if not stronger:
        return None
    best = _ranked(stronger, s, promoted)
    return best, (
        f"names revision {stable.revision} ({ready_pods(own.ready_replicas)}), but revision {best.revision} serves "
        f"with {ready_pods(best.ready_replicas)}"
    )


def _version_of(seen: ObservedRevision, s: Situation, claimed: str | None = None) -> str:
    """A revision's version: its Deployment's label, else the spec's (for its own revision), else what status says."""
    if seen.version:
        return seen.version
    if seen.revision == s.desired:
        return s.spec.model.version
    return claimed or ""


def _without_canary(status: api.ModelDeploymentStatus) -> api.ModelDeploymentStatus:
    return status.model_copy(update={"canary": None, "currentStepIndex": None, "stepStartedAt": None, "pause": None})


def _tracks(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    owned = _owned(s)
    serving = _serving_now(status, s, owned)
    if serving is not None:
        seen, fault = serving
        stamp = format_time(s.now)
        claimed = next((entry.version for entry in status.history if entry.revision == seen.revision), None)
        adopted = api.TrackStatus(
            version=_version_of(seen, s, claimed),
            revision=seen.revision,
            since=stamp,
            readyAt=stamp if seen.ready_replicas > 0 else None,
        )
        history = list(status.history)
        if REVISION.match(seen.revision):
            # The promotion this operator did not see recorded; the history rules below expect one per stable.
            entry = api.HistoryEntry(
                revision=seen.revision,
                version=adopted.version,
                outcome=str(api.Outcome.PROMOTED),
                reason=REPAIRED,
                time=stamp,
            )
            history = [entry, *history]
        status = status.model_copy(update={"stable": adopted, "history": history})
        kept = f"keeps its {ready_pods(seen.ready_replicas)}" if seen.owned else "stays so until its Deployment is seen"
        found.append(
            Repair("stable", f"{fault}; revision {seen.revision} ({adopted.version}) is the serving one and {kept}")
        )
    stable = status.stable
    if stable is not None and stable.revision in owned:
        label = owned[stable.revision].version
        if label and label != stable.version:
            found.append(Repair("stable.version", f"{shown(stable.version)}, but its Deployment runs {label}; set"))
            status = status.model_copy(update={"stable": stable.model_copy(update={"version": label})})
    canary = status.canary
    if canary is None:
        return status
    if stable is None:
        found.append(Repair("canary", "set while no revision is known to serve; removed with its step and pause"))
        return _without_canary(status)
    if canary.revision == stable.revision:
        found.append(Repair("canary", f"names the serving revision {canary.revision}; removed with its step and pause"))
        return _without_canary(status)
    if canary.revision not in owned and canary.revision != s.desired and owned:
        found.append(
            Repair(
                "canary",
                f"names revision {shown(canary.revision)}, which has no Deployment of this resource and is not the "
                "spec's; removed with its step and pause",
            )
        )
        return _without_canary(status)
    label = owned[canary.revision].version if canary.revision in owned else ""
    if label and label != canary.version:
        found.append(Repair("canary.version", f"{shown(canary.version)}, but its Deployment runs {label}; set"))
        status = status.model_copy(update={"canary": canary.model_copy(update={"version": label})})
    return status


def _history(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    dropped: Counter[str] = Counter()
    kept: list[api.HistoryEntry] = []
    keys: set[tuple[str, ...]] = set()
    for entry in status.history:
        key = (entry.revision, entry.version, entry.outcome, entry.reason, entry.time)
        if entry.outcome not in OUTCOMES:
            dropped["with an outcome this operator never writes"] += 1
        elif not REVISION.match(entry.revision):
            dropped["naming no revision this operator makes"] += 1
        elif _usable(entry.time, s.now) is None:
            dropped["with a time that is no time or in the future"] += 1
        elif key in keys:
            dropped["repeated"] += 1
        else:
            keys.add(key)
            kept.append(entry)

    stable = status.stable.revision if status.stable is not None else None
    if stable is not None:
        # Newest first: until the serving revision's own promotion, a Promoted entry of another revision claims a
        # promotion that would have made that one the serving revision.
        ordered, stable_met = [], False
        for entry in kept:
            if entry.outcome == api.Outcome.PROMOTED:
                if entry.revision == stable:
                    stable_met = True
                elif not stable_met:
                    dropped["Promoted after the serving revision's own promotion"] += 1
                    continue
            ordered.append(entry)
        kept = ordered

    owned = _owned(s)
    if s.retained > 0 and owned:
        # The newest entry is always of a revision the operator keeps (the retained window starts there); entries
        # above every kept revision's that name a revision without a Deployment were not written by it.
        exempt = {stable, s.desired}
        if status.canary is not None:
            exempt.add(status.canary.revision)
        if status.aborted is not None:
            exempt.add(status.aborted.revision)
        while kept and kept[0].revision not in owned and kept[0].revision not in exempt:
            dropped["naming a revision with no Deployment above every one that has one"] += 1
            kept.pop(0)

    if len(kept) > s.history_limit:
        dropped[f"over the limit of {s.history_limit}"] += len(kept) - s.history_limit
        kept = kept[: s.history_limit]
    if dropped:
        why = ", ".join(f"{count} {reason}" for reason, count in dropped.items())
        found.append(Repair("history", f"entries dropped: {why}"))
        status = status.model_copy(update={"history": kept})
    return status


def _fast_track(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    canary = status.canary
    if canary is None or not canary.fastTrack or may_fast_track(s, status.history, canary.revision):
        return status
    found.append(
        Repair(
            "canary.fastTrack",
            f"revision {canary.revision} has no recent promotion with a Deployment of this resource to return to; "
            "set to false, the steps are walked",
        )
    )
    return status.model_copy(update={"canary": canary.model_copy(update={"fastTrack": False})})


def _smoke(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    """A canary's smoke test counts as Passed only with the evidence the operator writes on its Deployment in the
    pass that judged it (the rollout's `since`); anything else is removed, and the smoke test runs."""
    canary = status.canary
    if canary is None or canary.smokeTest is None:
        return status
    seen = _owned(s).get(canary.revision)
    phase = canary.smokeTest.phase
    if phase == api.SmokeTestPhase.PASSED and seen is not None and canary.since and seen.smoke_passed == canary.since:
        return status
    why = (
        f"phase {shown(phase)} is not one a live canary has"
        if phase != api.SmokeTestPhase.PASSED
        else "Passed, but the canary's Deployment carries no evidence of it for this rollout"
    )
    found.append(Repair("canary.smokeTest", f"{why}; removed, the smoke test runs"))
    return status.model_copy(update={"canary": canary.model_copy(update={"smokeTest": None})})


def _granted(s: Situation, status: api.ModelDeploymentStatus, index: int) -> bool:
    """Whether the canary's Deployment has already been asked for the weight of step `index`: replicas are the
    operator's own writes, which status cannot forge. Counted against the spec's replicas and against what both
    revisions are asked for now (the spec's count may have changed since the last scale)."""
    assert status.canary is not None
    owned = _owned(s)
    asked = owned[status.canary.revision].replicas if status.canary.revision in owned else 0
    stable_asked = 0
    if status.stable is not None and status.stable.revision in owned:
        stable_asked = owned[status.stable.revision].replicas
    weight, mirror = target_weight(s.steps, index), mirroring(s.steps, index)
    scaled = any(
        s.router.split(total, weight, mirror=mirror).canary <= asked for total in (s.replicas, asked + stable_asked)
    )
    if not scaled or not s.router.exact:
        return scaled
    # Behind a router the replicas say little (one pod carries 5 % or 25 %); the route is the operator's own write
    # too, and it holds the weight of the step before `index` (which had to be in force for `index` to begin).
    return s.route is not None and s.route.weight >= target_weight(s.steps, index - 1)


def _progress(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    canary = status.canary
    if canary is None:
        strays = {
            "currentStepIndex": status.currentStepIndex,
            "stepStartedAt": status.stepStartedAt,
            "pause": status.pause,
        }
        for name, value in strays.items():
            if value is not None:
                found.append(Repair(name, "set while no canary rolls out; removed"))
        return _without_canary(status) if any(value is not None for value in strays.values()) else status

    steps = s.steps
    claimed = status.currentStepIndex
    index = 0 if claimed is None else min(max(claimed, 0), len(steps))
    faults = []
    if claimed is None:
        faults.append("missing while a canary rolls out")
    elif claimed < 0:
        faults.append("negative")
    elif claimed > len(steps):
        faults.append(f"past the {len(steps)} steps of spec.rollout.steps")
    if not canary.fastTrack and _owned(s):
        verified = index
        while verified > 0 and not _granted(s, status, verified):
            verified -= 1
        if verified < index:
            faults.append(
                f"step {index} asks for {target_weight(steps, index)}%, more than the canary's Deployment has been "
                "asked for"
            )
            index = verified
    if faults:
        found.append(Repair("currentStepIndex", f"{shown(claimed)}: {'; '.join(faults)}; set to {index}"))
    updates: dict[str, Any] = {"currentStepIndex": index}

    started = status.stepStartedAt
    if started is None:
        # Without it every pass would start the step's clock anew: its pause would never end, its deadline never come.
        started = format_time(s.now)
        found.append(Repair("stepStartedAt", f"missing while a canary rolls out; set to {started}"))
    step_moment, canary_since = moment(started), moment(canary.since)
    if canary.since is not None and canary_since is not None and step_moment is not None and step_moment < canary_since:
        found.append(Repair("stepStartedAt", f"{started} is before the canary started; set to {canary.since}"))
        started = canary.since
    updates["stepStartedAt"] = started

    pause = status.pause
    at_pause_step = index < len(steps) and steps[index].pause is not None
    if pause is not None and pause.reason not in PAUSE_REASONS:
        found.append(Repair("pause", f"reason {shown(pause.reason)} is not one this operator writes; removed"))
        updates["pause"] = None
    elif pause is not None and pause.reason in STEP_PAUSES and not at_pause_step:
        found.append(Repair("pause", f"a {pause.reason} pause while step {index} is no pause; removed"))
        updates["pause"] = None
    return status.model_copy(update=updates)


def _analysis(status: api.ModelDeploymentStatus, s: Situation, found: list[Repair]) -> api.ModelDeploymentStatus:
    current = status.analysis
    if current is None:
        return status
    spec = s.spec.rollout.analysis
    now, stamp = s.now, format_time(s.now)
    updates: dict[str, Any] = {}

    started = current.startedAt
    if started is not None and _usable(started, now) is None:
        found.append(Repair("analysis.startedAt", f"{shown(started)} {_fault(started)}; set to {stamp}"))
        started = updates["startedAt"] = stamp
    measured = current.lastMeasuredAt
    if measured is not None and _usable(measured, now) is None:
        found.append(Repair("analysis.lastMeasuredAt", f"{shown(measured)} {_fault(measured)}; removed"))
        updates["lastMeasuredAt"] = None

    soon = format_time(now + analysis.interval_of(spec)) if spec is not None else None
    upcoming = current.nextMeasurementAt
    if upcoming is not None:
        value = moment(upcoming)
        # The farthest the operator ever sets it: one initial delay and one interval from now.
        farthest = now + MAX_CLOCK_SKEW
        if spec is not None:
            farthest += parse_duration(spec.initialDelay) + analysis.interval_of(spec)
        if value is None or (spec is not None and value > farthest):
            fault = _fault(upcoming) if value is None else "lies further ahead than the operator ever sets it"
            found.append(Repair("analysis.nextMeasurementAt", f"{shown(upcoming)} {fault}; set to {soon or 'none'}"))
            upcoming = updates["nextMeasurementAt"] = soon

    updates["metrics"] = [_metric(metric, now, found) for metric in current.metrics]

    canary = status.canary
    if canary is not None and canary.revision == current.revision and not canary.fastTrack:
        phase = current.phase
        if phase not in ANALYSIS_PHASES:
            repaired = api.AnalysisPhase.RUNNING if started is not None else api.AnalysisPhase.PENDING
            found.append(Repair("analysis.phase", f"{shown(phase)} is not a phase; set to {repaired}"))
            phase = updates["phase"] = str(repaired)
        elif phase == api.AnalysisPhase.PENDING and started is not None:
            # Pending once measuring started would never measure again: the canary's steps would wait for good.
            found.append(Repair("analysis.phase", f"Pending although measuring started at {started}; set to Running"))
            phase = updates["phase"] = str(api.AnalysisPhase.RUNNING)
        if phase == api.AnalysisPhase.RUNNING and upcoming is None and soon is not None:
            found.append(Repair("analysis.nextMeasurementAt", f"missing while measuring; set to {soon}"))
            updates["nextMeasurementAt"] = soon
    return status.model_copy(update={"analysis": current.model_copy(update=updates)})


def _metric(metric: api.MetricStatus, now: datetime, found: list[Repair]) -> api.MetricStatus:
    field = f"analysis.metrics[{shown(metric.name)}]"
    measurements = [
        measurement
        for measurement in metric.measurements
        if measurement.phase in MEASUREMENT_PHASES and _usable(measurement.time, now) is not None
    ]
    if len(measurements) < len(metric.measurements):
        dropped = len(metric.measurements) - len(measurements)
        found.append(Repair(f"{field}.measurements", f"{dropped} with no phase or time of a measurement dropped"))
    listed = Counter(measurement.phase for measurement in measurements)
    # Failures and errors are never forgotten by the operator, so the measurements listed are a floor; inconclusive
    # ones are counted afresh after a promote, and successful ones decide nothing by their count.
    floors = {
        "successful": 0,
        "failed": listed[api.MeasurementPhase.FAILED],
        "inconclusive": 0,
        "errors": listed[api.MeasurementPhase.ERROR],
    }
    updates: dict[str, Any] = {"measurements": measurements}
    for name, floor in floors.items():
        count: int = getattr(metric, name)
        if count < floor:
            reason = "negative" if count < 0 else f"fewer than the {floor} listed"
            found.append(Repair(f"{field}.{name}", f"{count} is {reason}; set to {floor}"))
            updates[name] = floor
    errors = updates.get("errors", metric.errors)
    if metric.consecutiveErrors < 0 or metric.consecutiveErrors > errors:
        repaired = min(max(metric.consecutiveErrors, 0), errors)
        found.append(
            Repair(
                f"{field}.consecutiveErrors", f"{metric.consecutiveErrors} is not within 0-{errors}; set to {repaired}"
            )
        )
        updates["consecutiveErrors"] = repaired
    return metric.model_copy(update=updates)
