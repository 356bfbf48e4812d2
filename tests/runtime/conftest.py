"""Tiny models of every format, trained at test time, and one fleet of real servers shared by the session.

All servers start at once and load in parallel; each test then waits only for the server it looks at. Starting
them one by one would cost the suite a server start-up (seconds on two busy cores) per scenario.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from modeldeploy_runtime.artifacts import artifact_sha256
from modeldeploy_testkit.runtime_server import RuntimeServer, file_server, start_server
from modeldeploy_testkit.waiting import free_port

FEATURES = 4
_RNG_SEED = 7


@dataclass(frozen=True)
class TrainedModel:
    """An artifact on disk and what the model itself answers, in process, for the probe rows."""

    format: str
    path: Path
    rows: npt.NDArray[np.float64]
    expected: npt.NDArray[Any]


@dataclass(frozen=True)
class Models:
    root: Path
    sklearn: TrainedModel
    xgboost: TrainedModel
    lightgbm: TrainedModel
    onnx: TrainedModel
    custom: TrainedModel
    corrupt: Path


def _training_data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(_RNG_SEED)
    features = rng.normal(size=(40, FEATURES))
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(np.int64)
    return features, labels


def _probe_rows() -> npt.NDArray[np.float64]:
    return np.random.default_rng(_RNG_SEED + 1).normal(size=(3, FEATURES)).round(3)


def _train_sklearn(directory: Path) -> TrainedModel:
    import joblib
    from sklearn.linear_model import LogisticRegression

    features, labels = _training_data()
    model = LogisticRegression().fit(features, labels)
    path = directory / "model.joblib"
    joblib.dump(model, path)
    rows = _probe_rows()
    return TrainedModel("sklearn", path, rows, model.predict_proba(rows))


def _train_xgboost(directory: Path) -> TrainedModel:
    import xgboost

    features, labels = _training_data()
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgboost.DMatrix(features, label=labels), 5
    )
    path = directory / "model.ubj"
    booster.save_model(path)
    rows = _probe_rows()
    return TrainedModel("xgboost", path, rows, booster.predict(xgboost.DMatrix(rows)))


def _train_lightgbm(directory: Path) -> TrainedModel:
    import lightgbm

    features, labels = _training_data()
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 2, "verbose": -1, "num_threads": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(features, label=labels), num_boost_round=5)
    path = directory / "model.txt"
    booster.save_model(str(path))
    rows = _probe_rows()
    return TrainedModel("lightgbm", path, rows, np.asarray(booster.predict(rows)))


def _train_onnx(directory: Path) -> TrainedModel:
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    features, labels = _training_data()
    model = LinearRegression().fit(features.astype(np.float32), features[:, 0] * 2.0 + labels)
    onnx_model = to_onnx(model, features[:1].astype(np.float32), target_opset=17)
    path = directory / "model.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    rows = _probe_rows()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: rows.astype(np.float32)})[0]
    return TrainedModel("onnx", path, rows, expected)


CUSTOM_WEIGHTS = [0.5, -1.0, 2.0, 0.25]


def _write_custom(directory: Path) -> TrainedModel:
    """A custom model as a directory: model.py holds the class and imports a sibling module."""
    directory.mkdir()
    (directory / "weights.py").write_text(f"WEIGHTS = {CUSTOM_WEIGHTS!r}\n")
    (directory / "model.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            from weights import WEIGHTS


            class Scorer:
                def load(self):
                    self.weights = np.asarray(WEIGHTS)

                def predict(self, X):
                    return np.asarray(X, dtype=float) @ self.weights
            """
        )
    )
    rows = _probe_rows()
    return TrainedModel("custom", directory, rows, rows @ np.asarray(CUSTOM_WEIGHTS))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("models")
    for name in ("sklearn", "xgboost", "onnx"):
        (root / name).mkdir()
    # lightgbm is served through pvc://models/lightgbm/model.txt, with MODEL_PVC_ROOT standing in for /mnt/models.
    pvc_dir = root / "pvc" / "models" / "lightgbm"
    pvc_dir.mkdir(parents=True)
    corrupt = root / "corrupt.joblib"
    corrupt.write_bytes(b"this is not a pickle\x00\x01\x02" * 64)
    return Models(
        root=root,
        sklearn=_train_sklearn(root / "sklearn"),
        xgboost=_train_xgboost(root / "xgboost"),
        lightgbm=_train_lightgbm(pvc_dir),
        onnx=_train_onnx(root / "onnx"),
        custom=_write_custom(root / "custom"),
        corrupt=corrupt,
    )


@dataclass(frozen=True)
class Fleet:
    servers: dict[str, RuntimeServer]
    models: Models

    def __getitem__(self, name: str) -> RuntimeServer:
        return self.servers[name]


def _identity(name: str) -> dict[str, str]:
    return {"MODEL_NAME": f"test-{name}", "MODEL_VERSION": f"{name}-1.0.0"}


@pytest.fixture(scope="session")
def fleet(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("servers")
    with file_server(models.root) as base_url:
        specs: dict[str, dict[str, str]] = {
            # Downloaded over HTTP and verified against its digest; probabilities rather than labels.
            "sklearn": {
                "MODEL_URI": f"{base_url}/sklearn/model.joblib",
                "MODEL_FORMAT": "sklearn",
                "MODEL_SHA256": artifact_sha256(models.sklearn.path),
                "MODEL_PREDICT_METHOD": "predict_proba",
            },
            "xgboost": {"MODEL_URI": str(models.xgboost.path), "MODEL_FORMAT": "xgboost"},
            "lightgbm": {
                "MODEL_URI": "pvc://models/lightgbm/model.txt",
                "MODEL_FORMAT": "lightgbm",
                "MODEL_PVC_ROOT": str(models.root / "pvc"),
            },
            "onnx": {"MODEL_URI": models.onnx.path.as_uri(), "MODEL_FORMAT": "onnx"},
            "custom": {
                "MODEL_URI": models.custom.path.as_uri(),
                "MODEL_FORMAT": "custom",
                "MODEL_CLASS": "Scorer",
                "MODEL_SHA256": artifact_sha256(models.custom.path),
            },
            "wrong-digest": {
                "MODEL_URI": str(models.sklearn.path),
                "MODEL_FORMAT": "sklearn",
                "MODEL_SHA256": "0" * 64,
            },
            "missing-file": {
                "MODEL_URI": (models.root / "nowhere" / "model.joblib").as_uri(),
                "MODEL_FORMAT": "sklearn",
            },
            # Nothing listens on a port just freed: the connection is refused.
            "unreachable-url": {"MODEL_URI": f"http://127.0.0.1:{free_port()}/x", "MODEL_FORMAT": "sklearn"},
            "corrupt-artifact": {"MODEL_URI": str(models.corrupt), "MODEL_FORMAT": "sklearn"},
        }
        servers: dict[str, RuntimeServer] = {}
        try:
            for name, model_env in specs.items():
                servers[name] = start_server(name, {**_identity(name), **model_env}, workdir)
            yield Fleet(servers, models)
        finally:
            for server in servers.values():
                server.stop()
