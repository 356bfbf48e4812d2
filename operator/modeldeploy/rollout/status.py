"""The status as a pure function of a pass's Decision: tracks, conditions, phase and message, written once.

Nothing here decides: the phase and conditions say what the Decision and the observed pods already are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from modeldeploy.analysis import measure as analysis
from modeldeploy.api import models as api
from modeldeploy.children.builders import selector_labels
from modeldeploy.rollout.conditions import set_condition, sorted_conditions
from modeldeploy.rollout.decision import Decision, Event, ObservedRevision, effective_steps

NO_PROBLEM = ("AsExpected", "No problems found")


@dataclass(frozen=True)
class ConditionValue:
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Health:
    """The resource's phase and message, and the Progressing and Degraded conditions that explain them."""

    phase: api.Phase
    message: str
    progressing: ConditionValue
    degraded: ConditionValue


def _asked(decision: Decision, revision: str, seen: ObservedRevision | None) -> int:
    """The replicas a track's Deployment asks for once this pass has written it: the decision's count, which the
    pass applies before it writes the status, or else what the cluster shows. The status of the pass that creates a
    Deployment says so, rather than 0 followed by a second write moments later."""
    asked = decision.replicas.get(revision)
    if asked is not None:
        return asked
    return seen.replicas if seen is not None else 0


def build_status(
    decision: Decision,
    resource: api.ModelDeployment,
    observed: Mapping[str, ObservedRevision],
    now: datetime,
    *,
    model: str,
    url: str,
) -> api.ModelDeploymentStatus:
    """The status that says what `decision` is, for `resource` (its spec, generation and previous status) with
    `observed` pods at `now`."""
    previous = resource.status
    generation = int(resource.metadata.get("generation", 0))
    replicas = resource.spec.serving_replicas()
    stable_seen = observed.get(decision.stable.revision)
    stable = decision.stable.model_copy(
        update={
            "replicas": _asked(decision, decision.stable.revision, stable_seen),
            "readyReplicas": stable_seen.ready_replicas if stable_seen is not None else 0,
        }
    )
    canary = None
    if decision.canary is not None:
        canary_seen = observed.get(decision.canary.revision)
        canary = decision.canary.model_copy(
            update={
                "replicas": _asked(decision, decision.canary.revision, canary_seen),
                "readyReplicas": canary_seen.ready_replicas if canary_seen is not None else 0,
                "desiredWeight": decision.desired_weight,
                "actualWeight": decision.actual_weight,
            }
        )
    stable_settled = stable_seen is not None and stable_seen.settled(replicas)
    health = assess(decision, resource.spec, stable, canary, stable_settled=stable_settled, model=model)

    available = stable.readyReplicas >= 1 or replicas == 0 or (canary is not None and canary.readyReplicas > 0)
    ready = health.phase == api.Phase.HEALTHY
    values = {
        api.ConditionType.AVAILABLE: ConditionValue(
            available,
            "MinimumReplicasAvailable" if available else "NoReplicasReady",
            f"{stable.readyReplicas}/{replicas} replicas of {model} {stable.version} ready",
        ),
        api.ConditionType.DEGRADED: health.degraded,
        api.ConditionType.PROGRESSING: health.progressing,
        api.ConditionType.READY: ConditionValue(
            ready, "AllReplicasReady" if ready else str(health.phase), health.message
        ),
    }
    conditions = list(previous.conditions)
    for kind, value in values.items():
        conditions = set_condition(
            conditions, kind, value.status, value.reason, value.message, generation=generation, now=now
        )

    return previous.model_copy(
        update={
            "observedGeneration": generation,
            "phase": str(health.phase),
            "message": health.message,
            "model": model,
            "conditions": sorted_conditions(conditions),
            "stable": stable,
            "canary": canary,
            "currentStepIndex": decision.step_index,
            "stepStartedAt": decision.step_started,
            "pause": decision.pause,
            "acknowledged": decision.acknowledged,
            "aborted": decision.aborted,
            "analysis": decision.analysis,
            "url": url,
            "history": list(decision.history),
            "replicas": sum(decision.replicas.values()),
            "selector": ",".join(f"{key}={value}" for key, value in sorted(selector_labels(resource).items())),
        }
    )


def assess(
    decision: Decision,
    spec: api.ModelDeploymentSpec,
    stable: api.TrackStatus,
    canary: api.CanaryStatus | None,
    *,
    stable_settled: bool,
    model: str,
) -> Health:
    """Degraded (rolled back, or a first revision past its deadline), Progressing or Paused (a canary rolling out,
    or the serving revision scaling), else Healthy. `stable` and `canary` carry their pod counts."""
    serving = f"{model} {stable.version}"
    replicas = f"{stable.readyReplicas}/{spec.serving_replicas()} replicas"
    no_problem = ConditionValue(False, *NO_PROBLEM)
    if decision.aborted is not None:
        aborted = decision.aborted
        return Health(
            api.Phase.DEGRADED,
            aborted.message,
            progressing=ConditionValue(False, aborted.reason, f"Rollout of {aborted.version} stopped"),
            degraded=ConditionValue(True, aborted.reason, aborted.message),
        )
    if decision.first_revision_late:
        message = (
            f"{serving} (revision {stable.revision}) was not Ready within {spec.rollout.progressDeadlineSeconds}s: "
            f"{replicas} ready"
        )
        return Health(
            api.Phase.DEGRADED,
            message,
            progressing=ConditionValue(False, "ProgressDeadlineExceeded", message),
            degraded=ConditionValue(True, "ProgressDeadlineExceeded", message),
        )
    if canary is not None:
        phase, message = _rolling_out(decision, spec, stable, canary)
        reason = "RolloutPaused" if phase == api.Phase.PAUSED else "RevisionProgressing"
        return Health(phase, message, progressing=ConditionValue(True, reason, message), degraded=no_problem)
    message = f"{replicas} of {serving} ready"
    if not stable_settled:
        return Health(
            api.Phase.PROGRESSING,
            message,
            progressing=ConditionValue(True, "ScalingReplicas", message),
            degraded=no_problem,
        )
    return Health(
        api.Phase.HEALTHY,
        message,
        progressing=ConditionValue(False, "RolloutComplete", f"{serving} is rolled out"),
        degraded=no_problem,
    )


def _rolling_out(
    decision: Decision, spec: api.ModelDeploymentSpec, stable: api.TrackStatus, canary: api.CanaryStatus
) -> tuple[api.Phase, str]:
    _, step_index = decision.rolling_out()
    steps = effective_steps(spec.rollout)
    if step_index >= len(steps):
        asked = spec.serving_replicas()
        message = f"promoting {canary.version}: {canary.readyReplicas}/{asked} ready; {stable.version} serving"
    else:
        step = f"step {step_index + 1}/{len(steps)}"
        message = (
            f"canary {canary.version} at {canary.actualWeight}% "
            f"(desired {canary.desiredWeight}%, {step}); {stable.version} serving"
        )
    if decision.awaiting:
        message += f"; waiting for a Successful measurement of {', '.join(decision.awaiting)}"
    pause = decision.pause
    if pause is None:
        return api.Phase.PROGRESSING, message
    if pause.reason == "PauseStep" and pause.endsAt:
        # The end time, not the time left: a message that changed every pass would be written every pass.
        message += f"; paused until {pause.endsAt[11:19]}Z"
    elif pause.reason == "PromotionRequired":
        message += "; paused until promoted (kubectl mdep promote)"
    elif pause.reason == analysis.ANALYSIS_PAUSE:
        detail = decision.analysis.message if decision.analysis is not None else ""
        message += f"; paused, analysis inconclusive ({detail}): promote to go on measuring, or abort"
    else:
        message += "; paused by spec.rollout.paused"
    return api.Phase.PAUSED, message


def phase_change_event(previous: api.ModelDeploymentStatus, status: api.ModelDeploymentStatus) -> Event | None:
    """An Event when the phase changes (not on a resource's first status): Warning into Degraded, else Normal."""
    if previous.phase is None or previous.phase == status.phase:
        return None
    return Event("Warning" if status.phase == api.Phase.DEGRADED else "Normal", f"Phase{status.phase}", status.message)
