"""The local control plane behaves like a real cluster: these would fail against a mock or a bare API server."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import textwrap
from typing import Any

import pytest

from modeldeploy_testkit.cluster import CRASHLOOP_IMAGE, READY_IMAGE, Cluster
from modeldeploy_testkit.scripts import script_value
from modeldeploy_testkit.waiting import wait_until

POD_RANGE = ipaddress.ip_network("198.18.0.0/15")


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def deployment(name: str, image: str, replicas: int) -> str:
    return textwrap.dedent(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              containers: [{{name: main, image: "{image}"}}]
    """)


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == script_value("KUBERNETES_VERSION")


def test_deployment_becomes_ready_on_fake_nodes(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", READY_IMAGE, 3))
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    status = get_json(cluster, "-n", namespace, "deployment/web")["status"]
    assert status["readyReplicas"] == 3
    pods = get_json(cluster, "-n", namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    assert {pod["spec"]["nodeName"] for pod in pods} <= {"kwok-node-0", "kwok-node-1", "kwok-node-2"}
    for pod in pods:
        assert ipaddress.ip_address(pod["status"]["podIP"]) in POD_RANGE


def test_pod_range_is_routed_into_our_namespace() -> None:
    route = subprocess.run(["ip", "route", "get", "198.18.0.9"], capture_output=True, text=True, check=True)
    assert f"dev {script_value('POD_VETH_HOST')}" in route.stdout


def test_crashlooping_image_never_becomes_available(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("broken", CRASHLOOP_IMAGE, 2))

    def crashlooping_pods() -> list[Any] | None:
        pods = get_json(cluster, "-n", namespace, "pods", "-l", "app=broken")["items"]
        waiting = [
            pod
            for pod in pods
            if any(
                status.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
                for status in pod["status"].get("containerStatuses", [])
            )
        ]
        return waiting if len(waiting) == 2 else None

    pods = wait_until(crashlooping_pods, timeout=60, what="2 pods in CrashLoopBackOff")
    for pod in pods:
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
    # The Deployment controller has seen the pods (observedGeneration caught up) and counts none available.
    result = cluster.kubectl("rollout", "status", "-n", namespace, "deployment/broken", "--timeout=3s", check=False)
    assert result.returncode != 0
    status = get_json(cluster, "-n", namespace, "deployment/broken")["status"]
    assert status.get("availableReplicas", 0) == 0
    assert status.get("readyReplicas", 0) == 0


def test_deleting_an_owner_garbage_collects_what_it_owns(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = get_json(cluster, "-n", namespace, "configmap/owner")["metadata"]["uid"]
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(owned))
    cluster.kubectl("delete", "configmap/owner", "-n", namespace)
    wait_until(
        lambda: cluster.kubectl("get", "configmap/owned", "-n", namespace, check=False).returncode != 0,
        timeout=60,
        what="the owned ConfigMap to be garbage-collected",
    )


def test_service_gets_endpoint_slices_of_ready_pods(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("api", READY_IMAGE, 3))
    cluster.kubectl("create", "service", "clusterip", "api", "--tcp=80:9000", "-n", namespace)
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/api", "--timeout=60s")
    pod_ips = {pod["status"]["podIP"] for pod in get_json(cluster, "-n", namespace, "pods", "-l", "app=api")["items"]}

    def ready_endpoint_ips() -> set[str] | None:
        slices = get_json(cluster, "-n", namespace, "endpointslices", "-l", "kubernetes.io/service-name=api")["items"]
        ips = {
            address
            for endpoint_slice in slices
            for endpoint in endpoint_slice.get("endpoints") or []
            if endpoint.get("conditions", {}).get("ready")
            for address in endpoint["addresses"]
        }
        return ips if ips == pod_ips else None

    assert wait_until(ready_endpoint_ips, timeout=60, what="EndpointSlices listing the 3 pod IPs") == pod_ips


def test_restricted_namespace_rejects_privileged_pod(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "main", "image": READY_IMAGE, "securityContext": {"privileged": True}}]},
    }
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted' in result.stderr
    assert "privileged" in result.stderr


@pytest.fixture(scope="module")
def widget_crd(cluster: Cluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.e2e.modeldeploy.test"},
        "spec": {
            "group": "e2e.modeldeploy.test",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.e2e.modeldeploy.test", "--timeout=60s")


@pytest.mark.usefixtures("widget_crd")
def test_unknown_field_in_custom_resource_is_rejected(cluster: Cluster, namespace: str) -> None:
    def apply(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        widget = {
            "apiVersion": "e2e.modeldeploy.test/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": spec,
        }
        return cluster.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(widget), check=False
        )

    # The CRD's storage may answer 429 for a moment after it is Established.
    wait_until(lambda: apply({"size": 1}).returncode == 0, timeout=30, what="a valid Widget to be accepted")
    server_side = apply({"size": 1, "colour": "red"})
    assert server_side.returncode != 0
    assert ".spec.colour: field not declared in schema" in server_side.stderr
    widget = {
        "apiVersion": "e2e.modeldeploy.test/v1",
        "kind": "Widget",
        "metadata": {"name": "w2"},
        "spec": {"colour": 1},
    }
    # kubectl create asks for strict field validation by default.
    created = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(widget), check=False)
    assert created.returncode != 0
    assert 'unknown field "spec.colour"' in created.stderr
