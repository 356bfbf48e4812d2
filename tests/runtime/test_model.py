"""The seldon model class in process, behind seldon's own Flask app: fast checks of the HTTP contract."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from modeldeploy_runtime import loading
from modeldeploy_runtime.config import ModelIdentity, RuntimeConfig
from modeldeploy_runtime.errors import LoadFailure, ModelLoadError
from modeldeploy_runtime.loading import LoadedModel, ModelLoader, State
from modeldeploy_runtime.metrics import RuntimeMetrics
from modeldeploy_runtime.model import ModelServer
from tests.runtime.conftest import Models


class _SeldonMetricsStub:
    """seldon only hands its metrics object our (empty) custom metrics; nothing to count here."""

    def update(self, custom_metrics: list[dict[str, Any]], method: str) -> None:
        pass


def _client(server: ModelServer) -> FlaskClient:
    from seldon_core.wrapper import get_rest_microservice

    app = get_rest_microservice(server, _SeldonMetricsStub())
    client: FlaskClient = app.test_client()
    return client


@pytest.fixture
def model_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("MODEL_NAME", "iris")
    monkeypatch.setenv("MODEL_VERSION", "3.1.0")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MODEL_SHA256", raising=False)
    monkeypatch.delenv("MODEL_PREDICT_METHOD", raising=False)
    return monkeypatch


def _server() -> ModelServer:
    return ModelServer(metrics=RuntimeMetrics(ModelIdentity("iris", "3.1.0"), CollectorRegistry()))


def test_ready_model_answers_with_its_version(model_env: pytest.MonkeyPatch, models: Models) -> None:
    model_env.setenv("MODEL_URI", str(models.sklearn.path))
    model_env.setenv("MODEL_FORMAT", "sklearn")
    server = _server()
    client = _client(server)

    server.load()
    assert server.wait_until_settled(60).state is State.READY

    prediction = client.post("/api/v1.0/predictions", json={"data": {"ndarray": [[0.0, 0.0, 0.0, 0.0]]}})
    health = client.get("/health/status")
    assert prediction.status_code == 200
    assert prediction.get_json()["meta"]["tags"] == {"model": "iris", "version": "3.1.0"}
    assert prediction.get_json()["data"]["ndarray"][0] in (0, 1)
    assert health.status_code == 200
    assert health.get_json()["jsonData"]["state"] == "ready"


def test_not_ready_is_503_on_health_and_predictions(model_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model_env.setenv("MODEL_URI", str(tmp_path / "absent.joblib"))
    model_env.setenv("MODEL_FORMAT", "sklearn")
    server = _server()
    client = _client(server)

    server.load()
    assert server.wait_until_settled(60).state is State.FAILED

    for response in (
        client.get("/health/status"),
        client.post("/api/v1.0/predictions", json={"data": {"ndarray": [[1.0]]}}),
    ):
        assert response.status_code == 503
        body = response.get_json()
        assert body["reason"] == "not_found"
        assert body["status"]["reason"] == "MODEL_NOT_READY"
    assert client.get("/health/ping").status_code == 200


def test_before_load_the_model_is_loading(model_env: pytest.MonkeyPatch, models: Models) -> None:
    model_env.setenv("MODEL_URI", str(models.sklearn.path))
    model_env.setenv("MODEL_FORMAT", "sklearn")

    response = _client(_server()).get("/health/status")

    assert response.status_code == 503
    assert response.get_json()["state"] == "loading"


def test_bad_configuration_is_not_ready_not_a_crash(model_env: pytest.MonkeyPatch) -> None:
    model_env.setenv("MODEL_URI", "ftp://somewhere/m")
    model_env.setenv("MODEL_FORMAT", "pytorch")
    server = _server()

    server.load()
    status = server.wait_until_settled(10)

    assert status.state is State.FAILED
    assert status.failure is LoadFailure.INVALID_CONFIG
    assert "MODEL_FORMAT" in status.message


def test_custom_model_from_a_single_file(model_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = tmp_path / "echo.py"
    source.write_text("class Model:\n    def predict(self, X):\n        return {'echo': X.tolist()}\n")
    model_env.setenv("MODEL_URI", str(source))
    model_env.setenv("MODEL_FORMAT", "custom")
    model_env.delenv("MODEL_CLASS", raising=False)
    server = _server()
    server.load()
    assert server.wait_until_settled(30).state is State.READY

    response = _client(server).post("/api/v1.0/predictions", json={"data": {"ndarray": [[1, 2]]}})

    # A dict answer travels as seldon's jsonData.
    assert response.get_json()["jsonData"] == {"echo": [[1, 2]]}
    assert not (tmp_path / "__pycache__").exists()


def test_custom_model_without_the_class_is_an_invalid_artifact(model_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = tmp_path / "model.py"
    source.write_text("class Other: ...\n")
    model_env.setenv("MODEL_URI", str(source))
    model_env.setenv("MODEL_FORMAT", "custom")
    server = _server()

    server.load()
    status = server.wait_until_settled(30)

    assert status.failure is LoadFailure.INVALID_ARTIFACT
    assert "defines no class Model" in status.message


def test_network_failures_are_retried_until_they_heal(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []
    healed = threading.Event()
    loaded = LoadedModel(predictor=object(), sha256="b" * 64)  # type: ignore[arg-type]

    def flaky_load(config: RuntimeConfig) -> LoadedModel:
        attempts.append(1)
        if len(attempts) < 3:
            raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, "connection refused")
        healed.set()
        return loaded

    monkeypatch.setattr(loading, "load_model", flaky_load)
    monkeypatch.setattr(loading, "FIRST_RETRY_SECONDS", 0.01)
    config = RuntimeConfig.from_env({"MODEL_URI": "http://127.0.0.1:1/x", "MODEL_FORMAT": "sklearn"})
    identity = ModelIdentity("iris", "1")
    loader = ModelLoader(identity, config, "", RuntimeMetrics(identity, CollectorRegistry()))

    loader.start()
    status = loader.wait(10)

    assert healed.is_set()
    assert len(attempts) == 3
    assert status.state is State.READY
    assert loader.model is loaded


def test_permanent_failures_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def wrong_digest(config: RuntimeConfig) -> LoadedModel:
        attempts.append(1)
        raise ModelLoadError(LoadFailure.DIGEST_MISMATCH, "expected sha256 x, got y")

    monkeypatch.setattr(loading, "load_model", wrong_digest)
    monkeypatch.setattr(loading, "FIRST_RETRY_SECONDS", 0.01)
    config = RuntimeConfig.from_env({"MODEL_URI": "/m", "MODEL_FORMAT": "sklearn"})
    identity = ModelIdentity("iris", "1")
    loader = ModelLoader(identity, config, "", RuntimeMetrics(identity, CollectorRegistry()))

    loader.start()
    status = loader.wait(10)

    assert attempts == [1]
    assert (status.state, status.failure, status.retry_in_seconds) == (
        State.FAILED,
        LoadFailure.DIGEST_MISMATCH,
        None,
    )
