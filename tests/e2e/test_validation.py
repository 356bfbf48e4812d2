"""Admission of ModelDeployments by a real API server: the generated CRD's schema, defaults and CEL rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import models as api
from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.operator_process import OperatorProcess
from modeldeploy_testkit.waiting import wait_until
from tests import largest_spec

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("crd")]

FULL = Path(__file__).parent / "testdata" / "full.yaml"
DELETE = object()  # as a value in `edited`: remove the field

MINIMAL: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "minimal"},
    "spec": {"model": {"version": "1.0.0", "uri": "s3://models/minimal/1.0.0/model.joblib"}},
}


def edited(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `base` with fields set (or removed with DELETE); keys are dotted paths with '__' for '.'."""
    manifest = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = manifest
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return manifest


def with_metrics(*metrics: dict[str, Any], **analysis: Any) -> dict[str, Any]:
    """MINIMAL with spec.rollout.analysis holding `metrics` (and other analysis fields)."""
    return edited(MINIMAL, spec__rollout__analysis={"metrics": list(metrics), **analysis})


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any] | str) -> Any:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    return cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=text, check=False)


def read(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "modeldeployment", name, "-n", namespace, "-o", "json")
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def assert_refused(result: Any, *expected: str) -> None:
    assert result.returncode != 0, f"the API server accepted the manifest:\n{result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{text!r} is not in the API server's answer:\n{result.stderr}"


TOO_LONG_NAME = "m" * (api.MAX_NAME_LENGTH + 1)
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
NODE_TERM = f"spec.runtime.affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0]"
HOST = {"topologyKey": "kubernetes.io/hostname"}
SECRET = {"name": "store", "key": "token"}


def node_terms(*requirements: dict[str, Any]) -> dict[str, Any]:
    """An affinity whose one required node selector term holds `requirements`."""
    return {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": list(requirements)}]}}}


GATEWAY_ROUTING = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}

INVALID = [
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"setMirror": {}}, {"setWeight": 50}]}),
        ["spec", "setMirror needs spec.trafficRouting"],
        id="mirror-without-router",
    ),
    pytest.param(
        edited(
            MINIMAL, spec__rollout={"steps": [{"setMirror": {}, "setWeight": 5}]}, spec__trafficRouting=GATEWAY_ROUTING
        ),
        ["spec.rollout.steps[0]", "exactly one of setWeight, setMirror or pause"],
        id="mirror-and-weight-in-one-step",
    ),
    pytest.param(
        edited(MINIMAL, spec__trafficRouting={**GATEWAY_ROUTING, "istio": {}}),
        ["spec.trafficRouting", "exactly one of gatewayAPI or istio"],
        id="two-routers",
    ),
    pytest.param(
        edited(MINIMAL, spec__trafficRouting={"gatewayAPI": {"parentRefs": []}}),
        ["spec.trafficRouting.gatewayAPI.parentRefs", "should have at least 1 items"],
        id="route-without-parent",
    ),
    pytest.param(
        edited(MINIMAL, spec__trafficRouting={"gatewayAPI": {"parentRefs": [{"name": "Public Gateway"}]}}),
        ["spec.trafficRouting.gatewayAPI.parentRefs[0].name", "should match"],
        id="route-parent-name",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__trafficRouting={
                **GATEWAY_ROUTING,
                "gatewayAPI": {**GATEWAY_ROUTING["gatewayAPI"], "hostnames": ["a..b"]},
            },
        ),
        ["spec.trafficRouting.gatewayAPI.hostnames[0]", "should match"],
        id="route-hostname",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__trafficRouting={"gatewayAPI": {"parentRefs": [{"name": "g"}], "path": {"value": "no-slash"}}},
        ),
        ["spec.trafficRouting.gatewayAPI.path.value", "should match"],
        id="route-path",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"setWeight": 101}]}),
        ["spec.rollout.steps[0].setWeight", "less than or equal to 100"],
        id="weight-over-100",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"setWeight": -1}]}),
        ["spec.rollout.steps[0].setWeight", "greater than or equal to 0"],
        id="weight-negative",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"setWeight": 20, "pause": {}}]}),
        ["spec.rollout.steps[0]", "exactly one of setWeight, setMirror or pause"],
        id="step-with-two-actions",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{}]}),
        ["spec.rollout.steps[0]", "exactly one of setWeight, setMirror or pause"],
        id="step-with-no-action",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"pause": {"duration": "10x"}}]}),
        ["spec.rollout.steps[0].pause.duration", "should match"],
        id="duration-format",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"setWeight": 5}] * 21}),
        ["spec.rollout.steps", "must have at most 20 items"],
        id="more-than-20-steps",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"strategy": "BlueGreen"}),
        ["spec.rollout.strategy", "Unsupported value"],
        id="unknown-strategy",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"rollbackWindow": 11}),
        ["spec.rollout.rollbackWindow", "less than or equal to 10"],
        id="rollback-window-too-large",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__version=DELETE),
        ["spec.model.version", "Required value"],
        id="missing-version",
    ),
    pytest.param(edited(MINIMAL, spec__model__uri=DELETE), ["spec.model.uri", "Required value"], id="missing-uri"),
    pytest.param(edited(MINIMAL, spec__model=DELETE), ["spec.model", "Required value"], id="missing-model"),
    pytest.param(
        edited(MINIMAL, spec__model__uri="ftp://models.example.com/model.joblib"),
        ["spec.model.uri", "spec.model.uri must start with one of file://"],
        id="uri-scheme-ftp",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__uri="/models/model.joblib"),
        ["spec.model.uri", "must start with one of"],
        id="uri-without-scheme",
    ),
    pytest.param(
        edited(MINIMAL, spec__replicas=-1),
        ["spec.replicas", "greater than or equal to 0"],
        id="replicas-negative",
    ),
    pytest.param(
        edited(MINIMAL, spec__replicas=1001),
        ["spec.replicas", "less than or equal to 1000"],
        id="replicas-over-1000",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__port=80),
        ["spec.runtime.port", "greater than or equal to 1024"],
        id="port-privileged",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__port=65536),
        ["spec.runtime.port", "less than or equal to 65535"],
        id="port-over-65535",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__metricsPort=0),
        ["spec.runtime.metricsPort", "greater than or equal to 1024"],
        id="metrics-port-zero",
    ),
    pytest.param(
        edited(MINIMAL, spec__service__port=0),
        ["spec.service.port", "greater than or equal to 1"],
        id="service-port-zero",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__port=7000, spec__runtime__metricsPort=7000),
        ["spec.runtime", "spec.runtime.port and spec.runtime.metricsPort must differ"],
        id="port-equals-metrics-port",
    ),
    pytest.param(
        # metricsPort is not in the manifest: the rule sees its default, 6000.
        edited(MINIMAL, spec__runtime__port=6000),
        ["spec.runtime", "spec.runtime.port and spec.runtime.metricsPort must differ"],
        id="port-equals-default-metrics-port",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__version="1.4.0+build/7"),
        ["spec.model.version", "should match"],
        id="version-not-label-safe",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__version="v" * 64),
        ["spec.model.version", "Too long"],
        id="version-too-long",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__name="Fraud_Detector"),
        ["spec.model.name", "should match"],
        id="model-name-not-dns-label",
    ),
    pytest.param(
        edited(MINIMAL, metadata__name=TOO_LONG_NAME),
        [f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters"],
        id="name-too-long-for-children",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__versoin="1.0.1"),
        # Server-side apply reports unknown fields in its own words (not strict decoding's "unknown field").
        [".spec.model.versoin: field not declared in schema"],
        id="unknown-field",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__protocoll="v2"),
        [".spec.runtime.protocoll: field not declared in schema"],
        id="unknown-field-in-defaulted-object",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__format="pytorch"),
        ["spec.model.format", "Unsupported value"],
        id="format-not-supported",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__protocol="grpc"),
        ["spec.runtime.protocol", "Unsupported value"],
        id="protocol-not-supported",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__runtime__env=[{"name": "LOG_LEVEL", "value": "info"}, {"name": "MODEL_URI", "value": "x"}],
        ),
        ["spec.runtime.env[1].name", "spec.runtime.env must not set MODEL_NAME"],
        id="env-sets-model-uri",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__env=[{"value": "x"}]),
        ["spec.runtime.env[0].name", "Required value"],
        id="env-without-name",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__sha256="z" * 64),
        ["spec.model.sha256", "should match"],
        id="sha256-not-hex",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__sha256="AB" * 32),
        ["spec.model.sha256", "should match"],
        id="sha256-uppercase",
    ),
    pytest.param(
        edited(MINIMAL, spec__model__sha256="ab" * 31),
        ["spec.model.sha256", "should match"],
        id="sha256-too-short",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__args=["--flag"] * 65),
        ["spec.runtime.args", "must have at most 64 items"],
        id="too-many-args",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout__progressDeadlineSeconds=5),
        ["spec.rollout.progressDeadlineSeconds", "greater than or equal to 10"],
        id="progress-deadline-too-short",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"limits": {"memory": ["1Gi"]}}),
        ["spec.runtime.resources.limits.memory"],
        id="resource-quantity-not-int-or-string",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"key": "gpu", "operator": "Maybe"}]),
        ["spec.runtime.tolerations[0].operator", "Unsupported value"],
        id="toleration-operator",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoRun"}]),
        ["spec.runtime.tolerations[0].effect", "Unsupported value"],
        id="toleration-effect",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]),
        ["spec.runtime.tolerations[0]", "tolerationSeconds applies only to effect NoExecute"],
        id="toleration-seconds-without-no-execute",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"operator": "Equal", "value": "x"}]),
        ["spec.runtime.tolerations[0]", "a toleration without a key must have operator Exists"],
        id="toleration-without-key",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"key": "gpu", "operator": "Exists", "value": "x"}]),
        ["spec.runtime.tolerations[0]", "a toleration with operator Exists must not set a value"],
        id="toleration-exists-with-value",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"key": "gpu", "operator": "Exists"}] * 33),
        ["spec.runtime.tolerations", "must have at most 32 items"],
        id="too-many-tolerations",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__tolerations=[{"key": "k" * 318, "operator": "Exists"}]),
        ["spec.runtime.tolerations[0].key", "Too long"],
        id="toleration-key-too-long",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"nodeAffinity": {REQUIRED: [{"matchExpressions": []}]}}),
        [f"spec.runtime.affinity.nodeAffinity.{REQUIRED}"],
        id="affinity-list-for-object",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"nodeAffinity": {"required": {"nodeSelectorTerms": []}}}),
        [".spec.runtime.affinity.nodeAffinity.required: field not declared in schema"],
        id="affinity-unknown-field",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"podAffinity": {REQUIRED: [{"labelSelector": {}}]}}),
        [f"spec.runtime.affinity.podAffinity.{REQUIRED}[0].topologyKey", "Required value"],
        id="affinity-without-topology-key",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}}),
        [f"spec.runtime.affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms", "should have at least 1 items"],
        id="affinity-no-node-selector-terms",
    ),
    pytest.param(
        edited(
            MINIMAL, spec__runtime__affinity={"podAntiAffinity": {PREFERRED: [{"weight": 0, "podAffinityTerm": HOST}]}}
        ),
        [f"spec.runtime.affinity.podAntiAffinity.{PREFERRED}[0].weight", "greater than or equal to 1"],
        id="weight-zero",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"nodeAffinity": {PREFERRED: [{"weight": 101, "preference": {}}]}}),
        [f"spec.runtime.affinity.nodeAffinity.{PREFERRED}[0].weight", "less than or equal to 100"],
        id="weight-over-100-in-affinity",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity=node_terms({"key": "zone", "operator": "Like", "values": ["a"]})),
        [f"{NODE_TERM}.matchExpressions[0].operator", "Unsupported value"],
        id="node-selector-operator",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity=node_terms({"key": "zone", "operator": "In"})),
        [f"{NODE_TERM}.matchExpressions[0]", "values must be set when operator is In or NotIn"],
        id="node-selector-in-without-values",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity=node_terms({"key": "zone", "operator": "Exists", "values": ["a"]})),
        [f"{NODE_TERM}.matchExpressions[0]", "values must be empty when operator is Exists or DoesNotExist"],
        id="node-selector-exists-with-values",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity=node_terms({"key": "cores", "operator": "Gt", "values": ["many"]})),
        [f"{NODE_TERM}.matchExpressions[0]", "operator Gt or Lt takes exactly one value, an integer"],
        id="node-selector-gt-not-integer",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity=node_terms({"key": "bad key", "operator": "Exists"})),
        [f"{NODE_TERM}.matchExpressions[0].key", "should match"],
        id="node-selector-key-not-a-label",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__runtime__affinity={
                "nodeAffinity": {
                    REQUIRED: {
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "spec.unschedulable", "operator": "In", "values": ["x"]}]}
                        ]
                    }
                }
            },
        ),
        [f"{NODE_TERM}.matchFields[0].key", "Unsupported value"],
        id="node-field-not-name",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__runtime__affinity={
                "podAffinity": {
                    REQUIRED: [{**HOST, "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}]
                }
            },
        ),
        [f"spec.runtime.affinity.podAffinity.{REQUIRED}[0].labelSelector.matchExpressions[0]", "values must be set"],
        id="label-selector-in-without-values",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__runtime__affinity={
                "podAffinity": {REQUIRED: [{**HOST, "labelSelector": {"matchLabels": {"app": "a b"}}}]}
            },
        ),
        [f"spec.runtime.affinity.podAffinity.{REQUIRED}[0].labelSelector.matchLabels.app", "should match"],
        id="label-selector-value-not-a-label",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"podAffinity": {REQUIRED: [HOST] * 5}}),
        [f"spec.runtime.affinity.podAffinity.{REQUIRED}", "must have at most 4 items"],
        id="too-many-pod-affinity-terms",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__affinity={"podAffinity": {REQUIRED: [{**HOST, "matchLabelKeys": ["app"]}]}}),
        [
            f"spec.runtime.affinity.podAffinity.{REQUIRED}[0]",
            "matchLabelKeys and mismatchLabelKeys need a labelSelector",
        ],
        id="match-label-keys-without-selector",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__runtime__env=[{"name": "A", "valueFrom": {"secretKeyRef": SECRET, "configMapKeyRef": SECRET}}],
        ),
        ["spec.runtime.env[0].valueFrom", "valueFrom must set exactly one of configMapKeyRef, secretKeyRef"],
        id="value-from-two-sources",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__env=[{"name": "A", "valueFrom": {}}]),
        ["spec.runtime.env[0].valueFrom", "valueFrom must set exactly one of configMapKeyRef, secretKeyRef"],
        id="value-from-no-source",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__env=[{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": SECRET}}]),
        ["spec.runtime.env[0]", "an environment variable sets value or valueFrom, not both"],
        id="value-and-value-from",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "store"}}}]),
        ["spec.runtime.env[0].valueFrom.secretKeyRef.key", "Required value"],
        id="secret-key-ref-without-key",
    ),
    pytest.param(
        edited(
            MINIMAL, spec__runtime__env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]
        ),
        ["spec.runtime.env[0].valueFrom.fieldRef.fieldPath", "should match"],
        id="field-ref-path",
    ),
    pytest.param(
        edited(
            MINIMAL, spec__runtime__env=[{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]
        ),
        ["spec.runtime.env[0].valueFrom.resourceFieldRef.resource", "should match"],
        id="resource-field-ref-resource",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__env=[{"name": "A", "value": "v" * (api.ENV_VALUE_LENGTH + 1)}]),
        ["spec.runtime.env[0].value", "Too long"],
        id="env-value-too-long",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__env=[{"name": f"V{index}"} for index in range(129)]),
        ["spec.runtime.env", "must have at most 128 items"],
        id="too-many-env",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"requests": {"cpu": "lots"}}),
        ["spec.runtime.resources.requests.cpu", "should match"],
        id="quantity-does-not-parse",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"limits": {"memory": "-1Gi"}}),
        ["spec.runtime.resources.limits.memory", "should match"],
        id="quantity-negative",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"limits": {"cpu": -1}}),
        ["spec.runtime.resources.limits.cpu", "greater than or equal to 0"],
        id="quantity-negative-integer",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"limits": {f"example.com/r{index}": 1 for index in range(17)}}),
        ["spec.runtime.resources.limits", "must have at most 16 items"],
        id="too-many-resources",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}),
        ["spec.runtime.resources", "each request must be at most the limit of the same resource"],
        id="request-over-limit",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"requests": {"memory": "1Gi"}, "limits": {"memory": 1073741823}}),
        ["spec.runtime.resources", "each request must be at most the limit of the same resource"],
        id="request-over-limit-in-bytes",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__resources={"claims": [{"name": "gpu"}]}),
        [".spec.runtime.resources.claims: field not declared in schema"],
        id="resource-claims",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__nodeSelector={f"pool-{index}": "a" for index in range(17)}),
        ["spec.runtime.nodeSelector", "must have at most 16 items"],
        id="too-many-node-selector-labels",
    ),
    pytest.param(
        edited(MINIMAL, spec__runtime__nodeSelector={"pool": "p" * 64}),
        ["spec.runtime.nodeSelector.pool", "Too long"],
        id="node-selector-value-too-long",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"steps": [{"pause": {"duration": "1234567s"}}]}),
        ["spec.rollout.steps[0].pause.duration", "Too long"],
        id="duration-too-long",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "successRate", "min": 0.9, "query": "up"}),
        ["spec.rollout.analysis.metrics[0]", "each analysis metric sets exactly one of builtin or query"],
        id="analysis-builtin-and-query",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "latencyP99"}),
        ["spec.rollout.analysis.metrics[0]", "a builtin analysis metric needs min or max"],
        id="analysis-builtin-without-threshold",
    ),
    pytest.param(
        with_metrics({"name": "m", "query": "up"}),
        ["spec.rollout.analysis.metrics[0]", "a query analysis metric needs successCondition or failureCondition"],
        id="analysis-query-without-condition",
    ),
    pytest.param(
        with_metrics({"name": "m", "query": "up", "successCondition": "result > 0", "max": 1}),
        ["spec.rollout.analysis.metrics[0]", "min, max and relativeTo apply to builtin metrics"],
        id="analysis-query-with-bounds",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "successRate", "min": 0.9, "successCondition": "result > 0"}),
        ["spec.rollout.analysis.metrics[0]", "successCondition and failureCondition apply to query metrics"],
        id="analysis-builtin-with-condition",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "predictionShift", "max": 0.1, "relativeTo": "stable"}),
        ["spec.rollout.analysis.metrics[0]", "predictionShift always compares the canary with the stable"],
        id="analysis-prediction-shift-relative",
    ),
    pytest.param(
        with_metrics(
            {"name": "same", "builtin": "successRate", "min": 0.9}, {"name": "same", "builtin": "latencyP99", "max": 1}
        ),
        ["spec.rollout.analysis", "spec.rollout.analysis.metrics names must be unique"],
        id="analysis-duplicate-names",
    ),
    pytest.param(
        with_metrics(),
        ["spec.rollout.analysis.metrics", "should have at least 1 items"],
        id="analysis-no-metrics",
    ),
    pytest.param(
        with_metrics({"name": "Bad_Name", "builtin": "successRate", "min": 0.9}),
        ["spec.rollout.analysis.metrics[0].name", "should match"],
        id="analysis-metric-name",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "accuracy", "min": 0.9}),
        ["spec.rollout.analysis.metrics[0].builtin", "Unsupported value"],
        id="analysis-unknown-builtin",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "successRate", "min": 0.9}, interval="soon"),
        ["spec.rollout.analysis.interval", "should match"],
        id="analysis-interval",
    ),
    pytest.param(
        with_metrics({"name": "m", "builtin": "successRate", "min": 0.9}, prometheus={"address": "prometheus:9090"}),
        ["spec.rollout.analysis.prometheus.address", "should match"],
        id="analysis-address-without-scheme",
    ),
    pytest.param(
        edited(MINIMAL, spec__rollout={"smokeTest": {"cases": [{"name": "a", "input": [[1.0]]}]}}),
        ["spec.rollout.smokeTest", "every case needs expected when compareTo is Expected"],
        id="smoke-without-expected",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__rollout={
                "smokeTest": {
                    "cases": [{"name": f"c{i}", "input": [[1.0]], "expected": [[1.0]]} for i in range(5)],
                    "timeoutSeconds": 30,
                }
            },
        ),
        ["spec.rollout.smokeTest", "cases x timeoutSeconds must be at most 120"],
        id="smoke-round-too-long",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__rollout={"smokeTest": {"cases": [{"name": "a", "input": [[1.0, 2.0], [1.0]], "expected": [[1.0]]}]}},
        ),
        ["spec.rollout.smokeTest.cases[0]", "every row must have the same number of features"],
        id="smoke-ragged-input",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__rollout={
                "smokeTest": {
                    "cases": [
                        {"name": f"c{i}", "input": [[1.0] * 256] * 16, "expected": [[1.0]] * 16} for i in range(2)
                    ]
                }
            },
        ),
        ["spec.rollout.smokeTest", "at most 8192 values (inputs and expected) in all"],
        id="smoke-too-many-values",
    ),
    pytest.param(
        edited(MINIMAL, spec__disruptionBudget={"maxUnavailable": 1, "minAvailable": 2}),
        ["spec.disruptionBudget", "give maxUnavailable or minAvailable, not both"],
        id="budget-both-bounds",
    ),
    pytest.param(
        edited(MINIMAL, spec__disruptionBudget={"maxUnavailable": "150%"}),
        ["spec.disruptionBudget.maxUnavailable"],
        id="budget-percent-over-100",
    ),
    pytest.param(
        edited(
            MINIMAL,
            spec__autoscaling={"minReplicas": 4, "maxReplicas": 2},
            spec__runtime={"resources": {"requests": {"cpu": "1"}}},
        ),
        ["spec.autoscaling", "minReplicas must be at most maxReplicas"],
        id="autoscaling-min-over-max",
    ),
    pytest.param(
        edited(MINIMAL, spec__autoscaling={"maxReplicas": 4}),
        ["spec.autoscaling", "needs spec.runtime.resources.requests.cpu"],
        id="autoscaling-without-cpu-request",
    ),
]


@pytest.mark.parametrize(("manifest", "expected"), INVALID)
def test_invalid_manifest_is_refused(
    cluster: Cluster, namespace: str, manifest: dict[str, Any], expected: list[str]
) -> None:
    assert_refused(apply(cluster, namespace, manifest), *expected)
    listed = cluster.kubectl("get", "modeldeployments", "-n", namespace, "-o", "name")
    assert listed.stdout.strip() == "", "a refused manifest left an object behind"


@pytest.mark.parametrize("verb", ["apply", "create"])
def test_unknown_field_is_refused_without_server_side_apply(cluster: Cluster, namespace: str, verb: str) -> None:
    """Client-side apply and create send the object itself; strict field validation refuses the typo."""
    manifest = yaml.safe_dump(edited(MINIMAL, spec__model__versoin="1.0.1"))
    result = cluster.kubectl(verb, "-n", namespace, "-f", "-", input=manifest, check=False)
    assert_refused(result, 'unknown field "spec.model.versoin"')


def test_model_name_is_immutable(cluster: Cluster, namespace: str) -> None:
    named = edited(MINIMAL, spec__model__name="fraud")
    created = apply(cluster, namespace, named)
    assert created.returncode == 0, created.stderr
    # Re-applying the same name, and changing other fields, is fine.
    unchanged = apply(cluster, namespace, edited(named, spec__model__version="1.0.1"))
    assert unchanged.returncode == 0, unchanged.stderr

    renamed = apply(cluster, namespace, edited(named, spec__model__name="other"))
    assert_refused(renamed, "spec.model", "spec.model.name is immutable")
    dropped = apply(cluster, namespace, edited(named, spec__model__name=DELETE))
    assert_refused(dropped, "spec.model.name is immutable")
    assert read(cluster, namespace, "minimal")["spec"]["model"]["name"] == "fraud"


def test_model_name_cannot_be_added_later(cluster: Cluster, namespace: str) -> None:
    created = apply(cluster, namespace, MINIMAL)
    assert created.returncode == 0, created.stderr
    assert_refused(apply(cluster, namespace, edited(MINIMAL, spec__model__name="fraud")), "is immutable")


def test_full_manifest_is_accepted_unchanged(cluster: Cluster, namespace: str) -> None:
    text = FULL.read_text()
    result = apply(cluster, namespace, text)
    assert result.returncode == 0, result.stderr
    sent = yaml.safe_load(text)
    stored = read(cluster, namespace, sent["metadata"]["name"])
    # Every field is set, so nothing is defaulted and nothing may be pruned.
    assert stored["spec"] == sent["spec"]


def test_minimal_manifest_reads_back_with_defaults(cluster: Cluster, namespace: str) -> None:
    result = apply(cluster, namespace, MINIMAL)
    assert result.returncode == 0, result.stderr
    spec = read(cluster, namespace, "minimal")["spec"]
    assert spec["runtime"]["port"] == 9000
    assert spec["runtime"]["metricsPort"] == 6000
    assert spec["runtime"]["protocol"] == "seldon"
    assert spec["runtime"]["image"] == ""
    assert spec["runtime"]["resources"] == {}
    assert spec["replicas"] == 1
    assert spec["model"]["format"] == "sklearn"
    assert spec["model"]["sha256"] == ""
    assert "name" not in spec["model"]
    assert spec["rollout"] == api.RolloutSpec().model_dump(mode="json", exclude_none=True) | {
        "steps": [step.model_dump(mode="json", exclude_none=True) for step in api.default_steps()]
    }
    assert spec["service"] == {"port": 80}
    # The API server's defaults are the models' defaults.
    assert api.ModelDeploymentSpec.model_validate(spec) == api.ModelDeploymentSpec.model_validate(MINIMAL["spec"])


def test_longest_allowed_name_is_accepted(cluster: Cluster, namespace: str) -> None:
    manifest = edited(MINIMAL, metadata__name="m" * api.MAX_NAME_LENGTH)
    result = apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr


def test_example_is_accepted(cluster: Cluster, namespace: str) -> None:
    example = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "fraud-detector.yaml"
    result = apply(cluster, namespace, example.read_text())
    assert result.returncode == 0, result.stderr
    printed = cluster.kubectl("get", "mdep", "-n", namespace)
    assert printed.stdout.split()[:8] == ["NAME", "MODEL", "VERSION", "DESIRED", "READY", "CANARY", "WEIGHT", "PHASE"]
    assert "fraud-detector" in printed.stdout


def test_explain_describes_the_fields(cluster: Cluster) -> None:
    def explained() -> str | None:
        result = cluster.kubectl("explain", "mdep.spec.model", check=False)
        return result.stdout if result.returncode == 0 and "version" in result.stdout else None

    text = wait_until(explained, timeout=30, interval=0.5, what="kubectl explain mdep.spec.model")
    assert "The model version to serve and where its artifact lives." in text
    for field in ("name", "version", "uri", "format", "sha256"):
        assert f"  {field}\t" in text or f"  {field} " in text, text


def test_largest_spec_is_accepted_unchanged(cluster: Cluster, namespace: str) -> None:
    """Every bound at its maximum passes the CRD's schema and rules, and nothing sent is pruned or changed."""
    manifest = largest_spec.largest_manifest()
    result = apply(cluster, namespace, json.dumps(manifest))
    assert result.returncode == 0, result.stderr[-4000:]
    stored = read(cluster, namespace, manifest["metadata"]["name"])["spec"]
    assert as_sent(stored, manifest["spec"]) == manifest["spec"]


def as_sent(stored: Any, sent: Any) -> Any:
    """`stored` without the fields `sent` lacks (defaults of fields the manifest leaves out)."""
    if isinstance(stored, dict) and isinstance(sent, dict):
        return {key: as_sent(value, sent[key]) for key, value in stored.items() if key in sent}
    return stored


@pytest.fixture
def largest_spec_node(cluster: Cluster) -> Iterator[str]:
    """A fake node with what the largest spec's pods ask for (labels, extended resources, a taint), removed after."""
    node = largest_spec.node_manifest()
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(node))
    try:
        cluster.kubectl("wait", "--for=condition=Ready", f"node/{largest_spec.NODE_NAME}", "--timeout=60s")
        yield largest_spec.NODE_NAME
    finally:
        cluster.kubectl("delete", "node", largest_spec.NODE_NAME, "--wait=false", check=False)


def test_largest_spec_goes_ready(
    cluster: Cluster, namespace: str, operator: OperatorProcess, largest_spec_node: str
) -> None:
    """The operator applies the largest spec's Deployment (no 422 from any field it passes through) and its pod
    is scheduled by every constraint of it and becomes Ready."""
    labels = [f"{key}={value}" for key, value in largest_spec.NAMESPACE_LABELS.items()]
    cluster.kubectl("label", "namespace", namespace, *labels)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(largest_spec.neighbour_pod()))
    manifest = largest_spec.largest_manifest()
    name = manifest["metadata"]["name"]
    result = apply(cluster, namespace, json.dumps(manifest))
    assert result.returncode == 0, result.stderr[-4000:]

    def ready() -> dict[str, Any] | None:
        status = read(cluster, namespace, name).get("status") or {}
        conditions = {condition["type"]: condition for condition in status.get("conditions", [])}
        return status if conditions.get("Ready", {}).get("status") == "True" else None

    def explain() -> str:
        status = read(cluster, namespace, name).get("status") or {}
        pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        return f"status: {json.dumps(status)[:2000]}\npods:\n{pods}"

    try:
        wait_until(ready, timeout=90, interval=1, what=f"{name} to be Ready")
    except Exception as error:
        raise AssertionError(explain()) from error
    [deployment] = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    pod_spec = deployment["spec"]["template"]["spec"]
    runtime = manifest["spec"]["runtime"]
    assert pod_spec["affinity"] == runtime["affinity"]
    assert pod_spec["tolerations"] == runtime["tolerations"]
    assert pod_spec["nodeSelector"] == runtime["nodeSelector"]
    [container] = pod_spec["containers"]
    assert container["env"][-len(runtime["env"]) :] == runtime["env"]
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}", "-o", "json").stdout
    )["items"]
    assert [pod["spec"]["nodeName"] for pod in pods] == [largest_spec_node]


@pytest.mark.parametrize(
    ("field", "described"),
    [
        ("mdep.spec.runtime.tolerations", ["Taint key to tolerate.", "NoSchedule, PreferNoSchedule or NoExecute"]),
        ("mdep.spec.runtime.env.valueFrom", ["exactly one of secretKeyRef", "A key of a Secret"]),
        ("mdep.spec.runtime.affinity.podAntiAffinity", ["Pods to run away from", "Terms every pod must meet."]),
        ("mdep.spec.runtime.resources", ["Resources the scheduler reserves for the container"]),
    ],
)
def test_explain_describes_the_pass_through_fields(cluster: Cluster, field: str, described: list[str]) -> None:
    def explained() -> str | None:
        result = cluster.kubectl("explain", field, check=False)
        return result.stdout if result.returncode == 0 else None

    text = " ".join(wait_until(explained, timeout=30, interval=0.5, what=f"kubectl explain {field}").split())
    for words in described:
        assert words in text, text
