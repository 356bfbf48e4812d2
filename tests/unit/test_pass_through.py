"""What the spec passes on to the pods: the admission rules' twins in the models refuse what Kubernetes would
refuse in the Deployment, naming the field, so a stored object that predates the rules is Degraded InvalidSpec
rather than failing on every apply."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.api import models as api
from modeldeploy.config import OperatorConfig
from tests import largest_spec

from .test_reconcile import SPEC, STATUS_WRITE, Harness

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
SECRET = {"name": "store", "key": "token"}


def node_requirement(requirement: dict[str, Any]) -> dict[str, Any]:
    return {"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [requirement]}]}}}}


def pod_term(term: dict[str, Any]) -> dict[str, Any]:
    return {"affinity": {"podAffinity": {REQUIRED: [{"topologyKey": "kubernetes.io/hostname", **term}]}}}


NODE_REQUIREMENT = f"runtime.affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms.0.matchExpressions.0"
POD_TERM = f"runtime.affinity.podAffinity.{REQUIRED}.0"

REFUSED = [
    pytest.param(
        {"env": [{"name": "A", "valueFrom": {"secretKeyRef": SECRET, "configMapKeyRef": SECRET}}]},
        "runtime.env.0.valueFrom",
        "exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
        id="value-from-two-sources",
    ),
    pytest.param(
        {"env": [{"name": "A", "valueFrom": {}}]},
        "runtime.env.0.valueFrom",
        "exactly one of",
        id="value-from-no-source",
    ),
    pytest.param(
        {"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": SECRET}}]},
        "runtime.env.0",
        "sets value or valueFrom, not both",
        id="value-and-value-from",
    ),
    pytest.param(
        {"resources": {"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}},
        "runtime.resources",
        "each request must be at most the limit",
        id="request-over-limit",
    ),
    pytest.param(
        {"resources": {"requests": {"cpu": "lots"}}},
        "runtime.resources.requests.cpu",
        "is not a quantity",
        id="quantity",
    ),
    pytest.param(
        {"resources": {"limits": {"cpu": -1}}},
        "runtime.resources.limits.cpu",
        "negative",
        id="quantity-negative",
    ),
    pytest.param(
        {"tolerations": [{"operator": "Equal", "value": "x"}]},
        "runtime.tolerations.0",
        "a toleration without a key must have operator Exists",
        id="toleration-without-key",
    ),
    pytest.param(
        {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]},
        "runtime.tolerations.0",
        "operator Exists must not set a value",
        id="toleration-exists-with-value",
    ),
    pytest.param(
        {"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]},
        "runtime.tolerations.0",
        "tolerationSeconds applies only to effect NoExecute",
        id="toleration-seconds",
    ),
    pytest.param(
        {"tolerations": [{"key": "gpu", "operator": "Maybe"}]},
        "runtime.tolerations.0.operator",
        "Input should be",
        id="toleration-operator",
    ),
    pytest.param(
        node_requirement({"key": "zone", "operator": "In"}),
        NODE_REQUIREMENT,
        "values must be set when operator is In or NotIn",
        id="node-in-without-values",
    ),
    pytest.param(
        node_requirement({"key": "zone", "operator": "DoesNotExist", "values": ["a"]}),
        NODE_REQUIREMENT,
        "values must be empty",
        id="node-does-not-exist-with-values",
    ),
    pytest.param(
        node_requirement({"key": "cores", "operator": "Lt", "values": ["1", "2"]}),
        NODE_REQUIREMENT,
        "exactly one value, an integer",
        id="node-lt-two-values",
    ),
    pytest.param(
        pod_term({"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}}),
        f"{POD_TERM}.labelSelector.matchExpressions.0",
        "values must be empty",
        id="label-exists-with-values",
    ),
    pytest.param(
        pod_term({"mismatchLabelKeys": ["app"]}),
        POD_TERM,
        "need a labelSelector",
        id="label-keys-without-selector",
    ),
    pytest.param(
        {
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 101, "podAffinityTerm": {"topologyKey": "zone"}}
                    ]
                }
            }
        },
        "runtime.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution.0.weight",
        "less than or equal to 100",
        id="weight",
    ),
]


@pytest.mark.parametrize(("runtime", "location", "message"), REFUSED)
def test_the_models_refuse_what_admission_refuses(runtime: dict[str, Any], location: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        api.ModelDeploymentSpec.model_validate({**SPEC, "runtime": runtime})
    [error] = raised.value.errors()
    assert ".".join(map(str, error["loc"])) == location
    assert message in error["msg"]


def test_the_models_accept_the_largest_spec_and_keep_it_as_written() -> None:
    spec = largest_spec.largest_manifest()["spec"]
    runtime = api.ModelDeploymentSpec.model_validate(spec).runtime
    assert runtime.affinity is not None
    assert runtime.affinity.model_dump(exclude_none=True) == spec["runtime"]["affinity"]
    assert [t.model_dump(exclude_none=True) for t in runtime.tolerations or ()] == spec["runtime"]["tolerations"]
    assert [var.model_dump(exclude_none=True) for var in runtime.env] == spec["runtime"]["env"]


def test_a_stored_spec_with_two_value_sources_is_degraded_and_names_the_field(config: OperatorConfig) -> None:
    runtime = {
        "env": [{"name": "A", "valueFrom": {"secretKeyRef": SECRET, "fieldRef": {"fieldPath": "spec.nodeName"}}}]
    }
    harness = Harness(config, {**SPEC, "runtime": runtime})
    assert harness.run() == Counter({STATUS_WRITE: 1, "create Event": 1})
    degraded = next(c for c in harness.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert degraded["message"].startswith("spec.runtime.env.0.valueFrom: ")
    assert not harness.cluster.of_kind("Deployment")
