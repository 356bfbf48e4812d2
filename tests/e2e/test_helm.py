"""`helm install` of helm/modeldeploy on the local control plane, and least privilege proven with the chart's own
identity, cluster-wide and namespaced.

Why the operator runs beside the cluster: pods on kwok's fake nodes are not processes. kwok marks the chart's
operator pod Running and Ready, but no container ever starts, so that pod never runs our code. The test therefore
runs `modeldeploy run` locally with exactly the identity the chart gives the operator: a token of the chart's
ServiceAccount from the TokenRequest API (`kubectl create token`), in a kubeconfig that holds nothing else. The
session's operator is stopped meanwhile, so that only that identity acts (the `operator` fixture restarts it).

The CRD exists before the install (the `crd` fixture applied it from crds/), so the chart is installed with
--take-ownership, as on a cluster where the CRD was first installed from the plain manifests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_testkit.cluster import READY_IMAGE, Cluster, scratch_namespace
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.resources import roll_out_and_promote, status_of
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir, script_value
from modeldeploy_testkit.waiting import wait_until

CHART = REPO_ROOT / "helm/modeldeploy"
CRD_NAME = "modeldeployments.modeldeploy.io"
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace"}


class Helm:
    """The pinned helm binary against the local control plane, with its own config and cache directories."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.path = Path(script_value("HELM_BIN")) / "helm"
        assert self.path.is_file(), f"helm is not installed at {self.path}: run `make tools`"
        self.env = {
            **cluster.env(),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.path), *args], env=self.env, capture_output=True, text=True, check=False, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result


class Release:
    """One installed release of the chart; `uninstall()` is idempotent."""

    def __init__(self, helm: Helm, namespace: str, *sets: str, name: str = "", take_ownership: bool = True) -> None:
        self.helm = helm
        self.namespace = namespace
        self.name = name or f"md-{uuid.uuid4().hex[:6]}"
        self.installed = False
        args = ["install", self.name, str(CHART), "--namespace", namespace]
        if take_ownership:
            args.append("--take-ownership")
        for value in sets:
            args += ["--set", value]
        # kwok marks the operator's pod Ready, so --wait proves the Deployment is schedulable and admitted.
        self.helm(*args, "--wait", "--timeout", "2m")
        self.installed = True

    @property
    def service_account(self) -> str:
        return f"{self.name}-modeldeploy"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def manifest(self) -> list[dict[str, Any]]:
        text = self.helm("get", "manifest", self.name, "--namespace", self.namespace).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def uninstall(self) -> None:
        if self.installed:
            self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "2m")
            self.installed = False


@pytest.fixture
def helm(cluster: Cluster, tmp_path: Path) -> Helm:
    return Helm(cluster, tmp_path / "helm")


@pytest.fixture
def make_namespace(cluster: Cluster) -> Iterator[Any]:
    """Creates extra namespaces for a test and deletes them afterwards."""
    with contextlib.ExitStack() as namespaces:
        yield lambda stem: namespaces.enter_context(scratch_namespace(cluster, stem))


def can_i(cluster: Cluster, release: Release, *args: str) -> str:
    result = cluster.kubectl("auth", "can-i", *args, f"--as={release.user}", check=False)
    return result.stdout.strip()


def core_scenario(cluster: Cluster, namespace: str, name: str) -> None:
    """An Immediate rollout becomes Ready, then a version change is promoted, and it is Ready again."""
    roll_out_and_promote(cluster, namespace, name, by="the chart's identity")
    cluster.kubectl("wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=60s")


def sample(process: OperatorProcess, metric: str, **labels: str) -> float | None:
    """The value of the one series of `metric` with exactly these labels (in any order), None when absent."""
    for family in text_string_to_metric_families(process.metrics_text() or ""):
        for found in family.samples:
            if found.name == metric and found.labels == labels:
                return float(found.value)
    return None


def crd_annotations(cluster: Cluster) -> dict[str, str]:
    body = json.loads(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    annotations: dict[str, str] = body["metadata"].get("annotations") or {}
    return annotations


def test_cluster_wide_install_runs_the_operator_with_only_the_charts_identity(
    cluster: Cluster,
    crd: None,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    make_namespace: Any,
    tmp_path: Path,
) -> None:
    release = Release(helm, namespace)
    try:
        kinds = sorted(doc["kind"] for doc in release.manifest())
        assert kinds == sorted(
            ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Service", "ServiceAccount"]
        )
        annotations = crd_annotations(cluster)
        assert annotations.get("helm.sh/resource-policy") == "keep"
        assert annotations.get("meta.helm.sh/release-name") == release.name
        deployment = json.loads(
            cluster.kubectl("get", "deployment", release.service_account, "-n", namespace, "-o", "json").stdout
        )
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

        # What the identity may do: its own resources everywhere, and nothing it does not use.
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "--all-namespaces") == "yes"
        assert can_i(cluster, release, "patch", "deployments.apps", "-n", "default") == "yes"
        assert can_i(cluster, release, "update", "modeldeployments.modeldeploy.io", "-n", "default") == "no"
        assert can_i(cluster, release, "delete", "services", "-n", "default") == "no"
        assert can_i(cluster, release, "get", "secrets", "-n", namespace) == "no"
        assert can_i(cluster, release, "list", "pods", "-n", "default") == "no"

        operator.stop()  # only the chart's identity may act during this test
        kubeconfig = cluster.token_kubeconfig(release.service_account, release.namespace, tmp_path / "kubeconfig")
        limited = OperatorProcess(
            cluster,
            cluster_dir() / "logs" / "operator-helm-e2e.log",
            extra_env={"KUBECONFIG": str(kubeconfig)},
        )
        limited.start()
        try:
            workload = make_namespace("helm-models")
            core_scenario(cluster, workload, "chart")
            assert limited.failures(workload) == []
            # The per-resource metrics follow the status, and leave with the resource.
            resource = {"namespace": workload, "name": "chart"}
            wait_until(
                lambda: sample(limited, "modeldeploy_resource_phase", **resource, phase="Healthy") == 1.0,
                timeout=30,
                what="modeldeploy_resource_phase to say Healthy",
            )
            assert sample(limited, "modeldeploy_resource_phase", **resource, phase="Progressing") == 0.0
            info = {"model": "chart", "stable_version": "1.1.0", "canary_version": ""}
            assert sample(limited, "modeldeploy_resource_info", **resource, **info) == 1.0
            old_info = {**info, "stable_version": "1.0.0"}
            assert sample(limited, "modeldeploy_resource_info", **resource, **old_info) is None
            cluster.kubectl("delete", "mdep/chart", "-n", workload)
            wait_until(
                lambda: 'name="chart"' not in (limited.metrics_text() or 'name="chart"'),
                timeout=30,
                what="the deleted resource's series to be removed",
            )
        finally:
            limited.stop()
    finally:
        release.uninstall()

    # Uninstalled: the operator's objects are gone, the CRD (and so every ModelDeployment) is kept.
    assert cluster.kubectl("get", "clusterrole", release.service_account, check=False).returncode != 0
    assert (
        cluster.kubectl("get", "serviceaccount", release.service_account, "-n", namespace, check=False).returncode != 0
    )
    assert cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0
    assert crd_annotations(cluster).get("helm.sh/resource-policy") == "keep"
    # The same release installed again adopts the kept CRD without --take-ownership (as docs/install.md says).
    again = Release(helm, namespace, name=release.name, take_ownership=False)
    again.uninstall()
    assert cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0


def test_namespaced_install_grants_nothing_outside_its_namespaces(
    cluster: Cluster,
    crd: None,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    make_namespace: Any,
    tmp_path: Path,
) -> None:
    watched = make_namespace("helm-watched")
    other = make_namespace("helm-other")
    release = Release(helm, namespace, f"watch.namespaces={{{watched}}}")
    try:
        docs = release.manifest()
        assert [doc["kind"] for doc in docs if doc["kind"] in CLUSTER_SCOPED] == ["CustomResourceDefinition"]
        scoped_objects = {(doc["kind"], doc["metadata"]["namespace"]) for doc in docs if doc["kind"].startswith("Role")}
        assert scoped_objects == {("Role", watched), ("RoleBinding", watched)}
        [deployment] = [doc for doc in docs if doc["kind"] == "Deployment"]
        assert f"--namespace={watched}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

        # Allowed in the watched namespace, refused everywhere else.
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "-n", watched) == "yes"
        assert can_i(cluster, release, "create", "deployments.apps", "-n", watched) == "yes"
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "-n", other) == "no"
        assert can_i(cluster, release, "create", "deployments.apps", "-n", other) == "no"
        assert can_i(cluster, release, "create", "events", "-n", other) == "no"
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "--all-namespaces") == "no"

        kubeconfig = cluster.token_kubeconfig(release.service_account, release.namespace, tmp_path / "kubeconfig")
        refused = subprocess.run(
            [str(cluster.kubectl_path), "--kubeconfig", str(kubeconfig), "get", "mdep", "-n", other],
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower(), refused.stderr

        operator.stop()  # only the chart's identity may act during this test
        log_path = cluster_dir() / "logs" / "operator-helm-namespaced-e2e.log"
        start = log_path.stat().st_size if log_path.exists() else 0
        scoped = OperatorProcess(cluster, log_path, extra_env={"KUBECONFIG": str(kubeconfig)}, namespaces=[watched])
        scoped.start()
        try:
            # A resource outside the scope, applied by an administrator: the scoped operator must leave it alone.
            ignored = {
                "apiVersion": "modeldeploy.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "ignored"},
                "spec": {"model": {"version": "1.0.0", "uri": "file:///m"}, "runtime": {"image": READY_IMAGE}},
            }
            cluster.kubectl("apply", "-n", other, "-f", "-", input=json.dumps(ignored))
            core_scenario(cluster, watched, "scoped")
            assert scoped.failures(watched) == []
            assert status_of(cluster, other, "ignored") == {}
            assert cluster.kubectl("get", "deployments", "-n", other, "-o", "name").stdout.strip() == ""
        finally:
            scoped.stop()
        with log_path.open("rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
        lowered = text.lower()
        for refusal in ("forbidden", "permission"):
            assert refusal not in lowered, f"the scoped operator was refused something:\n{text}"
    finally:
        release.uninstall()
    assert cluster.kubectl("get", "role", release.service_account, "-n", watched, check=False).returncode != 0
    assert cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0


def test_helm_install_refuses_a_wrong_value(cluster: Cluster, namespace: str, helm: Helm) -> None:
    result = helm("install", "md-wrong", str(CHART), "--namespace", namespace, "--set", "logFormat=xml", check=False)
    assert result.returncode != 0
    assert "logFormat" in result.stderr, result.stderr
    assert "'text', 'json'" in result.stderr, result.stderr
    assert helm("status", "md-wrong", "--namespace", namespace, check=False).returncode != 0


def test_helm_template_refuses_a_wrong_value(helm: Helm) -> None:
    result = helm("template", "md", str(CHART), "--set", "logFormat=xml", check=False)
    assert result.returncode != 0
    assert "logFormat" in result.stderr, result.stderr
