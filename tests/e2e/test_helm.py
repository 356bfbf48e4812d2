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
from modeldeploy_testkit.resources import get, model_deployment, roll_out_and_promote, status_of, wait_for_status
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir, script_value
from modeldeploy_testkit.waiting import wait_until

CHART = REPO_ROOT / "helm/modeldeploy"
CRD_NAME = "modeldeployments.modeldeploy.io"
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# Cluster-scoped by nature in either watch mode: the CRD, the status policy and its binding, the two user roles.
BY_NATURE = [
    "ClusterRole",
    "ClusterRole",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
]


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


def assert_two_replicas_one_writer(cluster: Cluster, namespace: str, name: str, deployment: dict[str, Any]) -> None:
    """The Deployment as applied: two replicas replaced one at a time, spread over nodes, probed on the operator's
    own health endpoint; and a PodDisruptionBudget that keeps one through a drain."""
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    [preferred] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["weight"] == 100
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred["podAffinityTerm"]["labelSelector"] == {"matchLabels": selector}
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert any(arg.startswith("--health-bind-address=") for arg in container["args"])
    budget = json.loads(cluster.kubectl("get", "pdb", name, "-n", namespace, "-o", "json").stdout)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == {"matchLabels": selector}


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
            [
                *BY_NATURE,
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",  # leader election's, in the release namespace
                "RoleBinding",
                "Deployment",
                "PodDisruptionBudget",
                "Service",
                "ServiceAccount",
            ]
        )
        annotations = crd_annotations(cluster)
        assert annotations.get("helm.sh/resource-policy") == "keep"
        assert annotations.get("meta.helm.sh/release-name") == release.name
        deployment = json.loads(
            cluster.kubectl("get", "deployment", release.service_account, "-n", namespace, "-o", "json").stdout
        )
        # Two replicas, one leading (pods on kwok's nodes do not run: the applied objects are what is checked).
        assert_two_replicas_one_writer(cluster, namespace, release.service_account, deployment)
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

        # What the identity may do: its own resources everywhere, and nothing it does not use.
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "--all-namespaces") == "yes"
        assert can_i(cluster, release, "patch", "deployments.apps", "-n", "default") == "yes"
        assert can_i(cluster, release, "update", "modeldeployments.modeldeploy.io", "-n", "default") == "no"
        assert can_i(cluster, release, "delete", "services", "-n", "default") == "yes"  # a rollout's, once it ends
        assert can_i(cluster, release, "deletecollection", "services", "-n", "default") == "no"
        assert can_i(cluster, release, "update", "services", "-n", "default") == "no"
        assert can_i(cluster, release, "get", "secrets", "-n", namespace) == "no"
        # Pods: listed when a canary's smoke test runs (their IPs), never read one by one, watched or written.
        assert can_i(cluster, release, "list", "pods", "-n", "default") == "yes"
        assert can_i(cluster, release, "get", "pods", "-n", "default") == "no"
        assert can_i(cluster, release, "watch", "pods", "-n", "default") == "no"
        assert can_i(cluster, release, "get", "configmaps", "-n", "default") == "yes"  # a smoke test's casesFrom
        assert can_i(cluster, release, "list", "configmaps", "-n", "default") == "no"
        # The capacity children: its own PodDisruptionBudget and HorizontalPodAutoscaler, never an eviction.
        assert can_i(cluster, release, "create", "poddisruptionbudgets.policy", "-n", "default") == "yes"
        assert can_i(cluster, release, "delete", "horizontalpodautoscalers.autoscaling", "-n", "default") == "yes"
        assert can_i(cluster, release, "create", "pods/eviction", "-n", "default") == "no"
        # Namespaces: watched for the ones being deleted, never read one by one nor written.
        assert can_i(cluster, release, "watch", "namespaces") == "yes"
        assert can_i(cluster, release, "get", "namespaces") == "no"
        assert can_i(cluster, release, "delete", "namespaces") == "no"
        # Its leader-election Lease, in its own namespace only.
        assert can_i(cluster, release, "update", "leases.coordination.k8s.io", "-n", namespace) == "yes"
        assert can_i(cluster, release, "update", "leases.coordination.k8s.io", "-n", "default") == "no"

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
    policy = f"validatingadmissionpolicy/{release.service_account}-status"
    assert cluster.kubectl("get", policy, check=False).returncode != 0
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
        assert sorted(doc["kind"] for doc in docs if doc["kind"] in CLUSTER_SCOPED) == BY_NATURE
        scoped_objects = {(doc["kind"], doc["metadata"]["namespace"]) for doc in docs if doc["kind"].startswith("Role")}
        # The watched namespace's, and leader election's in the release namespace.
        assert scoped_objects == {
            ("Role", watched),
            ("RoleBinding", watched),
            ("Role", namespace),
            ("RoleBinding", namespace),
        }
        [deployment] = [doc for doc in docs if doc["kind"] == "Deployment"]
        assert f"--namespace={watched}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        # The same two replicas and budget in namespaced mode.
        assert deployment["spec"]["replicas"] == 2
        [budget] = [doc for doc in docs if doc["kind"] == "PodDisruptionBudget"]
        assert budget["metadata"]["namespace"] == namespace
        assert budget["spec"]["maxUnavailable"] == 1

        # Allowed in the watched namespace, refused everywhere else.
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "-n", watched) == "yes"
        assert can_i(cluster, release, "create", "deployments.apps", "-n", watched) == "yes"
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "-n", other) == "no"
        assert can_i(cluster, release, "create", "deployments.apps", "-n", other) == "no"
        assert can_i(cluster, release, "create", "events", "-n", other) == "no"
        # A repeated Event is a patch of the one it repeats.
        assert can_i(cluster, release, "patch", "events", "-n", watched) == "yes"
        assert can_i(cluster, release, "patch", "events", "-n", other) == "no"
        assert can_i(cluster, release, "list", "modeldeployments.modeldeploy.io", "--all-namespaces") == "no"
        assert can_i(cluster, release, "list", "namespaces") == "no"

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


def as_user(
    cluster: Cluster, user: str | None, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """kubectl impersonating `user`, with the groups of any authenticated user; None: the administrator itself."""
    who = [f"--as={user}", "--as-group=system:authenticated"] if user else []
    return cluster.kubectl(*args, *who, input=input, check=check)


def patch_status(
    cluster: Cluster, user: str | None, namespace: str, name: str, status: dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[str]:
    patch = json.dumps({"status": status})
    args = ("patch", "mdep", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    return as_user(cluster, user, *args, check=check)


def command(cluster: Cluster, user: str, namespace: str, name: str, verb: str) -> None:
    """What `kubectl mdep promote|abort|retry` writes: a request with a fresh id in status.commands."""
    patch_status(cluster, user, namespace, name, {"commands": {verb: {"id": uuid.uuid4().hex}}})


def paused_at(step: int) -> Any:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def test_only_the_operator_writes_status_and_users_keep_the_commands(
    cluster: Cluster,
    crd: None,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    make_namespace: Any,
    tmp_path: Path,
) -> None:
    """The chart's status policy and user roles, with identities by impersonation: a user bound to the edit role
    creates, edits, promotes, aborts and retries; nobody but the operator's ServiceAccount changes the rest of status.
    Namespaced, so the policy binds only this test's namespace of the shared cluster."""
    workload = make_namespace("helm-status")
    release = Release(helm, namespace, f"watch.namespaces={{{workload}}}")
    alice, bob, carol = (f"{person}-{workload}" for person in ("alice", "bob", "carol"))
    try:
        # The API server type-checks the expressions against the CRD's schema: no warnings.
        checked = wait_until(
            lambda: (
                (get(cluster, "validatingadmissionpolicy", f"{release.service_account}-status").get("status") or {})
                or None
            ),
            timeout=30,
            what="the status policy to be type-checked",
        )
        assert checked.get("typeChecking", {}).get("expressionWarnings") is None, checked
        edit_role = f"{release.service_account}-edit"
        cluster.kubectl(
            "create", "rolebinding", "alice", f"--clusterrole={edit_role}", f"--user={alice}", "-n", workload
        )
        cluster.kubectl("create", "rolebinding", "bob", "--clusterrole=edit", f"--user={bob}", "-n", workload)
        cluster.kubectl("create", "rolebinding", "carol", "--clusterrole=view", f"--user={carol}", "-n", workload)

        def can(user: str, verb: str, resource: str) -> bool:
            found = as_user(cluster, user, "auth", "can-i", verb, resource, "-n", workload, check=False)
            return found.stdout.strip() == "yes"

        # The built-in roles take the rules in once the aggregation controller has seen the user roles.
        wait_until(
            lambda: can(bob, "patch", "modeldeployments.modeldeploy.io/status") and can(carol, "list", "mdep"),
            timeout=30,
            what="modeldeploy-edit and modeldeploy-view to be aggregated into edit and view",
        )
        assert can(alice, "create", "modeldeployments.modeldeploy.io")
        assert can(alice, "patch", "modeldeployments.modeldeploy.io/status")
        assert not can(alice, "create", "deployments.apps")
        assert can(bob, "delete", "modeldeployments.modeldeploy.io")
        assert not can(carol, "create", "modeldeployments.modeldeploy.io")
        assert not can(carol, "patch", "modeldeployments.modeldeploy.io/status")

        operator.stop()  # only the chart's identity may act during this test
        kubeconfig = cluster.token_kubeconfig(release.service_account, release.namespace, tmp_path / "kubeconfig")
        log_path = cluster_dir() / "logs" / "operator-helm-status-e2e.log"
        scoped = OperatorProcess(cluster, log_path, extra_env={"KUBECONFIG": str(kubeconfig)}, namespaces=[workload])
        scoped.start()
        name = "owned"
        try:
            body = model_deployment(name, "1.0.0", 2, {"steps": [{"setWeight": 50}, {"pause": {}}]})
            as_user(cluster, alice, "apply", "-n", workload, "-f", "-", input=json.dumps(body))
            wait_for_status(cluster, workload, name, lambda s: s.get("phase") == "Healthy")
            for version in ("2.0.0", "3.0.0"):
                spec = {"spec": {"model": {"version": version, "uri": f"file:///models/{name}/{version}"}}}
                as_user(cluster, alice, "patch", "mdep", name, "-n", workload, "--type=merge", "-p", json.dumps(spec))
                wait_for_status(cluster, workload, name, paused_at(1), what=f"{version} at its open pause")
                if version == "2.0.0":
                    command(cluster, alice, workload, name, "promote")
                    wait_for_status(
                        cluster, workload, name, lambda s: (s.get("stable") or {}).get("version") == "2.0.0"
                    )
            command(cluster, alice, workload, name, "abort")
            aborted = wait_for_status(cluster, workload, name, lambda s: s.get("phase") == "Degraded")
            assert aborted["aborted"]["version"] == "3.0.0"
            command(cluster, alice, workload, name, "retry")
            before = wait_for_status(
                cluster, workload, name, lambda s: paused_at(1)(s) and not s.get("aborted"), what="the retry"
            )
            assert set(before["acknowledged"]) == {"promote", "abort", "retry"}

            canary = before["canary"]["revision"]
            forgeries: dict[str, Any] = {
                "history": [{**before["history"][0], "outcome": "Promoted", "revision": canary}],
                "stable": {**before["stable"], "revision": canary},
                "canary": None,
                "conditions": [],
                "phase": "Healthy",
            }
            for who in (alice, None):  # the user, and the cluster's administrator
                for field, value in forgeries.items():
                    refused = patch_status(cluster, who, workload, name, {field: value}, check=False)
                    assert refused.returncode != 0, f"{who or 'the administrator'} wrote status.{field}"
                    assert "status belongs to the modeldeploy operator" in refused.stderr, refused.stderr
                    assert release.user in refused.stderr, refused.stderr
            # Updates of the resource itself never carry status: the API server keeps the stored one.
            forged = json.dumps({"status": {"phase": "Healthy"}})
            as_user(cluster, alice, "patch", "mdep", name, "-n", workload, "--type=merge", "-p", forged)
            after = status_of(cluster, workload, name)
            assert after["phase"] == "Paused"
            assert (after["history"], after["stable"]) == (before["history"], before["stable"])
        finally:
            scoped.stop()
        # The operator's identity may write status (the running operator did all along; here once more by hand).
        patch_status(cluster, release.user, workload, name, {"message": "written as the operator"})
        assert status_of(cluster, workload, name)["message"] == "written as the operator"
    finally:
        release.uninstall()
