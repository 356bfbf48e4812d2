"""The scale subresource on the real API server: `kubectl scale` and a HorizontalPodAutoscaler change a
ModelDeployment's replicas, mid-canary too, and the canary keeps its weight.

kube-controller-manager's HPA controller runs here, but no metrics pipeline does (yet): the HPA is checked for
reaching the scale subresource (its status reads the current replicas through it), not for scaling on load.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.resources import apply, model_deployment, patch_spec, ready_pods_by_revision, wait_for_status
from modeldeploy_testkit.waiting import wait_until

pytestmark = pytest.mark.usefixtures("operator")

NAME = "scaled"


def paused_at(step: int) -> Any:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def test_kubectl_scale_changes_the_replicas_and_a_canary_keeps_its_weight(cluster: Cluster, namespace: str) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}], "progressDeadlineSeconds": 120}
    apply(cluster, namespace, model_deployment(NAME, "1.0.0", 2, rollout, uri="file:///models/scaled/1.0.0"))
    wait_for_status(cluster, namespace, NAME, lambda s: s.get("phase") == "Healthy")
    scale = json.loads(
        cluster.kubectl("get", "mdep", NAME, "-n", namespace, "--subresource=scale", "-o", "json").stdout
    )
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]["replicas"]) == ("Scale", 2, 2)
    assert scale["status"]["selector"] == f"app.kubernetes.io/component=model-server,app.kubernetes.io/instance={NAME}"

    cluster.kubectl("scale", "mdep", NAME, "-n", namespace, "--replicas=4")
    healthy = wait_for_status(
        cluster,
        namespace,
        NAME,
        lambda s: s.get("phase") == "Healthy" and (s.get("stable") or {}).get("readyReplicas") == 4,
    )
    assert healthy["replicas"] == 4

    patch_spec(cluster, namespace, NAME, {"model": {"version": "2.0.0", "uri": "file:///models/scaled/2.0.0"}})
    paused = wait_for_status(cluster, namespace, NAME, paused_at(1), what="the pause at 50 %")
    assert ready_pods_by_revision(cluster, namespace) == {
        paused["stable"]["revision"]: 2,
        paused["canary"]["revision"]: 2,
    }
    # Scaled mid-canary: the new total is split by the same weight.
    cluster.kubectl("scale", "mdep", NAME, "-n", namespace, "--replicas=6")
    rescaled = wait_for_status(
        cluster,
        namespace,
        NAME,
        lambda s: paused_at(1)(s) and s["canary"]["readyReplicas"] == 3 and s["stable"]["readyReplicas"] == 3,
        what="6 pods split 3/3",
    )
    assert (rescaled["canary"]["desiredWeight"], rescaled["canary"]["actualWeight"]) == (50, 50)
    assert rescaled["replicas"] == 6


def test_a_horizontal_pod_autoscaler_reaches_the_scale_subresource(cluster: Cluster, namespace: str) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    apply(cluster, namespace, model_deployment(NAME, "1.0.0", 1, rollout, uri="file:///models/scaled/1.0.0"))
    wait_for_status(cluster, namespace, NAME, lambda s: s.get("phase") == "Healthy")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": NAME},
        "spec": {
            "scaleTargetRef": {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": NAME},
            # Below the resource's replicas: the HPA scales up to its minimum whatever the metrics say.
            "minReplicas": 3,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(hpa))

    def scaled_up() -> dict[str, Any] | None:
        status = json.loads(cluster.kubectl("get", "mdep", NAME, "-n", namespace, "-o", "json").stdout)
        return status if status["spec"]["replicas"] == 3 else None

    resource = wait_until(scaled_up, timeout=90, interval=1.0, what="the HPA to raise spec.replicas to its minimum")
    assert resource["spec"]["replicas"] == 3
    wait_for_status(
        cluster,
        namespace,
        NAME,
        lambda s: s.get("phase") == "Healthy" and (s.get("stable") or {}).get("readyReplicas") == 3,
    )
