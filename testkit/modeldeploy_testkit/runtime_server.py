"""Running the real model server (`modeldeploy-runtime`, i.e. seldon-core-microservice) on loopback ports.

Every server gets its own ports, cache, metrics directory and HOME under the test's temporary directory, runs
in its own session (process group) and is always stopped: SIGTERM to the main process as Kubernetes would
send it, then SIGKILL to whatever of its group is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_testkit.waiting import free_port, wait_until

RUNTIME_SCRIPT = Path(sys.executable).parent / "modeldeploy-runtime"
LOOPBACK = "127.0.0.1"
# Generous: two cores shared with other builds; a healthy server on an idle machine needs 3-5 seconds.
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 15.0
# Variables of the contract (and the runtime's knobs) that must never leak from the calling environment.
_SCRUBBED_ENV_PREFIXES = (
    "MODEL_",
    "PREDICTIVE_UNIT_",
    "PROMETHEUS_MULTIPROC_DIR",
    "GUNICORN_",
    "GRPC_",
    "SELDON_",
)

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def metric_key(name: str, **labels: str) -> MetricKey:
    return name, tuple(sorted(labels.items()))


def parse_metrics(text: str) -> dict[MetricKey, float]:
    samples: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@dataclass
class RuntimeServer:
    name: str
    env: dict[str, str]
    http_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    _session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.http_port}{path}"

    def get(self, path: str) -> requests.Response:
        return self._session.get(self.url(path), timeout=10)

    def predict(self, payload: dict[str, Any]) -> requests.Response:
        return self._session.post(self.url("/api/v1.0/predictions"), json=payload, timeout=30)

    def metrics(self) -> dict[MetricKey, float]:
        response = self._session.get(f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=10)
        response.raise_for_status()
        return parse_metrics(response.text)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _status(self) -> requests.Response | None:
        if self.process.poll() is not None:
            raise AssertionError(f"server {self.name} exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            return self.get("/health/status")
        except requests.ConnectionError:
            return None  # not listening yet

    def wait_ready(self) -> dict[str, Any]:
        """Block until /health/status says 200; return its jsonData."""

        def probe() -> dict[str, Any] | None:
            response = self._status()
            if response is None:
                return None
            body = response.json()
            if response.status_code == 200:
                data: dict[str, Any] = body["jsonData"]
                return data
            if body.get("state") == "failed" and body.get("retryInSeconds") is None:
                raise AssertionError(f"server {self.name} failed to load: {body}\n{self.log_text()}")
            return None

        return wait_until(probe, timeout=START_TIMEOUT_SECONDS, what=f"server {self.name} to become ready")

    def wait_failure(self) -> tuple[int, dict[str, Any]]:
        """Block until /health/status reports a load failure; return the status code and the body."""

        def probe() -> tuple[int, dict[str, Any]] | None:
            response = self._status()
            if response is None:
                return None
            body = response.json()
            if response.status_code == 200:
                raise AssertionError(f"server {self.name} became ready, expected a load failure: {body}")
            return (response.status_code, body) if "reason" in body else None

        return wait_until(probe, timeout=START_TIMEOUT_SECONDS, what=f"server {self.name} to report its load failure")

    def stop(self) -> None:
        self._session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT_SECONDS)
        # seldon's helper processes share the group; none may outlive the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(STOP_TIMEOUT_SECONDS)


def start_server(name: str, model_env: dict[str, str], workdir: Path, threads: int | None = 1) -> RuntimeServer:
    """Start one server; returns at once (the caller waits for the state it expects).

    `threads` caps the numeric libraries' threads (OMP_NUM_THREADS); None leaves them as the environment says.
    """
    home = workdir / f"server-{name}"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    env.update(
        {
            "HOME": str(home),
            "MODEL_CACHE_DIR": str(home / "cache"),
            "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"),
            "PYTHONUNBUFFERED": "1",
            # No drain unless a test asks for one (model_env wins): nothing sends traffic to a server being
            # stopped at the end of a test, and a fleet stopped one by one would wait for each drain in turn.
            "MODEL_DRAIN_SECONDS": "0",
        }
    )
    if threads is not None:
        # Kept small for tests: these servers share two cores with each other.
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(model_env)
    http_port, metrics_port = free_port(), free_port()
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(RUNTIME_SCRIPT), "--http-port", str(http_port), "--metrics-port", str(metrics_port)],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RuntimeServer(name, env, http_port, metrics_port, log_path, process)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """Serve a directory over HTTP on loopback; yields the base URL."""
    server = ThreadingHTTPServer((LOOPBACK, 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="file-server", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
