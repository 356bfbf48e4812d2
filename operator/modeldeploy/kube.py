"""The one module that talks to the Kubernetes API server (besides kopf's own watches).

Synchronous on purpose: the official client is synchronous, so callers run it in worker threads, never on the
event loop. Every write goes through here, which is where they are counted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modeldeploy import api
from modeldeploy.config import FIELD_MANAGER
from modeldeploy.metrics import API_WRITES

log = logging.getLogger("modeldeploy.kube")

USER_AGENT = "modeldeploy/0.1.0"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"

Manifest = dict[str, Any]


def load_configuration() -> kubernetes.client.Configuration:
    """KUBECONFIG (or ~/.kube/config) when present, else the in-cluster service account."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    return configuration


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl uses it."""
    try:
        _, context = kubernetes.config.list_kube_config_contexts()
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


def namespace_terminating(error: ApiException) -> bool:
    """The API server refuses new content in a namespace being deleted; what the operator wrote there goes with it."""
    body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else str(error.body or "")
    return error.status == 403 and "because it is being terminated" in body


def _kv(**values: object) -> str:
    return " ".join(f'{key}="{value}"' for key, value in values.items())


class Kube:
    """Typed, counted access to the objects the operator reads and writes."""

    def __init__(self, configuration: kubernetes.client.Configuration, pool_size: int = 8) -> None:
        configuration.connection_pool_maxsize = pool_size
        self.client = kubernetes.client.ApiClient(configuration)
        self.client.user_agent = USER_AGENT
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self._lock = threading.Lock()
        self.writes: Counter[str] = Counter()

    def _count(self, verb: str, kind: str) -> None:
        with self._lock:
            self.writes[f"{verb} {kind}"] += 1
        API_WRITES.labels(verb=verb, kind=kind).inc()

    # --- children ---------------------------------------------------------------------------------------------

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply under our field manager. Forced: the operator owns its children outright."""
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
        }[kind]
        self._count("apply", kind)
        result = patch(
            name,
            namespace,
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
        log.info("Applied %s %s", kind, _kv(namespace=namespace, name=name))
        return self.client.sanitize_for_serialization(result)  # type: ignore[no-any-return]

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> Manifest:
        """Change only the replica count, leaving the pod template of an older revision as it was built."""
        self._count("scale", "Deployment")
        result = self.apps.patch_namespaced_deployment(
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_CONTENT_TYPE,
        )
        log.info("Scaled Deployment %s", _kv(namespace=namespace, name=name, replicas=replicas))
        return self.client.sanitize_for_serialization(result)  # type: ignore[no-any-return]

    def delete_deployment(self, namespace: str, name: str) -> None:
        self._count("delete", "Deployment")
        try:
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise
        log.info("Deleted Deployment %s", _kv(namespace=namespace, name=name))

    def list_children(self, namespace: str, instance: str) -> tuple[list[Manifest], list[Manifest]]:
        """Deployments and Services of one resource (by label), for a reconcile that has no cache yet."""
        selector = f"app.kubernetes.io/instance={instance},app.kubernetes.io/managed-by=modeldeploy"
        deployments = self.apps.list_namespaced_deployment(namespace, label_selector=selector)
        services = self.core.list_namespaced_service(namespace, label_selector=selector)
        sanitize = self.client.sanitize_for_serialization
        return sanitize(deployments.items), sanitize(services.items)

    # --- the resource itself ----------------------------------------------------------------------------------

    def get_resource(self, namespace: str, name: str) -> Manifest | None:
        try:
            body = self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body  # type: ignore[no-any-return]

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Manifest:
        """One merge patch of the status subresource; the spec is never written."""
        self._count("patch", "ModelDeployment/status")
        # Merge patches replace lists whole, and a null removes a field: a track that ended is cleared.
        return self.custom.patch_namespaced_custom_object_status(  # type: ignore[no-any-return]
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_CONTENT_TYPE,
        )

    def request_command(self, namespace: str, name: str, command: str, body: dict[str, Any]) -> Manifest:
        """Record a promote/abort/retry request in status.commands, where the operator picks it up."""
        return self.patch_status(namespace, name, {"commands": {command: body}})

    def post_event(self, resource: Manifest, event_type: str, reason: str, message: str) -> None:
        metadata = resource["metadata"]
        now = datetime.now(UTC)
        self._count("create", "Event")
        event = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(
                generate_name=f"{metadata['name']}.", namespace=metadata["namespace"]
            ),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=api.API_VERSION,
                kind=api.KIND,
                name=metadata["name"],
                namespace=metadata["namespace"],
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type=event_type,
            source=kubernetes.client.V1EventSource(component="modeldeploy"),
            reporting_component="modeldeploy.io/operator",
            reporting_instance="modeldeploy",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(metadata["namespace"], event)
        except ApiException as error:
            # An event is a courtesy; failing to record one must not fail the reconcile.
            level = logging.DEBUG if namespace_terminating(error) else logging.WARNING
            log.log(level, "Could not record Event %s", _kv(reason=reason, status=error.status))
