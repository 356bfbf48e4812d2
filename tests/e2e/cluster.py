"""Access to the local control plane for end-to-end tests: kubectl, API clients, polling with deadlines."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kubernetes

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"
# Pods running this image never become Ready on the local control plane (hack/kwok/pod-stages.yaml).
CRASHLOOP_IMAGE = "modeldeploy.test/crashloop:latest"
READY_IMAGE = "modeldeploy.test/model-server:latest"


def hack_value(name: str) -> str:
    """A value defined by hack/lib.sh (versions, paths), as the scripts compute it."""
    script = f'. "{HACK}/lib.sh"; printf %s "${{{name}}}"'
    return subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout


def wait_until[T](
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_path: Path
    started_here: bool

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result

    def api_client(self) -> kubernetes.client.ApiClient:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return kubernetes.client.ApiClient(configuration)

    def install_crd(self) -> None:
        """The ModelDeployment CRD from crds/, applied, Established, and its storage answering."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io", "--timeout=60s")
        # Just after a CRD is created, its storage may still answer 429 "storage is (re)initializing".
        wait_until(
            lambda: self.kubectl("get", "modeldeployments", "-A", check=False).returncode == 0,
            timeout=30,
            what="the ModelDeployment storage to answer",
        )

    def env(self) -> dict[str, str]:
        """The environment for a process that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def start_cluster() -> Cluster:
    cluster_dir = Path(hack_value("CLUSTER_DIR"))
    kubectl_path = Path(hack_value("KUBERNETES_BIN")) / "kubectl"
    healthy = subprocess.run(["bash", "-c", f'. "{HACK}/lib.sh"; apiserver_ready'], check=False).returncode == 0
    subprocess.run([str(HACK / "build-tools.sh")], check=True)
    subprocess.run([str(HACK / "cluster-up.sh")], check=True)
    return Cluster(kubeconfig=cluster_dir / "kubeconfig", kubectl_path=kubectl_path, started_here=not healthy)


def stop_cluster() -> None:
    subprocess.run([str(HACK / "cluster-down.sh")], check=True)
