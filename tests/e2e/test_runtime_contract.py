"""The operator and the runtime cannot drift apart: a pod the operator created runs the real model server.

Pods on kwok's fake nodes are not processes, so the test reads the pod the operator created and starts
`modeldeploy-runtime` beside the cluster with exactly that container's env and args (the ports come from that
env), then probes it with exactly that pod's readiness and liveness probes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from sklearn.linear_model import LogisticRegression

from modeldeploy_testkit.cluster import READY_IMAGE, Cluster
from modeldeploy_testkit.resources import get, wait_for_status
from modeldeploy_testkit.waiting import free_port, http_get, wait_until

RUNTIME = Path(sys.executable).parent / "modeldeploy-runtime"


def probe_url(container: dict[str, Any], probe: dict[str, Any]) -> str:
    """The URL a kubelet would call for an httpGet probe, the named port resolved from the container's ports."""
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return f"http://127.0.0.1:{port}{probe['httpGet']['path']}"


@pytest.mark.usefixtures("operator")
def test_pod_built_by_the_operator_serves_with_the_runtime(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.2], [0.1, 0.8]])
    model = LogisticRegression().fit(features, [0, 1, 1, 0])
    artifact = tmp_path / "model.joblib"
    joblib.dump(model, artifact)
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    http_port, metrics_port = free_port(), free_port()
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "contract"},
        "spec": {
            "model": {"name": "churn", "version": "3.1.4", "uri": f"file://{artifact}", "sha256": digest},
            "replicas": 1,
            "runtime": {"image": READY_IMAGE, "port": http_port, "metricsPort": metrics_port},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    status = wait_for_status(cluster, namespace, "contract", lambda s: s.get("phase") == "Healthy")
    [pod] = get(cluster, "pods", "-n", namespace, "-l", f"modeldeploy.io/revision={status['stable']['revision']}")[
        "items"
    ]
    container = pod["spec"]["containers"][0]
    assert all("value" in var or var["name"] == "MODEL_SHA256" for var in container["env"])
    env = {var["name"]: var.get("value", "") for var in container["env"]}

    home = tmp_path / "home"
    home.mkdir()
    # What a container would have: the pod's env, a writable /tmp (here a private one), nothing of ours.
    process_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(home),
        "MODEL_CACHE_DIR": str(home / "cache"),
        "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"),
        **env,
    }
    log = (tmp_path / "runtime.log").open("wb")
    server = subprocess.Popen(
        [str(RUNTIME), *container.get("args", [])],
        env=process_env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        readiness = probe_url(container, container["readinessProbe"])
        liveness = probe_url(container, container["livenessProbe"])

        def answers(url: str) -> int | None:
            assert server.poll() is None, (tmp_path / "runtime.log").read_text()
            answer = http_get(url)
            return answer.status if answer is not None else None

        assert wait_until(lambda: answers(readiness) == 200, timeout=90, what="the readiness probe to pass")
        assert answers(liveness) == 200
        http = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        response = requests.post(
            f"http://127.0.0.1:{http}/api/v1.0/predictions", json={"data": {"ndarray": features.tolist()}}, timeout=10
        )
        assert response.status_code == 200, response.text
        prediction = response.json()
        assert prediction["data"]["ndarray"] == model.predict(features).tolist()
        assert prediction["meta"]["tags"]["version"] == "3.1.4"
        assert prediction["meta"]["tags"]["model"] == "churn"
        metrics_container_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        metrics = requests.get(f"http://127.0.0.1:{metrics_container_port}/metrics", timeout=10).text
        assert "modeldeploy_model_info{" in metrics
        assert 'version="3.1.4"' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)
        log.close()
