"""decide(): the rules of one planning pass, in order, from the status the last pass left to a new Decision.

Which revision serves and which rolls out come first (transitions, steps); then what follows from them alone:
the serving revision's readiness, the replicas each revision's Deployment gets, and the canary's weights.
"""

from __future__ import annotations

from dataclasses import replace

from modeldeploy.api import models as api
from modeldeploy.api.times import format_time, parse_time
from modeldeploy.rollout import smoke
from modeldeploy.rollout.decision import Decision, Situation
from modeldeploy.rollout.history import recently_served, retained_revisions
from modeldeploy.rollout.steps import advance, first_traffic_split, mirroring, target_split, target_weight
from modeldeploy.rollout.transitions import end_canary, record, start_canary
from modeldeploy.traffic.routers import route_weight, split_keeping_capacity

FIRST_REVISION = "FirstRevision"


def decide(s: Situation) -> Decision:
    d = _resume(s)
    d = _answer_retry(d, s)
    d = _follow_spec(d, s)
    d = _answer_leftover_requests(d, s)
    d = _settle_stable(d, s)
    return _weigh(replace(d, replicas=_replicas(d, s)), s)


def _resume(s: Situation) -> Decision:
    """The decision the last pass left in status. A resource seen for the first time serves its revision at once:
    there is nothing to protect yet."""
    previous = s.previous
    first = previous.stable is None
    stable = previous.stable or api.TrackStatus(
        version=s.spec.model.version, revision=s.desired, since=format_time(s.now)
    )
    d = Decision(
        stable=stable,
        canary=previous.canary,
        step_index=previous.currentStepIndex,
        step_started=previous.stepStartedAt,
        pause=previous.pause,
        aborted=previous.aborted,
        acknowledged=previous.acknowledged,
        analysis=previous.analysis,
        history=tuple(previous.history),
    )
    if not first:
        return d
    return record(d, s, stable, api.Outcome.PROMOTED, FIRST_REVISION).with_event(
        "Normal", "RevisionCreated", f"Serving {s.model} {s.spec.model.version} (revision {s.desired})"
    )


def _answer_retry(d: Decision, s: Situation) -> Decision:
    """`kubectl mdep retry`: the aborted revision may roll out again, if the spec still asks for it."""
    retry = s.pending("retry", d.acknowledged)
    if retry is None:
        return d
    d = d.acknowledging("retry", retry)
    if d.aborted is None or d.aborted.revision != s.desired:
        return d
    return replace(d, aborted=None).with_event(
        "Normal", "RetryRequested", f"Retrying {d.aborted.version} (revision {s.desired})"
    )


def _follow_spec(d: Decision, s: Situation) -> Decision:
    if d.stable.revision == s.desired:
        if d.canary is not None:
            # The spec went back to what serves: stop at once, no steps.
            canary = d.canary
            d = record(d, s, canary, api.Outcome.ROLLED_BACK, "SpecReverted").with_event(
                "Normal",
                "RolledBack",
                f"Spec returned to {d.stable.version} (revision {d.stable.revision}); "
                f"{canary.version} (revision {canary.revision}) scaled to zero",
            )
            d = end_canary(d)
        return replace(d, aborted=None)
    if d.aborted is not None and d.aborted.revision == s.desired:
        return end_canary(d)  # Not retried until the spec asks for another revision or a retry.
    d = replace(d, aborted=None)
    if d.canary is None or d.canary.revision != s.desired:
        d = start_canary(d, s)
    return advance(d, s)


def _answer_leftover_requests(d: Decision, s: Situation) -> Decision:
    """Requests that found nothing to act on are still answered once."""
    for name in ("promote", "abort"):
        command = s.pending(name, d.acknowledged)
        if command is not None:
            d = d.acknowledging(name, command).with_event(
                "Normal", f"{name.capitalize()}Ignored", f"No rollout in progress to {name}"
            )
    return d


def _settle_stable(d: Decision, s: Situation) -> Decision:
    """The serving revision's readyAt is when all its replicas were first Ready. Only a revision that has never been
    Ready can miss its deadline (one that lost pods later is scaling), and only the very first revision is judged
    here: it has nothing to fall back to, so past its deadline it stays, and says it is failing."""
    seen = s.observed.get(d.stable.revision)
    settled = seen is not None and seen.settled(s.replicas)
    if settled and d.stable.readyAt is None:
        d = replace(d, stable=d.stable.model_copy(update={"readyAt": format_time(s.now)}))
    if settled or d.canary is not None or d.stable.readyAt is not None:
        return d
    started = parse_time(d.stable.since) if d.stable.since else s.now
    if s.now < started + s.deadline:
        return d.waking_in((started + s.deadline - s.now).total_seconds())
    return replace(d, first_revision_late=True)


def _replicas(d: Decision, s: Situation) -> dict[str, int]:
    """Desired replicas of every revision that keeps a Deployment; the others are deleted."""
    replicas = {d.stable.revision: s.replicas}
    if d.canary is not None:
        _, step_index = d.rolling_out()
        # Past the last step the canary comes up in full; by the ready pods, the stable gives up a pod for each
        # canary pod ready; behind a router, it keeps them all until the canary takes every request.
        target = target_split(s, step_index)
        asked = split_keeping_capacity(target, s.replicas, s.ready(d.canary.revision))
        replicas[d.canary.revision] = asked.canary
        replicas[d.stable.revision] = asked.stable
        if smoke.gated(s.spec.rollout, d.canary):
            # Smoke-tested before any traffic: the pods of its first traffic step, the stable keeping all of its.
            replicas[d.canary.revision] = max(1, first_traffic_split(s, step_index).canary)
            replicas[d.stable.revision] = s.replicas
        canary_seen = s.observed.get(d.canary.revision)
        current = s.scaled_to(d.stable.revision)
        if canary_seen is not None and not canary_seen.up_to_date and current is not None:
            # The canary's controller has not caught up with its last scale, so its ready count is unknown for a
            # moment, not zero: the stable keeps what it has, rather than being scaled up to full and back down
            # (pods started and stopped for nothing) or down before canary pods are ready.
            replicas[d.stable.revision] = current
    # Recent revisions keep their Deployments, scaled to zero, so a return to one of them is fast.
    keep = set(retained_revisions(d.history, s.retained))
    keep.update(recently_served(d.history, s.spec.rollout.rollbackWindow))
    if d.aborted is not None:
        keep.add(d.aborted.revision)
    for revision in s.observed:
        if revision not in replicas and revision in keep:
            replicas[revision] = 0
    return replicas


def _weigh(d: Decision, s: Situation) -> Decision:
    """The canary's desired weight (its step's), the weight its route should hold now, and its actual weight (its
    share of every ready pod, or what its accepted route holds; while a route is not accepted yet, what status last
    said)."""
    if d.canary is None:
        return d
    canary, step_index = d.rolling_out()
    stable_seen = s.observed.get(d.stable.revision)
    canary_seen = s.observed.get(canary.revision)
    desired = target_weight(s.steps, step_index)
    canary_ready = s.ready(canary.revision)
    held = s.route.weight if s.route is not None else 0
    actual = s.router.actual_weight(
        stable_seen.ready_replicas if stable_seen is not None else 0,
        canary_seen.ready_replicas if canary_seen is not None else 0,
        s.route,
    )
    if actual is None:
        previous = s.previous.canary
        actual = previous.actualWeight if previous is not None and previous.revision == canary.revision else 0
    if smoke.gated(s.spec.rollout, canary):
        # No traffic before the smoke test passed: the route holds 0 % and no mirror, and `<name>` selects the
        # stable revision alone (Plan.canary_admitted), so whatever the router, the canary's share is 0.
        return replace(d, desired_weight=desired, actual_weight=0, route_weight=0, mirror=False)
    return replace(
        d,
        desired_weight=desired,
        actual_weight=actual,
        route_weight=route_weight(target_split(s, step_index), desired, canary_ready, held),
        mirror=mirroring(s.steps, step_index),
    )
