"""The Argo CD health check (argocd/health/modeldeploy.io/ModelDeployment/health.lua), run by a real Lua 5.1
interpreter (Argo CD's gopher-lua implements 5.1) against every case of its health_test.yaml, whose inputs are
`kubectl get mdep -o yaml` output captured from the local control plane (modeldeploy_testkit.argocd_testdata)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = REPO_ROOT / "argocd/health/modeldeploy.io/ModelDeployment"
SCRIPT = (CHECK_DIR / "health.lua").read_text()
CASES: list[dict[str, Any]] = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())["tests"]
CONFIGMAP_KEY = "resource.customizations.health.modeldeploy.io_ModelDeployment"
ARGO_STATUSES = {"Healthy", "Progressing", "Suspended", "Degraded", "Missing", "Unknown"}


def health(obj: dict[str, Any]) -> dict[str, Any]:
    """What Argo CD would get: the script run with `obj` set to the resource."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT)
    return dict(result)


def load(case: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
    return body


@pytest.mark.parametrize("case", CASES, ids=[case["inputPath"] for case in CASES])
def test_health_of_captured_resources(case: dict[str, Any]) -> None:
    assert health(load(case)) == case["healthStatus"]


def test_every_case_is_captured_output_and_every_capture_is_a_case() -> None:
    paths = sorted(case["inputPath"] for case in CASES)
    assert paths == sorted(f"testdata/{path.name}" for path in (CHECK_DIR / "testdata").glob("*.yaml"))
    for case in CASES:
        body = load(case)
        assert body["kind"] == "ModelDeployment"
        # Set by the API server, so the file is what it returned, not written by hand.
        for field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            assert field in body["metadata"], f"{case['inputPath']}: metadata.{field} missing"
        assert case["healthStatus"]["status"] in ARGO_STATUSES


def test_every_state_is_covered() -> None:
    covered = {case["healthStatus"]["status"] for case in CASES}
    assert covered == {"Healthy", "Progressing", "Suspended", "Degraded"}
    phases = {(load(case).get("status") or {}).get("phase") for case in CASES}
    assert phases == {None, "Healthy", "Progressing", "Paused", "Degraded"}


def test_an_unobserved_generation_wins_over_the_phase() -> None:
    body = load(next(case for case in CASES if case["inputPath"] == "testdata/healthy.yaml"))
    assert health(body)["status"] == "Healthy"
    body["metadata"]["generation"] += 1
    assert health(body) == {"status": "Progressing", "message": "Waiting for rollout spec update to be observed"}
    del body["status"]["observedGeneration"]
    assert health(body)["status"] == "Progressing"


def test_unknown_phase_and_missing_message() -> None:
    body = load(next(case for case in CASES if case["inputPath"] == "testdata/healthy.yaml"))
    unknown = copy.deepcopy(body)
    unknown["status"]["phase"] = "Exploded"
    assert health(unknown) == {"status": "Unknown", "message": "Unrecognized status.phase: Exploded"}
    del body["status"]["message"]
    assert health(body) == {"status": "Healthy", "message": ""}


def test_configmap_snippet_and_docs_carry_the_script_unchanged() -> None:
    configmap = yaml.safe_load((REPO_ROOT / "argocd/argocd-cm.yaml").read_text())
    assert (configmap["apiVersion"], configmap["kind"]) == ("v1", "ConfigMap")
    assert configmap["metadata"]["name"] == "argocd-cm"
    assert configmap["data"] == {CONFIGMAP_KEY: SCRIPT}
    docs = (REPO_ROOT / "docs/argocd.md").read_text()
    assert CONFIGMAP_KEY in docs
    indented = "".join(f"    {line}" if line.strip() else line for line in SCRIPT.splitlines(keepends=True))
    assert indented in docs, "docs/argocd.md must show health.lua as it is, indented under the ConfigMap key"
