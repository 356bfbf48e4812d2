"""ModelDeployments and what they own, driven the way a person drives them: kubectl and the `kubectl mdep` plugin.

The end-to-end tests share these; each test module keeps its own manifests and checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldeploy_testkit.cluster import READY_IMAGE, Cluster
from modeldeploy_testkit.waiting import wait_until

API_VERSION = "modeldeploy.io/v1alpha1"
REVISION_LABEL = "modeldeploy.io/revision"


def model_deployment(
    name: str,
    version: str,
    replicas: int,
    rollout: dict[str, Any],
    uri: str | None = None,
    image: str = READY_IMAGE,
) -> dict[str, Any]:
    """A ModelDeployment with only what a user writes: one model version, its replicas, image and rollout."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"version": version, "uri": uri or f"file:///models/{name}/{version}/model.joblib"},
            "replicas": replicas,
            "runtime": {"image": image},
            "rollout": rollout,
        },
    }


def serving_only(version: str) -> Callable[[dict[str, Any]], bool]:
    """A check of a ModelDeployment (the whole object): its status describes the current generation and says
    Healthy, every replica on `version`, and no canary."""

    def check(body: dict[str, Any]) -> bool:
        status = body.get("status") or {}
        return (
            status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("phase") == "Healthy"
            and (status.get("stable") or {}).get("version") == version
            and not status.get("canary")
        )

    return check


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(body))


def patch_spec(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl("patch", "mdep", name, "-n", namespace, "--type", "merge", "-p", json.dumps({"spec": spec}))


def get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(cluster, "mdep", name, "-n", namespace).get("status") or {})


def wait_for_status(
    cluster: Cluster, namespace: str, name: str, check: Any, timeout: float = 60, what: str = "status"
) -> dict[str, Any]:
    """The status once it describes the current generation and satisfies `check`. On a timeout the failure shows
    the last status seen, so a run that fails far from here can still be read."""
    seen: list[dict[str, Any]] = []

    def current() -> dict[str, Any] | None:
        body = get(cluster, "mdep", name, "-n", namespace)
        status = body.get("status") or {}
        seen[:] = [{"generation": body["metadata"]["generation"], **status}]
        fresh = status.get("observedGeneration") == body["metadata"]["generation"]
        return status if fresh and check(status) else None

    try:
        return wait_until(current, timeout=timeout, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; last status of {namespace}/{name}: {status_digest(seen)}") from None


def status_digest(seen: list[dict[str, Any]]) -> str:
    """The parts of a status that say why a rollout stands where it does, on one line."""
    if not seen:
        return "none read"
    status = seen[0]
    keys = ("generation", "observedGeneration", "phase", "currentStepIndex", "stable", "canary", "pause", "awaiting")
    digest: dict[str, Any] = {key: status[key] for key in keys if key in status}
    digest["conditions"] = [
        f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}" for c in status.get("conditions", [])
    ]
    return json.dumps(digest, sort_keys=True)


def deployments(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = get(cluster, "deployments", "-n", namespace)["items"]
    return {d["metadata"]["name"]: d for d in items}


def roll_out_and_promote(cluster: Cluster, namespace: str, name: str, by: str) -> None:
    """An Immediate rollout of 1.0.0 becomes Ready, then a change to 1.1.0 is promoted: the core of the operator's
    job, for tests that run it with one identity or another (`by` names it in the failure message)."""
    body = model_deployment(name, "1.0.0", 2, {"strategy": "Immediate"}, uri="file:///m")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    cluster.kubectl("wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=60s")
    body["spec"]["model"]["version"] = "1.1.0"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    wait_until(
        lambda: status_of(cluster, namespace, name).get("stable", {}).get("version") == "1.1.0",
        timeout=60,
        what=f"version 1.1.0 of {namespace}/{name} to be promoted by {by}",
    )
    # The rollout's Services go before the promotion is written, so the identity may delete (its own) Services.
    selector = f"app.kubernetes.io/instance={name}"
    services = {s["metadata"]["name"] for s in get(cluster, "services", "-n", namespace, "-l", selector)["items"]}
    assert services == {name}, f"{by} left {sorted(services)} after the rollout"


def mdep(cluster: Cluster, namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The kubectl plugin, run as kubectl would run it."""
    plugin = Path(sys.executable).parent / "kubectl-mdep"
    result = subprocess.run(
        [str(plugin), *args, "-n", namespace], env=cluster.env(), capture_output=True, text=True, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ready_pods_by_revision(cluster: Cluster, namespace: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pod in get(cluster, "pods", "-n", namespace)["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        if ready:
            revision = pod["metadata"]["labels"][REVISION_LABEL]
            counts[revision] = counts.get(revision, 0) + 1
    return counts
