"""Shared fixtures of the unit tests: ModelDeployments built from minimal dicts, and an operator configuration."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.config import OperatorConfig

from .tls import Pki, make_pki

NAME = "fraud-detector"
NAMESPACE = "models"
UID = "6f1c2b9e-0d7a-4c1e-9a57-3f2d8e4b1a90"

MINIMAL_SPEC: dict[str, Any] = {
    "model": {"version": "1.4.0", "uri": "s3://models/fraud-detector/1.4.0/model.joblib"},
}

# One distinct image per format, so a test can tell which one the builder picked.
FORMAT_IMAGES: dict[str, str] = {fmt.value: f"registry.example/runtime-{fmt.value}:1.0" for fmt in api.ModelFormat}

ResourceFactory = Callable[..., api.ModelDeployment]


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, recursively for nested dicts; lists and scalars are replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_resource(
    spec: Mapping[str, Any] | None = None,
    *,
    name: str = NAME,
    namespace: str = NAMESPACE,
    uid: str = UID,
    generation: int = 1,
    status: api.ModelDeploymentStatus | Mapping[str, Any] | None = None,
) -> api.ModelDeployment:
    """A ModelDeployment from the minimal spec with `spec` merged in, parsed the way the operator parses it."""
    body: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": merge(MINIMAL_SPEC, spec or {}),
    }
    if isinstance(status, api.ModelDeploymentStatus):
        body["status"] = status.model_dump(mode="json")
    elif status is not None:
        body["status"] = dict(status)
    return api.ModelDeployment.model_validate(body)


@pytest.fixture
def make_resource() -> ResourceFactory:
    return build_resource


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig(runtime_images=FORMAT_IMAGES)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made once per session."""
    return make_pki(tmp_path_factory.mktemp("pki"))
