"""The canary's analysis as the rollout sees it: when measuring starts, how measurements are counted into
status.analysis, and what a verdict does to the rollout (roll back, or pause for a person)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from modeldeploy.analysis import measure as analysis
from modeldeploy.api import models as api
from modeldeploy.api.times import format_time, parse_time
from modeldeploy.rollout import smoke
from modeldeploy.rollout.decision import Decision, Event, Situation
from modeldeploy.rollout.transitions import abort


def judge(d: Decision, s: Situation) -> tuple[Decision, bool]:
    """Start, update and act on the canary's analysis. The flag is False when the rollout stops in this pass (rolled
    back, or paused for a person)."""
    assert d.canary is not None
    canary = d.canary
    spec = s.spec.rollout.analysis
    if spec is None or canary.fastTrack:
        return replace(d, analysis=None), True
    current = d.analysis
    if current is None or current.revision != canary.revision or _concluded_before(current, d.pause):
        current = api.AnalysisStatus(
            revision=canary.revision,
            version=canary.version,
            phase=str(api.AnalysisPhase.PENDING),
            message="waiting for the canary's first Ready pod",
            metrics=analysis.record([], spec, {}),
        )
    if current.startedAt is None:
        if s.ready(canary.revision) == 0:
            return replace(d, analysis=current), True
        if smoke.gated(s.spec.rollout, canary):
            # Its pods take no traffic before the smoke test passed: measuring would find nothing.
            waiting = current.model_copy(update={"message": "waiting for the canary's smoke test"})
            return replace(d, analysis=waiting), True
        current = _started(current, spec, s.now)
    if d.pause is not None and d.pause.reason == analysis.ANALYSIS_PAUSE:
        return replace(d, analysis=current), False
    if current.phase != api.AnalysisPhase.RUNNING:
        return replace(d, analysis=current), True
    if s.measurements:
        d = replace(d, events=(*d.events, *_measurement_events(current.metrics, s.measurements)))
        current = _counted(current, spec, s.measurements, s.now)

    judged = analysis.verdict(current.metrics, spec)
    if judged.phase in (api.AnalysisPhase.FAILED, api.AnalysisPhase.ERROR):
        d = replace(d, analysis=_concluded(current, judged))
        rolled_back = abort(
            d,
            s,
            "AnalysisFailed",
            f"Analysis of {canary.version} (revision {canary.revision}) failed: {judged.message}; "
            f"rolled back, {d.stable.version} takes all traffic",
        )
        return rolled_back, False
    if judged.phase == api.AnalysisPhase.INCONCLUSIVE:
        pause = api.PauseStatus(reason=analysis.ANALYSIS_PAUSE, startedAt=format_time(s.now))
        paused = replace(d, analysis=_concluded(current, judged), pause=pause).with_event(
            "Warning",
            analysis.ANALYSIS_PAUSE,
            f"Rollout of {canary.version} paused: {judged.message}; promote to go on measuring, or abort",
        )
        return paused, False
    d = replace(d, analysis=current)
    if current.nextMeasurementAt is not None:
        d = d.waking_in(max((parse_time(current.nextMeasurementAt) - s.now).total_seconds(), 0.0))
    return d, True


def _concluded_before(current: api.AnalysisStatus, pause: api.PauseStatus | None) -> bool:
    """An analysis of this revision that ended (promoted, rolled back, or inconclusive with no pause holding the
    canary) belongs to an earlier attempt: a retry or a return to the revision is judged afresh. Kept, it would
    never measure again, and the canary's steps would wait for a measurement for good."""
    if current.phase == api.AnalysisPhase.INCONCLUSIVE:
        return pause is None or pause.reason != analysis.ANALYSIS_PAUSE
    return current.phase in (api.AnalysisPhase.SUCCESSFUL, api.AnalysisPhase.FAILED, api.AnalysisPhase.ERROR)


def _started(current: api.AnalysisStatus, spec: api.AnalysisSpec, now: datetime) -> api.AnalysisStatus:
    """Measuring starts with the canary's first Ready pod: before it, there is no traffic to judge."""
    first = analysis.first_measurement_at(spec, now)
    return current.model_copy(
        update={
            "startedAt": format_time(now),
            "phase": str(api.AnalysisPhase.RUNNING),
            "nextMeasurementAt": format_time(first),
            "message": f"first measurement at {format_time(first)[11:19]}Z, then every {spec.interval}",
        }
    )


def _counted(
    current: api.AnalysisStatus,
    spec: api.AnalysisSpec,
    measurements: Mapping[str, api.Measurement],
    now: datetime,
) -> api.AnalysisStatus:
    warm_until = analysis.warm_until(spec, parse_time(current.startedAt)) if current.startedAt else now
    warming_up = now < warm_until
    metrics = analysis.record(current.metrics, spec, measurements, warming_up=warming_up)
    message = "latest: " + ", ".join(f"{metric.name} {metric.phase}" for metric in metrics)
    if warming_up and any(analysis.is_no_data(m) for m in measurements.values()):
        message = f"warming up until {format_time(warm_until)[11:19]}Z: no data is not counted yet; {message}"
    return current.model_copy(
        update={
            "metrics": metrics,
            "lastMeasuredAt": format_time(now),
            "nextMeasurementAt": format_time(now + analysis.interval_of(spec)),
            "message": message,
        }
    )


MEASUREMENT_WARNINGS: dict[str, str] = {
    api.MeasurementPhase.FAILED: "AnalysisMeasurementFailed",
    api.MeasurementPhase.ERROR: "AnalysisMeasurementError",
}


def _measurement_events(
    previous: Sequence[api.MetricStatus], measurements: Mapping[str, api.Measurement]
) -> list[Event]:
    """A Warning when a metric starts failing or erroring (its latest measurement was of another phase, or there was
    none), also while the limits still tolerate it. Not one per measurement: a metric that keeps failing is counted
    in status.analysis, and a Prometheus that stays away would otherwise make a Warning every interval."""
    latest = {metric.name: metric.phase for metric in previous}
    events = []
    for name, measurement in measurements.items():
        reason = MEASUREMENT_WARNINGS.get(measurement.phase)
        if reason is not None and latest.get(name) != measurement.phase:
            events.append(Event("Warning", reason, f"{name}: {measurement.message}"))
    return events


def _concluded(current: api.AnalysisStatus, judged: analysis.Verdict) -> api.AnalysisStatus:
    """A verdict that stops the rollout also stops measuring."""
    return current.model_copy(update={"phase": str(judged.phase), "message": judged.message, "nextMeasurementAt": None})


def resume_analysis(d: Decision, s: Situation) -> Decision:
    """After a person promoted past an inconclusive analysis: count inconclusive measurements afresh, go on."""
    spec = s.spec.rollout.analysis
    if d.analysis is None or spec is None:
        return d
    resumed = d.analysis.model_copy(
        update={
            "phase": str(api.AnalysisPhase.RUNNING),
            "message": "resumed by promote",
            "nextMeasurementAt": format_time(s.now + analysis.interval_of(spec)),
            "metrics": [metric.model_copy(update={"inconclusive": 0}) for metric in d.analysis.metrics],
        },
        deep=True,
    )
    return replace(d, analysis=resumed).with_event(
        "Normal", "AnalysisResumed", f"Promoted past the inconclusive analysis of {resumed.version}"
    )


def awaited(d: Decision, s: Situation, since: datetime) -> tuple[str, ...]:
    """Metrics without a Successful measurement taken since `since`; empty when nothing is analysed."""
    if d.analysis is None or d.analysis.startedAt is None or s.spec.rollout.analysis is None:
        return ()
    return tuple(analysis.awaited(d.analysis.metrics, since))
