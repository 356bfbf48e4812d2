"""Graceful shutdown: SIGTERM drains, the requests in flight finish, the server exits 0 within its timeout.

The servers here run a custom model that sleeps as long as a request's first feature says, so a request can be
kept in flight across the SIGTERM, the drain and the stop. It marks each call's start in a directory, so the test
knows the request reached the model before it sends the signal.
"""

from __future__ import annotations

import http.client
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from modeldeploy_runtime.config import ModelIdentity
from modeldeploy_runtime.drain import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
    DRAIN,
    ShutdownConfigError,
    ShutdownSettings,
)
from modeldeploy_runtime.loading import State
from modeldeploy_runtime.metrics import RuntimeMetrics
from modeldeploy_runtime.model import ModelServer
from modeldeploy_testkit.runtime_server import LOOPBACK, RuntimeServer, start_server
from modeldeploy_testkit.waiting import wait_until

SLOW_MODEL = '''
import os
import time
import uuid
from pathlib import Path

import numpy as np


class Model:
    """Sleeps for the first feature's number of seconds, then answers it; marks every call's start."""

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        Path(os.environ["SLOW_MODEL_MARKS"], uuid.uuid4().hex).touch()
        time.sleep(float(X[0, 0]))
        return X[:, 0]
'''


# --- the settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "drain", "in_flight"),
    [
        pytest.param(
            {}, DEFAULT_DRAIN_SECONDS, DEFAULT_SHUTDOWN_TIMEOUT_SECONDS - DEFAULT_DRAIN_SECONDS, id="defaults"
        ),
        pytest.param({"MODEL_DRAIN_SECONDS": "3", "MODEL_SHUTDOWN_TIMEOUT_SECONDS": "23"}, 3.0, 20.0, id="set"),
        pytest.param({"MODEL_DRAIN_SECONDS": "0"}, 0.0, DEFAULT_SHUTDOWN_TIMEOUT_SECONDS, id="no-drain"),
        pytest.param({"MODEL_DRAIN_SECONDS": " 2.5 "}, 2.5, DEFAULT_SHUTDOWN_TIMEOUT_SECONDS - 2.5, id="fraction"),
        # The timeout is the bound: the drain is cut so that requests in flight keep one second.
        pytest.param({"MODEL_DRAIN_SECONDS": "30", "MODEL_SHUTDOWN_TIMEOUT_SECONDS": "10"}, 9.0, 1.0, id="drain-cut"),
        pytest.param({"MODEL_SHUTDOWN_TIMEOUT_SECONDS": "1"}, 0.0, 1.0, id="shortest-timeout"),
        pytest.param({"MODEL_DRAIN_SECONDS": "", "MODEL_SHUTDOWN_TIMEOUT_SECONDS": ""}, 5.0, 20.0, id="empty"),
    ],
)
def test_shutdown_settings(environ: dict[str, str], drain: float, in_flight: float) -> None:
    settings = ShutdownSettings.from_env(environ)
    assert (settings.drain_seconds, settings.in_flight_seconds) == (drain, in_flight)
    assert settings.timeout_seconds == drain + in_flight


@pytest.mark.parametrize(
    "environ",
    [
        {"MODEL_DRAIN_SECONDS": "five"},
        {"MODEL_DRAIN_SECONDS": "-1"},
        {"MODEL_DRAIN_SECONDS": "nan"},
        {"MODEL_DRAIN_SECONDS": "inf"},
        {"MODEL_SHUTDOWN_TIMEOUT_SECONDS": "0"},
        {"MODEL_SHUTDOWN_TIMEOUT_SECONDS": "0.5"},
        {"MODEL_SHUTDOWN_TIMEOUT_SECONDS": "86400"},
    ],
    ids=lambda environ: ",".join(f"{k}={v}" for k, v in environ.items()),
)
def test_shutdown_settings_refuse_what_cannot_be_honoured(environ: dict[str, str]) -> None:
    with pytest.raises(ShutdownConfigError, match=next(iter(environ))):
        ShutdownSettings.from_env(environ)


# --- readiness while draining, in process ---------------------------------------------------------------------------


class _SeldonMetricsStub:
    def update(self, custom_metrics: list[dict[str, Any]], method: str) -> None:
        pass


@pytest.fixture
def draining() -> Iterator[None]:
    DRAIN.begin()
    yield
    DRAIN.reset()


def test_draining_server_is_not_ready_but_still_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, draining: None
) -> None:
    from seldon_core.wrapper import get_rest_microservice

    model = tmp_path / "echo.py"
    model.write_text("class Model:\n    def predict(self, X):\n        return X\n")
    for name, value in {"MODEL_NAME": "iris", "MODEL_VERSION": "3.1.0", "MODEL_URI": str(model)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODEL_FORMAT", "custom")
    monkeypatch.delenv("MODEL_SHA256", raising=False)
    server = ModelServer(metrics=RuntimeMetrics(ModelIdentity("iris", "3.1.0"), CollectorRegistry()))
    client: FlaskClient = get_rest_microservice(server, _SeldonMetricsStub()).test_client()
    server.load()
    assert server.wait_until_settled(60).state is State.READY

    health = client.get("/health/status")
    prediction = client.post("/api/v1.0/predictions", json={"data": {"ndarray": [[1.0, 2.0]]}})

    assert health.status_code == 503
    body = health.get_json()
    assert (body["ready"], body["state"], body["reason"]) == (False, "draining", "draining")
    assert body["status"]["reason"] == "MODEL_NOT_READY"
    assert prediction.status_code == 200
    assert client.get("/health/ping").status_code == 200


# --- the real server ------------------------------------------------------------------------------------------------


@dataclass
class SlowRequest:
    """One prediction that takes `seconds` in the model, sent on a thread of its own."""

    server: RuntimeServer
    seconds: float
    outcome: dict[str, Any] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def start(self) -> SlowRequest:
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()
        return self

    def _send(self) -> None:
        started = time.monotonic()
        try:
            response = requests.post(
                self.server.url("/api/v1.0/predictions"),
                json={"data": {"ndarray": [[self.seconds]]}},
                timeout=self.seconds + 30,
            )
            self.outcome.update(status=response.status_code, body=response.json())
        except requests.RequestException as error:
            self.outcome.update(error=error)
        self.outcome["finished"] = time.monotonic()
        self.outcome["took"] = self.outcome["finished"] - started

    @property
    def done(self) -> bool:
        return "finished" in self.outcome

    def join(self, timeout: float) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert self.done, f"the slow request did not end within {timeout}s"
        return self.outcome


def slow_server(tmp_path: Path, name: str, drain: float, timeout: float) -> tuple[RuntimeServer, Path]:
    marks = tmp_path / f"{name}-marks"
    marks.mkdir()
    model = tmp_path / f"{name}.py"
    model.write_text(SLOW_MODEL.lstrip())
    server = start_server(
        name,
        {
            "MODEL_NAME": name,
            "MODEL_VERSION": "1.0.0",
            "MODEL_URI": model.as_uri(),
            "MODEL_FORMAT": "custom",
            "MODEL_DRAIN_SECONDS": str(drain),
            "MODEL_SHUTDOWN_TIMEOUT_SECONDS": str(timeout),
            "SLOW_MODEL_MARKS": str(marks),
        },
        tmp_path,
    )
    return server, marks


def in_flight(marks: Path, count: int = 1) -> None:
    wait_until(lambda: len(list(marks.iterdir())) >= count, timeout=10, what="the request to reach the model")


def connection_refused(server: RuntimeServer) -> bool:
    try:
        with socket.create_connection((LOOPBACK, server.http_port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def fresh_request(server: RuntimeServer, method: str, path: str) -> http.client.HTTPResponse:
    """One request on a new connection of its own (no pooled connection hides what the server does)."""
    connection = http.client.HTTPConnection(LOOPBACK, server.http_port, timeout=10)
    body = b'{"data": {"ndarray": [[0.0]]}}' if method == "POST" else None
    connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


DRAIN_SECONDS = 3.0
SLOW_SECONDS = 5.0  # outlasts the drain: the request is still in flight when the server stops listening
TIMEOUT_SECONDS = 12.0


def test_sigterm_drains_then_lets_the_request_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    server, marks = slow_server(tmp_path, "drained", DRAIN_SECONDS, TIMEOUT_SECONDS)
    try:
        server.wait_ready()
        slow = SlowRequest(server, SLOW_SECONDS).start()
        in_flight(marks)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Readiness says no at once, with the reason.
        def unready() -> dict[str, Any] | None:
            response = requests.get(server.url("/health/status"), timeout=5)
            return response.json() if response.status_code == 503 else None

        health = wait_until(unready, timeout=1.0, interval=0.05, what="readiness to turn 503")
        assert (health["state"], health["reason"]) == ("draining", "draining")
        unready_after = time.monotonic() - signalled

        # During the drain, requests on new connections are answered, each with "Connection: close".
        answered_during_drain = 0
        while time.monotonic() < signalled + DRAIN_SECONDS - 0.5:
            response = fresh_request(server, "POST", "/api/v1.0/predictions")
            assert response.status == 200
            assert response.getheader("Connection") == "close"
            answered_during_drain += 1
            time.sleep(0.2)
        assert answered_during_drain >= 3
        assert not slow.done
        assert server.process.poll() is None

        # After the drain: nothing listens any more, while the request in flight still runs.
        wait_until(lambda: connection_refused(server), timeout=3.0, interval=0.05, what="new connections refused")
        refused_after = time.monotonic() - signalled
        assert not slow.done, "the request in flight ended before the listening socket was closed"
        assert refused_after >= DRAIN_SECONDS - 0.1, f"refused {refused_after:.2f}s after SIGTERM, before the drain"

        outcome = slow.join(timeout=SLOW_SECONDS + 10)
        assert outcome.get("status") == 200, outcome
        assert outcome["body"]["data"]["ndarray"] == [SLOW_SECONDS]

        code = server.process.wait(TIMEOUT_SECONDS + 5)
        exited_after = time.monotonic() - signalled
        assert code == 0, server.log_text()[-3000:]
        assert exited_after <= TIMEOUT_SECONDS + 1.0
        assert connection_refused(server)
        log = server.log_text()
        assert '"Received SIGTERM, draining" drainSeconds=3.0' in log
        assert '"Drained, stopping"' in log
        print(
            f"\nSIGTERM -> 503 {unready_after:.2f}s, {answered_during_drain} answered during the drain, "
            f"refused {refused_after:.2f}s, in-flight request done {outcome['finished'] - signalled:.2f}s, "
            f"exit 0 {exited_after:.2f}s"
        )
    finally:
        server.stop()


def test_requests_in_flight_do_not_hold_the_exit_past_the_timeout(tmp_path: Path) -> None:
    drain, timeout = 1.0, 3.0
    server, marks = slow_server(tmp_path, "bounded", drain, timeout)
    try:
        server.wait_ready()
        slow = SlowRequest(server, 60.0).start()
        in_flight(marks)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = server.process.wait(timeout + 10)
        exited_after = time.monotonic() - signalled

        # The worker is killed at the end of the timeout (whole seconds of in-flight time, rounded down).
        assert code == 0, server.log_text()[-3000:]
        assert exited_after <= drain + math.floor(timeout - drain) + 1.5, f"exited {exited_after:.2f}s after SIGTERM"
        outcome = slow.join(timeout=10)
        assert "error" in outcome, f"a request cut short was answered: {outcome}"
    finally:
        server.stop()


def test_a_shutdown_setting_it_cannot_honour_stops_the_server_at_start(tmp_path: Path) -> None:
    server = start_server(
        "misconfigured", {"MODEL_DRAIN_SECONDS": "soon", "MODEL_URI": "/x", "MODEL_FORMAT": "sklearn"}, tmp_path
    )
    try:
        code = server.process.wait(30)
        assert code != 0
        assert "MODEL_DRAIN_SECONDS='soon' is not a number of seconds" in server.log_text()
    finally:
        server.stop()
