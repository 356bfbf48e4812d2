"""One loader per MODEL_FORMAT, each giving a Predictor.

The model libraries are imported inside the loaders: each is tens to hundreds of megabytes in memory, and a
pod serving an ONNX model should not carry xgboost. seldon's helper processes (metrics server, the metrics
manager) are forked before any model loads, so they stay small as well.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modeldeploy_runtime.config import ModelFormat, RuntimeConfig
from modeldeploy_runtime.errors import InvalidInputError, LoadFailure, ModelLoadError
from modeldeploy_runtime.payload import as_numeric, as_rows, as_tabular

CUSTOM_ENTRY_FILE = "model.py"
_CUSTOM_MODULE_NAME = "modeldeploy_custom_model"


class Predictor(Protocol):
    def predict(self, features: object) -> object: ...


def _check_width(rows: npt.NDArray[Any], expected: int | None) -> npt.NDArray[Any]:
    # Checked here so a request of the wrong width is the client's error (400), not the model's (500).
    if expected is not None and rows.shape[1] != expected:
        raise InvalidInputError(f"the model takes {expected} features per row, got {rows.shape[1]}")
    return rows


class SklearnPredictor:
    def __init__(self, estimator: Any, method: str) -> None:
        if not callable(getattr(estimator, method, None)):
            raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"{type(estimator).__name__} has no method {method}()")
        self._predict: Callable[[Any], Any] = getattr(estimator, method)
        width = getattr(estimator, "n_features_in_", None)
        self._width = int(width) if isinstance(width, int | np.integer) else None

    def predict(self, features: object) -> object:
        # Non-numeric columns stay as they are: a pipeline with encoders may want strings.
        return self._predict(_check_width(as_tabular(features, numeric=False), self._width))


class XGBoostPredictor:
    def __init__(self, booster: Any) -> None:
        self._booster = booster
        self._width = int(booster.num_features())

    def predict(self, features: object) -> object:
        rows = _check_width(as_tabular(features, numeric=True), self._width)
        # inplace_predict skips building a DMatrix per request and is safe to call from several threads.
        return self._booster.inplace_predict(rows)


class LightGBMPredictor:
    def __init__(self, booster: Any) -> None:
        self._booster = booster
        self._width = int(booster.num_feature())

    def predict(self, features: object) -> object:
        return self._booster.predict(_check_width(as_tabular(features, numeric=True), self._width))


_ONNX_DTYPES: dict[str, npt.DTypeLike] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OnnxPredictor:
    """Feeds the single input; answers with the first output (export classifiers with zipmap off)."""

    def __init__(self, session: Any) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelLoadError(
                LoadFailure.INVALID_ARTIFACT,
                f"ONNX model has {len(inputs)} inputs ({names}); exactly one is served",
            )
        model_input = inputs[0]
        if model_input.type not in _ONNX_DTYPES:
            raise ModelLoadError(
                LoadFailure.INVALID_ARTIFACT,
                f"ONNX input {model_input.name} has unsupported type {model_input.type}",
            )
        self._session = session
        self._input_name: str = model_input.name
        self._input_rank = len(model_input.shape)
        self._dtype = _ONNX_DTYPES[model_input.type]
        self._output_names: list[str] = [session.get_outputs()[0].name]
        # A fixed feature dimension is an int in the declared shape; a symbolic one is a string.
        width = model_input.shape[1] if self._input_rank == 2 else None
        self._width = width if isinstance(width, int) else None

    def predict(self, features: object) -> object:
        array = as_numeric(features, self._dtype)
        if self._input_rank == 2:
            array = _check_width(as_rows(array), self._width)
        elif array.ndim != self._input_rank:
            raise InvalidInputError(
                f"ONNX input {self._input_name} takes {self._input_rank} dimensions, got {array.ndim}"
            )
        return self._session.run(self._output_names, {self._input_name: array})[0]


class CustomPredictor:
    def __init__(self, instance: Any) -> None:
        if not callable(getattr(instance, "predict", None)):
            raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"{type(instance).__name__} has no predict() method")
        self._instance = instance

    def predict(self, features: object) -> object:
        # The user's class sees the payload exactly as seldon decoded it.
        return self._instance.predict(features)


def load_predictor(config: RuntimeConfig, path: Path) -> Predictor:
    """Load the artifact at path; any failure of the library is reported as an invalid artifact."""
    try:
        match config.format:
            case ModelFormat.SKLEARN:
                return _load_sklearn(path, config.predict_method)
            case ModelFormat.XGBOOST:
                return _load_xgboost(path)
            case ModelFormat.LIGHTGBM:
                return _load_lightgbm(path)
            case ModelFormat.ONNX:
                return _load_onnx(path)
            case ModelFormat.CUSTOM:
                return _load_custom(path, config.model_class)
    except ModelLoadError:
        raise
    except Exception as error:  # whatever a library raises on a bad file, the artifact is invalid
        raise ModelLoadError(
            LoadFailure.INVALID_ARTIFACT,
            f"cannot load {config.format.value} model from {path}: {_describe(error)}",
        ) from error


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"{path} is not a file")


def _load_sklearn(path: Path, method: str) -> Predictor:
    import joblib

    _require_file(path)
    # joblib.load reads joblib dumps and plain pickles alike. Unpickling runs code from the file: MODEL_SHA256
    # is what pins the artifact to the one that was reviewed.
    return SklearnPredictor(joblib.load(path), method)


def _load_xgboost(path: Path) -> Predictor:
    import xgboost

    _require_file(path)
    booster = xgboost.Booster()
    # From memory, xgboost tells JSON from UBJSON by content; from a file it would go by the extension.
    booster.load_model(bytearray(path.read_bytes()))
    return XGBoostPredictor(booster)


def _load_lightgbm(path: Path) -> Predictor:
    import lightgbm

    _require_file(path)
    return LightGBMPredictor(lightgbm.Booster(model_file=str(path)))


def _load_onnx(path: Path) -> Predictor:
    import onnxruntime

    _require_file(path)
    return OnnxPredictor(onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


def _load_custom(path: Path, class_name: str) -> Predictor:
    """MODEL_URI names a Python file, or a directory whose model.py holds the class (and may import more)."""
    if path.is_dir():
        entry = path / CUSTOM_ENTRY_FILE
        if not entry.is_file():
            raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"directory {path} has no {CUSTOM_ENTRY_FILE}")
        sys.path.insert(0, str(path))
    else:
        entry = path
    spec = importlib.util.spec_from_file_location(_CUSTOM_MODULE_NAME, entry)
    if spec is None or spec.loader is None:
        raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"{entry} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    # No bytecode next to the sources: it would change a directory's digest, and the volume may be read-only.
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        sys.modules[_CUSTOM_MODULE_NAME] = module
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    model_class = getattr(module, class_name, None)
    if not isinstance(model_class, type):
        raise ModelLoadError(LoadFailure.INVALID_ARTIFACT, f"{entry} defines no class {class_name}")
    instance = model_class()
    load = getattr(instance, "load", None)
    if callable(load):
        load()
    return CustomPredictor(instance)


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    name = type(error).__name__
    text = f"{name}: {text}" if text else name
    return text if len(text) <= 300 else text[:297] + "..."
