"""The real server, one per model format: predictions, health endpoints, metrics."""

from __future__ import annotations

import re

import numpy as np
import pytest

from modeldeploy_runtime import metrics as names
from modeldeploy_testkit.runtime_server import RuntimeServer, metric_key
from tests.runtime.conftest import Fleet, TrainedModel

FORMATS = ["sklearn", "xgboost", "lightgbm", "onnx", "custom"]
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _trained(fleet: Fleet, name: str) -> TrainedModel:
    model: TrainedModel = getattr(fleet.models, name)
    return model


def _labels(server: RuntimeServer) -> dict[str, str]:
    return {"model": server.env["MODEL_NAME"], "version": server.env["MODEL_VERSION"]}


@pytest.mark.parametrize("name", FORMATS)
def test_predictions_match_the_model_in_process(fleet: Fleet, name: str) -> None:
    server, model = fleet[name], _trained(fleet, name)
    server.wait_ready()

    response = server.predict({"data": {"ndarray": model.rows.tolist()}})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["tags"] == _labels(server)
    np.testing.assert_allclose(np.asarray(body["data"]["ndarray"]), model.expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sklearn", "xgboost"])
def test_tensor_payloads_get_tensor_answers(fleet: Fleet, name: str) -> None:
    server, model = fleet[name], _trained(fleet, name)
    server.wait_ready()

    payload = {"data": {"tensor": {"shape": list(model.rows.shape), "values": model.rows.ravel().tolist()}}}
    response = server.predict(payload)

    assert response.status_code == 200, response.text
    tensor = response.json()["data"]["tensor"]
    assert tensor["shape"] == list(model.expected.shape)
    np.testing.assert_allclose(np.asarray(tensor["values"]), model.expected.ravel(), rtol=1e-5, atol=1e-6)


def test_response_shape_is_seldons(fleet: Fleet) -> None:
    server = fleet["sklearn"]
    server.wait_ready()

    body = server.predict({"data": {"names": ["a", "b", "c", "d"], "ndarray": [[0.1, 0.2, 0.3, 0.4]]}}).json()

    # Two probability columns: seldon names them t:0, t:1 when the model has no class names of its own.
    assert set(body) == {"data", "meta"}
    assert body["data"]["names"] == ["t:0", "t:1"]
    assert len(body["data"]["ndarray"]) == 1
    assert body["meta"] == {"tags": _labels(server)}


@pytest.mark.parametrize("name", FORMATS)
def test_health_endpoints_when_ready(fleet: Fleet, name: str) -> None:
    server = fleet[name]
    server.wait_ready()

    ping = server.get("/health/ping")
    status = server.get("/health/status")

    assert (ping.status_code, ping.text) == (200, "pong")
    assert status.status_code == 200
    body = status.json()
    assert body["meta"]["tags"] == _labels(server)
    data = body["jsonData"]
    assert data["ready"] is True
    assert data["state"] == "ready"
    assert data["format"] == name
    assert SHA256.match(data["sha256"])
    if "MODEL_SHA256" in server.env:
        assert data["sha256"] == server.env["MODEL_SHA256"]


def test_metadata_names_model_and_version(fleet: Fleet) -> None:
    server = fleet["onnx"]
    server.wait_ready()

    body = server.get("/api/v1.0/metadata").json()

    assert body["name"] == server.env["MODEL_NAME"]
    assert body["versions"] == [server.env["MODEL_VERSION"]]
    assert body["platform"] == "modeldeploy-onnx"


@pytest.mark.parametrize(
    ("name", "bad_status", "bad_reason"),
    [
        ("sklearn", 400, "invalid_input"),
        ("lightgbm", 400, "invalid_input"),
        # The runtime cannot know what a custom class accepts: its exception is the model's failure.
        ("custom", 500, "prediction_failed"),
    ],
)
def test_metrics_count_requests_per_version(fleet: Fleet, name: str, bad_status: int, bad_reason: str) -> None:
    server, model = fleet[name], _trained(fleet, name)
    server.wait_ready()
    labels = _labels(server)
    success = metric_key(names.REQUESTS_TOTAL, **labels, outcome="success")
    failed = metric_key(names.REQUESTS_TOTAL, **labels, outcome="error")
    error_reason = metric_key(names.ERRORS_TOTAL, **labels, reason=bad_reason)
    latency = metric_key(names.REQUEST_DURATION_SECONDS + "_count", **labels)
    outputs = metric_key(names.PREDICTION_VALUE + "_count", **labels, output="0")
    before = server.metrics()

    for _ in range(3):
        assert server.predict({"data": {"ndarray": model.rows.tolist()}}).status_code == 200
    bad = server.predict({"data": {"ndarray": [[1.0, 2.0]]}})  # wrong number of features
    after = server.metrics()

    assert bad.status_code == bad_status, bad.text
    assert after[success] - before.get(success, 0.0) == 3
    assert after[failed] - before.get(failed, 0.0) == 1
    assert after[error_reason] - before.get(error_reason, 0.0) == 1
    assert after[latency] - before.get(latency, 0.0) == 3
    assert after[outputs] - before.get(outputs, 0.0) == 3 * len(model.rows)
    assert after[metric_key(names.MODEL_READY, **labels)] == 1.0
    info = [key for key in after if key[0] == names.MODEL_INFO and dict(key[1])["version"] == labels["version"]]
    assert len(info) == 1
    info_labels = dict(info[0][1])
    assert info_labels["format"] == name
    assert SHA256.match(info_labels["sha256"])
    assert after[info[0]] == 1.0


def test_every_output_column_has_its_own_series(fleet: Fleet) -> None:
    server = fleet["sklearn"]  # predict_proba: two columns
    server.wait_ready()
    assert server.predict({"data": {"ndarray": fleet.models.sklearn.rows.tolist()}}).status_code == 200

    samples = server.metrics()

    labels = _labels(server)
    for column in ("0", "1"):
        assert samples[metric_key(names.PREDICTION_VALUE + "_count", **labels, output=column)] >= 3
    # Probabilities: every observation lies in the +Inf bucket and none above 1.
    count = samples[metric_key(names.PREDICTION_VALUE + "_count", **labels, output="1")]
    assert samples[metric_key(names.PREDICTION_VALUE + "_bucket", **labels, output="1", le="1.0")] == count


def test_non_numeric_payload_is_a_client_error(fleet: Fleet) -> None:
    server = fleet["xgboost"]
    server.wait_ready()

    response = server.predict({"data": {"ndarray": [["a", "b", "c", "d"]]}})

    assert response.status_code == 400
    assert response.json()["status"]["reason"] == "MODEL_INVALID_INPUT"
