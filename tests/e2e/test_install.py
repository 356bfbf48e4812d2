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

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.resources import roll_out_and_promote
from modeldeploy_testkit.scripts import REPO_ROOT, cluster_dir
from tests.e2e.test_helm import assert_two_replicas_one_writer

SYSTEM_NAMESPACE = "modeldeploy-system"


@pytest.fixture
def installed(cluster: Cluster, crd: None) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "manifests"))
    yield
    # The status policy first: left behind, it would refuse the status writes of every other operator identity.
    for name in ("status-policy.yaml", "rbac.yaml"):
        cluster.kubectl("delete", "-f", str(REPO_ROOT / "manifests" / name), "--ignore-not-found", check=False)
    # Waited for: the next install must not meet a namespace that is still terminating.
    cluster.kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--timeout=60s", check=False)


@pytest.mark.usefixtures("installed")
def test_manifests_install_and_the_operator_works_with_only_its_own_rbac(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "modeldeploy", "-n", SYSTEM_NAMESPACE, "-o", "json").stdout
    )
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    # Pods on kwok's nodes do not run: the applied objects are what is checked.
    assert_two_replicas_one_writer(cluster, SYSTEM_NAMESPACE, "modeldeploy", deployment)

    operator.stop()  # only the service-account identity may act during this test
    kubeconfig = cluster.token_kubeconfig("modeldeploy", SYSTEM_NAMESPACE, tmp_path / "kubeconfig")
    limited = OperatorProcess(
        cluster,
        cluster_dir() / "logs" / "operator-rbac-e2e.log",
        extra_env={"KUBECONFIG": str(kubeconfig)},
    )
    limited.start()
    try:
        roll_out_and_promote(cluster, namespace, "rbac", by="the service-account operator")
        assert limited.failures(namespace) == []
        # Its status writes pass the status policy; anyone else's change to status (but commands) is refused.
        forged = json.dumps({"status": {"phase": "Degraded"}})
        refused = cluster.kubectl(
            "patch", "mdep", "rbac", "-n", namespace, "--subresource=status", "--type=merge", "-p", forged, check=False
        )
        assert refused.returncode != 0
        assert "status belongs to the modeldeploy operator" in refused.stderr, refused.stderr
        # The identity can do what the operator needs and no more.
        can_i = cluster.kubectl(
            "auth",
            "can-i",
            "deletecollection",
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
