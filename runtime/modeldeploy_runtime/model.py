"""The class seldon-core-microservice serves: `modeldeploy_runtime.model.ModelServer`.

seldon constructs it in its main process, forks its helper processes and the gunicorn worker, and calls load()
in the worker. Everything heavy (the loader thread, the metrics, the model) therefore starts in load(), never
in the constructor, and only the serving process pays for it.

The seldon hooks used here, from seldon_core 1.19 (user_model.py, seldon_methods.py, wrapper.py):
- predict(X, names, meta): X is the decoded payload; the returned ndarray is encoded like the request (ndarray
  or tensor);
- tags(): goes into every response's meta.tags;
- health_status(): answers GET /health/status; an exception here becomes that endpoint's error response;
- init_metadata(): answers GET /metadata;
- model_error_handler: a Flask blueprint seldon registers on its REST app, used here to answer "not ready"
  with 503 (its generic handler would say 500 and log an error on every readiness probe).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Blueprint, Response, jsonify
from seldon_core.flask_utils import SeldonMicroserviceException

from modeldeploy_runtime.config import ConfigError, ModelFormat, ModelIdentity, RuntimeConfig
from modeldeploy_runtime.drain import DRAIN
from modeldeploy_runtime.errors import InvalidInputError, InvalidOutputError, RequestError
from modeldeploy_runtime.loading import ModelLoader, State, Status
from modeldeploy_runtime.metrics import PREDICTION_MAX_COLUMNS, PREDICTION_MAX_ROWS, RuntimeMetrics
from modeldeploy_runtime.payload import numeric_summary, to_response

logger = logging.getLogger(__name__)

NOT_READY_STATUS_CODE = 503
# Reasons in seldon's error body (status.reason), in the style of its own MICROSERVICE_* reasons.
SELDON_REASON_NOT_READY = "MODEL_NOT_READY"
SELDON_REASON_INVALID_INPUT = "MODEL_INVALID_INPUT"
SELDON_REASON_PREDICTION_FAILED = "MODEL_PREDICTION_FAILED"
SELDON_REASON_INVALID_OUTPUT = "MODEL_INVALID_OUTPUT"
# Readiness while the server shuts down (drain.py): not ready, whatever the model's state, so that whatever still
# probes the pod stops sending to it; predictions are still answered meanwhile.
STATE_DRAINING = "draining"
REASON_DRAINING = "draining"
DRAINING_MESSAGE = "the server is shutting down: it answers what still arrives but takes no new traffic"


class ModelNotReady(SeldonMicroserviceException):  # type: ignore[misc]  # seldon_core ships no type hints
    def __init__(self, body: dict[str, Any]) -> None:
        message = body.get("message") or f"model is {body['state']}"
        super().__init__(message, status_code=NOT_READY_STATUS_CODE, reason=SELDON_REASON_NOT_READY)
        self.body = body


errors_blueprint = Blueprint("modeldeploy_runtime", __name__)


@errors_blueprint.app_errorhandler(ModelNotReady)
def _answer_not_ready(error: ModelNotReady) -> Response:
    body = {
        # seldon's error shape first, so seldon clients read it like any other error of the protocol.
        "status": {"status": 1, "code": NOT_READY_STATUS_CODE, "reason": error.reason, "info": error.message},
        **error.body,
    }
    response = jsonify(body)
    response.status_code = NOT_READY_STATUS_CODE
    return response


class ModelServer:
    model_error_handler = errors_blueprint

    def __init__(self, metrics: RuntimeMetrics | None = None, **parameters: Any) -> None:
        # seldon passes PREDICTIVE_UNIT_PARAMETERS as keyword arguments; the environment is the contract here.
        if parameters:
            logger.warning(f"Ignoring seldon parameters {sorted(parameters)}: the runtime reads MODEL_* variables")
        self._identity = ModelIdentity.from_env(os.environ)
        self._config: RuntimeConfig | None = None
        config_error = ""
        try:
            self._config = RuntimeConfig.from_env(os.environ)
        except ConfigError as error:
            config_error = str(error)
        self._given_metrics = metrics
        self._config_error = config_error
        self._metrics: RuntimeMetrics | None = None
        self._loader: ModelLoader | None = None

    # ---- seldon hooks

    def load(self) -> None:
        if self._loader is None:
            self._metrics = self._given_metrics or RuntimeMetrics(self._identity)
            self._loader = ModelLoader(self._identity, self._config, self._config_error, self._metrics)
        self._loader.start()

    def predict(self, X: Any, names: Any = None, meta: Any = None) -> Any:  # noqa: N803 - seldon's keyword
        started = time.perf_counter()
        loaded = self._loader.model if self._loader is not None else None
        metrics = self._metrics
        if loaded is None or metrics is None:
            if metrics is not None:
                metrics.record_error(RequestError.NOT_READY)
            raise ModelNotReady(self.status_body())
        try:
            output = loaded.predictor.predict(X)
        except InvalidInputError as error:
            metrics.record_error(RequestError.INVALID_INPUT)
            raise SeldonMicroserviceException(
                str(error), status_code=400, reason=SELDON_REASON_INVALID_INPUT
            ) from error
        except Exception as error:
            metrics.record_error(RequestError.PREDICTION_FAILED)
            raise SeldonMicroserviceException(
                f"prediction failed: {type(error).__name__}: {error}",
                status_code=500,
                reason=SELDON_REASON_PREDICTION_FAILED,
            ) from error
        if self._is_custom and isinstance(output, dict | str | bytes):
            # A custom model may answer jsonData, strData or binData; seldon encodes those itself.
            metrics.record_success(time.perf_counter() - started, None)
            return output
        try:
            response = to_response(output)
        except InvalidOutputError as error:
            metrics.record_error(RequestError.INVALID_OUTPUT)
            raise SeldonMicroserviceException(
                str(error), status_code=500, reason=SELDON_REASON_INVALID_OUTPUT
            ) from error
        summary = numeric_summary(response, PREDICTION_MAX_ROWS, PREDICTION_MAX_COLUMNS)
        metrics.record_success(time.perf_counter() - started, summary)
        return response

    def tags(self) -> dict[str, str]:
        return {"model": self._identity.name, "version": self._identity.version}

    def health_status(self) -> dict[str, Any]:
        body = self.status_body()
        if DRAIN.draining:
            body.pop("retryInSeconds", None)
            body.update(ready=False, state=STATE_DRAINING, reason=REASON_DRAINING, message=DRAINING_MESSAGE)
        if not body["ready"]:
            raise ModelNotReady(body)
        return body

    def init_metadata(self) -> dict[str, Any]:
        platform = f"modeldeploy-{self._config.format.value}" if self._config is not None else "modeldeploy"
        return {"name": self._identity.name, "versions": [self._identity.version], "platform": platform}

    # ---- ours

    @property
    def _is_custom(self) -> bool:
        return self._config is not None and self._config.format is ModelFormat.CUSTOM

    def status(self) -> Status:
        return self._loader.status() if self._loader is not None else Status(State.LOADING)

    def wait_until_settled(self, timeout: float) -> Status:
        return self._loader.wait(timeout) if self._loader is not None else self.status()

    def status_body(self) -> dict[str, Any]:
        """The health response's content: the same fields ready or not, so people and tools read one shape."""
        status = self.status()
        body: dict[str, Any] = {
            "model": self._identity.name,
            "version": self._identity.version,
            "format": self._config.format.value if self._config is not None else "",
            "ready": status.state is State.READY,
            "state": status.state.value,
            "attempts": status.attempts,
        }
        if status.state is State.READY:
            body["sha256"] = status.sha256
        if status.failure is not None and status.state is not State.READY:
            body["reason"] = status.failure.value
            body["message"] = status.message
        if status.retry_in_seconds is not None:
            body["retryInSeconds"] = status.retry_in_seconds
        return body
