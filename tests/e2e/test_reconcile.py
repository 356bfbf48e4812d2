"""ModelDeployment reconcile on the local control plane, with the operator running as `modeldeploy run`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_testkit.cluster import CRASHLOOP_IMAGE, READY_IMAGE, Cluster, restart_apiserver, scratch_namespace
from modeldeploy_testkit.kubeapi import Manifest, resource_path
from modeldeploy_testkit.operator_process import AuditLog, OperatorProcess
from modeldeploy_testkit.resources import (
    REVISION_LABEL,
    apply,
    deployments,
    get,
    model_deployment,
    patch_spec,
    status_of,
    wait_for_status,
)
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir
from modeldeploy_testkit.waiting import free_port, wait_until
from modeldeploy_testkit.watches import CollectionWatch

EXAMPLE = REPO_ROOT / "manifests" / "examples" / "fraud-detector.yaml"


def manifest(name: str, version: str = "1.0.0", replicas: int = 2, **spec: Any) -> dict[str, Any]:
    # The zero-downtime switch; canary steps have tests of their own.
    body = model_deployment(name, version, replicas, {"strategy": "Immediate"})
    body["spec"].update(spec)
    return body


def healthy(version: str) -> Any:
    return lambda s: s.get("phase") == "Healthy" and (s.get("stable") or {}).get("version") == version


class ReadyEndpointsWatch:
    """Watches the EndpointSlices of a Service and records the fewest ready endpoints seen once any were ready."""

    def __init__(self, cluster: Cluster, namespace: str, service: str) -> None:
        self.ready_by_slice: dict[str, int] = {}
        self.fewest: int | None = None
        self.events = 0
        self.lock = threading.Lock()
        self.watch = CollectionWatch(
            cluster.api(),
            resource_path("discovery.k8s.io/v1", "endpointslices", namespace),
            self._record,
            {"labelSelector": f"kubernetes.io/service-name={service}"},
            timeout_seconds=2,
        )

    def __enter__(self) -> ReadyEndpointsWatch:
        self.watch.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.watch.stop()

    def settle(self, expected: int, timeout: float = 30) -> None:
        """Wait until `expected` endpoints are ready, then count the fewest from there on."""
        wait_until(
            lambda: sum(self.ready_by_slice.values()) == expected,
            timeout=timeout,
            what=f"{expected} ready endpoints behind the Service",
        )
        self.fewest = expected

    def _record(self, event_type: str, endpoint_slice: Manifest) -> None:
        name = endpoint_slice["metadata"]["name"]
        with self.lock:
            if event_type == "DELETED":
                self.ready_by_slice.pop(name, None)
            else:
                self.ready_by_slice[name] = sum(
                    1 for e in endpoint_slice.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
                )
            self.events += 1
            total = sum(self.ready_by_slice.values())
            if total > 0 or self.fewest is not None:
                self.fewest = total if self.fewest is None else min(self.fewest, total)


@pytest.fixture
def second_namespace(cluster: Cluster) -> Iterator[str]:
    with scratch_namespace(cluster, "second") as name:
        yield name


@pytest.mark.usefixtures("operator")
def test_example_becomes_ready_with_its_children(cluster: Cluster, namespace: str) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    name = example["metadata"]["name"]
    cluster.kubectl("wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=60s")

    body = get(cluster, "mdep", name, "-n", namespace)
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["phase"] == "Healthy"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Available": "True",
        "Progressing": "False",
        "Degraded": "False",
    }
    assert status["stable"]["version"] == "1.4.0"
    assert status["stable"]["readyReplicas"] == example["spec"]["replicas"]
    assert status["url"] == f"http://{name}.{namespace}.svc.cluster.local:80"
    assert [entry["outcome"] for entry in status["history"]] == ["Promoted"]

    revision = status["stable"]["revision"]
    [deployment] = deployments(cluster, namespace).values()
    assert deployment["metadata"]["name"] == f"{name}-{revision}"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    pods = get(cluster, "pods", "-n", namespace, "-l", f"{REVISION_LABEL}={revision}")["items"]
    assert len(pods) == example["spec"]["replicas"]
    labels = pods[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == name
    assert labels["app.kubernetes.io/version"] == "1.4.0"
    assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
    container = pods[0]["spec"]["containers"][0]
    env = {var["name"]: var for var in container["env"]}
    assert env["MODEL_VERSION"]["value"] == "1.4.0"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "model-store"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pods[0]["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"

    # At rest one Service, over the serving revision's pods: <name>-stable and <name>-canary exist only while a
    # rollout is in progress.
    services = {s["metadata"]["name"]: s for s in get(cluster, "services", "-n", namespace)["items"]}
    assert set(services) == {name}
    assert services[name]["spec"]["selector"][REVISION_LABEL] == revision

    # Pod Security "restricted" admits every pod the operator creates.
    restricted = cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--dry-run=server"
    )
    assert "violate" not in restricted.stderr


@pytest.mark.usefixtures("operator")
def test_replicas_change_scales_without_new_revision(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, manifest("scaler", replicas=2))
    first = wait_for_status(cluster, namespace, "scaler", healthy("1.0.0"))
    patch_spec(cluster, namespace, "scaler", {"replicas": 4})
    scaled = wait_for_status(
        cluster,
        namespace,
        "scaler",
        lambda s: s.get("phase") == "Healthy" and s["stable"]["readyReplicas"] == 4,
    )
    assert scaled["stable"]["revision"] == first["stable"]["revision"]
    assert list(deployments(cluster, namespace)) == [f"scaler-{first['stable']['revision']}"]


@pytest.mark.usefixtures("operator")
def test_new_version_replaces_old_without_losing_ready_endpoints(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, manifest("swap", version="1.0.0", replicas=3))
    before = wait_for_status(cluster, namespace, "swap", healthy("1.0.0"))
    with ReadyEndpointsWatch(cluster, namespace, "swap") as watch:
        watch.settle(3)
        patch_spec(cluster, namespace, "swap", {"model": {"version": "1.1.0", "uri": "file:///models/swap/1.1.0"}})
        after = wait_for_status(cluster, namespace, "swap", healthy("1.1.0"))
        # The old pods go only after the new ones are ready; give the endpoint controller time to show it.
        wait_until(
            lambda: sum(watch.ready_by_slice.values()) == 3 and watch.events > 2,
            timeout=30,
            what="the Service to settle on the new pods",
        )
    assert watch.fewest is not None
    assert watch.fewest >= 3, f"ready endpoints dropped to {watch.fewest}"
    old, new = before["stable"]["revision"], after["stable"]["revision"]
    assert old != new
    found = deployments(cluster, namespace)
    assert found[f"swap-{old}"]["spec"]["replicas"] == 0
    assert found[f"swap-{new}"]["spec"]["replicas"] == 3
    services = {s["metadata"]["name"]: s for s in get(cluster, "services", "-n", namespace)["items"]}
    assert set(services) == {"swap"}, "the rollout's Services are deleted once it ends"
    assert services["swap"]["spec"]["selector"][REVISION_LABEL] == new
    assert [e["outcome"] for e in after["history"]][:2] == ["Promoted", "Promoted"]
    assert after["history"][0]["version"] == "1.1.0"


@pytest.mark.usefixtures("operator")
def test_revision_that_never_gets_ready_is_rolled_back(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, manifest("guarded", version="1.0.0", replicas=2))
    before = wait_for_status(cluster, namespace, "guarded", healthy("1.0.0"))
    with ReadyEndpointsWatch(cluster, namespace, "guarded") as watch:
        watch.settle(2)
        patch_spec(
            cluster,
            namespace,
            "guarded",
            {
                "model": {"version": "2.0.0"},
                "runtime": {"image": CRASHLOOP_IMAGE},
                "rollout": {"progressDeadlineSeconds": 10},
            },
        )
        progressing = wait_for_status(
            cluster, namespace, "guarded", lambda s: s.get("phase") == "Progressing" and s.get("canary")
        )
        assert progressing["canary"]["version"] == "2.0.0"
        degraded = wait_for_status(
            cluster, namespace, "guarded", lambda s: s.get("phase") == "Degraded", timeout=40, what="Degraded"
        )
    assert watch.fewest == 2, f"ready endpoints dropped to {watch.fewest}"
    conditions = {c["type"]: c for c in degraded["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert conditions["Ready"]["status"] == "False"
    assert "2.0.0" in degraded["message"]
    assert "rolled back" in degraded["message"]
    assert degraded["stable"]["version"] == "1.0.0"
    assert degraded["aborted"]["version"] == "2.0.0"
    assert degraded["history"][0]["outcome"] == "RolledBack"
    found = deployments(cluster, namespace)
    assert found[f"guarded-{degraded['aborted']['revision']}"]["spec"]["replicas"] == 0
    assert found[f"guarded-{before['stable']['revision']}"]["status"]["readyReplicas"] == 2
    events = get(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=guarded")["items"]
    assert any(e["reason"] == "ProgressDeadlineExceeded" and e["type"] == "Warning" for e in events)

    # Back to the serving version: healthy again, with nothing to roll out.
    patch_spec(cluster, namespace, "guarded", {"model": {"version": "1.0.0"}, "runtime": {"image": READY_IMAGE}})
    recovered = wait_for_status(cluster, namespace, "guarded", healthy("1.0.0"))
    assert recovered.get("aborted") is None
    assert recovered["stable"]["revision"] == before["stable"]["revision"]


def test_deleting_the_resource_removes_children_even_with_the_operator_stopped(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, manifest("doomed"))
    wait_for_status(cluster, namespace, "doomed", healthy("1.0.0"))
    operator.stop()
    cluster.kubectl("delete", "mdep", "doomed", "-n", namespace, "--timeout=30s")
    wait_until(
        lambda: (
            not deployments(cluster, namespace)
            and not get(cluster, "services", "-n", namespace, "-l", "app.kubernetes.io/instance=doomed")["items"]
        ),
        timeout=60,
        what="garbage collection of the Deployment and Services",
    )


@pytest.mark.usefixtures("operator")
def test_same_name_in_another_namespace_is_independent(cluster: Cluster, namespace: str, second_namespace: str) -> None:
    apply(cluster, namespace, manifest("twin", version="1.0.0", replicas=1))
    apply(cluster, second_namespace, manifest("twin", version="3.0.0", replicas=2))
    first = wait_for_status(cluster, namespace, "twin", healthy("1.0.0"))
    second = wait_for_status(cluster, second_namespace, "twin", healthy("3.0.0"))
    assert first["stable"]["readyReplicas"] == 1
    assert second["stable"]["readyReplicas"] == 2
    cluster.kubectl("delete", "mdep", "twin", "-n", second_namespace)
    assert status_of(cluster, namespace, "twin")["phase"] == "Healthy"
    assert len(deployments(cluster, namespace)) == 1


@pytest.mark.usefixtures("operator")
def test_drift_is_repaired(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, manifest("steady", replicas=2))
    status = wait_for_status(cluster, namespace, "steady", healthy("1.0.0"))
    deployment = f"steady-{status['stable']['revision']}"

    cluster.kubectl("delete", "deployment", deployment, "-n", namespace)
    wait_until(
        lambda: (deployments(cluster, namespace).get(deployment) or {}).get("status", {}).get("readyReplicas") == 2,
        timeout=60,
        what="the deleted Deployment to be recreated",
    )
    cluster.kubectl("scale", "deployment", deployment, "-n", namespace, "--replicas=5")
    wait_until(
        lambda: deployments(cluster, namespace)[deployment]["spec"]["replicas"] == 2,
        timeout=30,
        what="the hand-scaled Deployment to return to 2 replicas",
    )
    # Another field manager takes ownership of our fields by server-side apply: ours is forced back.
    intruder = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "steady", "namespace": namespace},
        "spec": {"selector": {"app.kubernetes.io/instance": "someone-else"}},
    }
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=intruder",
        "-f",
        "-",
        input=json.dumps(intruder),
        check=False,
    )
    assert result.returncode != 0
    assert "conflict" in result.stderr.lower()
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=intruder",
        "-f",
        "-",
        input=json.dumps(intruder),
    )
    wait_until(
        lambda: (
            get(cluster, "service", "steady", "-n", namespace)["spec"]["selector"].get("app.kubernetes.io/instance")
            == "steady"
        ),
        timeout=30,
        what="the Service selector to be repaired",
    )
    assert wait_for_status(cluster, namespace, "steady", healthy("1.0.0"))


def test_a_pass_with_nothing_to_change_writes_nothing(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, manifest("idle", replicas=2))
    wait_for_status(cluster, namespace, "idle", healthy("1.0.0"))
    audit = AuditLog()
    wait_until(lambda: operator.metric("modeldeploy_queue_depth") == 0, timeout=30, what="an empty queue")
    mark = audit.mark()
    passes = operator.reconciles()
    # Touching metadata wakes the operator for a full pass over an object that needs nothing.
    cluster.kubectl("annotate", "mdep", "idle", "-n", namespace, "example.com/touched=yes")
    wait_until(lambda: operator.reconciles() > passes, timeout=30, what="a reconcile pass")
    wait_until(lambda: operator.metric("modeldeploy_queue_depth") == 0, timeout=30, what="an empty queue")
    # Only this test's namespace: other resources of the cluster may legitimately be changing meanwhile.
    writes = [w for w in audit.writes_since(mark) if (w.get("objectRef") or {}).get("namespace") == namespace]
    assert writes == [], [f"{w['verb']} {w['objectRef']}" for w in writes]


def test_survives_operator_sigkill_and_apiserver_restart(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, manifest("sturdy", version="1.0.0", replicas=2))
    wait_for_status(cluster, namespace, "sturdy", healthy("1.0.0"))
    patch_spec(
        cluster,
        namespace,
        "sturdy",
        {
            "model": {"version": "2.0.0"},
            "runtime": {"image": CRASHLOOP_IMAGE},
            "rollout": {"progressDeadlineSeconds": 15},
        },
    )
    started = wait_for_status(cluster, namespace, "sturdy", lambda s: bool(s.get("canary")))
    operator.kill()
    restart_apiserver()
    operator.start()
    degraded = wait_for_status(
        cluster, namespace, "sturdy", lambda s: s.get("phase") == "Degraded", timeout=60, what="Degraded"
    )
    # The deadline ran from the time recorded in status, not from the restart.
    assert degraded["history"][0]["revision"] == started["canary"]["revision"]
    since = datetime.fromisoformat(started["canary"]["since"].replace("Z", "+00:00"))
    rolled_back = datetime.fromisoformat(degraded["aborted"]["time"].replace("Z", "+00:00"))
    assert 15 <= (rolled_back - since).total_seconds() < 25
    revisions = sorted(deployments(cluster, namespace))
    assert len(revisions) == 2  # one per revision: no duplicates, no orphans

    # Watches came back after the API server restart: a spec change is still seen and acted on.
    patch_spec(
        cluster,
        namespace,
        "sturdy",
        {"replicas": 3, "model": {"version": "1.0.0"}, "runtime": {"image": READY_IMAGE}},
    )
    recovered = wait_for_status(
        cluster, namespace, "sturdy", lambda s: healthy("1.0.0")(s) and s["stable"]["readyReplicas"] == 3
    )
    assert recovered.get("aborted") is None


def test_the_running_operator_never_imports_the_kubernetes_package(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    """kube/client.py talks to the API server and main.py logs kopf in without a client package (~30 MiB of memory
    less): after kopf's login and watches, a reconcile's writes and Events and a clean stop, none was imported."""
    operator.stop()  # only the operator under test acts on the namespace
    modules = tmp_path / "modules.json"
    clients = ("kubernetes", "kubernetes_asyncio", "pykube")
    code = (
        "import atexit, json, pathlib, sys\n"
        f"clients = {clients!r}\n"
        f"output = pathlib.Path({str(modules)!r})\n"
        "atexit.register(lambda: output.write_text(json.dumps(sorted(\n"
        "    name for name in sys.modules if name.split('.')[0] in clients))))\n"
        "from modeldeploy.cli.main import main\n"
        f"sys.exit(main(['run', '-n', {namespace!r}, '--metrics-bind-address', '127.0.0.1:{free_port()}']))\n"
    )
    log_path = cluster_dir() / "logs" / "operator-imports-e2e.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", code], env=cluster.env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        apply(cluster, namespace, manifest("lean"))
        wait_for_status(cluster, namespace, "lean", healthy("1.0.0"))
        events = get(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=lean")["items"]
        assert any(event["reason"] == "PhaseHealthy" for event in events)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert json.loads(modules.read_text()) == []
