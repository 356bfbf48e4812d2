"""Admission of the artifact's fields by a real API server: no credentials in spec.model.uri, header credentials
only for http(s), a cache size that is a whole quantity, and the defaults the pods are built from."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import models as api
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.scripts import script_value
from modeldeploy_testkit.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("crd")]

BASE: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "artifact"},
    "spec": {"model": {"version": "1.0.0", "uri": "https://models.example/fraud/1.0.0/model.joblib"}},
}


def with_spec(model: dict[str, Any] | None = None, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = copy.deepcopy(BASE)
    manifest["spec"]["model"].update(model or {})
    if runtime is not None:
        manifest["spec"]["runtime"] = runtime
    return manifest


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> Any:
    text = yaml.safe_dump(manifest)
    return cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=text, check=False)


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        pytest.param(
            with_spec({"uri": "https://user:hunter2@models.example/m.joblib"}),
            ["spec.model.uri", "must not hold user info", "spec.model.httpHeadersSecret"],
            id="uri-with-password",
        ),
        pytest.param(
            with_spec({"uri": "s3://key:secret@bucket/m.joblib"}),
            ["spec.model.uri", "must not hold user info"],
            id="s3-uri-with-user-info",
        ),
        pytest.param(
            with_spec({"uri": "s3://bucket/m.joblib", "httpHeadersSecret": "store"}),
            ["spec.model", "httpHeadersSecret applies to http:// and https:// URIs only"],
            id="headers-for-s3",
        ),
        pytest.param(
            with_spec({"httpHeadersSecret": "Not_A_Name"}),
            ["spec.model.httpHeadersSecret", "should match"],
            id="headers-secret-name",
        ),
        pytest.param(
            with_spec(runtime={"env": [{"name": "MODEL_HTTP_HEADER_Authorization", "value": "Bearer t"}]}),
            ["spec.runtime.env[0]", "MODEL_HTTP_HEADER_* variables carry credentials"],
            id="literal-header-variable",
        ),
        pytest.param(
            with_spec(runtime={"cacheSizeLimit": "1.5Gi"}),
            ["spec.runtime.cacheSizeLimit", "should match"],
            id="cache-size-fraction",
        ),
        pytest.param(
            with_spec(runtime={"cacheSizeLimit": "0"}),
            ["spec.runtime.cacheSizeLimit", "should match"],
            id="cache-size-zero",
        ),
    ],
)
def test_refused(cluster: Cluster, namespace: str, manifest: dict[str, Any], expected: list[str]) -> None:
    result = apply(cluster, namespace, manifest)
    assert result.returncode != 0, f"the API server accepted the manifest:\n{result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{text!r} is not in the API server's answer:\n{result.stderr}"


def test_accepted_with_defaults(cluster: Cluster, namespace: str) -> None:
    manifest = with_spec({"uri": "https://models.example/m.joblib?a=b@c", "httpHeadersSecret": "model-store"})
    result = apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr

    stored = cluster.kubectl("get", "mdep", "artifact", "-n", namespace, "-o", "yaml").stdout
    spec = yaml.safe_load(stored)["spec"]
    assert spec["runtime"]["cacheSizeLimit"] == api.DEFAULT_CACHE_SIZE_LIMIT
    assert spec["model"]["httpHeadersSecret"] == "model-store"


def test_a_cluster_can_require_sha256_for_formats_that_run_code(cluster: Cluster, namespace: str) -> None:
    """The chart's artifact policy, rendered for sklearn and custom, applied to the real API server: an unpinned
    sklearn artifact is refused naming spec.model.sha256; a pinned one and an unpinned ONNX one are accepted; an
    update that leaves spec.model alone passes for a resource created before the policy."""
    chart = Path(__file__).resolve().parents[2] / "helm" / "modeldeploy"
    helm = subprocess.run(
        [
            str(Path(script_value("HELM_BIN")) / "helm"), "template", "md-e2e", str(chart),
            "--namespace", "modeldeploy-system",
            "--set", "artifactPolicy.requireSha256For={sklearn,custom}",
            "--set", f"watch.namespaces={{{namespace}}}",
            "--show-only", "templates/artifact-policy.yaml",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    before = with_spec({"format": "sklearn"})
    before["metadata"]["name"] = "before-policy"
    assert apply(cluster, namespace, before).returncode == 0
    cluster.kubectl("apply", "-f", "-", input=helm.stdout)
    try:
        unpinned = with_spec({"format": "sklearn"})

        def refused() -> str | None:
            result = apply(cluster, namespace, unpinned)
            if result.returncode == 0:
                cluster.kubectl("delete", "-n", namespace, "modeldeployment", "artifact", "--wait=false")
                return None
            return str(result.stderr)

        message = wait_until(refused, timeout=30, interval=0.5, what="the artifact policy in force")
        assert "spec.model.sha256 is required for format sklearn" in message
        pinned = with_spec({"format": "sklearn", "sha256": "a" * 64})
        assert apply(cluster, namespace, pinned).returncode == 0
        onnx = with_spec({"format": "onnx", "uri": "https://models.example/fraud/1.0.0/model.onnx"})
        onnx["metadata"]["name"] = "onnx"
        assert apply(cluster, namespace, onnx).returncode == 0
        relabelled = cluster.kubectl(
            "label", "-n", namespace, "modeldeployment", "before-policy", "team=fraud", check=False
        )
        assert relabelled.returncode == 0, relabelled.stderr
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=helm.stdout)
