"""The children that keep a model's capacity: the PodDisruptionBudget `<name>` over the serving pods of every
revision, and the HorizontalPodAutoscaler `<name>` that scales the resource itself. Pure: spec in, manifests out.

Both are named like the resource and select (or target) the resource as a whole, never one revision: a canary's pods
count with the stable's, so a drain mid-canary keeps the budget across both, and the autoscaler's total is what the
planner splits by the weight.
"""

from __future__ import annotations

from modeldeploy.api import models as api
from modeldeploy.children.builders import Manifest, common_labels, owner_reference, resource_name, selector_labels

DISRUPTION_BUDGET = "PodDisruptionBudget"
AUTOSCALER = "HorizontalPodAutoscaler"
CAPACITY_KINDS = (DISRUPTION_BUDGET, AUTOSCALER)
# An unready pod is evicted whatever the budget: a canary that never got Ready (or a stable pod that lost its
# readiness) must not block a node drain, and evicting it costs no serving capacity.
UNHEALTHY_POD_EVICTION_POLICY = "AlwaysAllow"


def _metadata(resource: api.ModelDeployment) -> Manifest:
    return {
        "name": resource_name(resource),
        "namespace": resource.metadata["namespace"],
        "labels": common_labels(resource),
        "ownerReferences": [owner_reference(resource)],
    }


def build_disruption_budget(resource: api.ModelDeployment) -> Manifest | None:
    """The PodDisruptionBudget the resource should have, or None for none.

    Without spec.disruptionBudget: maxUnavailable 1 once more than one pod is asked for (at most one pod drained at
    a time), none for a single pod (a budget of one pod would block every drain of its node, or protect nothing).
    """
    budget = resource.spec.disruptionBudget
    if budget is not None and not budget.enabled:
        return None
    if budget is None and resource.spec.serving_replicas() <= 1:
        return None
    bound: dict[str, int | str] = {"maxUnavailable": api.DEFAULT_MAX_UNAVAILABLE}
    if budget is not None and budget.minAvailable is not None:
        bound = {"minAvailable": budget.minAvailable}
    elif budget is not None and budget.maxUnavailable is not None:
        bound = {"maxUnavailable": budget.maxUnavailable}
    return {
        "apiVersion": "policy/v1",
        "kind": DISRUPTION_BUDGET,
        "metadata": _metadata(resource),
        "spec": {
            **bound,
            "selector": {"matchLabels": selector_labels(resource)},
            "unhealthyPodEvictionPolicy": UNHEALTHY_POD_EVICTION_POLICY,
        },
    }


def build_autoscaler(resource: api.ModelDeployment) -> Manifest | None:
    """The HorizontalPodAutoscaler (autoscaling/v2) of spec.autoscaling, targeting this ModelDeployment's scale
    subresource, or None without spec.autoscaling."""
    autoscaling = resource.spec.autoscaling
    if autoscaling is None:
        return None
    metrics = []
    for name, target in (
        ("cpu", autoscaling.cpu_target()),
        ("memory", autoscaling.targetMemoryUtilizationPercentage),
    ):
        if target is not None:
            metrics.append(
                {
                    "type": "Resource",
                    "resource": {"name": name, "target": {"type": "Utilization", "averageUtilization": target}},
                }
            )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": AUTOSCALER,
        "metadata": _metadata(resource),
        "spec": {
            "scaleTargetRef": {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": resource_name(resource)},
            "minReplicas": autoscaling.minReplicas,
            "maxReplicas": autoscaling.maxReplicas,
            "metrics": metrics,
        },
    }


def build_capacity(resource: api.ModelDeployment) -> list[Manifest]:
    """Every capacity child the resource should have now."""
    return [child for child in (build_disruption_budget(resource), build_autoscaler(resource)) if child is not None]
