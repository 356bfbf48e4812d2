"""A model that cannot be served leaves the server up, live and not ready, saying why: never a crash loop."""

from __future__ import annotations

import pytest

from modeldeploy_runtime import metrics as names
from modeldeploy_testkit.runtime_server import metric_key
from tests.runtime.conftest import Fleet

CASES = [
    # (server, reason, a phrase the message must contain, retried)
    ("wrong-digest", "digest_mismatch", "expected sha256 " + "0" * 64, False),
    ("missing-file", "not_found", "does not exist", False),
    ("unreachable-url", "download_failed", "GET http://127.0.0.1:", True),
    ("corrupt-artifact", "invalid_artifact", "cannot load sklearn model", False),
]


@pytest.mark.parametrize(("name", "reason", "phrase", "retried"), CASES)
def test_load_failure_is_not_ready_with_a_reason(
    fleet: Fleet, name: str, reason: str, phrase: str, retried: bool
) -> None:
    server = fleet[name]

    status_code, body = server.wait_failure()

    assert status_code == 503
    assert body["ready"] is False
    assert body["reason"] == reason
    assert phrase in body["message"]
    assert body["model"] == server.env["MODEL_NAME"]
    assert body["version"] == server.env["MODEL_VERSION"]
    # seldon's error shape is kept for seldon clients.
    assert body["status"]["reason"] == "MODEL_NOT_READY"
    assert body["status"]["code"] == 503
    if retried:
        assert body["state"] in ("failed", "loading")
    else:
        assert body["state"] == "failed"
        assert "retryInSeconds" not in body


@pytest.mark.parametrize(("name", "reason", "phrase", "retried"), CASES)
def test_load_failure_keeps_the_process_live(fleet: Fleet, name: str, reason: str, phrase: str, retried: bool) -> None:
    server = fleet[name]
    server.wait_failure()

    ping = server.get("/health/ping")

    assert (ping.status_code, ping.text) == (200, "pong")
    assert server.process.poll() is None


@pytest.mark.parametrize(("name", "reason", "phrase", "retried"), CASES)
def test_load_failure_is_one_clear_log_line(fleet: Fleet, name: str, reason: str, phrase: str, retried: bool) -> None:
    server = fleet[name]
    server.wait_failure()

    lines = [line for line in server.log_text().splitlines() if '"Model load failed, not ready"' in line]

    assert lines, server.log_text()
    if not retried:
        assert len(lines) == 1
    line = lines[0]
    assert line.startswith("E")
    assert f'reason="{reason}"' in line
    assert f'model="{server.env["MODEL_NAME"]}"' in line
    assert f'version="{server.env["MODEL_VERSION"]}"' in line
    assert "Traceback" not in server.log_text()


def test_predictions_while_not_ready_are_refused_and_counted(fleet: Fleet) -> None:
    server = fleet["wrong-digest"]
    server.wait_failure()
    labels = {"model": server.env["MODEL_NAME"], "version": server.env["MODEL_VERSION"]}
    not_ready = metric_key(names.ERRORS_TOTAL, **labels, reason="not_ready")
    before = server.metrics()

    response = server.predict({"data": {"ndarray": [[1.0, 2.0, 3.0, 4.0]]}})
    after = server.metrics()

    assert response.status_code == 503
    assert response.json()["reason"] == "digest_mismatch"
    assert after[not_ready] - before[not_ready] == 1
    assert after[metric_key(names.REQUESTS_TOTAL, **labels, outcome="error")] >= 1
    assert after[metric_key(names.MODEL_READY, **labels)] == 0.0
    assert not [key for key in after if key[0] == names.MODEL_INFO]
