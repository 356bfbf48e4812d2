"""The capacity children on the real API server and kube-controller-manager: the PodDisruptionBudget the operator
owns is enforced by the Eviction API across both revisions of a canary, and the HorizontalPodAutoscaler of
spec.autoscaling scales the resource through its scale subresource, mid-canary too, with the weight kept.

Pods run on kwok's nodes (Ready at once): the disruption controller and the HPA controller are the real ones. No
metrics pipeline runs here, so the autoscaler is shown acting on its bounds (it raises spec.replicas to its floor
whatever the metrics say), not on load.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.kubeapi import ApiError, KubeAPI
from modeldeploy_testkit.resources import apply, get, mdep, model_deployment, patch_spec, wait_for_status
from modeldeploy_testkit.waiting import wait_until

pytestmark = pytest.mark.usefixtures("operator")

NAME = "capacity"
CPU_REQUEST = {"resources": {"requests": {"cpu": "100m"}}}
TOO_MANY_REQUESTS = 429


def paused_at(step: int) -> Any:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def budget(cluster: Cluster, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = get(cluster, "poddisruptionbudget", NAME, "-n", namespace)
    return found


def disruptions_allowed(cluster: Cluster, namespace: str, allowed: int, healthy: int) -> dict[str, Any]:
    """The budget once the disruption controller has counted `healthy` pods and allows `allowed` evictions."""

    def counted() -> dict[str, Any] | None:
        status = budget(cluster, namespace).get("status") or {}
        return (
            status if (status.get("disruptionsAllowed"), status.get("currentHealthy")) == (allowed, healthy) else None
        )

    return wait_until(counted, timeout=60, interval=0.5, what=f"{allowed} disruption(s) allowed of {healthy} pods")


def running_pods(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    """Pod names by revision, of pods not being deleted."""
    pods: dict[str, list[str]] = {}
    for pod in get(cluster, "pods", "-n", namespace)["items"]:
        if not pod["metadata"].get("deletionTimestamp"):
            revision = pod["metadata"]["labels"]["modeldeploy.io/revision"]
            pods.setdefault(revision, []).append(pod["metadata"]["name"])
    return {revision: sorted(names) for revision, names in pods.items()}


def evict(kube: KubeAPI, namespace: str, pod: str) -> int:
    """Ask the Eviction API to evict `pod`: 201 when it is evicted, the refusal's HTTP status when the budget
    refuses it; a refusal for any other reason fails the test."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
    try:
        kube.create(f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", body)
    except ApiError as error:
        if "disruption budget" not in error.body:
            raise
        return error.status
    return 201


@contextlib.contextmanager
def cordoned(cluster: Cluster) -> Iterator[None]:
    """Every node cordoned, as `kubectl drain` starts: an evicted pod's replacement cannot be scheduled, so it stays
    unhealthy and the budget stays used up (on kwok's nodes a replacement is otherwise Ready within milliseconds,
    and the next eviction would find the budget whole again). The nodes cordoned here are uncordoned after."""
    nodes = [node for node in get(cluster, "nodes")["items"] if not node["spec"].get("unschedulable")]
    names = [node["metadata"]["name"] for node in nodes]
    try:
        for name in names:
            cluster.kubectl("cordon", name)
        yield
    finally:
        for name in names:
            cluster.kubectl("uncordon", name)


def evict_two(cluster: Cluster, namespace: str, first: str, second: str) -> tuple[int, int]:
    """Two evictions during a drain: the first pod's replacement cannot be scheduled while the nodes are
    cordoned."""
    kube = cluster.api()
    with cordoned(cluster):
        return evict(kube, namespace, first), evict(kube, namespace, second)


def test_the_disruption_budget_refuses_an_eviction_that_breaks_it_at_rest_and_mid_canary(
    cluster: Cluster, namespace: str
) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}], "progressDeadlineSeconds": 120}
    apply(cluster, namespace, model_deployment(NAME, "1.0.0", 4, rollout, uri="file:///models/capacity/1.0.0"))
    healthy = wait_for_status(
        cluster, namespace, NAME, lambda s: s.get("phase") == "Healthy" and s["stable"]["readyReplicas"] == 4
    )
    pdb = budget(cluster, namespace)
    [owner] = pdb["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelDeployment", NAME, True)
    assert pdb["spec"]["maxUnavailable"] == 1  # the default for more than one pod
    disruptions_allowed(cluster, namespace, allowed=1, healthy=4)

    # At rest: one pod may go; the next eviction, before its replacement is Ready, is refused.
    first, second = running_pods(cluster, namespace)[healthy["stable"]["revision"]][:2]
    assert evict_two(cluster, namespace, first, second) == (201, TOO_MANY_REQUESTS)
    disruptions_allowed(cluster, namespace, allowed=1, healthy=4)  # the replacement Ready, the budget back

    # Mid-canary: the budget spans both revisions, so a canary pod's eviction uses up the stable's allowance too.
    patch_spec(cluster, namespace, NAME, {"model": {"version": "2.0.0", "uri": "file:///models/capacity/2.0.0"}})
    paused = wait_for_status(cluster, namespace, NAME, paused_at(1), what="the pause at 50 %")
    pods = running_pods(cluster, namespace)
    stable, canary = pods[paused["stable"]["revision"]], pods[paused["canary"]["revision"]]
    assert (len(stable), len(canary)) == (2, 2)
    disruptions_allowed(cluster, namespace, allowed=1, healthy=4)
    assert evict_two(cluster, namespace, canary[0], stable[0]) == (201, TOO_MANY_REQUESTS)
    disruptions_allowed(cluster, namespace, allowed=1, healthy=4)

    # The budget never stands in the rollout's way: the operator scales, it does not evict.
    mdep(cluster, namespace, "promote", NAME)
    wait_for_status(
        cluster,
        namespace,
        NAME,
        lambda s: (
            s.get("phase") == "Healthy" and s["stable"]["version"] == "2.0.0" and s["stable"]["readyReplicas"] == 4
        ),
        timeout=120,
        what="2.0.0 promoted with the budget in place",
    )
    disruptions_allowed(cluster, namespace, allowed=1, healthy=4)

    # A budget asked for in the spec replaces the default; disabled, the operator's budget goes.
    patch_spec(cluster, namespace, NAME, {"disruptionBudget": {"minAvailable": "50%"}})
    wait_until(
        lambda: budget(cluster, namespace)["spec"].get("minAvailable") == "50%",
        timeout=60,
        interval=0.5,
        what="minAvailable 50% on the budget",
    )
    disruptions_allowed(cluster, namespace, allowed=2, healthy=4)
    patch_spec(cluster, namespace, NAME, {"disruptionBudget": {"enabled": False}})

    def gone() -> bool:
        return cluster.kubectl("get", "pdb", NAME, "-n", namespace, check=False).returncode != 0

    wait_until(gone, timeout=60, interval=0.5, what="the budget to be deleted")


def test_spec_autoscaling_scales_the_resource_mid_canary_with_the_weight_kept(cluster: Cluster, namespace: str) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}], "progressDeadlineSeconds": 120}
    body = model_deployment(NAME, "1.0.0", 1, rollout, uri="file:///models/capacity/1.0.0")
    del body["spec"]["replicas"]  # as in git with an autoscaler: the autoscaler owns the count
    body["spec"]["runtime"] = {**body["spec"].get("runtime", {}), **CPU_REQUEST}
    body["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70}
    apply(cluster, namespace, body)

    def autoscaler() -> dict[str, Any] | None:
        found = cluster.kubectl("get", "hpa", NAME, "-n", namespace, "-o", "json", check=False)
        return json.loads(found.stdout) if found.returncode == 0 else None

    hpa = wait_until(autoscaler, timeout=60, interval=0.5, what="the operator's HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": NAME,
    }

    def spec_replicas(expected: int) -> Any:
        def check() -> dict[str, Any] | None:
            resource: dict[str, Any] = get(cluster, "mdep", NAME, "-n", namespace)
            return resource if resource["spec"].get("replicas") == expected else None

        return check

    # The HPA controller raises spec.replicas (1, the CRD's default) to its floor through the scale subresource;
    # the operator serves the floor even before it does.
    wait_until(spec_replicas(2), timeout=90, interval=1.0, what="the autoscaler to set spec.replicas to 2")
    wait_for_status(
        cluster, namespace, NAME, lambda s: s.get("phase") == "Healthy" and s["stable"]["readyReplicas"] == 2
    )

    patch_spec(cluster, namespace, NAME, {"model": {"version": "2.0.0", "uri": "file:///models/capacity/2.0.0"}})
    wait_for_status(cluster, namespace, NAME, paused_at(1), what="the pause at 50 %")
    # The floor raised in git mid-canary: the autoscaler scales the resource, the planner splits the new total.
    patch_spec(cluster, namespace, NAME, {"autoscaling": {"minReplicas": 4}})
    wait_until(spec_replicas(4), timeout=90, interval=1.0, what="the autoscaler to set spec.replicas to 4")
    split = wait_for_status(
        cluster,
        namespace,
        NAME,
        lambda s: paused_at(1)(s) and s["canary"]["readyReplicas"] == 2 and s["stable"]["readyReplicas"] == 2,
        what="4 pods split 2/2",
    )
    assert (split["canary"]["desiredWeight"], split["canary"]["actualWeight"]) == (50, 50)
    current = json.loads(cluster.kubectl("get", "hpa", NAME, "-n", namespace, "-o", "json").stdout)
    assert current["status"]["currentReplicas"] == 4, current["status"]

    # spec.autoscaling removed from git: the operator deletes its autoscaler, spec.replicas stays where it was.
    remove = json.dumps([{"op": "remove", "path": "/spec/autoscaling"}])
    cluster.kubectl("patch", "mdep", NAME, "-n", namespace, "--type", "json", "-p", remove)

    def gone() -> bool:
        return cluster.kubectl("get", "hpa", NAME, "-n", namespace, check=False).returncode != 0

    wait_until(gone, timeout=60, interval=0.5, what="the autoscaler to be deleted")
