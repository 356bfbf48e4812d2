"""Pure builders: a ModelDeployment's spec -> the manifests of its children. No I/O here.

Every child is named deterministically from the resource's name and a revision: a short hash of everything that
defines the serving pods, so the same spec always yields the same revision and the same names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modeldeploy.api import models as api
from modeldeploy.api.quantity import parse_quantity
from modeldeploy.config import OperatorConfig

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_REVISION = f"{api.GROUP}/revision"
ANNOTATION_SPEC_HASH = f"{api.GROUP}/applied-hash"

MANAGED_BY = "modeldeploy"
COMPONENT = "model-server"
CONTAINER_NAME = "model-server"
PVC_MOUNT_ROOT = "/mnt/models"
# The runtime's download limit and header variables (runtime/README.md).
ENV_MAX_BYTES = "MODEL_MAX_BYTES"
# The runtime's graceful shutdown (docs/shutdown.md): serving after SIGTERM, and the bound on all of its shutdown.
ENV_DRAIN_SECONDS = "MODEL_DRAIN_SECONDS"
ENV_SHUTDOWN_TIMEOUT = "MODEL_SHUTDOWN_TIMEOUT_SECONDS"
HTTP_HEADER_ENV_PREFIX = api.HTTP_HEADER_ENV_PREFIX
# Room left in the cache volume for what the runtime writes beside the artifact (its metrics files).
CACHE_HEADROOM_BYTES = 64 * 1024**2
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_SUFFIXES = ("", "k", "M", "G", "T", "P", "E")

Manifest = dict[str, Any]


def model_name(resource: api.ModelDeployment) -> str:
    return resource.spec.model.name or str(resource.metadata["name"])


def resource_name(resource: api.ModelDeployment) -> str:
    return str(resource.metadata["name"])


def selector_labels(resource: api.ModelDeployment) -> dict[str, str]:
    """Labels every serving pod of the resource carries, whatever its revision."""
    return {LABEL_INSTANCE: resource_name(resource), LABEL_COMPONENT: COMPONENT}


def common_labels(resource: api.ModelDeployment) -> dict[str, str]:
    return {
        LABEL_NAME: model_name(resource),
        **selector_labels(resource),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: MANAGED_BY,
    }


def owner_reference(resource: api.ModelDeployment) -> dict[str, Any]:
    # Garbage collection deletes the children with the resource, with no finalizer to block deletion.
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": resource_name(resource),
        "uid": resource.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def runtime_image(resource: api.ModelDeployment, config: OperatorConfig) -> str:
    return resource.spec.runtime.image or config.runtime_images[str(resource.spec.model.format)]


def size_bytes(quantity: str) -> int:
    """Bytes of a cacheSizeLimit (a whole number with one suffix at most, api.CACHE_SIZE_PATTERN)."""
    return int(parse_quantity(quantity))


def canonical_size(quantity: str) -> str:
    """The form the API server stores a quantity in, so that what we read back compares equal: binary amounts
    with the largest binary suffix that keeps a whole number, decimal ones likewise (4096Mi is 4Gi, 5000M is 5G)."""
    amount = size_bytes(quantity)
    binary = quantity.endswith("i")
    base, suffixes = (1024, _BINARY_SUFFIXES) if binary else (1000, _DECIMAL_SUFFIXES)
    power = 0
    while amount % base == 0 and power < len(suffixes) - 1:
        amount //= base
        power += 1
    return f"{amount}{suffixes[power]}"


def max_download_bytes(cache_size_limit: str) -> int:
    """MODEL_MAX_BYTES for a cache volume of that size: all of it but some room for the runtime's other files."""
    limit = size_bytes(cache_size_limit)
    return max(limit - min(CACHE_HEADROOM_BYTES, limit // 2), 1)


def _probe_paths(protocol: str) -> tuple[str, str]:
    """(readiness path, liveness path) of the protocol's health endpoints."""
    if protocol == api.Protocol.V2:
        return "/v2/health/ready", "/v2/health/live"
    return "/health/status", "/health/ping"


def _pvc_claim(uri: str) -> str | None:
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def build_pod_template(resource: api.ModelDeployment, config: OperatorConfig) -> Manifest:
    """The serving pod, without revision labels (the revision is computed from this)."""
    spec = resource.spec
    runtime = spec.runtime
    readiness_path, liveness_path = _probe_paths(str(runtime.protocol))
    env: list[dict[str, Any]] = [
        {"name": "MODEL_NAME", "value": model_name(resource)},
        {"name": "MODEL_VERSION", "value": spec.model.version},
        {"name": "MODEL_URI", "value": spec.model.uri},
        {"name": "MODEL_FORMAT", "value": str(spec.model.format)},
        {"name": "MODEL_SHA256", "value": spec.model.sha256},
        {"name": "PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "value": str(runtime.port)},
        {"name": "PREDICTIVE_UNIT_METRICS_SERVICE_PORT", "value": str(runtime.metricsPort)},
    ]
    user_env = {var.name for var in runtime.env}
    if ENV_MAX_BYTES not in user_env:
        # The download limit follows the volume it lands on, unless the user chose one.
        env.append({"name": ENV_MAX_BYTES, "value": str(max_download_bytes(runtime.cacheSizeLimit))})
    # The shutdown follows the operator's settings, unless the user chose otherwise for this model.
    shutdown_env = {
        ENV_DRAIN_SECONDS: config.drain_seconds,
        ENV_SHUTDOWN_TIMEOUT: config.runtime_shutdown_timeout_seconds,
    }
    env.extend({"name": name, "value": str(value)} for name, value in shutdown_env.items() if name not in user_env)
    env.extend(var.model_dump(exclude_none=True) for var in runtime.env)
    # The API server drops empty values; leaving them out keeps what we build equal to what we read back.
    for var in env:
        if var.get("value") == "":
            del var["value"]
    # Quantities as strings, the form the API server returns them in, so that what we read back compares equal.
    resources = {
        kind: {name: str(quantity) for name, quantity in amounts.items()}
        for kind, amounts in runtime.resources.model_dump(exclude_none=True).items()
    }
    volume_mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    # A sizeLimit, so that a model (or anything else) filling /tmp evicts its own pod, not the node's other pods.
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": canonical_size(runtime.cacheSizeLimit)}}]
    claim = _pvc_claim(spec.model.uri)
    if claim:
        volume_mounts.append({"name": "model-store", "mountPath": f"{PVC_MOUNT_ROOT}/{claim}", "readOnly": True})
        volumes.append({"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})

    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": runtime_image(resource, config),
        "args": list(runtime.args),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": runtime.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": runtime.metricsPort, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": readiness_path, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Loading a large model can take minutes; the server answers liveness while it loads.
        "livenessProbe": {
            "httpGet": {"path": liveness_path, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "resources": resources,
        "volumeMounts": volume_mounts,
        # Header credentials by reference: the Deployment names the Secret, the kubelet fills the values in.
        **(
            {"envFrom": [{"prefix": HTTP_HEADER_ENV_PREFIX, "secretRef": {"name": spec.model.httpHeadersSecret}}]}
            if spec.model.httpHeadersSecret
            else {}
        ),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    if not container["args"]:
        del container["args"]
    if config.prestop_delay_seconds > 0:
        # A pod being deleted leaves the Service's endpoints at once, but every kube-proxy, ingress controller and
        # mesh learns it a moment later: until then the pod serves as usual, and only then gets SIGTERM. The
        # kubelet's own sleep (on by default since Kubernetes 1.30) needs nothing in the image.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": config.prestop_delay_seconds}}}
    template: Manifest = {
        "metadata": {"labels": {**common_labels(resource), LABEL_VERSION: spec.model.version}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # Covers the preStop delay, the runtime's drain and its requests in flight (config.py checks the sum).
            "terminationGracePeriodSeconds": config.termination_grace_period_seconds,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        },
    }
    # Scheduling constraints belong to the pods: a change moves them, so it makes a new revision.
    # Dumped without the fields left unset, so the pods (and the revision hash) hold exactly what the user wrote.
    scheduling = {
        "nodeSelector": runtime.nodeSelector,
        "tolerations": [toleration.model_dump(exclude_none=True) for toleration in runtime.tolerations or ()],
        "affinity": runtime.affinity.model_dump(exclude_none=True) if runtime.affinity else None,
    }
    template["spec"].update({key: value for key, value in scheduling.items() if value})
    return template


def hash_manifest(manifest: Manifest, length: int = api.REVISION_LENGTH) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    # Base-16 keeps revisions valid in names and labels; the first character is forced to a letter so that a
    # revision never parses as a number in YAML.
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return "r" + digest[: length - 1]


def revision_of(resource: api.ModelDeployment, config: OperatorConfig) -> str:
    """Short stable hash of everything that defines the serving pods (not the replica count)."""
    return hash_manifest(build_pod_template(resource, config))


def deployment_name(resource: api.ModelDeployment, revision: str) -> str:
    return f"{resource_name(resource)}-{revision}"


def build_deployment(
    resource: api.ModelDeployment,
    revision: str,
    replicas: int,
    config: OperatorConfig,
    version: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    """The Deployment of one revision. Its pod template is fixed by the revision; only replicas change (and the
    Deployment's own `annotations`, which never restart a pod)."""
    template = build_pod_template(resource, config)
    template["metadata"]["labels"][LABEL_REVISION] = revision
    labels = {
        **common_labels(resource),
        LABEL_REVISION: revision,
        LABEL_VERSION: version or resource.spec.model.version,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(resource, revision),
            "namespace": resource.metadata["namespace"],
            "labels": labels,
            **({"annotations": dict(annotations)} if annotations else {}),
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 1,
            "progressDeadlineSeconds": resource.spec.rollout.progressDeadlineSeconds,
            "selector": {"matchLabels": {**selector_labels(resource), LABEL_REVISION: revision}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": template,
        },
    }


STABLE_SUFFIX = "stable"
CANARY_SUFFIX = "canary"
REVISION_SERVICE_SUFFIXES = (STABLE_SUFFIX, CANARY_SUFFIX)


def service_name(resource: api.ModelDeployment, suffix: str = "") -> str:
    return resource_name(resource) if not suffix else f"{resource_name(resource)}-{suffix}"


def revision_service_names(resource: api.ModelDeployment) -> tuple[str, ...]:
    """`<name>-stable` and `<name>-canary`: the only children besides old revisions' Deployments that the operator
    deletes, once no rollout needs them (and only its own: the reconciler checks the owner's uid)."""
    return tuple(service_name(resource, suffix) for suffix in REVISION_SERVICE_SUFFIXES)


def build_service(resource: api.ModelDeployment, suffix: str, revision: str | None) -> Manifest:
    """Service `<name>` or `<name>-<suffix>`: the serving pods of `revision`, or of every revision when None."""
    selector = selector_labels(resource)
    if revision is not None:
        selector = {**selector, LABEL_REVISION: revision}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(resource, suffix),
            "namespace": resource.metadata["namespace"],
            "labels": common_labels(resource),
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": resource.spec.service.port, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": resource.spec.runtime.metricsPort,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_services(
    resource: api.ModelDeployment,
    stable: str,
    canary: str | None,
    *,
    revision_services: bool = False,
    canary_admitted: bool = True,
) -> list[Manifest]:
    """The Services the resource should have now; `canary` is the revision rolling out, None at rest.

    - `<name>` always (status.url names it). At rest it selects the serving revision's pods only: a revision kept
      scaled to zero for a fast return, a pod someone scaled up by hand or a predecessor's pods never take its
      traffic. While a canary rolls out it selects every serving pod of the resource, so that traffic follows the
      ready pods of both revisions (the replica-ratio router); behind a router (`revision_services`) it keeps
      selecting the serving revision alone: the gateway or mesh makes the split, and a client that goes around it
      must not reach a canary that is only mirrored to. Until a canary is admitted to traffic (its smoke test
      passed, rollout/smoke.py) `<name>` selects the serving revision alone whatever the router.
    - `<name>-stable` and `<name>-canary`, each selecting one revision's pods, only while a canary rolls out, or
      always when the traffic router sends traffic through them (`revision_services`; then at rest both select the
      serving revision). At rest they would cost a ClusterIP and an EndpointSlice each for nothing.
    """
    alone = canary is None or revision_services or not canary_admitted
    services = [build_service(resource, "", stable if alone else None)]
    if canary is not None or revision_services:
        services.append(build_service(resource, STABLE_SUFFIX, stable))
        services.append(build_service(resource, CANARY_SUFFIX, canary if canary is not None else stable))
    return services


def service_url(resource: api.ModelDeployment, config: OperatorConfig) -> str:
    namespace = resource.metadata["namespace"]
    return f"http://{resource_name(resource)}.{namespace}.svc.{config.cluster_domain}:{resource.spec.service.port}"
