"""The revision lifecycle's transitions: a canary starts, is superseded, aborted or rolled back, or is promoted.

Each takes the Decision so far and returns the next one, with its history entry and Event.
"""

from __future__ import annotations

from dataclasses import replace

from modeldeploy.api import models as api
from modeldeploy.api.times import format_time
from modeldeploy.rollout.decision import Decision, Situation
from modeldeploy.rollout.history import may_fast_track


def record(d: Decision, s: Situation, track: api.TrackStatus, outcome: api.Outcome, reason: str) -> Decision:
    entry = api.HistoryEntry(
        revision=track.revision,
        version=track.version,
        outcome=str(outcome),
        reason=reason,
        time=format_time(s.now),
    )
    return replace(d, history=(entry, *d.history)[: s.history_limit])


def start_canary(d: Decision, s: Situation) -> Decision:
    """The spec asks for a revision other than the serving one: roll it out from the first step."""
    if d.canary is not None:
        superseded = d.canary
        d = record(d, s, superseded, api.Outcome.SUPERSEDED, "NewerRevision").with_event(
            "Normal",
            "Superseded",
            f"{superseded.version} (revision {superseded.revision}) replaced by a newer spec",
        )
    # Read after the entry above: history is capped, and what it keeps is what the window sees.
    fast = may_fast_track(s, d.history, s.desired)
    now = format_time(s.now)
    canary = api.CanaryStatus(version=s.spec.model.version, revision=s.desired, since=now, fastTrack=fast)
    how = "at once: it served recently" if fast or not s.steps else f"in {len(s.steps)} steps"
    return replace(d, canary=canary, step_index=0, step_started=now, pause=None).with_event(
        "Normal",
        "RolloutStarted",
        f"Rolling out {s.spec.model.version} (revision {s.desired}) {how}, replacing {d.stable.version}",
    )


def end_canary(d: Decision) -> Decision:
    return replace(d, canary=None, step_index=None, step_started=None, pause=None)


def abort(d: Decision, s: Situation, reason: str, message: str) -> Decision:
    """The canary is scaled to zero and stays so (Degraded) until the spec changes or a retry is asked for."""
    assert d.canary is not None
    canary = d.canary
    outcome = api.Outcome.ABORTED if reason == "Aborted" else api.Outcome.ROLLED_BACK
    aborted = api.AbortedRevision(
        revision=canary.revision,
        version=canary.version,
        reason=reason,
        message=message,
        time=format_time(s.now),
    )
    d = record(d, s, canary, outcome, reason)
    return end_canary(replace(d, aborted=aborted).with_event("Warning", reason, message))


def promote(d: Decision, s: Situation) -> Decision:
    """The canary becomes the serving revision; the one it replaces is scaled to zero."""
    assert d.canary is not None
    canary, stable = d.canary, d.stable
    analysis = d.analysis
    if analysis is not None and analysis.revision == canary.revision:
        measured = sum(metric.successful for metric in analysis.metrics)
        analysis = analysis.model_copy(
            update={
                "phase": str(api.AnalysisPhase.SUCCESSFUL),
                "message": f"promoted with {measured} Successful measurements",
                "nextMeasurementAt": None,
            }
        )
    d = record(replace(d, analysis=analysis), s, canary, api.Outcome.PROMOTED, "RevisionReady").with_event(
        "Normal",
        "Promoted",
        f"{canary.version} (revision {canary.revision}) is promoted and serves all traffic; "
        f"{stable.version} (revision {stable.revision}) scaled to zero",
    )
    now = format_time(s.now)
    promoted = api.TrackStatus(version=canary.version, revision=canary.revision, since=now, readyAt=now)
    return end_canary(replace(d, stable=promoted))
