"""The contract between the operator and the model runtime, pinned in one table.

The two packages are independent (an import contract keeps them so): the operator writes a pod's environment and
queries the runtime's metrics by name, the runtime reads that environment and exports those metrics. Each row
names one thing both sides must spell the same, with the operator's spelling and the runtime's; a rename on one
side fails here, before any end-to-end test runs the real server.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from modeldeploy.analysis import measure
from modeldeploy.api import models as api
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy_runtime import config as runtime_config
from modeldeploy_runtime import metrics as runtime_metrics
from modeldeploy_runtime.drain import ShutdownSettings

from .conftest import build_resource


def _env_names(spec: dict[str, Any]) -> set[str]:
    resource = build_resource(spec)
    config = OperatorConfig()
    deployment = builders.build_deployment(resource, builders.revision_of(resource, config), 1, config)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"] for variable in container["env"]}


# (what, the operator's spelling, the runtime's spelling)
CONTRACT: list[tuple[str, str, str]] = [
    ("model name variable", "MODEL_NAME", runtime_config.ENV_MODEL_NAME),
    ("model version variable", "MODEL_VERSION", runtime_config.ENV_MODEL_VERSION),
    ("artifact URI variable", "MODEL_URI", runtime_config.ENV_MODEL_URI),
    ("model format variable", "MODEL_FORMAT", runtime_config.ENV_MODEL_FORMAT),
    ("artifact checksum variable", "MODEL_SHA256", runtime_config.ENV_MODEL_SHA256),
    ("download size limit variable", builders.ENV_MAX_BYTES, runtime_config.ENV_MODEL_MAX_BYTES),
    ("drain variable", builders.ENV_DRAIN_SECONDS, runtime_config.ENV_DRAIN_SECONDS),
    ("shutdown timeout variable", builders.ENV_SHUTDOWN_TIMEOUT, runtime_config.ENV_SHUTDOWN_TIMEOUT),
    ("HTTP header variables' prefix", builders.HTTP_HEADER_ENV_PREFIX, runtime_config.HTTP_HEADER_ENV_PREFIX),
    ("volume claims' mount root", builders.PVC_MOUNT_ROOT, str(runtime_config.DEFAULT_PVC_ROOT)),
    ("request counter", measure.REQUESTS, runtime_metrics.REQUESTS_TOTAL),
    ("latency histogram buckets", measure.DURATION_BUCKETS, f"{runtime_metrics.REQUEST_DURATION_SECONDS}_bucket"),
    ("prediction histogram buckets", measure.PREDICTION_BUCKETS, f"{runtime_metrics.PREDICTION_VALUE}_bucket"),
    ("model label", "model", runtime_metrics.LABEL_MODEL),
    ("version label", "version", runtime_metrics.LABEL_VERSION),
    ("outcome label", "outcome", runtime_metrics.LABEL_OUTCOME),
    ("successful outcome", "success", runtime_metrics.OUTCOME_SUCCESS),
    ("prediction output label", "output", runtime_metrics.LABEL_OUTPUT),
]


@pytest.mark.parametrize(("what", "operator_side", "runtime_side"), CONTRACT, ids=[row[0] for row in CONTRACT])
def test_both_sides_spell_it_the_same(what: str, operator_side: str, runtime_side: str) -> None:
    assert operator_side == runtime_side, f"{what}: the operator says {operator_side!r}, the runtime {runtime_side!r}"


def test_the_operator_sets_every_variable_of_the_table() -> None:
    variables = {row[1] for row in CONTRACT if row[0].endswith("variable")}
    assert variables <= _env_names({"model": {"sha256": "a" * 64}})


@pytest.mark.parametrize(
    "config",
    [
        OperatorConfig(),
        OperatorConfig(prestop_delay_seconds=0, drain_seconds=0, termination_grace_period_seconds=3),
        OperatorConfig(prestop_delay_seconds=1, drain_seconds=10, termination_grace_period_seconds=14),
        OperatorConfig(prestop_delay_seconds=30, drain_seconds=30, termination_grace_period_seconds=3600),
    ],
    ids=["defaults", "tightest", "drain-at-its-limit", "longest"],
)
def test_the_runtime_honours_the_shutdown_the_operator_plans(config: OperatorConfig) -> None:
    """The runtime reads what the operator writes as meant: the whole drain, and an exit before the grace period
    (less the preStop delay) is over, so that the kubelet's SIGKILL never comes first."""
    resource = build_resource({})
    template = builders.build_pod_template(resource, config)
    env = {var["name"]: var["value"] for var in template["spec"]["containers"][0]["env"] if "value" in var}
    settings = ShutdownSettings.from_env(env)
    assert settings.drain_seconds == config.drain_seconds
    grace = template["spec"]["terminationGracePeriodSeconds"]
    prestop = (
        template["spec"]["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    )
    assert prestop + settings.timeout_seconds < grace


def test_a_claim_is_mounted_under_the_root_the_runtime_resolves() -> None:
    resource = build_resource({"model": {"uri": "pvc://store/fraud/model.joblib"}})
    config = OperatorConfig()
    deployment = builders.build_deployment(resource, builders.revision_of(resource, config), 1, config)
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    claim_mounts = [PurePosixPath(mount["mountPath"]) for mount in mounts if mount["name"] == "model-store"]
    assert claim_mounts == [runtime_config.DEFAULT_PVC_ROOT / "store"]


def test_the_formats_are_the_same_set() -> None:
    assert {fmt.value for fmt in api.ModelFormat} == {fmt.value for fmt in runtime_config.ModelFormat}


def test_the_queries_use_the_labels_of_the_table() -> None:
    target = measure.Target(
        namespace="models",
        name="fraud-detector",
        model="fraud",
        canary_version="2",
        canary_revision="b",
        stable_version="1",
        stable_revision="a",
    )
    series = measure.selector(target, "2")
    queries = [
        measure.success_rate_query(series, "1m"),
        measure.latency_p99_query(series, "1m"),
        measure.prediction_buckets_query(series, "1m"),
    ]
    assert f'{runtime_metrics.LABEL_MODEL}="fraud"' in series
    assert f'{runtime_metrics.LABEL_VERSION}="2"' in series
    assert f'{runtime_metrics.LABEL_OUTCOME}="{runtime_metrics.OUTCOME_SUCCESS}"' in queries[0]
    assert f"by ({runtime_metrics.LABEL_OUTPUT}, le)" in queries[2]
