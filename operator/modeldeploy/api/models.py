"""The ModelDeployment API (modeldeploy.io/v1alpha1): the single source of truth.

The CRD in crds/ is generated from these models (`make crds`), descriptions and admission rules included, so a
field is described, defaulted and validated in exactly one place. The operator parses what it reads from the API
server with the same models.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modeldeploy.api.expressions import ExpressionError, compile_condition

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
CATEGORIES = ["all", "modeldeploy"]

# Child names are `<name>-<revision>` (a 10-character hash) and `<name>-canary`; both must stay valid DNS labels
# (63 characters), so the resource name is limited to what leaves room for the longest suffix.
REVISION_LENGTH = 10
MAX_NAME_LENGTH = 63 - 1 - REVISION_LENGTH

URI_SCHEMES = ("file", "pvc", "http", "https", "s3", "gs")
# Label values: at most 63 characters, alphanumerics at both ends, '-', '_' and '.' inside.
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SHA256_PATTERN = r"^([a-f0-9]{64})?$"
# Variables of the serving-container contract; the operator sets them, so a user's env may not.
CONTRACT_ENV = (
    "MODEL_NAME",
    "MODEL_VERSION",
    "MODEL_URI",
    "MODEL_FORMAT",
    "MODEL_SHA256",
    "PREDICTIVE_UNIT_HTTP_SERVICE_PORT",
    "PREDICTIVE_UNIT_METRICS_SERVICE_PORT",
)


def _rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """JSON-schema extra holding CEL admission rules as (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class _Model(BaseModel):
    # Unknown fields are an error, never silently dropped; field names are the API's camelCase ones.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True, validate_default=True)


class ModelFormat(StrEnum):
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    ONNX = "onnx"
    CUSTOM = "custom"


class Protocol(StrEnum):
    SELDON = "seldon"
    V2 = "v2"


class ModelSpec(_Model):
    """What to serve: one version of one model artifact."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)",
                "spec.model.name is immutable: create a new ModelDeployment to serve another model",
            ),
        )
    )

    name: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description=(
                "Name of the model, used in labels, metrics and the runtime's responses. Defaults to "
                "metadata.name. Immutable: another model is another ModelDeployment."
            ),
        ),
    ]
    version: Annotated[
        str,
        Field(
            min_length=1,
            max_length=63,
            pattern=LABEL_VALUE_PATTERN,
            description=(
                "The version to serve, e.g. 1.4.0. Changing it (or anything else that defines the pods) starts "
                "a new revision. Must be a valid label value: at most 63 characters, letters, digits, '-', '_' "
                "and '.', starting and ending with a letter or digit."
            ),
        ),
    ]
    uri: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2048,
            description=(
                "Where the runtime loads the artifact from: file:///path, pvc://CLAIM/path, http(s)://host/path, "
                "s3://bucket/key or gs://bucket/key."
            ),
            json_schema_extra=_rules(
                (
                    "self.matches('^(" + "|".join(URI_SCHEMES) + ")://.+')",
                    "spec.model.uri must start with one of " + ", ".join(s + "://" for s in URI_SCHEMES),
                ),
            ),
        ),
    ]
    format: Annotated[
        ModelFormat,
        Field(
            default=ModelFormat.SKLEARN,
            description="Serialization format of the artifact, which picks the runtime's loader.",
        ),
    ]
    sha256: Annotated[
        str,
        Field(
            default="",
            pattern=SHA256_PATTERN,
            description=(
                "Optional SHA-256 digest (64 lowercase hex characters) of the artifact. When set, the runtime "
                "refuses an artifact that does not match and the revision never becomes Ready."
            ),
        ),
    ]


class EnvVar(_Model):
    """A Kubernetes EnvVar. Secrets come through valueFrom.secretKeyRef, never as plain values in the spec."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=256,
            pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
            description="Name of the environment variable.",
            json_schema_extra=_rules(
                (
                    "!(self in " + str(list(CONTRACT_ENV)).replace("'", '"') + ")",
                    "spec.runtime.env must not set " + ", ".join(CONTRACT_ENV) + ": the operator sets them from "
                    "spec.model",
                ),
            ),
        ),
    ]
    value: Annotated[str | None, Field(default=None, description="A literal value.")]
    valueFrom: Annotated[
        dict[str, Any] | None,
        Field(
            default=None,
            description="A source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ]


_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


class ResourceRequirements(_Model):
    """Compute resources of the serving container (Kubernetes ResourceRequirements)."""

    limits: Annotated[
        dict[str, int | str] | None,
        Field(
            default=None,
            description="Most of each resource the container may use, e.g. {cpu: '1', memory: 1Gi}.",
            json_schema_extra={"additionalProperties": _QUANTITY},
        ),
    ]
    requests: Annotated[
        dict[str, int | str] | None,
        Field(
            default=None,
            description="Resources the scheduler reserves for the container, e.g. {cpu: 100m, memory: 256Mi}.",
            json_schema_extra={"additionalProperties": _QUANTITY},
        ),
    ]


class RuntimeSpec(_Model):
    """How the model is served. Every field has a default from the operator's configuration."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            ("self.port != self.metricsPort", "spec.runtime.port and spec.runtime.metricsPort must differ"),
        )
    )

    image: Annotated[
        str,
        Field(
            default="",
            max_length=512,
            description="Container image of the model server. Empty: the operator's runtime image for the format.",
        ),
    ]
    protocol: Annotated[
        Protocol,
        Field(
            default=Protocol.SELDON,
            description=(
                "Inference protocol, which sets the health endpoints the probes use: seldon "
                "(/health/status, /health/ping) or v2, the Open Inference Protocol (/v2/health/ready, /v2/health/live)."
            ),
        ),
    ]
    # Pods run as non-root without capabilities, so they cannot bind ports below 1024.
    port: Annotated[
        int,
        Field(
            default=9000,
            ge=1024,
            le=65535,
            description="Container port of the inference API (1024-65535: the server runs without privileges).",
        ),
    ]
    metricsPort: Annotated[
        int,
        Field(
            default=6000,
            ge=1024,
            le=65535,
            description="Container port of the runtime's Prometheus metrics (1024-65535, not equal to port).",
        ),
    ]
    args: Annotated[
        list[Annotated[str, Field(max_length=4096)]],
        Field(default_factory=list, max_length=64, description="Extra arguments for the model server."),
    ]
    env: Annotated[
        list[EnvVar],
        Field(
            default_factory=list,
            max_length=128,
            description=(
                "Extra environment variables of the model server. Use valueFrom.secretKeyRef for credentials. "
                "The MODEL_* variables are set by the operator."
            ),
        ),
    ]
    resources: Annotated[
        ResourceRequirements,
        Field(default_factory=ResourceRequirements, description="Compute resources of the model server."),
    ]
    nodeSelector: Annotated[
        dict[str, str] | None,
        Field(
            default=None,
            description="Node labels the serving pods must match (Kubernetes nodeSelector), e.g. a GPU node pool.",
        ),
    ]
    tolerations: Annotated[
        list[dict[str, Any]] | None,
        Field(
            default=None,
            max_length=32,
            description="Taints the serving pods tolerate (Kubernetes Toleration list).",
            json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        ),
    ]
    affinity: Annotated[
        dict[str, Any] | None,
        Field(
            default=None,
            description="Scheduling constraints of the serving pods (Kubernetes Affinity).",
            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ]


class Strategy(StrEnum):
    CANARY = "Canary"
    IMMEDIATE = "Immediate"


DURATION_PATTERN = r"^[0-9]{1,6}(s|m|h)?$"


class Pause(_Model):
    """Wait: for a duration, or, without one, until the rollout is promoted."""

    duration: Annotated[
        str | None,
        Field(
            default=None,
            pattern=DURATION_PATTERN,
            description="How long to wait, e.g. 30s, 5m or 1h (a bare number is seconds). Absent: wait for promote.",
        ),
    ]


class CanaryStep(_Model):
    """One step of a canary rollout: exactly one of setWeight or pause."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "has(self.setWeight) != has(self.pause)",
                "each spec.rollout.steps entry must set exactly one of setWeight or pause",
            ),
        )
    )

    setWeight: Annotated[
        int | None,
        Field(default=None, ge=0, le=100, description="Percent of the traffic the new revision should take (0-100)."),
    ]
    pause: Annotated[Pause | None, Field(default=None, description="Wait before the next step.")]


def default_steps() -> list[CanaryStep]:
    return [
        CanaryStep.model_validate({"setWeight": 20}),
        CanaryStep.model_validate({"pause": {"duration": "60s"}}),
        CanaryStep.model_validate({"setWeight": 50}),
        CanaryStep.model_validate({"pause": {"duration": "60s"}}),
    ]


class BuiltinMetric(StrEnum):
    SUCCESS_RATE = "successRate"
    LATENCY_P99 = "latencyP99"
    PREDICTION_SHIFT = "predictionShift"


class RelativeTo(StrEnum):
    STABLE = "stable"


# Placeholders a custom query may hold, as {{ .canary.version }}; anything else between {{ }} is refused.
PLACEHOLDER_PATTERN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
QUERY_PLACEHOLDERS = (
    ".canary.version",
    ".canary.revision",
    ".stable.version",
    ".stable.revision",
    ".model",
    ".namespace",
    ".name",
    ".window",
)


class AnalysisMetric(_Model):
    """One metric judged during a canary: a built-in one with bounds, or a PromQL query with conditions."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            ("has(self.builtin) != has(self.query)", "each analysis metric sets exactly one of builtin or query"),
            (
                "!has(self.builtin) || has(self.min) || has(self.max)",
                "a builtin analysis metric needs min or max (its threshold)",
            ),
            (
                "!has(self.query) || has(self.successCondition) || has(self.failureCondition)",
                "a query analysis metric needs successCondition or failureCondition",
            ),
            (
                "!has(self.query) || (!has(self.min) && !has(self.max) && !has(self.relativeTo))",
                "min, max and relativeTo apply to builtin metrics; a query metric uses successCondition and "
                "failureCondition",
            ),
            (
                "has(self.query) || (!has(self.successCondition) && !has(self.failureCondition))",
                "successCondition and failureCondition apply to query metrics; a builtin metric uses min and max",
            ),
            (
                "!has(self.relativeTo) || !has(self.builtin) || self.builtin != 'predictionShift'",
                "predictionShift always compares the canary with the stable revision: relativeTo does not apply",
            ),
        )
    )

    name: Annotated[
        str,
        Field(
            pattern=DNS_LABEL_PATTERN,
            max_length=63,
            description="Name of the metric, unique in the list; status and events report measurements by it.",
        ),
    ]
    builtin: Annotated[
        BuiltinMetric | None,
        Field(
            default=None,
            description=(
                "successRate: share of the canary's prediction requests that succeeded (0-1). latencyP99: 99th "
                "percentile of the canary's prediction latency, in seconds. predictionShift: distance between the "
                "canary's and the stable revision's prediction outputs on live traffic, from 0 (same "
                "distribution) to 1 (disjoint): the largest gap between the two cumulative distributions over the "
                "runtime's fixed buckets (Kolmogorov-Smirnov), the largest over the output columns."
            ),
        ),
    ]
    query: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=4096,
            description=(
                "PromQL that returns one number (a scalar, or a vector of one sample). May hold {{ .canary.version "
                "}}, {{ .canary.revision }}, {{ .stable.version }}, {{ .stable.revision }}, {{ .model }}, "
                "{{ .namespace }}, {{ .name }} and {{ .window }}."
            ),
        ),
    ]
    min: Annotated[
        float | None,
        Field(default=None, description="builtin only: a value below this fails the measurement."),
    ]
    max: Annotated[
        float | None,
        Field(default=None, description="builtin only: a value above this fails the measurement."),
    ]
    relativeTo: Annotated[
        RelativeTo | None,
        Field(
            default=None,
            description=(
                "successRate and latencyP99 only. stable: judge the canary's value minus the stable revision's "
                "over the same window, so min and max are the margin allowed (e.g. latencyP99 max 0.05: at most "
                "50 ms slower than stable; successRate min -0.01: at most one point worse)."
            ),
        ),
    ]
    successCondition: Annotated[
        str | None,
        Field(
            default=None,
            max_length=256,
            description=(
                "query only: an expression of `result`, e.g. `result >= 0.95`. Comparisons, and/or/not (or && "
                "|| !), + - * /, abs(), numbers. Neither condition met (with both set): Inconclusive."
            ),
        ),
    ]
    failureCondition: Annotated[
        str | None,
        Field(
            default=None,
            max_length=256,
            description="query only: when true, the measurement Failed (it wins over successCondition).",
        ),
    ]

    # CEL cannot parse PromQL templates or conditions: these checks run when the operator reads the spec, and a
    # failure shows as Degraded with reason InvalidSpec naming the field.
    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, query: str | None) -> str | None:
        for key in PLACEHOLDER_PATTERN.findall(query or ""):
            if key not in QUERY_PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{{ {key} }}}}; known: {', '.join(QUERY_PLACEHOLDERS)}")
        return query

    @field_validator("successCondition", "failureCondition")
    @classmethod
    def _valid_condition(cls, condition: str | None) -> str | None:
        if condition is not None:
            try:
                compile_condition(condition)
            except ExpressionError as error:
                raise ValueError(str(error)) from None
        return condition


class PrometheusSpec(_Model):
    """Where the analysis queries go."""

    address: Annotated[
        str,
        Field(
            default="",
            max_length=512,
            pattern=r"^(https?://[^\s]+)?$",
            description=(
                "Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090. Empty: the "
                "operator's default (MODELDEPLOY_PROMETHEUS_URL, the Helm value analysis.prometheusURL). Any other "
                "address must be under a prefix the operator allows (MODELDEPLOY_PROMETHEUS_ALLOWED_URLS, the Helm "
                "value analysis.allowedPrometheusURLs); else it is never asked and the resource is Degraded with "
                "reason InvalidSpec."
            ),
        ),
    ]


class AnalysisSpec(_Model):
    """Metrics measured while a canary takes traffic; they decide whether it goes on, pauses or is rolled back."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
                "spec.rollout.analysis.metrics names must be unique",
            ),
        )
    )

    interval: Annotated[
        str,
        Field(
            default="30s",
            pattern=DURATION_PATTERN,
            description=(
                "How often each metric is measured while the canary has Ready pods; the first measurement is one "
                "interval after they start taking traffic (plus initialDelay)."
            ),
        ),
    ]
    initialDelay: Annotated[
        str,
        Field(
            default="0s",
            pattern=DURATION_PATTERN,
            description="Extra wait before the first measurement, e.g. for a model that warms up.",
        ),
    ]
    window: Annotated[
        str | None,
        Field(
            default=None,
            pattern=DURATION_PATTERN,
            description=(
                "Range of the built-in queries (rate over the last window) and {{ .window }}. Default: the "
                "interval, at least 1m. It must hold two scrapes or more of the model's pods, or there is no data."
            ),
        ),
    ]
    failureLimit: Annotated[
        int,
        Field(
            default=0,
            ge=0,
            le=100,
            description="Failed measurements (of any one metric) tolerated; one more rolls the canary back.",
        ),
    ]
    inconclusiveLimit: Annotated[
        int,
        Field(
            default=0,
            ge=0,
            le=100,
            description=(
                "Inconclusive measurements (neither condition met, or no data: no traffic is never a success) "
                "tolerated; one more pauses the rollout until it is promoted (measuring goes on) or aborted."
            ),
        ),
    ]
    consecutiveErrorLimit: Annotated[
        int,
        Field(
            default=4,
            ge=0,
            le=100,
            description="Query errors in a row (of any one metric) tolerated; one more rolls the canary back.",
        ),
    ]
    prometheus: Annotated[PrometheusSpec, Field(default_factory=PrometheusSpec, description="Where the queries go.")]
    metrics: Annotated[
        list[AnalysisMetric],
        Field(min_length=1, max_length=10, description="What is measured (1-10 metrics)."),
    ]


class RolloutSpec(_Model):
    """How a new revision replaces the serving one."""

    strategy: Annotated[
        Strategy,
        Field(
            default=Strategy.CANARY,
            description=(
                "Canary: the new revision takes traffic step by step (steps). Immediate: it comes up beside the "
                "serving one and takes over when all its replicas are Ready."
            ),
        ),
    ]
    steps: Annotated[
        list[CanaryStep],
        Field(
            default_factory=default_steps,
            max_length=20,
            description=(
                "Canary steps, in order (at most 20). After the last one the new revision is promoted. "
                "Default: setWeight 20, pause 60s, setWeight 50, pause 60s."
            ),
        ),
    ]
    paused: Annotated[
        bool,
        Field(
            default=False,
            description="Freeze the rollout where it stands; set back to false to continue from the same step.",
        ),
    ]
    progressDeadlineSeconds: Annotated[
        int,
        Field(
            default=600,
            ge=10,
            le=86400,
            description=(
                "Seconds a new revision has to become Ready at each scale it is asked for. When they run out, it "
                "is scaled to zero, the serving revision takes all traffic again, and the resource reports "
                "Degraded with reason ProgressDeadlineExceeded. It is not tried again until the spec changes "
                "or a retry is requested."
            ),
        ),
    ]
    rollbackWindow: Annotated[
        int,
        Field(
            default=3,
            ge=0,
            le=10,
            description=(
                "A spec returning to one of the last N serving revisions is rolled out at once, without steps "
                "(its Deployment is kept, scaled to zero, for exactly this)."
            ),
        ),
    ]
    analysis: Annotated[
        AnalysisSpec | None,
        Field(
            default=None,
            description=(
                "Judge the canary on live metrics from Prometheus while it takes traffic. A step advances only "
                "once every metric's latest measurement, taken during that step, is Successful; failures or query "
                "errors beyond their limits roll the canary back (reason AnalysisFailed); inconclusive ones pause "
                "it. Promoting past an open pause, or fully, is a person's decision and skips the wait."
            ),
        ),
    ]


class ServiceSpec(_Model):
    """The Service in front of the model."""

    port: Annotated[
        int,
        Field(
            default=80,
            ge=1,
            le=65535,
            description="Port of the Services <name>, <name>-stable and <name>-canary.",
        ),
    ]


class ModelDeploymentSpec(_Model):
    """Desired state of a ModelDeployment. The operator never writes it."""

    model: Annotated[ModelSpec, Field(description="The model version to serve and where its artifact lives.")]
    runtime: Annotated[
        RuntimeSpec,
        Field(default_factory=RuntimeSpec, description="The model server: image, protocol, ports."),
    ]
    replicas: Annotated[
        int,
        Field(default=1, ge=0, le=1000, description="Number of serving pods of the stable revision (0-1000)."),
    ]
    rollout: Annotated[
        RolloutSpec,
        Field(default_factory=RolloutSpec, description="How a new revision replaces the serving one."),
    ]
    service: Annotated[
        ServiceSpec, Field(default_factory=ServiceSpec, description="The Service in front of the model.")
    ]


# ----------------------------------------------------------------------------------------------------------------
# Status: written by the operator only, once per reconcile cycle.


class ConditionType(StrEnum):
    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class Phase(StrEnum):
    """The resource's health in Argo CD's words."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    DEGRADED = "Degraded"


class Outcome(StrEnum):
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"


class _Status(BaseModel):
    # Status may carry fields written by a newer operator; keep them rather than fail on them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, use_enum_values=True)


class Condition(_Status):
    """A Kubernetes-style condition."""

    type: Annotated[str, Field(description="Ready, Available, Progressing or Degraded.")]
    status: Annotated[str, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(description="Why, in one CamelCase word.")]
    message: Annotated[str, Field(description="Why, for a person.")] = ""
    lastTransitionTime: Annotated[str, Field(description="When status last changed (RFC 3339).")]
    observedGeneration: Annotated[int, Field(description="metadata.generation the condition was computed from.")] = 0


class TrackStatus(_Status):
    """One revision of the model and its pods."""

    version: Annotated[str, Field(description="spec.model.version of the revision.")]
    revision: Annotated[str, Field(description="Hash of everything that defines the revision's pods.")]
    replicas: Annotated[int, Field(description="Pods the revision's Deployment asks for.")] = 0
    readyReplicas: Annotated[int, Field(description="Pods of the revision that are Ready.")] = 0
    since: Annotated[
        str | None, Field(description="When the revision started rolling out (RFC 3339, microseconds).")
    ] = None
    readyAt: Annotated[
        str | None, Field(description="When all of the revision's replicas were first Ready (RFC 3339).")
    ] = None


class HistoryEntry(_Status):
    """What became of a revision."""

    revision: Annotated[str, Field(description="The revision's hash.")]
    version: Annotated[str, Field(description="spec.model.version of the revision.")]
    outcome: Annotated[str, Field(description="Promoted, RolledBack, Aborted or Superseded.")]
    reason: Annotated[str, Field(description="Why, in one CamelCase word.")] = ""
    time: Annotated[str, Field(description="When it happened (RFC 3339).")]


class AbortedRevision(_Status):
    """A revision that was rolled back; it is not tried again until the spec asks for another revision."""

    revision: Annotated[str, Field(description="The revision's hash.")]
    version: Annotated[str, Field(description="spec.model.version of the revision.")]
    reason: Annotated[str, Field(description="Why it was rolled back, in one CamelCase word.")]
    message: Annotated[str, Field(description="Why it was rolled back, for a person.")] = ""
    time: Annotated[str, Field(description="When it was rolled back (RFC 3339).")]


class TrackWeights(_Status):
    desiredWeight: Annotated[int, Field(description="Percent of traffic the rollout asks for.")] = 0
    actualWeight: Annotated[int, Field(description="Percent of ready serving pods that run this revision.")] = 0


class PauseStatus(_Status):
    """Why and since when the rollout waits."""

    reason: Annotated[str, Field(description="PauseStep (timed), PromotionRequired (open pause) or SpecPaused.")]
    startedAt: Annotated[str, Field(description="When the pause began (RFC 3339, microseconds).")]
    endsAt: Annotated[str | None, Field(description="When a timed pause ends.")] = None


class Command(_Status):
    """A request made with `kubectl mdep promote|abort|retry`. Written by people, never by the operator."""

    id: Annotated[str, Field(description="Unique per request: the operator acts once on each id.")]
    full: Annotated[bool, Field(description="promote only: skip every remaining step.")] = False
    requestedAt: Annotated[str, Field(description="When it was requested.")] = ""


class Commands(_Status):
    promote: Annotated[Command | None, Field(description="Finish the current pause (or, full, every step).")] = None
    abort: Annotated[Command | None, Field(description="Give all traffic back to the serving revision.")] = None
    retry: Annotated[Command | None, Field(description="Try an aborted revision again.")] = None


class Acknowledged(_Status):
    promote: Annotated[str, Field(description="Id of the last promote request acted on.")] = ""
    abort: Annotated[str, Field(description="Id of the last abort request acted on.")] = ""
    retry: Annotated[str, Field(description="Id of the last retry request acted on.")] = ""


class CanaryStatus(TrackStatus, TrackWeights):
    """The revision being rolled out, and the share of traffic it has."""

    fastTrack: Annotated[
        bool, Field(description="A return to a recent revision, rolled out at once without steps.")
    ] = False


class MeasurementPhase(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class AnalysisPhase(StrEnum):
    PENDING = "Pending"
    """The canary has no Ready pod yet: nothing to measure."""
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    """The canary was promoted with the analysis passing."""
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class Measurement(_Status):
    phase: Annotated[
        str, Field(description="Successful, Failed, Inconclusive (no data or neither condition) or Error.")
    ]
    value: Annotated[float | None, Field(description="The measured value; absent without data or on error.")] = None
    message: Annotated[str, Field(description="What was compared, or the error.")] = ""
    time: Annotated[str, Field(description="When it was measured (RFC 3339).")]


class MetricStatus(_Status):
    """Counts and the recent measurements of one analysis metric, for the canary being judged."""

    name: Annotated[str, Field(description="The metric's name in spec.rollout.analysis.metrics.")]
    phase: Annotated[str, Field(description="Phase of the latest measurement.")] = ""
    successful: Annotated[int, Field(description="Successful measurements.")] = 0
    failed: Annotated[int, Field(description="Failed measurements.")] = 0
    inconclusive: Annotated[
        int, Field(description="Inconclusive measurements since the start or the last promote.")
    ] = 0
    errors: Annotated[int, Field(description="Measurements whose query failed.")] = 0
    consecutiveErrors: Annotated[int, Field(description="Query errors in a row, up to the latest measurement.")] = 0
    measurements: list[Measurement] = Field(
        default_factory=list, description="The most recent measurements, newest first (at most 10)."
    )


class AnalysisStatus(_Status):
    """The judgement of the canary on live metrics, and its evidence."""

    revision: Annotated[str, Field(description="The canary revision being judged.")]
    version: Annotated[str, Field(description="Its spec.model.version.")] = ""
    phase: Annotated[str, Field(description="Pending, Running, Successful, Failed, Inconclusive or Error.")] = str(
        AnalysisPhase.PENDING
    )
    message: Annotated[str, Field(description="The latest verdict, for a person.")] = ""
    startedAt: Annotated[
        str | None, Field(description="When the canary first had Ready pods, taking traffic (RFC 3339).")
    ] = None
    lastMeasuredAt: Annotated[str | None, Field(description="When the metrics were last measured.")] = None
    nextMeasurementAt: Annotated[str | None, Field(description="When they are measured next.")] = None
    metrics: list[MetricStatus] = Field(default_factory=list, description="Per metric, in spec order.")


class ModelDeploymentStatus(_Status):
    """Observed state, written by the operator. Argo CD and `kubectl wait` read it."""

    observedGeneration: Annotated[int, Field(description="metadata.generation this status describes.")] = 0
    phase: Annotated[
        str | None, Field(description="Health in Argo CD's words: Healthy, Progressing, Paused or Degraded.")
    ] = None
    message: Annotated[str, Field(description="One line saying what is happening.")] = ""
    model: Annotated[str, Field(description="Name of the served model (spec.model.name or metadata.name).")] = ""
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Available, Progressing and Degraded.")
    stable: Annotated[TrackStatus | None, Field(description="The revision that serves the model.")] = None
    canary: Annotated[
        CanaryStatus | None, Field(description="The new revision being rolled out, while there is one.")
    ] = None
    currentStepIndex: Annotated[
        int | None, Field(description="Index in spec.rollout.steps of the step in progress, during a canary.")
    ] = None
    stepStartedAt: Annotated[str | None, Field(description="When the current step began (RFC 3339).")] = None
    pause: Annotated[PauseStatus | None, Field(description="Set while the rollout waits.")] = None
    commands: Annotated[
        Commands | None, Field(description="Requests from `kubectl mdep`; the operator only reads them.")
    ] = None
    acknowledged: Annotated[Acknowledged, Field(description="The requests the operator has acted on.")] = Field(
        default_factory=lambda: Acknowledged()
    )
    aborted: Annotated[
        AbortedRevision | None,
        Field(description="The revision last rolled back, while the spec still asks for it."),
    ] = None
    analysis: Annotated[
        AnalysisStatus | None,
        Field(description="Metric analysis of the latest canary: its phase, counts and recent measurements."),
    ] = None
    url: Annotated[str, Field(description="In-cluster address of the model's Service.")] = ""
    history: list[HistoryEntry] = Field(
        default_factory=list, description="Recent revisions and what became of them, newest first."
    )


# Rules on the whole object; CEL may read metadata.name there.
ROOT_RULES: list[dict[str, str]] = [
    {
        "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        "message": (
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters: child objects are named "
            f"<name>-<{REVISION_LENGTH}-character revision>, which must fit a 63-character DNS label"
        ),
    },
]


class ModelDeployment(BaseModel):
    """A machine-learning model served on Kubernetes, rolled out safely from one version to the next."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=lambda: ModelDeploymentStatus())


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model", "description": "Model name"},
    {
        "name": "Version",
        "type": "string",
        "jsonPath": ".status.stable.version",
        "description": "Serving version",
    },
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas", "description": "Requested replicas"},
    {
        "name": "Ready",
        "type": "integer",
        "jsonPath": ".status.stable.readyReplicas",
        "description": "Ready replicas of the serving revision",
    },
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.version", "description": "Version rolling out"},
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.canary.actualWeight",
        "description": "Percent of ready pods running the canary",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Health"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
