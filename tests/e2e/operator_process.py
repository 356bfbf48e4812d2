"""The operator as a separate process, started the way users start it (`modeldeploy run`), for e2e tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.cluster import Cluster, hack_value, wait_until

OPERATOR_USER_AGENT = "modeldeploy/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    def __init__(self, cluster: Cluster, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        modeldeploy = Path(sys.executable).parent / "modeldeploy"
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(modeldeploy), "run", "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}"],
            env={**self.cluster.env(), **self.extra_env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: self.metric("modeldeploy_queue_depth") is not None, timeout=30, what="operator metrics")

    def stop(self) -> None:
        """SIGTERM and wait, as Kubernetes stops a pod."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def failures(self, namespace: str) -> list[str]:
        """Log lines of this run about something that failed in `namespace` (refusals included).

        Other namespaces are left out on purpose: a namespace another test is deleting refuses writes (403) while
        it terminates, which says nothing about the namespace under test.
        """
        text = self.log_path.read_bytes()[self.log_offset :].decode(errors="replace")
        return [
            line
            for line in text.splitlines()
            if f'namespace="{namespace}"' in line
            and any(word in line.lower() for word in ("failed", "forbidden", "could not"))
        ]

    def metrics_text(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def metric(self, name: str, labels: str = "") -> float | None:
        text = self.metrics_text()
        if text is None:
            return None
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        total = None
        for line in text.splitlines():
            if line.startswith(prefix):
                total = (total or 0.0) + float(line.split()[-1])
        return total if total is not None else (0.0 if text else None)

    def reconciles(self) -> float:
        return self.metric("modeldeploy_reconcile_total", 'outcome="success"') or 0.0


class AuditLog:
    """Writes recorded by the API server's audit log (hack/cluster-up.sh enables it for write verbs)."""

    def __init__(self) -> None:
        self.path = Path(hack_value("CLUSTER_DIR")) / "logs" / "audit.log"

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def writes_since(self, offset: int, user_agent_prefix: str = OPERATOR_USER_AGENT) -> list[dict[str, object]]:
        with self.path.open("rb") as audit:
            audit.seek(offset)
            data = audit.read()
        events = []
        for line in data.splitlines():
            event = json.loads(line)
            if str(event.get("userAgent", "")).startswith(user_agent_prefix):
                events.append(event)
        return events


def restart_apiserver() -> None:
    """Stop kube-apiserver and start it again with the same command line, as a control-plane upgrade would."""
    cluster_dir = Path(hack_value("CLUSTER_DIR"))
    pid_file = cluster_dir / "pids" / "kube-apiserver.pid"
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
        env={**os.environ, "LOG": str(cluster_dir / "logs" / "kube-apiserver.log")},
        capture_output=True,
        text=True,
        check=True,
    )
    pid_file.write_text(launcher.stdout.strip())
    ready = f'. "{Path(__file__).resolve().parents[2]}/hack/lib.sh"; apiserver_ready'
    wait_until(
        lambda: subprocess.run(["bash", "-c", ready], check=False).returncode == 0,
        timeout=60,
        what="kube-apiserver to be ready again",
    )
