"""`modeldeploy promote|abort|retry|status` (also `kubectl mdep ...`): GitOps-safe commands.

They never touch the spec, which belongs to git. A request is written to status.commands with a fresh id; the
operator acts on each id once, records an Event, and acknowledges it in status.acknowledged. Without the plugin
the same request is one kubectl command (see COMMAND_HELP).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import models as api
from modeldeploy.api.times import format_time, parse_time

COMMAND_HELP = {
    "promote": "finish the current pause (with --full: skip every remaining step)",
    "abort": "give all traffic back to the serving revision and scale the new one to zero",
    "retry": "try an aborted revision again",
}

PLAIN_KUBECTL = (
    "kubectl patch mdep NAME --subresource=status --type=merge "
    '-p \'{"status":{"commands":{"COMMAND":{"id":"\'$(date +%s%N)\'"}}}}\''
)


def command_body(full: bool = False, now: datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": uuid.uuid4().hex, "requestedAt": format_time(now or datetime.now(UTC))}
    if full:
        body["full"] = True
    return body


def _step_text(step: api.CanaryStep) -> str:
    if step.setWeight is not None:
        return f"setWeight: {step.setWeight}%"
    if step.setMirror is not None:
        return "setMirror: a copy of every request, no answers"
    assert step.pause is not None
    return f"pause: {step.pause.duration}" if step.pause.duration else "pause: until promoted"


def _seconds_left(until: str, now: datetime) -> str:
    return f"{max(0.0, (parse_time(until) - now).total_seconds()):.0f}s"


def render_status(body: dict[str, Any], now: datetime | None = None) -> str:
    """A rollout at a glance: steps with the current one marked, both tracks, weights, what it waits for."""
    now = now or datetime.now(UTC)
    resource = api.ModelDeployment.model_validate(body)
    status = resource.status
    rollout = resource.spec.rollout
    metadata = resource.metadata
    marks = {"Healthy": "✔", "Progressing": "◌", "Paused": "॥", "Degraded": "✖"}
    lines = [
        f"Name:        {metadata.get('name')}",
        f"Namespace:   {metadata.get('namespace')}",
        f"Model:       {status.model or resource.spec.model.name or metadata.get('name')}",
        f"Phase:       {marks.get(status.phase or '', '?')} {status.phase or 'Unknown'}",
        f"Message:     {status.message}",
        f"Strategy:    {rollout.strategy}" + ("  (paused by spec)" if rollout.paused else ""),
    ]
    if status.observedGeneration != metadata.get("generation"):
        lines.append("             (status not yet updated for the latest spec)")
    canary = status.canary
    if rollout.strategy == api.Strategy.CANARY:
        lines.append("Steps:")
        current = status.currentStepIndex if canary is not None else None
        for index, step in enumerate(rollout.steps):
            if current is None:
                mark = " "
            elif index < current:
                mark = "✔"
            elif index == current:
                mark = "▶"
            else:
                mark = " "
            extra = ""
            if index == current and status.pause is not None and status.pause.endsAt:
                extra = f"   ends {status.pause.endsAt[11:19]}Z, {_seconds_left(status.pause.endsAt, now)} left"
            lines.append(f"  {mark} {index + 1}. {_step_text(step)}{extra}")
        if canary is not None and current is not None and current >= len(rollout.steps):
            lines.append("  ▶ promotion: new revision scaling to every replica")
    lines.append("Tracks:")
    header = f"  {'':8}{'VERSION':12}{'REVISION':13}{'READY':9}WEIGHT"
    lines.append(header)
    stable_weight = 100 - (canary.actualWeight if canary else 0)
    if status.stable is not None:
        stable = status.stable
        ready = f"{stable.readyReplicas}/{stable.replicas}"
        lines.append(f"  {'stable':8}{stable.version:12}{stable.revision:13}{ready:9}{stable_weight}%")
    if canary is not None:
        ready = f"{canary.readyReplicas}/{canary.replicas}"
        weight = f"{canary.actualWeight}% (desired {canary.desiredWeight}%)"
        lines.append(f"  {'canary':8}{canary.version:12}{canary.revision:13}{ready:9}{weight}")
    if status.artifact is not None and not status.artifact.verified:
        # Said only when it needs saying: the artifact is not pinned by spec.model.sha256.
        lines.append(f"Artifact:    {status.artifact.reason}: {status.artifact.message}")
    lines.extend(_analysis_lines(status.analysis))
    lines.append(f"Waiting for: {_waiting_for(resource, now)}")
    if status.history:
        lines.append("History:")
        for entry in status.history[:5]:
            lines.append(f"  {entry.time[:19]}Z  {entry.version:12}{entry.outcome:11}{entry.reason}")
    return "\n".join(lines)


def _analysis_lines(analysis: api.AnalysisStatus | None) -> list[str]:
    if analysis is None:
        return []
    lines = [f"Analysis:    {analysis.phase} ({analysis.version}){': ' + analysis.message if analysis.message else ''}"]
    lines.append(f"  {'METRIC':20}{'LATEST':14}{'VALUE':10}{'OK':>4}{'FAIL':>6}{'INC':>5}{'ERR':>5}")
    for metric in analysis.metrics:
        latest = metric.measurements[0] if metric.measurements else None
        value = f"{latest.value:.4g}" if latest is not None and latest.value is not None else "-"
        lines.append(
            f"  {metric.name:20}{metric.phase or '-':14}{value:10}{metric.successful:>4}{metric.failed:>6}"
            f"{metric.inconclusive:>5}{metric.errors:>5}"
        )
    return lines


def _waiting_for(resource: api.ModelDeployment, now: datetime) -> str:
    status = resource.status
    if status.canary is None:
        if status.aborted is not None:
            return f"a spec change or `retry` ({status.aborted.version} was rolled back: {status.aborted.reason})"
        return "nothing"
    if status.pause is not None:
        if status.pause.reason == "SpecPaused":
            return "spec.rollout.paused to be set to false"
        if status.pause.reason == "PromotionRequired":
            return "`promote` (an open pause)"
        if status.pause.reason == "AnalysisInconclusive":
            return "`promote` to go on measuring, or `abort` (the analysis was inconclusive)"
        if status.pause.endsAt:
            return f"the pause to end in {_seconds_left(status.pause.endsAt, now)}"
    canary = status.canary
    analysis = status.analysis
    if (
        canary.readyReplicas >= canary.replicas
        and analysis is not None
        and analysis.phase == api.AnalysisPhase.RUNNING
        and analysis.nextMeasurementAt
    ):
        return f"Successful measurements of every metric (next in {_seconds_left(analysis.nextMeasurementAt, now)})"
    return f"canary pods to be Ready ({canary.readyReplicas}/{canary.replicas})"
