"""The capacity children (children/capacity.py): the PodDisruptionBudget over every revision's pods and the
HorizontalPodAutoscaler that scales the resource; the spec's rules for both; and whole passes that create, update
and delete them (against the in-memory API server of test_reconcile)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.api import models as api
from modeldeploy.children.capacity import build_autoscaler, build_capacity, build_disruption_budget
from modeldeploy.config import OperatorConfig

from .test_reconcile import SPEC, Harness, with_version

RESOURCE_METADATA = {"name": "fraud", "namespace": "models", "uid": "uid-1", "generation": 1}
CPU_REQUEST = {"resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}


def resource(**spec: Any) -> api.ModelDeployment:
    body = {"model": {"version": "1.0.0", "uri": "s3://models/fraud/1.0.0/model.joblib"}, **spec}
    return api.ModelDeployment.model_validate(
        {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": RESOURCE_METADATA, "spec": body}
    )


@pytest.mark.parametrize(
    ("spec", "bound"),
    [
        ({"replicas": 1}, None),
        ({"replicas": 0}, None),
        ({"replicas": 2}, {"maxUnavailable": 1}),
        ({"replicas": 1, "disruptionBudget": {}}, {"maxUnavailable": 1}),
        ({"replicas": 5, "disruptionBudget": {"maxUnavailable": "20%"}}, {"maxUnavailable": "20%"}),
        ({"replicas": 5, "disruptionBudget": {"minAvailable": 4}}, {"minAvailable": 4}),
        ({"replicas": 5, "disruptionBudget": {"enabled": False}}, None),
        # The autoscaler's floor counts, not the spec.replicas it has not raised yet.
        (
            {"replicas": 1, "autoscaling": {"minReplicas": 3, "maxReplicas": 6}, "runtime": CPU_REQUEST},
            {"maxUnavailable": 1},
        ),
    ],
    ids=[
        "one-pod",
        "none",
        "default",
        "asked-for-one-pod",
        "percent",
        "min-available",
        "disabled",
        "autoscaled-floor",
    ],
)
def test_the_disruption_budget_follows_the_spec(spec: dict[str, Any], bound: dict[str, Any] | None) -> None:
    budget = build_disruption_budget(resource(**spec))
    if bound is None:
        assert budget is None
        return
    assert budget is not None
    assert (budget["apiVersion"], budget["kind"], budget["metadata"]["name"]) == (
        "policy/v1",
        "PodDisruptionBudget",
        "fraud",
    )
    assert {key: budget["spec"][key] for key in ("maxUnavailable", "minAvailable") if key in budget["spec"]} == bound
    # Every revision's pods, whatever their revision: a drain mid-canary counts the canary's with the stable's.
    assert budget["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/instance": "fraud", "app.kubernetes.io/component": "model-server"}
    }
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    [owner] = budget["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", "uid-1", True)


@pytest.mark.parametrize(
    ("autoscaling", "metrics"),
    [
        ({"maxReplicas": 4}, [("cpu", 80)]),
        ({"maxReplicas": 4, "targetCPUUtilizationPercentage": 60}, [("cpu", 60)]),
        ({"maxReplicas": 4, "targetMemoryUtilizationPercentage": 70}, [("memory", 70)]),
        (
            {"maxReplicas": 4, "targetCPUUtilizationPercentage": 60, "targetMemoryUtilizationPercentage": 70},
            [("cpu", 60), ("memory", 70)],
        ),
    ],
    ids=["default-cpu", "cpu", "memory-only", "both"],
)
def test_the_autoscaler_targets_the_resource_itself(
    autoscaling: dict[str, Any], metrics: list[tuple[str, int]]
) -> None:
    scaler = build_autoscaler(resource(replicas=2, autoscaling={"minReplicas": 2, **autoscaling}, runtime=CPU_REQUEST))
    assert scaler is not None
    assert (scaler["apiVersion"], scaler["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    assert scaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "fraud",
    }
    assert (scaler["spec"]["minReplicas"], scaler["spec"]["maxReplicas"]) == (2, 4)
    assert [
        (m["resource"]["name"], m["resource"]["target"]["averageUtilization"]) for m in scaler["spec"]["metrics"]
    ] == metrics
    assert all(m["resource"]["target"]["type"] == "Utilization" for m in scaler["spec"]["metrics"])


def test_no_autoscaling_no_autoscaler() -> None:
    assert build_autoscaler(resource(replicas=3)) is None
    assert [child["kind"] for child in build_capacity(resource(replicas=3))] == ["PodDisruptionBudget"]


@pytest.mark.parametrize(
    ("replicas", "serving"),
    [(0, 0), (1, 2), (2, 2), (4, 4), (6, 6), (9, 6)],
)
def test_the_pods_served_stay_within_the_autoscalers_bounds(replicas: int, serving: int) -> None:
    spec = resource(replicas=replicas, autoscaling={"minReplicas": 2, "maxReplicas": 6}, runtime=CPU_REQUEST).spec
    assert spec.serving_replicas() == serving


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"disruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}}, api.DISRUPTION_BUDGET_ONE_BOUND),
        ({"disruptionBudget": {"maxUnavailable": "120%"}}, "neither a count nor a percentage"),
        ({"disruptionBudget": {"maxUnavailable": "1"}}, "neither a count nor a percentage"),
        ({"disruptionBudget": {"minAvailable": -1}}, "is negative"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}, "runtime": CPU_REQUEST}, api.AUTOSCALING_BOUNDS),
        ({"autoscaling": {"maxReplicas": 2}}, api.AUTOSCALING_NEEDS_CPU_REQUEST),
        (
            {
                "autoscaling": {"maxReplicas": 2, "targetMemoryUtilizationPercentage": 80},
                "runtime": {"resources": {"requests": {"cpu": "1"}}},
            },
            api.AUTOSCALING_NEEDS_MEMORY_REQUEST,
        ),
        ({"autoscaling": {"minReplicas": 0, "maxReplicas": 2}, "runtime": CPU_REQUEST}, "greater than or equal"),
    ],
    ids=[
        "both-bounds",
        "percent-over-100",
        "string-count",
        "negative",
        "min-over-max",
        "cpu-without-request",
        "memory-without-request",
        "zero-floor",
    ],
)
def test_invalid_capacity_specs_are_refused_with_the_field_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        resource(**spec)
    assert message in str(refused.value)


def test_a_memory_target_alone_needs_no_cpu_request() -> None:
    spec = resource(
        autoscaling={"maxReplicas": 2, "targetMemoryUtilizationPercentage": 80},
        runtime={"resources": {"requests": {"memory": "1Gi"}}},
    ).spec
    assert spec.autoscaling is not None
    assert spec.autoscaling.cpu_target() is None


# --- whole passes ------------------------------------------------------------------------------------------------


def budget_of(harness: Harness) -> dict[str, Any] | None:
    return harness.cluster.objects.get(("PodDisruptionBudget", "models", "fraud-detector"))


def autoscaler_of(harness: Harness) -> dict[str, Any] | None:
    return harness.cluster.objects.get(("HorizontalPodAutoscaler", "models", "fraud-detector"))


def test_a_pass_creates_the_budget_once_and_a_quiet_pass_writes_nothing(config: OperatorConfig) -> None:
    harness = Harness(config)
    writes = harness.run()
    assert writes["apply PodDisruptionBudget"] == 1
    harness.settle()
    assert harness.run(timedelta(seconds=31)) == {}, "nothing to change: nothing written"
    budget = budget_of(harness)
    assert budget is not None
    assert budget["spec"]["maxUnavailable"] == 1


def test_the_budget_changes_with_the_spec_and_goes_when_disabled(config: OperatorConfig) -> None:
    harness = Harness(config)
    harness.settle()
    spec = copy.deepcopy(SPEC)
    spec["disruptionBudget"] = {"minAvailable": "50%"}
    harness.cluster.update_spec(harness.key, spec)
    harness.observe()
    assert harness.run()["apply PodDisruptionBudget"] == 1
    budget = budget_of(harness)
    assert budget is not None
    assert budget["spec"]["minAvailable"] == "50%"
    spec["disruptionBudget"] = {"enabled": False}
    harness.cluster.update_spec(harness.key, spec)
    harness.observe()
    assert harness.run()["delete PodDisruptionBudget"] == 1
    assert budget_of(harness) is None


def test_an_autoscaled_resource_serves_at_least_its_floor_mid_canary_too(config: OperatorConfig) -> None:
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 1  # as the CRD's default leaves it, before the autoscaler acts
    spec["autoscaling"] = {"minReplicas": 4, "maxReplicas": 8}
    spec["runtime"] = CPU_REQUEST
    harness = Harness(config, spec=spec)
    harness.settle()
    scaler = autoscaler_of(harness)
    assert scaler is not None
    assert scaler["spec"]["scaleTargetRef"]["name"] == "fraud-detector"
    assert harness.status["stable"]["replicas"] == 4
    # The autoscaler raises spec.replicas through the scale subresource; a canary then splits that total.
    spec["replicas"] = 6
    harness.cluster.update_spec(harness.key, with_version(spec, "2.0.0"))
    harness.observe()
    for _ in range(10):  # to the pause after 50 %, the clock held
        harness.run()
        harness.cluster.make_ready(harness.store)
        if harness.status.get("phase") == "Paused":
            break
    status = harness.status
    assert status["phase"] == "Paused", status.get("message")
    assert status["canary"]["desiredWeight"] == 50
    assert status["stable"]["replicas"] + status["canary"]["replicas"] == 6
    # spec.autoscaling removed: its autoscaler goes.
    del spec["autoscaling"]
    harness.cluster.update_spec(harness.key, with_version(spec, "2.0.0"))
    harness.observe()
    assert harness.run()["delete HorizontalPodAutoscaler"] == 1
    assert autoscaler_of(harness) is None
