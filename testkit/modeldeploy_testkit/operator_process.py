"""The operator as a separate process, started the way users start it (`modeldeploy run`), and the API server's
audit log, which says what it wrote."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.scripts import cluster_dir
from modeldeploy_testkit.waiting import free_port, http_get, wait_until

OPERATOR_USER_AGENT = "modeldeploy/"
# The tests' Prometheus and the relays to it listen on 127.0.0.1, on ports chosen at run time; the operator asks
# only the Prometheus addresses its setting allows.
LOCAL_PROMETHEUS_URLS = "http://127.0.0.1:*"


class OperatorProcess:
    """`modeldeploy run` against the cluster: every namespace, or only `namespaces` when given."""

    def __init__(
        self,
        cluster: Cluster,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        namespaces: list[str] | None = None,
        lease_name: str | None = None,
        extra_args: list[str] | None = None,
        memtrace_report: Path | None = None,
    ) -> None:
        """`lease_name`: the leader-election Lease to share with other processes; without it, each start takes a
        fresh one, so that it leads at once even when a killed predecessor still holds its own. `memtrace_report`:
        run it under allocation tracing (`modeldeploy_testkit.memtrace`), which writes that report at exit."""
        self.cluster = cluster
        self.lease_name = lease_name
        self.extra_args = list(extra_args or [])
        self.memtrace_report = memtrace_report
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.namespaces = list(namespaces or [])
        self.metrics_port = free_port()
        # Its own health endpoint (/healthz, /readyz), which a standby serves too.
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, lead: bool | None = None) -> None:
        """Start it and wait until it serves metrics, and until it leads when `lead` says so (by default when its
        Lease is its own)."""
        if self.running:
            return
        command = [str(Path(sys.executable).parent / "modeldeploy"), "run"]
        if self.memtrace_report is not None:
            command = [sys.executable, "-m", "modeldeploy_testkit.memtrace", str(self.memtrace_report), "--", "run"]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        command += ["--metrics-bind-address", f"127.0.0.1:{self.metrics_port}"]
        command += ["--health-bind-address", f"127.0.0.1:{self.health_port}"]
        command += ["--leader-elect-lease-name", self.lease_name or f"modeldeploy-e2e-{uuid.uuid4().hex[:8]}"]
        command += self.extra_args
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                env={
                    "MODELDEPLOY_PROMETHEUS_ALLOWED_URLS": LOCAL_PROMETHEUS_URLS,
                    **self.cluster.env(),
                    **self.extra_env,
                    "PYTHONUNBUFFERED": "1",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.process = process

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the operator exited with {process.returncode}; see {self.log_path}")
            return self.metric("modeldeploy_queue_depth") is not None

        wait_until(serving, timeout=30, what="operator metrics")
        if self.lease_name is None if lead is None else lead:
            wait_until(lambda: serving() and self.leading(), timeout=30, what="the operator to lead")

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

    def health(self, path: str) -> tuple[int, str] | None:
        """The status and body of /healthz or /readyz, or None when nothing answers."""
        answer = http_get(f"http://127.0.0.1:{self.health_port}{path}")
        return (answer.status, answer.body.decode(errors="replace")) if answer is not None else None

    def metrics_text(self) -> str | None:
        answer = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return answer.text if answer is not None and answer.status == 200 else None

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

    def metric_lines(self, name: str) -> dict[str, float]:
        """Every sample of one metric, by its label set."""
        samples: dict[str, float] = {}
        for line in (self.metrics_text() or "").splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                labels, _, value = line.rpartition(" ")
                samples[labels[len(name) :] or "{}"] = float(value)
        return samples

    def leading(self) -> bool:
        """Whether it holds the Lease and runs the controller (its modeldeploy_leader gauge)."""
        return any(value == 1.0 for value in self.metric_lines("modeldeploy_leader").values())

    def identity(self) -> str | None:
        """Its leader-election identity, from the gauge's label."""
        for labels in self.metric_lines("modeldeploy_leader"):
            if 'identity="' in labels:
                return labels.split('identity="', 1)[1].split('"', 1)[0]
        return None

    def reconciles(self) -> float:
        return self.metric("modeldeploy_reconcile_total", 'outcome="success"') or 0.0


@contextlib.contextmanager
def running_operator(
    cluster: Cluster, log_path: Path, namespaces: list[str] | None = None
) -> Iterator[OperatorProcess]:
    """An operator started for the block and stopped after it."""
    operator = OperatorProcess(cluster, log_path, namespaces=namespaces)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@dataclass(frozen=True)
class AuditMark:
    """A place in the audit log: its file (by inode, it rotates) and an offset in it."""

    inode: int
    offset: int


class AuditLog:
    """Writes recorded by the API server's audit log (cluster-up.sh enables it for write verbs), read between two
    marks, across one rotation."""

    def __init__(self) -> None:
        self.path = cluster_dir() / "logs" / "audit.log"

    def mark(self) -> AuditMark:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return AuditMark(0, 0)
        return AuditMark(stat.st_ino, stat.st_size)

    def between(self, start: AuditMark, end: AuditMark | None = None) -> Iterator[dict[str, Any]]:
        """Every audit event written after `start` (and before `end`, when given)."""
        end = end or self.mark()
        chunks: list[bytes] = []
        if end.inode != start.inode and start.inode:
            # Rotated (--audit-log-maxsize): the rest of the old file is the newest backup.
            backups = sorted(self.path.parent.glob("audit-*.log"), key=lambda path: path.stat().st_mtime)
            if backups:
                with backups[-1].open("rb") as old:
                    old.seek(start.offset)
                    chunks.append(old.read())
            begin = 0
        else:
            begin = start.offset
        with self.path.open("rb") as audit:
            audit.seek(begin)
            chunks.append(audit.read(max(end.offset - begin, 0)))
        for chunk in chunks:
            for line in chunk.splitlines():
                if line.strip():
                    # The last line may still be being written.
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    def writes_since(self, start: AuditMark, user_agent_prefix: str = OPERATOR_USER_AGENT) -> list[dict[str, Any]]:
        return [event for event in self.between(start) if str(event.get("userAgent", "")).startswith(user_agent_prefix)]
