"""The ModelDeployment API (modeldeploy.io/v1alpha1): the single source of truth.

The CRD in crds/ is generated from these models (`make crds`), descriptions and admission rules included, so a
field is described, defaulted and validated in exactly one place. The operator parses what it reads from the API
server with the same models.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from modeldeploy.api.expressions import ExpressionError, compile_condition
from modeldeploy.api.quantity import parse_quantity

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
# scheme://user[:password]@host: credentials in a URI land in the Deployment's env, in logs and in status.
URI_USERINFO_PATTERN = "^[A-Za-z][-A-Za-z0-9+.]*://[^/?#]*@"
URI_USERINFO_MESSAGE = (
    "spec.model.uri must not hold user info (user:password@): put HTTP credentials in a Secret named by "
    "spec.model.httpHeadersSecret"
)
# Label values: at most 63 characters, alphanumerics at both ends, '-', '_' and '.' inside.
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SHA256_PATTERN = r"^([a-f0-9]{64})?$"
# The runtime sends variables of this prefix as HTTP headers of its downloads: credentials, so never literal values.
HTTP_HEADER_ENV_PREFIX = "MODEL_HTTP_HEADER_"
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
            (
                "!has(self.httpHeadersSecret) || self.uri.startsWith('http://') || self.uri.startsWith('https://')",
                "spec.model.httpHeadersSecret applies to http:// and https:// URIs only",
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
                (f"!self.matches('{URI_USERINFO_PATTERN}')", URI_USERINFO_MESSAGE),
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
            max_length=64,
            pattern=SHA256_PATTERN,
            description=(
                "Optional SHA-256 digest (64 lowercase hex characters) of the artifact. When set, the runtime "
                "refuses an artifact that does not match and the revision never becomes Ready."
            ),
        ),
    ]
    httpHeadersSecret: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=253,
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            description=(
                "Name of a Secret in the resource's namespace whose keys are HTTP header names and whose values "
                "are sent as those headers when the runtime downloads an http(s) artifact, e.g. "
                "{Authorization: Bearer ...}. Credentials go here, never in spec.model.uri. The pods read it "
                "through envFrom (prefix MODEL_HTTP_HEADER_); its values are never copied into the Deployment."
            ),
        ),
    ]

    @field_validator("uri")
    @classmethod
    def _no_user_info(cls, uri: str) -> str:
        # The admission rule's twin, for objects stored before it existed.
        if re.match(URI_USERINFO_PATTERN, uri):
            raise ValueError(URI_USERINFO_MESSAGE)
        return uri


# ----------------------------------------------------------------------------------------------------------------
# Kubernetes types the spec passes through to the serving pods. They follow Kubernetes' own OpenAPI shapes (names,
# nesting, enums), are bounded so that CEL cost estimation can bound every rule, and carry as admission rules the
# checks Kubernetes would otherwise make only when the operator applies the Deployment: a shape that passed here
# but failed there would fail on every pass with a 422 that no status reports. None of them has a default, so what
# the operator builds from them is exactly what the user wrote (and so is the revision hash).

# Names Kubernetes bounds: DNS labels 63, DNS subdomains 253, label values 63, and label keys (qualified names), an
# optional DNS-subdomain prefix and '/' before a name of at most 63 characters.
DNS_SUBDOMAIN_LENGTH = 253
QUALIFIED_NAME_LENGTH = DNS_SUBDOMAIN_LENGTH + 1 + 63
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_VALUE = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
DNS_SUBDOMAIN_PATTERN = f"^{_SUBDOMAIN}$"
# The pattern cannot also count the prefix's 253 characters; maxLength bounds the whole key.
QUALIFIED_NAME_PATTERN = f"^({_SUBDOMAIN}/)?{_LABEL_VALUE}$"
LABEL_VALUE_OR_EMPTY_PATTERN = f"^({_LABEL_VALUE})?$"
# apimachinery's quantity grammar (api/quantity.py) without a minus sign: Kubernetes refuses negative requests,
# limits and divisors.
QUANTITY_PATTERN = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
QUANTITY_LENGTH = 64
# Bounds of the pass-through lists and maps: far above what scheduling constraints need in practice, small enough
# that the largest spec stays well inside what the API server stores in one object (tests/unit/test_crd.py).
MAX_RESOURCES = 16
MAX_NODE_SELECTOR = 16
MAX_TOLERATIONS = 32
MAX_NODE_SELECTOR_TERMS = 4
MAX_PREFERRED_NODE_TERMS = 4
MAX_NODE_REQUIREMENTS = 8
MAX_FIELD_REQUIREMENTS = 2
MAX_POD_AFFINITY_TERMS = 4
MAX_MATCH_LABELS = 8
MAX_MATCH_EXPRESSIONS = 4
MAX_SELECTOR_VALUES = 8
MAX_NODE_SELECTOR_VALUES = 8
MAX_NAMESPACES = 8
MAX_LABEL_KEYS = 4
ENV_VALUE_LENGTH = 2048


def _quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a quantity (e.g. 500m, 1.5, 2Gi)")
    parse_quantity(value)
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{value} is negative")
    return value


# An int-or-string amount: 2, "500m", "1Gi". The schema says so where the type is used (_QUANTITY_SCHEMA).
Quantity = Annotated[int | str, AfterValidator(_quantity)]
_QUANTITY_SCHEMA = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "minimum": 0,
    "maxLength": QUANTITY_LENGTH,
    "pattern": QUANTITY_PATTERN,
}
LabelKey = Annotated[str, Field(min_length=1, max_length=QUALIFIED_NAME_LENGTH, pattern=QUALIFIED_NAME_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_OR_EMPTY_PATTERN)]


# The admission rules' twins, for objects stored before the rules existed: the operator reads the spec with these
# models, so such an object is Degraded with reason InvalidSpec naming the field, instead of failing on every
# Deployment apply.


def _refuse_unless(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class ConfigMapKey(_Model):
    """A key of a ConfigMap in the resource's namespace."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the ConfigMap."),
    ]
    key: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key to read."),
    ]


class ConfigMapKeySelector(ConfigMapKey):
    """A key of a ConfigMap in the resource's namespace (Kubernetes ConfigMapKeySelector)."""

    optional: Annotated[
        bool | None,
        Field(default=None, description="Start the pods even when the ConfigMap or the key does not exist."),
    ]


class SecretKeySelector(_Model):
    """A key of a Secret in the resource's namespace (Kubernetes SecretKeySelector)."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret."),
    ]
    key: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key to read."),
    ]
    optional: Annotated[
        bool | None,
        Field(default=None, description="Start the pods even when the Secret or the key does not exist."),
    ]


class ObjectFieldSelector(_Model):
    """A field of the pod (Kubernetes ObjectFieldSelector, with the paths environment variables may read)."""

    apiVersion: Annotated[
        str | None,
        Field(default=None, max_length=2, pattern=r"^v1$", description="Version the path is written in: v1."),
    ]
    fieldPath: Annotated[
        str,
        Field(
            max_length=512,
            pattern=(
                r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]"
                r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
            ),
            description=(
                "metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], "
                "metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.hostIP, "
                "status.hostIPs, status.podIP or status.podIPs."
            ),
        ),
    ]


class ResourceFieldSelector(_Model):
    """A request or limit of the container (Kubernetes ResourceFieldSelector)."""

    containerName: Annotated[
        str | None,
        Field(
            default=None,
            max_length=63,
            pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$",
            description="The container; optional for environment variables (it is the model server).",
        ),
    ]
    resource: Annotated[
        str,
        Field(
            max_length=128,
            pattern=r"^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-[-A-Za-z0-9.]+)$",
            description="limits or requests, then cpu, memory, ephemeral-storage or hugepages-SIZE, e.g. limits.cpu.",
        ),
    ]
    divisor: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Unit the value is given in, e.g. 1m or 1Mi. Default: 1.",
            json_schema_extra={key: value for key, value in _QUANTITY_SCHEMA.items() if key != "anyOf"},
        ),
    ]


class EnvVarSource(_Model):
    """Where an environment variable's value comes from (Kubernetes EnvVarSource): exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "(has(self.configMapKeyRef) ? 1 : 0) + (has(self.secretKeyRef) ? 1 : 0) + (has(self.fieldRef) ? 1 : 0)"
                " + (has(self.resourceFieldRef) ? 1 : 0) == 1",
                "valueFrom must set exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
            ),
        )
    )

    configMapKeyRef: Annotated[ConfigMapKeySelector | None, Field(default=None, description="A key of a ConfigMap.")]
    secretKeyRef: Annotated[
        SecretKeySelector | None, Field(default=None, description="A key of a Secret: the way to pass credentials.")
    ]
    fieldRef: Annotated[ObjectFieldSelector | None, Field(default=None, description="A field of the pod.")]
    resourceFieldRef: Annotated[
        ResourceFieldSelector | None, Field(default=None, description="A request or limit of the container.")
    ]

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        sources = (self.configMapKeyRef, self.secretKeyRef, self.fieldRef, self.resourceFieldRef)
        _refuse_unless(
            sum(source is not None for source in sources) == 1,
            "valueFrom must set exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
        )
        return self


class EnvVar(_Model):
    """A Kubernetes EnvVar. Secrets come through valueFrom.secretKeyRef, never as plain values in the spec."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "!has(self.valueFrom) || !has(self.value) || self.value == ''",
                "an environment variable sets value or valueFrom, not both",
            ),
            (
                f"!self.name.startsWith('{HTTP_HEADER_ENV_PREFIX}') || !has(self.value) || self.value == ''",
                f"spec.runtime.env: {HTTP_HEADER_ENV_PREFIX}* variables carry credentials: take them from a Secret "
                "(valueFrom.secretKeyRef, or spec.model.httpHeadersSecret), not a literal value in the spec",
            ),
        )
    )

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
    value: Annotated[str | None, Field(default=None, max_length=ENV_VALUE_LENGTH, description="A literal value.")]
    valueFrom: Annotated[
        EnvVarSource | None,
        Field(
            default=None,
            description=(
                "A source for the value: exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef."
            ),
        ),
    ]

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        _refuse_unless(
            self.valueFrom is None or not self.value, "an environment variable sets value or valueFrom, not both"
        )
        return self


class ResourceRequirements(_Model):
    """Compute resources of the serving container (Kubernetes ResourceRequirements).

    Resource claims are left out: a container's claim must name one of the pod's resourceClaims, which the operator
    does not create, so any claim would be refused when the Deployment is applied.
    """

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "!has(self.requests) || !has(self.limits) || self.requests.all(r, !(r in self.limits) || "
                "quantity(string(self.requests[r])).compareTo(quantity(string(self.limits[r]))) <= 0)",
                "spec.runtime.resources: each request must be at most the limit of the same resource",
            ),
        )
    )

    limits: Annotated[
        dict[str, Quantity] | None,
        Field(
            default=None,
            max_length=MAX_RESOURCES,
            description="Most of each resource the container may use, e.g. {cpu: '1', memory: 1Gi}.",
            json_schema_extra={"additionalProperties": _QUANTITY_SCHEMA},
        ),
    ]
    requests: Annotated[
        dict[str, Quantity] | None,
        Field(
            default=None,
            max_length=MAX_RESOURCES,
            description="Resources the scheduler reserves for the container, e.g. {cpu: 100m, memory: 256Mi}.",
            json_schema_extra={"additionalProperties": _QUANTITY_SCHEMA},
        ),
    ]

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        limits = self.limits or {}
        for resource, amount in (self.requests or {}).items():
            _refuse_unless(
                resource not in limits or parse_quantity(amount) <= parse_quantity(limits[resource]),
                "spec.runtime.resources: each request must be at most the limit of the same resource",
            )
        return self


class Toleration(_Model):
    """A taint the serving pods tolerate (Kubernetes Toleration)."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                "a toleration without a key must have operator Exists (it then tolerates every taint)",
            ),
            (
                "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "a toleration with operator Exists must not set a value",
            ),
            (
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds applies only to effect NoExecute",
            ),
        )
    )

    key: Annotated[
        str | None,
        Field(
            default=None,
            max_length=QUALIFIED_NAME_LENGTH,
            pattern=f"^(({_SUBDOMAIN}/)?{_LABEL_VALUE})?$",
            description="Taint key to tolerate. Empty, with operator Exists: every taint.",
        ),
    ]
    operator: Annotated[
        Literal["Equal", "Exists", ""] | None,
        Field(
            default=None,
            description="Equal (the default, also when empty): the taint's value is value. Exists: any value.",
        ),
    ]
    value: Annotated[
        str | None,
        Field(
            default=None,
            max_length=63,
            pattern=LABEL_VALUE_OR_EMPTY_PATTERN,
            description="Taint value to tolerate, with operator Equal.",
        ),
    ]
    effect: Annotated[
        Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None,
        Field(
            default=None,
            description="Taint effect to tolerate: NoSchedule, PreferNoSchedule or NoExecute. Empty: all of them.",
        ),
    ]
    tolerationSeconds: Annotated[
        int | None,
        Field(
            default=None,
            description="With effect NoExecute: how long a pod stays on a node after the taint appears.",
        ),
    ]

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        _refuse_unless(
            bool(self.key) or self.operator == "Exists",
            "a toleration without a key must have operator Exists (it then tolerates every taint)",
        )
        _refuse_unless(
            self.operator != "Exists" or not self.value, "a toleration with operator Exists must not set a value"
        )
        _refuse_unless(
            self.tolerationSeconds is None or self.effect == "NoExecute",
            "tolerationSeconds applies only to effect NoExecute",
        )
        return self


class NodeSelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class NodeSelectorRequirement(_Model):
    """A condition on a node label (Kubernetes NodeSelectorRequirement)."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "!(self.operator in ['In', 'NotIn']) || (has(self.values) && self.values.size() > 0)",
                "values must be set when operator is In or NotIn",
            ),
            (
                "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || self.values.size() == 0",
                "values must be empty when operator is Exists or DoesNotExist",
            ),
            (
                "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && self.values.size() == 1 && "
                "self.values[0].matches('^[-+]?[0-9]+$'))",
                "operator Gt or Lt takes exactly one value, an integer",
            ),
        )
    )

    key: Annotated[LabelKey, Field(description="The node label.")]
    operator: Annotated[
        NodeSelectorOperator,
        Field(description="In, NotIn, Exists, DoesNotExist, Gt or Lt (Gt and Lt compare integers)."),
    ]
    values: Annotated[
        list[Annotated[str, Field(max_length=63)]] | None,
        Field(
            default=None,
            max_length=MAX_NODE_SELECTOR_VALUES,
            description="Values for In and NotIn; one integer for Gt and Lt; none for Exists and DoesNotExist.",
        ),
    ]

    @model_validator(mode="after")
    def _values_fit_operator(self) -> NodeSelectorRequirement:
        values = self.values or []
        if self.operator in ("In", "NotIn"):
            _refuse_unless(bool(values), "values must be set when operator is In or NotIn")
        elif self.operator in ("Exists", "DoesNotExist"):
            _refuse_unless(not values, "values must be empty when operator is Exists or DoesNotExist")
        else:
            _refuse_unless(
                len(values) == 1 and re.fullmatch(r"[-+]?[0-9]+", values[0]) is not None,
                "operator Gt or Lt takes exactly one value, an integer",
            )
        return self


class NodeField(StrEnum):
    NAME = "metadata.name"


class NodeFieldOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"


class NodeFieldSelectorRequirement(_Model):
    """A condition on a node field: Kubernetes allows only metadata.name, with In or NotIn and one node name."""

    key: Annotated[NodeField, Field(description="The node field: metadata.name.")]
    operator: Annotated[NodeFieldOperator, Field(description="In or NotIn.")]
    values: Annotated[
        list[Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]],
        Field(min_length=1, max_length=1, description="One node name."),
    ]


class NodeSelectorTerm(_Model):
    """Conditions a node must all meet (Kubernetes NodeSelectorTerm)."""

    matchExpressions: Annotated[
        list[NodeSelectorRequirement] | None,
        Field(default=None, max_length=MAX_NODE_REQUIREMENTS, description="Conditions on node labels."),
    ]
    matchFields: Annotated[
        list[NodeFieldSelectorRequirement] | None,
        Field(default=None, max_length=MAX_FIELD_REQUIREMENTS, description="Conditions on node fields."),
    ]


class NodeSelector(_Model):
    """Nodes that meet any one of the terms (Kubernetes NodeSelector)."""

    nodeSelectorTerms: Annotated[
        list[NodeSelectorTerm],
        Field(min_length=1, max_length=MAX_NODE_SELECTOR_TERMS, description="The terms; one must match."),
    ]


class PreferredSchedulingTerm(_Model):
    """A weighted preference for nodes (Kubernetes PreferredSchedulingTerm)."""

    weight: Annotated[int, Field(ge=1, le=100, description="Weight of the preference, 1-100.")]
    preference: Annotated[NodeSelectorTerm, Field(description="The nodes preferred.")]


class NodeAffinity(_Model):
    """Nodes the serving pods must or should run on (Kubernetes NodeAffinity)."""

    requiredDuringSchedulingIgnoredDuringExecution: Annotated[
        NodeSelector | None, Field(default=None, description="Nodes the pods must run on.")
    ]
    preferredDuringSchedulingIgnoredDuringExecution: Annotated[
        list[PreferredSchedulingTerm] | None,
        Field(default=None, max_length=MAX_PREFERRED_NODE_TERMS, description="Nodes the pods should run on."),
    ]


class LabelSelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(_Model):
    """A condition on a label (Kubernetes LabelSelectorRequirement)."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "!(self.operator in ['In', 'NotIn']) || (has(self.values) && self.values.size() > 0)",
                "values must be set when operator is In or NotIn",
            ),
            (
                "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || self.values.size() == 0",
                "values must be empty when operator is Exists or DoesNotExist",
            ),
        )
    )

    key: Annotated[LabelKey, Field(description="The label.")]
    operator: Annotated[LabelSelectorOperator, Field(description="In, NotIn, Exists or DoesNotExist.")]
    values: Annotated[
        list[LabelValue] | None,
        Field(
            default=None,
            max_length=MAX_SELECTOR_VALUES,
            description="Label values for In and NotIn; none for Exists and DoesNotExist.",
        ),
    ]

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        values = self.values or []
        if self.operator in ("In", "NotIn"):
            _refuse_unless(bool(values), "values must be set when operator is In or NotIn")
        elif self.operator in ("Exists", "DoesNotExist"):
            _refuse_unless(not values, "values must be empty when operator is Exists or DoesNotExist")
        return self


class LabelSelector(_Model):
    """Objects whose labels match (Kubernetes LabelSelector): all of matchLabels and matchExpressions."""

    matchLabels: Annotated[
        dict[str, LabelValue] | None,
        Field(default=None, max_length=MAX_MATCH_LABELS, description="Labels that must have these values."),
    ]
    matchExpressions: Annotated[
        list[LabelSelectorRequirement] | None,
        Field(default=None, max_length=MAX_MATCH_EXPRESSIONS, description="Conditions on labels."),
    ]


class PodAffinityTerm(_Model):
    """Pods near which (or away from which) to run, by topology domain (Kubernetes PodAffinityTerm)."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "has(self.labelSelector) || ((!has(self.matchLabelKeys) || self.matchLabelKeys.size() == 0) && "
                "(!has(self.mismatchLabelKeys) || self.mismatchLabelKeys.size() == 0))",
                "matchLabelKeys and mismatchLabelKeys need a labelSelector",
            ),
        )
    )

    labelSelector: Annotated[LabelSelector | None, Field(default=None, description="The pods. Absent: none.")]
    namespaceSelector: Annotated[
        LabelSelector | None,
        Field(default=None, description="Namespaces of the pods, with namespaces. Empty ({}): every namespace."),
    ]
    namespaces: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL_PATTERN)]] | None,
        Field(
            default=None,
            max_length=MAX_NAMESPACES,
            description="Namespaces of the pods. Neither this nor namespaceSelector: the resource's namespace.",
        ),
    ]
    topologyKey: Annotated[
        LabelKey,
        Field(description="Node label whose value is the domain, e.g. kubernetes.io/hostname or a zone label."),
    ]
    matchLabelKeys: Annotated[
        list[LabelKey] | None,
        Field(
            default=None,
            max_length=MAX_LABEL_KEYS,
            description="Label keys whose values, taken from the incoming pod, are added to labelSelector.",
        ),
    ]
    mismatchLabelKeys: Annotated[
        list[LabelKey] | None,
        Field(
            default=None,
            max_length=MAX_LABEL_KEYS,
            description="Label keys whose values, taken from the incoming pod, must differ (added to labelSelector).",
        ),
    ]

    @model_validator(mode="after")
    def _keys_need_selector(self) -> PodAffinityTerm:
        _refuse_unless(
            self.labelSelector is not None or not (self.matchLabelKeys or self.mismatchLabelKeys),
            "matchLabelKeys and mismatchLabelKeys need a labelSelector",
        )
        return self


class WeightedPodAffinityTerm(_Model):
    """A weighted preference (Kubernetes WeightedPodAffinityTerm)."""

    weight: Annotated[int, Field(ge=1, le=100, description="Weight of the preference, 1-100.")]
    podAffinityTerm: Annotated[PodAffinityTerm, Field(description="The pods and the topology.")]


class PodAffinity(_Model):
    """Pods to run near, or away from (Kubernetes PodAffinity and PodAntiAffinity have this shape)."""

    requiredDuringSchedulingIgnoredDuringExecution: Annotated[
        list[PodAffinityTerm] | None,
        Field(default=None, max_length=MAX_POD_AFFINITY_TERMS, description="Terms every pod must meet."),
    ]
    preferredDuringSchedulingIgnoredDuringExecution: Annotated[
        list[WeightedPodAffinityTerm] | None,
        Field(default=None, max_length=MAX_POD_AFFINITY_TERMS, description="Terms pods should meet, by weight."),
    ]


class Affinity(_Model):
    """Scheduling constraints of the serving pods (Kubernetes Affinity)."""

    nodeAffinity: Annotated[NodeAffinity | None, Field(default=None, description="Nodes to run on.")]
    podAffinity: Annotated[
        PodAffinity | None, Field(default=None, description="Pods to run near (in the same topology domain).")
    ]
    podAntiAffinity: Annotated[
        PodAffinity | None, Field(default=None, description="Pods to run away from (not in the same domain).")
    ]


# The model cache's emptyDir: whole bytes with one suffix at most, so the builder can write it in the canonical form
# the API server returns (no re-apply every pass).
CACHE_SIZE_PATTERN = r"^[1-9][0-9]{0,15}([KMGTPE]i|[kMGTPE])?$"
DEFAULT_CACHE_SIZE_LIMIT = "4Gi"


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
    cacheSizeLimit: Annotated[
        str,
        Field(
            default=DEFAULT_CACHE_SIZE_LIMIT,
            max_length=24,
            pattern=CACHE_SIZE_PATTERN,
            description=(
                "sizeLimit of the pods' writable emptyDir (/tmp), which holds the downloaded artifact: a whole "
                "number of bytes with an optional suffix (Ki, Mi, Gi, Ti, or k, M, G, T), e.g. 4Gi. The runtime "
                "refuses a download larger than this less 64Mi of room for its own files (MODEL_MAX_BYTES, unless "
                "spec.runtime.env sets it). Artifacts on a volume (pvc://, file://) are read in place and need none "
                "of it."
            ),
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
        dict[str, LabelValue] | None,
        Field(
            default=None,
            max_length=MAX_NODE_SELECTOR,
            description="Node labels the serving pods must match (Kubernetes nodeSelector), e.g. a GPU node pool.",
        ),
    ]
    tolerations: Annotated[
        list[Toleration] | None,
        Field(
            default=None,
            max_length=MAX_TOLERATIONS,
            description="Taints the serving pods tolerate (Kubernetes Toleration list).",
        ),
    ]
    affinity: Annotated[
        Affinity | None,
        Field(default=None, description="Scheduling constraints of the serving pods (Kubernetes Affinity)."),
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
            max_length=7,
            pattern=DURATION_PATTERN,
            description="How long to wait, e.g. 30s, 5m or 1h (a bare number is seconds). Absent: wait for promote.",
        ),
    ]


class Mirror(_Model):
    """Shadow traffic: the canary gets a copy of every request and answers nobody. No settings yet; an object so
    that settings can come without changing the step's shape."""


class CanaryStep(_Model):
    """One step of a canary rollout: exactly one of setWeight, setMirror or pause."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "[has(self.setWeight), has(self.pause), has(self.setMirror)].filter(set, set).size() == 1",
                "each spec.rollout.steps entry must set exactly one of setWeight, setMirror or pause",
            ),
        )
    )

    setWeight: Annotated[
        int | None,
        Field(default=None, ge=0, le=100, description="Percent of the traffic the new revision should take (0-100)."),
    ]
    setMirror: Annotated[
        Mirror | None,
        Field(
            default=None,
            description=(
                "Send the canary a copy of every request from here until the next setWeight step; its answers are "
                "dropped, users get the stable revision's. Analysis runs on the mirrored traffic, so the canary is "
                "judged on the very requests the stable serves before anyone sees its answers. The canary runs "
                "spec.replicas pods meanwhile (it takes the whole load). Needs spec.trafficRouting."
            ),
        ),
    ]
    pause: Annotated[Pause | None, Field(default=None, description="Wait before the next step.")]

    @model_validator(mode="after")
    def _one_kind(self) -> CanaryStep:
        kinds = (self.setWeight, self.setMirror, self.pause)
        _refuse_unless(
            sum(kind is not None for kind in kinds) == 1,
            "each spec.rollout.steps entry must set exactly one of setWeight, setMirror or pause",
        )
        return self


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
            max_length=7,
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
            max_length=7,
            pattern=DURATION_PATTERN,
            description="Extra wait before the first measurement, e.g. for a model that warms up.",
        ),
    ]
    window: Annotated[
        str | None,
        Field(
            default=None,
            max_length=7,
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
                "tolerated; one more pauses the rollout until it is promoted (measuring goes on) or aborted. No "
                "data in the warm-up (initialDelay + window + 10s from the canary's first traffic, while its "
                "series cannot fill the window yet) is not counted."
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


MAX_SMOKE_CASES = 20
MAX_SMOKE_ROWS = 16
MAX_SMOKE_VALUES = 256
"""Features per input row, and outputs per expected row."""
MAX_CONFIGMAP_SMOKE_CASES = 100
MAX_CONFIGMAP_SMOKE_VALUES = 65536
MAX_SMOKE_ROUND_SECONDS = 120
"""cases x timeoutSeconds: how long one pod's round may take at worst (pods are asked side by side)."""
MAX_SMOKE_TOTAL_VALUES = 8192
"""Numbers over all cases, inputs and expected outputs: a smoke test is a few requests, not a dataset, and it lives
in the resource (8,192 numbers take some 200 KB of the object's 1.5 MiB at most)."""
SMOKE_BOUND = 1e15
"""Inputs, expected outputs and tolerances are finite and below this in magnitude: CRD numbers admit no NaN or
infinity, and a bound keeps the comparisons' arithmetic exact enough."""


class CompareTo(StrEnum):
    EXPECTED = "Expected"
    STABLE = "Stable"


class SmokeTolerance(_Model):
    """How far an output may be from the one it is compared with: |actual - reference| <= absolute + relative *
    |reference|, for every output value."""

    absolute: Annotated[
        float,
        Field(default=1e-6, ge=0, le=SMOKE_BOUND, description="Allowed difference, in the output's units."),
    ]
    relative: Annotated[
        float,
        Field(default=1e-6, ge=0, le=1, description="Allowed difference, as a fraction of the reference value."),
    ]


_SMOKE_ROW = Annotated[
    list[Annotated[float, Field(ge=-SMOKE_BOUND, le=SMOKE_BOUND)]],
    Field(min_length=1, max_length=MAX_SMOKE_VALUES),
]


class SmokeTestCase(_Model):
    """One request sent to every canary pod before it takes traffic, and what its answer must be."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "self.input.all(r, size(r) == size(self.input[0]))",
                "spec.rollout.smokeTest.cases[].input: every row must have the same number of features",
            ),
            (
                "!has(self.expected) || self.expected.all(r, size(r) == size(self.expected[0]))",
                "spec.rollout.smokeTest.cases[].expected: every row must have the same number of outputs",
            ),
        )
    )

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description="Names the case in status and Events, e.g. typical-fraud.",
        ),
    ]
    input: Annotated[
        list[_SMOKE_ROW],
        Field(
            min_length=1,
            max_length=MAX_SMOKE_ROWS,
            description=(
                f"Rows of numeric features (1-{MAX_SMOKE_ROWS} rows of 1-{MAX_SMOKE_VALUES}), sent as the "
                "runtime's protocol asks: data.ndarray (seldon) or one FP64 input tensor (v2)."
            ),
        ),
    ]
    expected: Annotated[
        list[_SMOKE_ROW] | None,
        Field(
            default=None,
            min_length=1,
            max_length=MAX_SMOKE_ROWS,
            description=(
                "The outputs the model must answer, row by row, within the tolerance. Required with compareTo "
                "Expected, refused with Stable."
            ),
        ),
    ]

    @model_validator(mode="after")
    def _rectangular(self) -> SmokeTestCase:
        _refuse_unless(
            all(len(row) == len(self.input[0]) for row in self.input),
            "spec.rollout.smokeTest.cases[].input: every row must have the same number of features",
        )
        _refuse_unless(
            self.expected is None or all(len(row) == len(self.expected[0]) for row in self.expected),
            "spec.rollout.smokeTest.cases[].expected: every row must have the same number of outputs",
        )
        return self

    @property
    def values(self) -> int:
        """Numbers the case holds, input and expected: what admission bounds in all (MAX_SMOKE_TOTAL_VALUES)."""
        expected = len(self.expected) * len(self.expected[0]) if self.expected else 0
        return len(self.input) * len(self.input[0]) + expected


class SmokeCasesConfigMap(ConfigMapKey):
    """A key of a ConfigMap in the resource's namespace holding smoke cases as JSON: a list of objects of the shape
    of spec.rollout.smokeTest.cases[] (name, input, expected)."""


class SmokeTestSpec(_Model):
    """Requests sent to each canary pod directly before it takes any traffic, mirrored or not."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "(size(self.cases) > 0) != has(self.casesFrom)",
                "spec.rollout.smokeTest: give cases, or casesFrom, exactly one of the two",
            ),
            (
                "self.cases.all(c, self.cases.exists_one(d, d.name == c.name))",
                "spec.rollout.smokeTest.cases names must be unique",
            ),
            (
                "self.cases.map(c, size(c.input) * size(c.input[0]) + "
                f"(has(c.expected) ? size(c.expected) * size(c.expected[0]) : 0)).sum() <= {MAX_SMOKE_TOTAL_VALUES}",
                f"spec.rollout.smokeTest.cases: at most {MAX_SMOKE_TOTAL_VALUES} values (inputs and expected) in all",
            ),
            (
                f"size(self.cases) * self.timeoutSeconds <= {MAX_SMOKE_ROUND_SECONDS}",
                f"spec.rollout.smokeTest: cases x timeoutSeconds must be at most {MAX_SMOKE_ROUND_SECONDS} "
                "(the longest a pod's round may take)",
            ),
            (
                "self.compareTo != 'Expected' || self.cases.all(c, has(c.expected))",
                "spec.rollout.smokeTest.cases: every case needs expected when compareTo is Expected",
            ),
            (
                "self.compareTo != 'Stable' || self.cases.all(c, !has(c.expected))",
                "spec.rollout.smokeTest.cases: expected applies to compareTo Expected only; with Stable the "
                "stable revision's answer is the reference",
            ),
        )
    )

    cases: Annotated[
        list[SmokeTestCase],
        Field(
            default_factory=list,
            max_length=MAX_SMOKE_CASES,
            description=f"The requests (1-{MAX_SMOKE_CASES}), unless casesFrom names them.",
        ),
    ]
    casesFrom: Annotated[
        SmokeCasesConfigMap | None,
        Field(
            default=None,
            description=(
                "Read the cases from a ConfigMap instead, for sets too large for the resource (up to "
                f"{MAX_CONFIGMAP_SMOKE_CASES} cases and {MAX_CONFIGMAP_SMOKE_VALUES} values). They are read when "
                "the round runs and judged by the same rules; a ConfigMap that is missing or malformed fails the "
                "round, with the reason in the message."
            ),
        ),
    ]
    compareTo: Annotated[
        CompareTo,
        Field(
            default=CompareTo.EXPECTED,
            description=(
                "Expected: each answer is compared with its case's expected rows. Stable: with the stable "
                "revision's answer to the same input, asked of one of its pods in the same round."
            ),
        ),
    ]
    tolerance: Annotated[
        SmokeTolerance, Field(default_factory=SmokeTolerance, description="How close an output must be.")
    ]
    timeoutSeconds: Annotated[
        int,
        Field(
            default=5,
            ge=1,
            le=30,
            description=("Time each request has, connecting included; a pod that takes longer fails the smoke test."),
        ),
    ]

    @model_validator(mode="after")
    def _references(self) -> SmokeTestSpec:
        _refuse_unless(
            bool(self.cases) != (self.casesFrom is not None),
            "spec.rollout.smokeTest: give cases, or casesFrom, exactly one of the two",
        )
        names = [case.name for case in self.cases]
        _refuse_unless(len(names) == len(set(names)), "spec.rollout.smokeTest.cases names must be unique")
        _refuse_unless(
            sum(case.values for case in self.cases) <= MAX_SMOKE_TOTAL_VALUES,
            f"spec.rollout.smokeTest.cases: at most {MAX_SMOKE_TOTAL_VALUES} values (inputs and expected) in all",
        )
        _refuse_unless(
            len(self.cases) * self.timeoutSeconds <= MAX_SMOKE_ROUND_SECONDS,
            f"spec.rollout.smokeTest: cases x timeoutSeconds must be at most {MAX_SMOKE_ROUND_SECONDS} "
            "(the longest a pod's round may take)",
        )
        if self.compareTo == CompareTo.EXPECTED:
            _refuse_unless(
                all(case.expected is not None for case in self.cases),
                "spec.rollout.smokeTest.cases: every case needs expected when compareTo is Expected",
            )
        else:
            _refuse_unless(
                all(case.expected is None for case in self.cases),
                "spec.rollout.smokeTest.cases: expected applies to compareTo Expected only; with Stable the "
                "stable revision's answer is the reference",
            )
        return self


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
    smokeTest: Annotated[
        SmokeTestSpec | None,
        Field(
            default=None,
            description=(
                "Before the canary takes any traffic (mirrored traffic included), send each of its Ready pods "
                "these requests directly and judge the answers: well-formed, in time, and within the tolerance "
                "of the expected outputs or of the stable revision's. One failure rolls the canary back at once "
                "(reason SmokeTestFailed, naming the case, the pod, the reference and the answer)."
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
            description=(
                "Port of the Service <name>, and of <name>-stable and <name>-canary (while a rollout is in progress, "
                "or always with spec.trafficRouting)."
            ),
        ),
    ]


PERCENT_PATTERN = r"^(100|[1-9]?[0-9])%$"
_COUNT_OR_PERCENT_SCHEMA = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "minimum": 0,
    "maxLength": len("100%"),
    "pattern": PERCENT_PATTERN,
}


def _count_or_percent(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise ValueError("a count (0 or more) or a percentage such as '25%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if not re.fullmatch(PERCENT_PATTERN, value):
        raise ValueError(f"{value!r} is neither a count nor a percentage from 0% to 100%")
    return value


CountOrPercent = Annotated[
    int | str, AfterValidator(_count_or_percent), Field(json_schema_extra=_COUNT_OR_PERCENT_SCHEMA)
]
DISRUPTION_BUDGET_ONE_BOUND = (
    "spec.disruptionBudget: give maxUnavailable or minAvailable, not both (a PodDisruptionBudget takes one)"
)
DEFAULT_MAX_UNAVAILABLE = 1


class DisruptionBudget(_Model):
    """How many of the resource's serving pods, across every revision, a voluntary disruption (a node drain, an
    eviction) may take at once. The operator owns a PodDisruptionBudget `<name>` that says so."""

    model_config = ConfigDict(
        json_schema_extra=_rules(("!has(self.maxUnavailable) || !has(self.minAvailable)", DISRUPTION_BUDGET_ONE_BOUND))
    )

    enabled: Annotated[
        bool,
        Field(
            default=True,
            description="false: no PodDisruptionBudget at all (the operator deletes its own if there is one).",
        ),
    ]
    maxUnavailable: Annotated[
        CountOrPercent | None,
        Field(
            default=None,
            description=(
                "Pods that may be unavailable at once, a count or a percentage of the pods asked for. Default 1 "
                "when neither bound is given."
            ),
        ),
    ]
    minAvailable: Annotated[
        CountOrPercent | None,
        Field(default=None, description="Pods that must stay available, a count or a percentage."),
    ]

    @model_validator(mode="after")
    def _one_bound(self) -> DisruptionBudget:
        _refuse_unless(self.maxUnavailable is None or self.minAvailable is None, DISRUPTION_BUDGET_ONE_BOUND)
        return self


AUTOSCALING_BOUNDS = "spec.autoscaling: minReplicas must be at most maxReplicas"
AUTOSCALING_NEEDS_CPU_REQUEST = (
    "spec.autoscaling: a CPU utilisation target (the default when no target is given) needs "
    "spec.runtime.resources.requests.cpu: utilisation is measured against the request"
)
AUTOSCALING_NEEDS_MEMORY_REQUEST = (
    "spec.autoscaling: targetMemoryUtilizationPercentage needs spec.runtime.resources.requests.memory: utilisation "
    "is measured against the request"
)
DEFAULT_CPU_UTILIZATION = 80


class Autoscaling(_Model):
    """A HorizontalPodAutoscaler the operator creates and owns, scaling this resource through its scale subresource:
    it sets spec.replicas between minReplicas and maxReplicas, and a canary's pods count with the stable's."""

    model_config = ConfigDict(json_schema_extra=_rules(("self.minReplicas <= self.maxReplicas", AUTOSCALING_BOUNDS)))

    minReplicas: Annotated[int, Field(default=1, ge=1, le=1000, description="Fewest serving pods (1-1000, default 1).")]
    maxReplicas: Annotated[int, Field(ge=1, le=1000, description="Most serving pods (1-1000).")]
    targetCPUUtilizationPercentage: Annotated[
        int | None,
        Field(
            default=None,
            ge=1,
            le=1000,
            description=(
                "Average CPU use of the pods, as a percentage of their CPU request, to keep them at. Default 80 "
                "when no target is given."
            ),
        ),
    ]
    targetMemoryUtilizationPercentage: Annotated[
        int | None,
        Field(
            default=None,
            ge=1,
            le=1000,
            description="Average memory use of the pods, as a percentage of their memory request, to keep them at.",
        ),
    ]

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        _refuse_unless(self.minReplicas <= self.maxReplicas, AUTOSCALING_BOUNDS)
        return self

    def cpu_target(self) -> int | None:
        """The CPU target in force: the one given, or the default when no target at all is given."""
        if self.targetCPUUtilizationPercentage is None and self.targetMemoryUtilizationPercentage is None:
            return DEFAULT_CPU_UTILIZATION
        return self.targetCPUUtilizationPercentage

    def clamp(self, replicas: int) -> int:
        return max(self.minReplicas, min(self.maxReplicas, replicas))


HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME_LENGTH = 253
HTTP_PATH_LENGTH = 1024
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
HEADER_NAME_LENGTH = 256
HEADER_VALUE_LENGTH = 4096
MAX_PARENTS = 8
MAX_HOSTNAMES = 16
MAX_HEADER_MATCHES = 16


class PathMatchType(StrEnum):
    PATH_PREFIX = "PathPrefix"
    EXACT = "Exact"


class PathMatch(_Model):
    """Which request paths the route takes."""

    type: Annotated[
        PathMatchType,
        Field(default=PathMatchType.PATH_PREFIX, description="PathPrefix (by path segments) or Exact."),
    ]
    value: Annotated[
        str,
        Field(
            default="/",
            min_length=1,
            max_length=HTTP_PATH_LENGTH,
            pattern=r"^/[^?#\s]*$",
            description="An absolute path, without query or fragment. Default: / (every path).",
        ),
    ]


class HeaderMatch(_Model):
    """A request header that must have exactly this value."""

    name: Annotated[
        str, Field(min_length=1, max_length=HEADER_NAME_LENGTH, pattern=HEADER_NAME_PATTERN, description="Name.")
    ]
    value: Annotated[str, Field(max_length=HEADER_VALUE_LENGTH, description="Exact value.")]


class ParentReference(_Model):
    """A Gateway the route attaches to."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=DNS_SUBDOMAIN_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN, description="Its name."),
    ]
    namespace: Annotated[
        str | None,
        Field(
            default=None,
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description="Its namespace. Absent: the resource's own (the Gateway must allow routes from it).",
        ),
    ]
    sectionName: Annotated[
        str | None,
        Field(
            default=None,
            max_length=DNS_SUBDOMAIN_LENGTH,
            pattern=DNS_SUBDOMAIN_PATTERN,
            description="One listener of the Gateway, by name. Absent: every listener that accepts the route.",
        ),
    ]


class GatewayAPIRouting(_Model):
    """An HTTPRoute (gateway.networking.k8s.io/v1) named like the resource, owned by it: its backends are the
    Services <name>-stable and <name>-canary, weighted by the rollout; a mirror step adds a RequestMirror filter."""

    parentRefs: Annotated[
        list[ParentReference],
        Field(min_length=1, max_length=MAX_PARENTS, description="The Gateways the route attaches to (1-8)."),
    ]
    hostnames: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=HOSTNAME_LENGTH, pattern=HOSTNAME_PATTERN)]],
        Field(
            default_factory=list,
            max_length=MAX_HOSTNAMES,
            description="Host names the route answers for (at most 16). Empty: every host the listeners accept.",
        ),
    ]
    path: Annotated[
        PathMatch, Field(default_factory=PathMatch, description="Which paths the route takes. Default: all.")
    ]
    headers: Annotated[
        list[HeaderMatch],
        Field(
            default_factory=list,
            max_length=MAX_HEADER_MATCHES,
            description="Headers a request must carry, all of them (at most 16).",
        ),
    ]


class IstioRouting(_Model):
    """A VirtualService (networking.istio.io/v1) named like the resource, owned by it: its destinations are the
    Services <name>-stable and <name>-canary, weighted by the rollout; a mirror step adds a 100 % mirror."""

    hosts: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=HOSTNAME_LENGTH, pattern=HOSTNAME_PATTERN)]],
        Field(
            default_factory=list,
            max_length=MAX_HOSTNAMES,
            description=("Hosts the VirtualService routes (at most 16). Empty: the Service <name> inside the mesh."),
        ),
    ]
    gateways: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=DNS_SUBDOMAIN_LENGTH + 64, pattern=r"^[a-z0-9./-]+$")]],
        Field(
            default_factory=list,
            max_length=MAX_PARENTS,
            description="Istio Gateways (namespace/name) and/or mesh. Empty: the mesh only.",
        ),
    ]
    path: Annotated[
        PathMatch, Field(default_factory=PathMatch, description="Which paths the route takes. Default: all.")
    ]


class TrafficRouting(_Model):
    """Where the traffic split is made: exactly one router."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "has(self.gatewayAPI) != has(self.istio)",
                "spec.trafficRouting must set exactly one of gatewayAPI or istio",
            ),
        )
    )

    gatewayAPI: Annotated[
        GatewayAPIRouting | None,
        Field(default=None, description="Kubernetes Gateway API: an HTTPRoute owned by the resource."),
    ]
    istio: Annotated[
        IstioRouting | None,
        Field(default=None, description="Istio: a VirtualService owned by the resource."),
    ]

    @model_validator(mode="after")
    def _one_router(self) -> TrafficRouting:
        _refuse_unless(
            (self.gatewayAPI is None) != (self.istio is None),
            "spec.trafficRouting must set exactly one of gatewayAPI or istio",
        )
        return self


MIRROR_NEEDS_ROUTER = (
    "spec.rollout.steps: setMirror needs spec.trafficRouting (gatewayAPI or istio): without a gateway or a mesh "
    "every request reaching a canary pod is answered by it, so it cannot see copies of traffic it does not answer"
)


class ModelDeploymentSpec(_Model):
    """Desired state of a ModelDeployment. The operator never writes it."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "has(self.trafficRouting) || !has(self.rollout) || !has(self.rollout.steps) || "
                "!self.rollout.steps.exists(step, has(step.setMirror))",
                MIRROR_NEEDS_ROUTER,
            ),
            (
                "!has(self.autoscaling) || (has(self.autoscaling.targetMemoryUtilizationPercentage) && "
                "!has(self.autoscaling.targetCPUUtilizationPercentage)) || (has(self.runtime) && "
                "has(self.runtime.resources) && has(self.runtime.resources.requests) && "
                "'cpu' in self.runtime.resources.requests)",
                AUTOSCALING_NEEDS_CPU_REQUEST,
            ),
            (
                "!has(self.autoscaling) || !has(self.autoscaling.targetMemoryUtilizationPercentage) || "
                "(has(self.runtime) && has(self.runtime.resources) && has(self.runtime.resources.requests) && "
                "'memory' in self.runtime.resources.requests)",
                AUTOSCALING_NEEDS_MEMORY_REQUEST,
            ),
        )
    )

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
    autoscaling: Annotated[
        Autoscaling | None,
        Field(
            default=None,
            description=(
                "A HorizontalPodAutoscaler owned by the operator, scaling this resource (spec.replicas, through the "
                "scale subresource) between its bounds. Leave spec.replicas out of git then: the autoscaler sets it. "
                "Absent: no autoscaler of the operator's (one of your own may still target the scale subresource)."
            ),
        ),
    ]
    disruptionBudget: Annotated[
        DisruptionBudget | None,
        Field(
            default=None,
            description=(
                "The PodDisruptionBudget `<name>` over the serving pods of every revision. Absent: maxUnavailable 1 "
                "whenever more than one pod is asked for, none otherwise."
            ),
        ),
    ]
    trafficRouting: Annotated[
        TrafficRouting | None,
        Field(
            default=None,
            description=(
                "Split traffic at a gateway or a mesh, by exact weights, instead of by the ratio of ready pods. "
                "The operator creates and owns the route object (an HTTPRoute or a VirtualService named like the "
                "resource), so git holds only this resource and the weights it sets are never drift. Absent: "
                "traffic follows the ready pods behind the Service <name>."
            ),
        ),
    ]

    @model_validator(mode="after")
    def _mirror_needs_router(self) -> ModelDeploymentSpec:
        mirrors = any(step.setMirror is not None for step in self.rollout.steps)
        _refuse_unless(self.trafficRouting is not None or not mirrors, MIRROR_NEEDS_ROUTER)
        return self

    @model_validator(mode="after")
    def _autoscaling_needs_requests(self) -> ModelDeploymentSpec:
        if self.autoscaling is not None:
            requests = self.runtime.resources.requests or {}
            _refuse_unless(self.autoscaling.cpu_target() is None or "cpu" in requests, AUTOSCALING_NEEDS_CPU_REQUEST)
            _refuse_unless(
                self.autoscaling.targetMemoryUtilizationPercentage is None or "memory" in requests,
                AUTOSCALING_NEEDS_MEMORY_REQUEST,
            )
        return self

    def serving_replicas(self) -> int:
        """The pods to serve: spec.replicas, kept within the autoscaler's bounds (before it first acts, say). Zero
        stays zero: scaled to zero by hand, a resource is off, and a HorizontalPodAutoscaler leaves it so too."""
        if self.autoscaling is None or self.replicas == 0:
            return self.replicas
        return self.autoscaling.clamp(self.replicas)


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
    actualWeight: Annotated[
        int,
        Field(
            description=(
                "Percent of the traffic this revision gets now: its share of the ready serving pods, or with "
                "spec.trafficRouting the weight its route holds once the gateway or mesh accepted it."
            )
        ),
    ] = 0


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


class SmokeTestPhase(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"


class SmokeTestStatus(_Status):
    """The smoke test of the canary (spec.rollout.smokeTest), run once its first pods are Ready."""

    phase: Annotated[str, Field(description="Passed (the canary may take traffic) or Failed (rolled back).")]
    requests: Annotated[int, Field(description="Requests judged: cases x pods asked.")] = 0
    failures: Annotated[int, Field(description="Requests whose answer failed its case.")] = 0
    pods: Annotated[list[str], Field(description="The canary pods asked.")] = []
    lastFailure: Annotated[str, Field(description="The case, its input, the pod and what was wrong.")] = ""
    time: Annotated[str, Field(description="When the round was judged (RFC 3339).")]


class CanaryStatus(TrackStatus, TrackWeights):
    """The revision being rolled out, and the share of traffic it has."""

    fastTrack: Annotated[
        bool, Field(description="A return to a recent revision, rolled out at once without steps.")
    ] = False
    smokeTest: Annotated[
        SmokeTestStatus | None,
        Field(description="The smoke test's verdict; until it has Passed, the canary takes no traffic."),
    ] = None


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
    counted: Annotated[
        bool,
        Field(
            description=(
                "Whether it counts toward the limits: false for no data during the analysis's warm-up, when the "
                "canary's series cannot fill the window yet."
            )
        ),
    ] = True


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


class ArtifactStatus(_Status):
    """Whether the artifact of the spec's revision is pinned by a digest."""

    revision: Annotated[str, Field(description="The revision of the spec this describes.")]
    version: Annotated[str, Field(description="Its spec.model.version.")] = ""
    verified: Annotated[
        bool,
        Field(description="spec.model.sha256 is set: the runtime serves only the artifact with that digest."),
    ] = False
    reason: Annotated[str, Field(description="Verified, Unverified or UnverifiedArtifact (code runs on load).")] = ""
    message: Annotated[str, Field(description="What that means, for a person.")] = ""


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
    artifact: Annotated[
        ArtifactStatus | None,
        Field(description="Whether the spec's artifact is pinned by spec.model.sha256; see UnverifiedArtifact."),
    ] = None
    url: Annotated[str, Field(description="In-cluster address of the model's Service.")] = ""
    replicas: Annotated[
        int,
        Field(
            description=(
                "Pods asked for across every revision: the scale subresource's current count, which a "
                "HorizontalPodAutoscaler scales from (mid-canary it includes the canary's pods)."
            )
        ),
    ] = 0
    selector: Annotated[
        str, Field(description="Label selector over the pods of every revision, for the scale subresource.")
    ] = ""
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
