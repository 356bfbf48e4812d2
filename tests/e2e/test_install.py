"""`kubectl apply -f manifests/` installs the operator, and its RBAC is enough for the core scenario.

Pods on kwok's fake nodes are not real processes, so the operator Deployment from manifests/ never runs our code.
Instead the operator runs beside the cluster with exactly the identity the manifests give it: a token of the
`modeldeploy` ServiceAccount, obtained through the TokenRequest API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modeldeploy_testkit.cluster import READY_IMAGE, Cluster
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir
from modeldeploy_testkit.waiting import wait_until

SYSTEM_NAMESPACE = "modeldeploy-system"


@pytest.fixture
def installed(cluster: Cluster, crd: None) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "manifests"))
    yield
    for kind in ("clusterrolebinding/modeldeploy", "clusterrole/modeldeploy"):
        cluster.kubectl("delete", kind, "--ignore-not-found", check=False)
    # Waited for: the next install must not meet a namespace that is still terminating.
    cluster.kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--timeout=60s", check=False)


def service_account_kubeconfig(cluster: Cluster, path: Path) -> Path:
    token = cluster.kubectl("create", "token", "modeldeploy", "-n", SYSTEM_NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "modeldeploy", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "modeldeploy"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.usefixtures("installed")
def test_manifests_install_and_the_operator_works_with_only_its_own_rbac(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "modeldeploy", "-n", SYSTEM_NAMESPACE, "-o", "json").stdout
    )
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert deployment["spec"]["replicas"] == 1

    operator.stop()  # only the service-account identity may act during this test
    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "kubeconfig")
    limited = OperatorProcess(
        cluster,
        cluster_dir() / "logs" / "operator-rbac-e2e.log",
        extra_env={"KUBECONFIG": str(kubeconfig)},
    )
    limited.start()
    try:
        body = {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "rbac"},
            "spec": {
                "model": {"version": "1.0.0", "uri": "file:///m"},
                "replicas": 2,
                "runtime": {"image": READY_IMAGE},
                "rollout": {"strategy": "Immediate"},
            },
        }
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
        cluster.kubectl("wait", "--for=condition=Ready", "mdep/rbac", "-n", namespace, "--timeout=60s")
        body["spec"]["model"]["version"] = "1.1.0"
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
        wait_until(
            lambda: (
                json.loads(cluster.kubectl("get", "mdep/rbac", "-n", namespace, "-o", "json").stdout)
                .get("status", {})
                .get("stable", {})
                .get("version")
                == "1.1.0"
            ),
            timeout=60,
            what="version 1.1.0 to be promoted by the service-account operator",
        )
        assert limited.failures(namespace) == []
        # The identity can do what the operator needs and no more.
        can_i = cluster.kubectl(
            "auth",
            "can-i",
            "delete",
            "services",
            "--as=system:serviceaccount:modeldeploy-system:modeldeploy",
            check=False,
        )
        assert can_i.stdout.strip() == "no"
        secrets = cluster.kubectl(
            "auth",
            "can-i",
            "get",
            "secrets",
            "--as=system:serviceaccount:modeldeploy-system:modeldeploy",
            check=False,
        )
        assert secrets.stdout.strip() == "no"
    finally:
        limited.stop()
