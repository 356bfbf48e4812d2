"""The local control plane as tests and benchmarks use it: start it (or reuse a healthy one), kubectl, an API client.

testkit/scripts/cluster-up.sh starts it: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok's
fake nodes, all on 127.0.0.1, with state, kubeconfig and logs in .cluster/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from modeldeploy_testkit.kubeapi import KubeAPI
from modeldeploy_testkit.scripts import REPO_ROOT, SCRIPTS, cluster_dir, lib_function_succeeds, script_value
from modeldeploy_testkit.waiting import wait_until

# Pods running this image never become Ready on the local control plane (testkit/kwok/pod-stages.yaml).
CRASHLOOP_IMAGE = "modeldeploy.test/crashloop:latest"
READY_IMAGE = "modeldeploy.test/model-server:latest"
USER_AGENT = "modeldeploy-testkit/0.1.0"


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

    def api(self, user_agent: str = USER_AGENT, timeout: float = 30) -> KubeAPI:
        """A client of the API server with the kubeconfig's credentials (one per thread pool of connections)."""
        return KubeAPI(self.kubeconfig, user_agent, timeout)

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

    def token_kubeconfig(self, service_account: str, namespace: str, path: Path) -> Path:
        """A kubeconfig whose only credential is a fresh token (1 h) of a ServiceAccount, from the TokenRequest API:
        the identity a pod of that account would have."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
        server = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [server],
            "users": [{"name": service_account, "user": {"token": token}}],
            # The account's namespace as the context's, as a pod of the account has it: the operator keeps its
            # leader-election Lease there.
            "contexts": [
                {
                    "name": service_account,
                    "context": {"cluster": server["name"], "user": service_account, "namespace": namespace},
                }
            ],
            "current-context": service_account,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def env(self) -> dict[str, str]:
        """The environment for a process that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


@contextlib.contextmanager
def scratch_namespace(cluster: Cluster, stem: str) -> Iterator[str]:
    """A fresh namespace `<stem>-<6 hex digits>`, deleted afterwards without waiting for it to go."""
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def local_cluster(started_here: bool = False) -> Cluster:
    """The local control plane as the scripts set it up, whether or not it runs."""
    kubectl_path = Path(script_value("KUBERNETES_BIN")) / "kubectl"
    return Cluster(kubeconfig=cluster_dir() / "kubeconfig", kubectl_path=kubectl_path, started_here=started_here)


def apiserver_ready() -> bool:
    return lib_function_succeeds("apiserver_ready")


def start_cluster(with_crd: bool = False) -> Cluster:
    """Build the binaries when they are not cached, start the control plane when it is not healthy, and install the
    ModelDeployment CRD when asked to."""
    healthy = apiserver_ready()
    subprocess.run([str(SCRIPTS / "build-tools.sh")], check=True)
    subprocess.run([str(SCRIPTS / "cluster-up.sh")], check=True)
    cluster = local_cluster(started_here=not healthy)
    if with_crd:
        cluster.install_crd()
    return cluster


def stop_cluster() -> None:
    subprocess.run([str(SCRIPTS / "cluster-down.sh")], check=True)


def restart_apiserver() -> None:
    """Stop kube-apiserver and start it again with the same command line, as a control-plane upgrade would."""
    pid_file = cluster_dir() / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text())
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="kube-apiserver to exit")
    except AssertionError:
        # It stops listening at once but can wait a long time for open watches to drain.
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="kube-apiserver to be killed")
    # Started through a shell that exits at once, so the API server is not this process's child: stopping it later
    # (cluster-down) must not leave a zombie waiting for pytest to reap it.
    launcher = subprocess.run(
        ["bash", "-c", 'setsid "$@" </dev/null >>"$LOG" 2>&1 & echo $!', "launcher", *[c.decode() for c in command]],
        env={**os.environ, "LOG": str(cluster_dir() / "logs" / "kube-apiserver.log")},
        capture_output=True,
        text=True,
        check=True,
    )
    pid_file.write_text(launcher.stdout.strip())
    wait_until(apiserver_ready, timeout=60, what="kube-apiserver to be ready again")
