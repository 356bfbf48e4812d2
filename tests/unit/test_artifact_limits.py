"""The model artifact's bounds and honesty on the operator's side: the cache volume's sizeLimit and the runtime's
download limit, header credentials by reference, and status.artifact with its UnverifiedArtifact Event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import models as api
from modeldeploy.children import builders, verification
from modeldeploy.cli.commands import render_status
from modeldeploy.config import OperatorConfig

from .conftest import ResourceFactory
from .test_reconcile import SPEC, Harness

SHA = "b" * 64


def container(resource: api.ModelDeployment, config: OperatorConfig) -> dict[str, Any]:
    [only] = builders.build_pod_template(resource, config)["spec"]["containers"]
    return dict(only)


def env_value(resource: api.ModelDeployment, config: OperatorConfig, name: str) -> list[str]:
    return [var.get("value", "") for var in container(resource, config)["env"] if var["name"] == name]


def tmp_volume(resource: api.ModelDeployment, config: OperatorConfig) -> dict[str, Any]:
    volumes = builders.build_pod_template(resource, config)["spec"]["volumes"]
    [tmp] = [volume for volume in volumes if volume["name"] == "tmp"]
    return dict(tmp)


def test_the_cache_volume_has_the_default_size_limit_and_the_runtime_its_byte_limit(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    resource = make_resource()
    assert tmp_volume(resource, config) == {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}
    # 4 GiB less 64 MiB for the runtime's metrics files beside the artifact.
    assert env_value(resource, config, "MODEL_MAX_BYTES") == [str(4 * 1024**3 - 64 * 1024**2)]


@pytest.mark.parametrize(
    ("limit", "canonical", "max_bytes"),
    [
        ("16Gi", "16Gi", 16 * 1024**3 - 64 * 1024**2),
        ("4096Mi", "4Gi", 4 * 1024**3 - 64 * 1024**2),
        ("1536Mi", "1536Mi", 1536 * 1024**2 - 64 * 1024**2),
        ("5000M", "5G", 5 * 10**9 - 64 * 1024**2),
        ("100Mi", "100Mi", 50 * 1024**2),  # small volumes keep half for the runtime's files
        ("1000", "1k", 500),
    ],
)
def test_a_size_limit_is_written_as_the_api_server_stores_it(
    make_resource: ResourceFactory, config: OperatorConfig, limit: str, canonical: str, max_bytes: int
) -> None:
    resource = make_resource({"runtime": {"cacheSizeLimit": limit}})
    assert tmp_volume(resource, config)["emptyDir"] == {"sizeLimit": canonical}
    assert env_value(resource, config, "MODEL_MAX_BYTES") == [str(max_bytes)]


@pytest.mark.parametrize("limit", ["0", "4 Gi", "1.5Gi", "-1Gi", "4GB", "4K", "12345678901234567Gi"])
def test_a_size_limit_that_is_not_a_whole_quantity_is_refused(make_resource: ResourceFactory, limit: str) -> None:
    with pytest.raises(ValueError, match="cacheSizeLimit"):
        make_resource({"runtime": {"cacheSizeLimit": limit}})


def test_an_explicit_max_bytes_wins(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"runtime": {"env": [{"name": "MODEL_MAX_BYTES", "value": "1000"}]}})
    assert env_value(resource, config, "MODEL_MAX_BYTES") == ["1000"]


def test_the_cache_size_makes_a_new_revision(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    default = builders.revision_of(make_resource(), config)
    assert builders.revision_of(make_resource({"runtime": {"cacheSizeLimit": "8Gi"}}), config) != default


def test_literal_header_variables_are_refused_at_admission() -> None:
    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "modeldeployment.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    env_item = spec["properties"]["runtime"]["properties"]["env"]["items"]
    rules = [rule["rule"] for rule in env_item["x-kubernetes-validations"]]
    assert "!self.name.startsWith('MODEL_HTTP_HEADER_') || !has(self.value) || self.value == ''" in rules


def test_header_credentials_come_from_the_secret_by_reference(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    resource = make_resource(
        {"model": {"uri": "https://models.example/m.joblib", "httpHeadersSecret": "model-store-headers"}}
    )
    built = container(resource, config)
    assert built["envFrom"] == [{"prefix": "MODEL_HTTP_HEADER_", "secretRef": {"name": "model-store-headers"}}]
    assert not any(var["name"].startswith("MODEL_HTTP_HEADER_") for var in built["env"])
    assert "envFrom" not in container(make_resource(), config)


@pytest.mark.parametrize(
    "uri",
    [
        "https://user:pass@models.example/m.joblib",
        "http://token@models.example/m.joblib",
        "s3://key:secret@bucket/m.joblib",
    ],
)
def test_a_uri_with_user_info_is_refused_naming_the_field(make_resource: ResourceFactory, uri: str) -> None:
    with pytest.raises(ValueError, match=r"spec\.model\.uri must not hold user info") as refused:
        make_resource({"model": {"uri": uri}})
    assert "spec.model.httpHeadersSecret" in str(refused.value)


@pytest.mark.parametrize(
    "uri", ["https://models.example/m.joblib?user=a@b", "https://models.example/a@b/m.joblib", "gs://b/k@1"]
)
def test_an_at_sign_after_the_host_is_no_user_info(make_resource: ResourceFactory, uri: str) -> None:
    assert make_resource({"model": {"uri": uri}}).spec.model.uri == uri


@pytest.mark.parametrize(
    ("fmt", "sha256", "verified", "reason"),
    [
        ("sklearn", "", False, "UnverifiedArtifact"),
        ("custom", "", False, "UnverifiedArtifact"),
        ("onnx", "", False, "Unverified"),
        ("xgboost", "", False, "Unverified"),
        ("sklearn", SHA, True, "Verified"),
        ("custom", SHA, True, "Verified"),
    ],
)
def test_artifact_status(make_resource: ResourceFactory, fmt: str, sha256: str, verified: bool, reason: str) -> None:
    resource = make_resource({"model": {"format": fmt, "sha256": sha256}})
    artifact = verification.artifact_status(resource, "rabc")
    assert (artifact.revision, artifact.version, artifact.verified, artifact.reason) == (
        "rabc",
        resource.spec.model.version,
        verified,
        reason,
    )
    if reason == "UnverifiedArtifact":
        assert "spec.model.sha256" in artifact.message


def test_the_warning_is_said_once_per_revision(make_resource: ResourceFactory) -> None:
    unverified = verification.artifact_status(make_resource(), "r1")
    assert verification.unverified_warning(None, unverified) == unverified.message
    assert verification.unverified_warning(unverified, unverified) is None
    next_revision = unverified.model_copy(update={"revision": "r2"})
    assert verification.unverified_warning(unverified, next_revision) == unverified.message
    pinned = verification.artifact_status(make_resource({"model": {"sha256": SHA}}), "r3")
    assert verification.unverified_warning(unverified, pinned) is None


def test_an_unverified_pickle_is_in_status_and_a_warning_event(config: OperatorConfig) -> None:
    harness = Harness(config)
    harness.settle()
    artifact = harness.status["artifact"]
    assert artifact["verified"] is False
    assert artifact["reason"] == "UnverifiedArtifact"
    warnings = [e for e in harness.cluster.events if e.reason == "UnverifiedArtifact"]
    assert [e.type for e in warnings] == ["Warning"]
    # Quiet passes say nothing more.
    harness.run()
    assert len([e for e in harness.cluster.events if e.reason == "UnverifiedArtifact"]) == 1


def test_a_pinned_artifact_is_verified_without_an_event(config: OperatorConfig) -> None:
    spec = {**SPEC, "model": {**SPEC["model"], "sha256": SHA}}
    harness = Harness(config, spec=spec)
    harness.settle()
    assert harness.status["artifact"]["verified"] is True
    assert harness.status["artifact"]["reason"] == "Verified"
    assert not [e for e in harness.cluster.events if e.reason == "UnverifiedArtifact"]


def test_kubectl_mdep_status_says_when_the_artifact_is_not_pinned(config: OperatorConfig) -> None:
    harness = Harness(config)
    harness.settle()
    text = render_status(harness.cluster.resource(harness.key))
    assert "Artifact:    UnverifiedArtifact: 1.0.0: format sklearn runs code from the artifact" in text

    pinned = Harness(config, spec={**SPEC, "model": {**SPEC["model"], "sha256": SHA}})
    pinned.settle()
    assert "Artifact:" not in render_status(pinned.cluster.resource(pinned.key))
