"""The node agent stops a container as a kubelet does: preStop hook, SIGTERM, SIGKILL after the grace period.

No root needed: the container is a real process under the agent's real shim (shim.py), only not inside a network
namespace, and the pod's worker is a stand-in with the attributes a container uses. What needs a network (an exec
hook runs in the pod's namespace, an httpGet hook is sent only through the pod's veth) is checked for refusal only.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from modeldeploy_testkit.nodeagent.network import PodNetwork
from modeldeploy_testkit.nodeagent.pods import (
    MIN_GRACE_AFTER_HOOK_SECONDS,
    SHIM,
    ContainerRun,
    PodWorker,
    now_rfc3339,
    start_ticks,
)
from modeldeploy_testkit.nodeagent.probes import run_lifecycle_handler
from modeldeploy_testkit.waiting import wait_until

# The container: says when it got SIGTERM (epoch seconds), then exits 0 a moment later, or never when told to
# ignore it (only SIGKILL ends it then).
CONTAINER = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path

    marks, ignore = Path(sys.argv[1]), sys.argv[2] == "ignore"

    def on_term(signum, frame):
        (marks / "sigterm").write_text(repr(time.time()))
        if not ignore:
            time.sleep(0.2)
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    (marks / "running").write_text("")
    while True:
        time.sleep(0.05)
    """
)


class StandInWorker:
    """What a ContainerRun reads from its pod's worker."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.uid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
        self.namespace, self.pod_name = "team-a", "fraud-detector-r1a2b3c4d5-x7k2p"
        self.key = f"{self.namespace}/{self.pod_name}"
        self.network = PodNetwork("mdpod-0b1c2d3e4f", "mdv0b1c2d3e4f", "198.19.128.9")
        self.restart_policy = "Always"
        self.stopping = threading.Event()
        self.terminating = False
        self.events: list[tuple[str, str, str]] = []

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def save(self) -> None:
        pass

    def wake(self) -> None:
        pass


@pytest.fixture
def worker(tmp_path: Path) -> StandInWorker:
    return StandInWorker(tmp_path)


def run_container(
    worker: StandInWorker, lifecycle: dict[str, Any] | None, ignore_sigterm: bool = False
) -> ContainerRun:
    """A running container under the shim, as ContainerRun.start leaves it (no probes: the test sets `ready`)."""
    marks = worker.directory / "marks"
    marks.mkdir()
    spec: dict[str, Any] = {"name": "model-server", "image": "modeldeploy/runtime:0.1.0"}
    if lifecycle is not None:
        spec["lifecycle"] = lifecycle
    container = ContainerRun(cast(PodWorker, worker), spec, {"instance": 1})
    argv = [sys.executable, "-c", CONTAINER, str(marks), "ignore" if ignore_sigterm else "exit"]
    log = (worker.directory / "container.log").open("ab")
    container.proc = subprocess.Popen(
        [sys.executable, "-I", str(SHIM), str(container.prefix), "--", *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    container.record.update(
        shimPid=container.proc.pid, shimTicks=start_ticks(container.proc.pid), startedAt=now_rfc3339()
    )
    wait_until(lambda: (marks / "running").exists(), timeout=10, what="the container to run")
    container.ready = True
    container.started = True
    return container


def sigterm_at(worker: StandInWorker) -> float | None:
    mark = worker.directory / "marks" / "sigterm"
    return float(mark.read_text()) if mark.exists() else None


@pytest.fixture
def cleanup(worker: StandInWorker) -> Iterator[list[ContainerRun]]:
    containers: list[ContainerRun] = []
    yield containers
    for container in containers:
        if container.proc is not None and container.proc.poll() is None:
            container.proc.kill()
            container.proc.wait(5)


def test_prestop_sleep_comes_before_sigterm_and_the_container_stays_ready_meanwhile(
    worker: StandInWorker, cleanup: list[ContainerRun]
) -> None:
    container = run_container(worker, {"preStop": {"sleep": {"seconds": 1}}})
    cleanup.append(container)
    readiness: list[bool] = []
    stopping = threading.Thread(target=container.stop, args=(10.0, True))
    started = time.time()
    stopping.start()
    while stopping.is_alive():
        if sigterm_at(worker) is None:
            readiness.append(container.ready)
        time.sleep(0.05)

    signalled = sigterm_at(worker)
    assert signalled is not None, "the container never got SIGTERM"
    assert 1.0 <= signalled - started < 2.5, f"SIGTERM {signalled - started:.2f}s after the stop began"
    # Readiness is the probes' to say until the process ends; stopping does not flip it.
    assert readiness
    assert all(readiness)
    assert not container.running
    assert not container.ready
    assert container.record["lastTerminated"]["exitCode"] == 0
    assert not [e for e in worker.events if e[1] == "FailedPreStopHook"]


def test_without_a_hook_sigterm_comes_at_once(worker: StandInWorker, cleanup: list[ContainerRun]) -> None:
    container = run_container(worker, None)
    cleanup.append(container)
    started = time.time()
    container.stop(10.0, True)
    signalled = sigterm_at(worker)
    assert signalled is not None
    assert signalled - started < 1.0
    assert container.record["lastTerminated"]["exitCode"] == 0


def test_a_hook_longer_than_the_grace_period_is_cut_and_sigterm_still_gets_its_minimum(
    worker: StandInWorker, cleanup: list[ContainerRun]
) -> None:
    grace = 1.5
    container = run_container(worker, {"preStop": {"sleep": {"seconds": 30}}}, ignore_sigterm=True)
    cleanup.append(container)
    started = time.time()
    container.stop(grace, True)
    ended = time.time()

    signalled = sigterm_at(worker)
    assert signalled is not None
    assert grace <= signalled - started < grace + 1.0, f"SIGTERM {signalled - started:.2f}s after the stop began"
    # The hook used the whole grace period; SIGTERM still had the kubelet's minimum before SIGKILL.
    assert ended - signalled >= MIN_GRACE_AFTER_HOOK_SECONDS - 0.1
    assert container.record["lastTerminated"]["exitCode"] == 137
    [failed] = [e for e in worker.events if e[1] == "FailedPreStopHook"]
    assert failed[0] == "Warning"
    assert "cut short" in failed[2]


def test_a_terminating_pods_container_shows_terminated_not_waiting(
    worker: StandInWorker, cleanup: list[ContainerRun]
) -> None:
    container = run_container(worker, None)
    cleanup.append(container)
    worker.terminating = True
    container.stop(10.0, True)
    assert not container.should_restart()
    status = container.status()
    assert status["state"] == {"terminated": container.record["lastTerminated"]}
    assert status["ready"] is False


# --- the handlers ---------------------------------------------------------------------------------------------------


def test_sleep_handler_sleeps_and_is_bounded_by_the_grace_period() -> None:
    started = time.monotonic()
    assert run_lifecycle_handler({"sleep": {"seconds": 0.3}}, {}, "198.19.128.9", "mdvx", "mdpod-x", {}, 5) == (
        True,
        "",
    )
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    ok, message = run_lifecycle_handler({"sleep": {"seconds": 60}}, {}, "198.19.128.9", "mdvx", "mdpod-x", {}, 0.2)
    assert time.monotonic() - started < 1.0
    assert not ok
    assert "cut short" in message


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_handler_is_sent_only_through_the_pods_veth() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        handler = {"httpGet": {"host": "127.0.0.1", "port": server.server_address[1], "path": "/drain"}}
        ok, message = run_lifecycle_handler(handler, {}, "198.19.128.9", "mdvx", "mdpod-x", {}, 5)
    finally:
        server.shutdown()
        server.server_close()
    assert not ok
    assert message.startswith("not sent:")
    assert _Recorder.hits == []


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ({"tcpSocket": {"port": 9000}}, "tcpSocket is not supported"),
        ({"exec": {"command": ["true"]}}, "grace period had run out"),
        ({}, "unsupported lifecycle handler"),
    ],
)
def test_handlers_that_are_not_run(handler: dict[str, Any], message: str) -> None:
    timeout = 0.0 if "exec" in handler else 5.0
    ok, text = run_lifecycle_handler(handler, {}, "198.19.128.9", "mdvx", "mdpod-x", {}, timeout)
    assert not ok
    assert message in text
