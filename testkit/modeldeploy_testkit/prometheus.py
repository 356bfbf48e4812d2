"""Prometheus beside the local cluster (testkit/scripts/prometheus-up.sh), scraping the model servers' pods, and a
small client of its HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_testkit.scripts import StartError, cached_binary, cluster_dir, run_script
from modeldeploy_testkit.waiting import http_get, wait_until


@dataclass
class Prometheus:
    url: str

    def _get(self, path: str) -> Any:
        answer = http_get(f"{self.url}{path}", timeout=5)
        if answer is None or answer.status != 200:
            raise AssertionError(f"Prometheus at {self.url} answered {path} with {answer}")
        return json.loads(answer.body)

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self._get("/api/v1/targets?state=active")["data"]["activeTargets"]
        return targets


def _pid_file() -> Path:
    return cluster_dir() / "pids" / "prometheus.pid"


def start_prometheus() -> tuple[Prometheus, bool]:
    """The running Prometheus, or one started now; True when this call started it. Raises StartError."""
    binary = cached_binary("prometheus")
    if not binary.exists():
        raise StartError(
            f"Prometheus is not built ({binary} is missing): run `testkit/scripts/build-tools.sh prometheus` "
            "(or `make tools-prometheus`) first"
        )
    started_here = not _pid_file().exists()
    run_script("prometheus-up.sh")
    port = os.environ.get("MODELDEPLOY_PROMETHEUS_PORT", "9090")
    return Prometheus(f"http://127.0.0.1:{port}"), started_here


def stop_prometheus() -> None:
    """Stops the Prometheus recorded in .cluster/pids/ and waits for it to exit."""
    pid_file = _pid_file()
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="prometheus to stop")
    pid_file.unlink(missing_ok=True)
