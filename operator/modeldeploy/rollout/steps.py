"""A canary's walk through spec.rollout.steps: setWeight and setMirror steps end once the traffic is in place,
pauses end on time or on request, the analysis may hold any of them, and past the last one the canary is scaled up
and promoted.

`advance()` goes as far as the observed state allows in one pass; each step function returns the next Decision,
and a step that holds leaves the step index where it is.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy.analysis import measure as analysis
from modeldeploy.api import models as api
from modeldeploy.api.times import format_time, parse_duration, parse_time
from modeldeploy.rollout import smoke
from modeldeploy.rollout.decision import Decision, ObservedRevision, Situation
from modeldeploy.rollout.judging import awaited, judge, resume_analysis
from modeldeploy.rollout.transitions import abort, promote
from modeldeploy.traffic.routers import Split


def target_weight(steps: list[api.CanaryStep], step_index: int) -> int:
    """The weight a step asks for: the last setWeight reached so far, 100 once past every step."""
    if step_index >= len(steps):
        return 100
    weight = 0
    for step in steps[: step_index + 1]:
        if step.setWeight is not None:
            weight = step.setWeight
    return weight


def mirroring(steps: list[api.CanaryStep], step_index: int) -> bool:
    """Whether the canary gets a copy of every request at this step: from a setMirror step until the next
    setWeight step. Never past the last step (the final scale-up)."""
    if step_index >= len(steps):
        return False
    for step in reversed(steps[: step_index + 1]):
        if step.setMirror is not None:
            return True
        if step.setWeight is not None:
            return False
    return False


def target_split(s: Situation, step_index: int) -> Split:
    """The replicas a step (or, past the last one, the promotion) asks of each revision."""
    return s.router.split(s.replicas, target_weight(s.steps, step_index), mirror=mirroring(s.steps, step_index))


def stable_gave_way(stable: ObservedRevision | None, target: Split) -> bool:
    """The serving revision is down to its share of a split.

    Its own count is read only once its controller has seen the scale-down: a stale status would otherwise count
    as "no pods left" and the step would end while its old pods still take traffic.
    """
    return (
        stable is not None
        and stable.up_to_date
        and stable.replicas == target.stable
        and stable.ready_replicas <= target.stable
    )


def advance(d: Decision, s: Situation) -> Decision:
    """Walk the canary through its steps as far as the observed state allows, in this one pass."""
    canary, _ = d.rolling_out()
    abort_request = s.pending("abort", d.acknowledged)
    if abort_request is not None:
        return abort(
            d.acknowledging("abort", abort_request),
            s,
            "Aborted",
            f"Rollout of {canary.version} (revision {canary.revision}) aborted on request; "
            f"{d.stable.version} takes all traffic",
        )
    if canary.fastTrack:
        d = replace(d, step_index=len(s.steps))
    d = _answer_promote(d, s)

    d, goes_on = judge(d, s)
    if not goes_on:
        return d

    if s.spec.rollout.paused:
        if d.pause is None or d.pause.reason != "SpecPaused":
            pause = api.PauseStatus(reason="SpecPaused", startedAt=format_time(s.now))
            d = replace(d, pause=pause).with_event(
                "Normal", "Paused", f"Rollout of {canary.version} paused by spec.rollout.paused"
            )
        return d
    if d.pause is not None and d.pause.reason == "SpecPaused":
        # Resumed: the step in progress starts its clock again.
        d = replace(d, pause=None, step_started=format_time(s.now)).with_event(
            "Normal", "Resumed", f"Rollout of {canary.version} resumed"
        )
    if smoke.gated(s.spec.rollout, d.canary):
        return _smoke_step(d, s)
    return _walk(d, s)


def first_traffic_split(s: Situation, step_index: int) -> Split:
    """The split of the first step from `step_index` on that gives the canary traffic (a weight or a mirror), or of
    the promotion: the pods a smoke test asks, since they are the ones that will take that traffic."""
    for index in range(step_index, len(s.steps)):
        if target_weight(s.steps, index) > 0 or mirroring(s.steps, index):
            return target_split(s, index)
    return target_split(s, len(s.steps))


def _smoke_step(d: Decision, s: Situation) -> Decision:
    """Held before any traffic until the round on the canary's first pods is judged: Passed lets the walk begin
    (the step's clock starts now), Failed rolls the canary back. Until a round is judged, the progress deadline
    runs: pods that never get Ready, or a round that cannot finish, end there."""
    canary, _ = d.rolling_out()
    started = parse_time(d.step_started) if d.step_started else s.now
    judged = s.smoke
    if judged is None or judged.revision != canary.revision:
        return _check_deadline(d, s, started)
    verdict = smoke.round_status(judged, format_time(s.now))
    d = replace(d, canary=canary.model_copy(update={"smokeTest": verdict}))
    if not judged.passed:
        return abort(
            d,
            s,
            smoke.SMOKE_TEST_FAILED,
            f"{canary.version} (revision {canary.revision}) failed its smoke test and was rolled back before "
            f"taking any traffic: {judged.first_failure}; {d.stable.version} keeps serving",
        )
    d = replace(d, step_started=format_time(s.now)).with_event(
        "Normal",
        "SmokeTestPassed",
        f"{canary.version} answered {verdict.requests} smoke requests as expected on {len(verdict.pods)} pod(s); "
        "it may take traffic",
    )
    return _walk(d, s)


def _answer_promote(d: Decision, s: Situation) -> Decision:
    """`kubectl mdep promote`: past an inconclusive analysis, past an open pause, or (--full) past every step."""
    canary, step_index = d.rolling_out()
    promote_request = s.pending("promote", d.acknowledged)
    if promote_request is None:
        return d
    d = d.acknowledging("promote", promote_request)
    if d.pause is not None and d.pause.reason == analysis.ANALYSIS_PAUSE:
        d = resume_analysis(replace(d, pause=None), s)
        if not promote_request.full:
            return d
    if promote_request.full:
        return replace(d, step_index=len(s.steps), pause=None).with_event(
            "Normal", "PromotedFully", f"Skipping the remaining steps of {canary.version}"
        )
    if step_index < len(s.steps) and s.steps[step_index].pause is not None:
        return replace(d, step_index=step_index + 1, step_started=format_time(s.now), pause=None).with_event(
            "Normal", "PauseEnded", f"Promoted past the pause of {canary.version}"
        )
    return d


def _walk(d: Decision, s: Situation) -> Decision:
    while d.canary is not None and d.step_index is not None:
        started = parse_time(d.step_started) if d.step_started else s.now
        if d.step_index >= len(s.steps):
            return _finish(d, s, started)
        step = s.steps[d.step_index]
        after = _pause_step(d, s, step.pause, started) if step.pause is not None else _weight_step(d, s, started)
        if after.canary is None or after.step_index == d.step_index:
            return after  # The step holds (or the canary is gone): the walk ends here for this pass.
        d = after
    return d


def _pause_step(d: Decision, s: Situation, pause: api.Pause, started: datetime) -> Decision:
    _, step_index = d.rolling_out()
    if pause.duration is None:
        if d.pause is None or d.pause.reason != "PromotionRequired":
            return replace(d, pause=api.PauseStatus(reason="PromotionRequired", startedAt=format_time(started)))
        return d
    ends = started + parse_duration(pause.duration)
    if s.now < ends:
        timed = api.PauseStatus(reason="PauseStep", startedAt=format_time(started), endsAt=format_time(ends))
        return replace(d, pause=timed).waking_in((ends - s.now).total_seconds())
    d = replace(d, pause=None, awaiting=awaited(d, s, started))
    if d.awaiting:
        return d
    next_index = step_index + 1
    # A pause right after a pause starts when the first was due to end, so pauses never drift; any other step
    # starts now, so its deadline counts from when its scale is first asked for. Under analysis every step starts
    # now: the first pause may have been held past its end, and the next must not count the measurement that
    # released it as one of its own.
    next_is_pause = next_index < len(s.steps) and s.steps[next_index].pause is not None
    analysed = d.analysis is not None and d.analysis.startedAt is not None
    next_started = ends if next_is_pause and not analysed else s.now
    return _completed(replace(d, step_index=next_index, step_started=format_time(next_started)), s, step_index)


def _weight_step(d: Decision, s: Situation, started: datetime) -> Decision:
    """A setWeight step is done when the canary has its pods ready and the stable has given up its share."""
    canary, step_index = d.rolling_out()
    target = target_split(s, step_index)
    weight, mirror = target_weight(s.steps, step_index), mirroring(s.steps, step_index)
    if (
        s.ready(canary.revision) >= target.canary
        and stable_gave_way(s.observed.get(d.stable.revision), target)
        and s.router.in_force(s.route, weight, mirror=mirror)
    ):
        # Only the analysis holds the step now: its own limits end the wait, not the progress deadline.
        d = replace(d, pause=None, awaiting=awaited(d, s, started) if target.canary > 0 else ())
        if d.awaiting:
            return d
        return _completed(replace(d, step_index=step_index + 1, step_started=format_time(s.now)), s, step_index)
    return _check_deadline(d, s, started)


def _completed(d: Decision, s: Situation, step_index: int) -> Decision:
    """A Normal Event for a step that ended by itself (a person's promote says so with its own Event)."""
    canary, _ = d.rolling_out()
    step = s.steps[step_index]
    if step.pause is not None:
        what = f"pause {step.pause.duration}"
    elif step.setMirror is not None:
        what = "setMirror"
    else:
        what = f"setWeight {step.setWeight}"
    return d.with_event(
        "Normal", "StepCompleted", f"Step {step_index + 1}/{len(s.steps)} of {canary.version} completed ({what})"
    )


def _finish(d: Decision, s: Situation, started: datetime) -> Decision:
    """Past the last step: the canary gets every replica and is promoted once they are all ready (and, with a
    router, once its route gives it all the traffic: the revision that stops serving then serves nothing)."""
    canary, _ = d.rolling_out()
    if (
        (s.scaled_to(canary.revision) or 0) >= s.replicas
        and s.ready(canary.revision) >= s.replicas
        and s.router.in_force(s.route, 100, mirror=False)
    ):
        return promote(d, s)
    return _check_deadline(d, s, started)


def _check_deadline(d: Decision, s: Situation, started: datetime) -> Decision:
    """A step not done by the progress deadline rolls the canary back; until then, wake up at the deadline."""
    canary, _ = d.rolling_out()
    if s.now < started + s.deadline:
        return d.waking_in((started + s.deadline - s.now).total_seconds())
    return abort(
        d,
        s,
        "ProgressDeadlineExceeded",
        f"{canary.version} (revision {canary.revision}) did not get Ready within "
        f"{s.spec.rollout.progressDeadlineSeconds}s ({s.ready(canary.revision)} ready) and was rolled back; "
        f"{d.stable.version} keeps serving",
    )
