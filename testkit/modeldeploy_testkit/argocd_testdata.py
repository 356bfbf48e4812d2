"""Capture the inputs of the Argo CD health check's tests from the local control plane.

    .venv/bin/python -m modeldeploy_testkit.argocd_testdata

Each file in argocd/health/modeldeploy.io/ModelDeployment/testdata/ is what `kubectl get mdep NAME -o yaml` printed
for a ModelDeployment in one state, with the operator running (watching only a namespace of its own, so that
nothing else on the cluster is touched): healthy, a canary progressing, paused at a pause step, degraded after an
abort, a spec change the operator has not observed yet, and a resource it has not seen at all. The namespace is
deleted afterwards. tests/unit/test_argocd_health.py runs health.lua against them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from modeldeploy_testkit.cluster import CRASHLOOP_IMAGE, READY_IMAGE, Cluster, start_cluster
from modeldeploy_testkit.scripts import REPO_ROOT
from modeldeploy_testkit.waiting import wait_until

TESTDATA = REPO_ROOT / "argocd/health/modeldeploy.io/ModelDeployment/testdata"


def resource(name: str, version: str, image: str = READY_IMAGE, steps: list[Any] | None = None) -> dict[str, Any]:
    rollout: dict[str, Any] = {"strategy": "Immediate"} if steps is None else {"strategy": "Canary", "steps": steps}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "fraud-detector", "version": version, "uri": f"s3://models/fraud-detector/{version}/m"},
            "replicas": 5,
            "runtime": {"image": image},
            "rollout": rollout,
        },
    }


class Capture:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def apply(self, body: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(body))

    def get(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(
            self.cluster.kubectl("get", "mdep", name, "-n", self.namespace, "-o", "json").stdout
        )
        return body

    def wait_phase(self, name: str, phase: str, canary: bool | None = None) -> None:
        def settled() -> bool:
            body = self.get(name)
            status = body.get("status") or {}
            return (
                status.get("observedGeneration") == body["metadata"]["generation"]
                and status.get("phase") == phase
                and (canary is None or ("canary" in status) == canary)
            )

        wait_until(settled, timeout=90, interval=0.5, what=f"{name} to be {phase}")

    def save(self, name: str, file: str) -> None:
        text = self.cluster.kubectl("get", "mdep", name, "-n", self.namespace, "-o", "yaml").stdout
        (TESTDATA / file).write_text(text)
        print(f"wrote {(TESTDATA / file).relative_to(REPO_ROOT)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy_testkit.argocd_testdata",
        description=(
            "Rewrite the Argo CD health check's testdata from a running operator on the local control plane "
            f"(started if needed). Files land in {TESTDATA.relative_to(REPO_ROOT)}/."
        ),
    )
    parser.parse_args(argv)
    cluster = start_cluster(with_crd=True)
    namespace = f"argocd-health-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    capture = Capture(cluster, namespace)
    modeldeploy = Path(sys.executable).parent / "modeldeploy"
    TESTDATA.mkdir(parents=True, exist_ok=True)
    operator = subprocess.Popen(
        [str(modeldeploy), "run", "--namespace", namespace, "--metrics-bind-address", ""],
        env=cluster.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        capture.apply(resource("serving", "1.4.0"))
        capture.wait_phase("serving", "Healthy")
        capture.save("serving", "healthy.yaml")

        # A canary whose pods never become Ready: it stays at its first step until the deadline.
        steps = [{"setWeight": 50}, {"pause": {}}]
        capture.apply(resource("canary", "1.4.0", steps=steps))
        capture.wait_phase("canary", "Healthy")
        capture.apply(resource("canary", "1.5.0", image=CRASHLOOP_IMAGE, steps=steps))
        capture.wait_phase("canary", "Progressing", canary=True)
        capture.save("canary", "progressing-canary.yaml")

        # An open pause waits for `kubectl mdep promote`; an abort gives the traffic back and is Degraded.
        steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
        capture.apply(resource("paused", "1.4.0", steps=steps))
        capture.wait_phase("paused", "Healthy")
        capture.apply(resource("paused", "1.5.0", steps=steps))
        capture.wait_phase("paused", "Paused", canary=True)
        capture.save("paused", "paused.yaml")
        subprocess.run([str(modeldeploy), "abort", "paused", "-n", namespace], env=cluster.env(), check=True)
        capture.wait_phase("paused", "Degraded")
        capture.save("paused", "degraded-aborted.yaml")
    finally:
        operator.terminate()
        operator.wait(timeout=30)

    # With the operator stopped: a spec change it has not observed, and a resource it has never seen.
    capture.apply(resource("serving", "1.5.0"))
    capture.save("serving", "spec-change-not-observed.yaml")
    capture.apply(resource("unseen", "1.4.0"))
    capture.save("unseen", "no-status.yaml")
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
