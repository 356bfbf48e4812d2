"""The one module that talks to the Kubernetes API server (besides kopf's own watches).

A small client of its own over urllib3 rather than the official `kubernetes` package: the operator makes a handful
of calls and reads plain dicts, and that package costs ~30 MiB of resident memory on import and more for its models.
Synchronous, so callers run it in worker threads, never on the event loop. Every write goes through here, which is
where they are counted.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import urllib3

from modeldeploy.api import models as api
from modeldeploy.children.builders import LABEL_MANAGED_BY, MANAGED_BY
from modeldeploy.config import FIELD_MANAGER
from modeldeploy.kube.config import ConnectionSettings, Credentials
from modeldeploy.kube.events import EventCorrelator, EventWrite, InvolvedObject
from modeldeploy.kube.exec_plugin import Credential
from modeldeploy.metrics import API_WRITES, observe_api_request

log = logging.getLogger("modeldeploy.kube")

USER_AGENT = "modeldeploy/0.1.0"
# Asked before every write; it raises (or ends the process) to stop the write. The leader election sets it: a leader
# that was frozen (SIGSTOP, a paused VM, a long GC pause) past its renew deadline must not send even one write when it
# wakes, before its watchdog thread gets the chance to notice. None without leader election.
WRITE_FENCE: Callable[[], None] | None = None
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
CREATE_ONLY_VERSION = "1"
"""A resourceVersion no stored object has (etcd's first write is revision 2): an apply that carries it creates the
object when the name is free, and is refused with 409 Conflict when anything holds it, as any write whose
resourceVersion is not the object's is. One request instead of a read and then an apply, and no moment between
them in which someone else's object of that name could be taken over."""
MERGE_CONTENT_TYPE = "application/merge-patch+json"
JSON_CONTENT_TYPE = "application/json"
METADATA_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0
EVENT_MESSAGE_LIMIT = 1024
"""Characters of an Event's message that are sent: the limit of `note`, the same field in events.k8s.io/v1."""

Manifest = dict[str, Any]

# Where each kind of child lives: the API group's path prefix and the resource's plural.
CHILD_PATHS = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    # The route objects of the exact routers (spec.trafficRouting).
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "VirtualService": ("/apis/networking.istio.io/v1", "virtualservices"),
    # The capacity children (children/capacity.py).
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
}
RESOURCE_PREFIX = f"/apis/{api.GROUP}/{api.VERSION}"


class ApiError(Exception):
    """The API server answered with an error status. `body` is its answer as text (a Status object, as JSON);
    `retry_after` the seconds of its Retry-After header, if it sent one (429, and some 5xx while it starts)."""

    def __init__(self, status: int, reason: str, body: str, retry_after: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after
        super().__init__(f"({status}) {reason}: {status_message(body)}")


PERMANENT_STATUSES = frozenset({400, 413, 422})
"""Answers that refuse the request itself (invalid, too large, denied by an admission webhook): sent again
unchanged, it is refused again, so retrying with backoff would only repeat them."""


def transient(error: BaseException) -> bool:
    """Whether the same request may well succeed a little later: the server was busy or unavailable (429, 5xx), or
    the connection failed, was reset or timed out (urllib3's errors, as the pool raises them without retries)."""
    if isinstance(error, ApiError):
        return error.status == HTTPStatus.TOO_MANY_REQUESTS or error.status >= 500
    return isinstance(error, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError)


def permanent(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.status in PERMANENT_STATUSES


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds, the only form the API server sends; an HTTP date or garbage counts as absent."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def status_message(body: str) -> str:
    """The `message` of a Status body, or the start of any other body."""
    try:
        document = json.loads(body)
    except ValueError:
        return body[:300]
    if isinstance(document, dict) and document.get("message"):
        return str(document["message"])
    return body[:300]


def namespace_terminating(error: ApiError) -> bool:
    """The API server refuses new content in a namespace being deleted; what the operator wrote there goes with it."""
    return error.status == 403 and "because it is being terminated" in error.body


def namespace_of(path: str) -> str | None:
    """The namespace a request path names (`.../namespaces/<namespace>/<resource>...`), if any."""
    parts = path.split("/")
    for index, part in enumerate(parts[:-2]):
        if part == "namespaces" and parts[index + 1]:
            return urllib.parse.unquote(parts[index + 1])
    return None


def _kv(**values: object) -> str:
    return " ".join(f'{key}="{value}"' for key, value in values.items())


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Kube:
    """Typed, counted access to the objects the operator reads and writes. Thread-safe."""

    def __init__(
        self,
        settings: ConnectionSettings,
        pool_size: int = 8,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        events: EventCorrelator | None = None,
    ) -> None:
        self.settings = settings
        self._base = settings.server.rstrip("/")
        self._credentials = Credentials(settings)
        self._pool_size = pool_size
        self._lock = threading.Lock()
        # The pool and the client certificate it presents: an exec plugin may hand out a new one, and a TLS
        # connection presents the one it was opened with, so a new certificate needs a new pool.
        self._pool: urllib3.PoolManager | None = None
        self._pool_certificate: tuple[str | None, str | None] = (None, None)
        self.writes: Counter[str] = Counter()
        self._clock = clock
        self._events = events if events is not None else EventCorrelator()
        self.on_namespace_terminating: Callable[[str], None] | None = None
        """Called with the namespace when the API server refuses a request because that namespace is being deleted
        (whether or not the caller raises the error: an Event is only logged)."""
        if settings.exec_plugin is None:
            self._pool = self._new_pool(None)  # a bad certificate or key fails here, at start-up

    def _new_pool(self, credential: Credential | None) -> urllib3.PoolManager:
        # As many connections as threads that call at once. Not retried by urllib3: a write whose answer was lost
        # may have happened, and the work queue retries the whole pass anyway. urllib3 reads no proxy settings from
        # the environment, which is what we want: only the kubeconfig's proxy-url is used.
        settings = self.settings
        options: dict[str, Any] = {
            "num_pools": 1,
            "maxsize": self._pool_size,
            "ssl_context": settings.ssl_context(credential),
            "retries": False,
            "timeout": urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS),
        }
        if settings.tls_server_name:
            options["server_hostname"] = settings.tls_server_name
        if not settings.proxy_url:
            return urllib3.PoolManager(**options)
        proxy = urllib3.util.parse_url(settings.proxy_url)
        # urllib3 does not send the proxy URL's user and password by itself; client-go does.
        headers = urllib3.make_headers(proxy_basic_auth=urllib.parse.unquote(proxy.auth)) if proxy.auth else None
        return urllib3.ProxyManager(
            proxy._replace(auth=None).url,
            proxy_headers=headers,
            proxy_ssl_context=settings.proxy_ssl_context() if proxy.scheme == "https" else None,
            **options,
        )

    def _connection(self) -> tuple[urllib3.PoolManager, str | None]:
        """The pool to send through and the token to send, both current."""
        credential = self._credentials.current()
        certificate = (credential.client_cert_data, credential.client_key_data)
        with self._lock:
            if self._pool is None or certificate != self._pool_certificate:
                if self._pool is not None:
                    self._pool.clear()
                self._pool = self._new_pool(credential)
                self._pool_certificate = certificate
            return self._pool, credential.token

    def _count(self, verb: str, kind: str) -> None:
        """Called by every write before it is sent: the fence may stop it, else it is counted."""
        fence = WRITE_FENCE
        if fence is not None:
            fence()
        with self._lock:
            self.writes[f"{verb} {kind}"] += 1
        API_WRITES.labels(verb=verb, kind=kind).inc()

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = JSON_CONTENT_TYPE,
        accept: str = JSON_CONTENT_TYPE,
    ) -> Manifest:
        """One call; the decoded JSON answer, or ApiError for a status of 400 or more."""
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        pool, token = self._connection()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            # JSON is YAML too: apply patches are sent as JSON under the apply-patch+yaml content type.
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        url = self._base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        sent = time.perf_counter()
        response = pool.request(method, url, body=payload, headers=headers)
        observe_api_request(method, time.perf_counter() - sent)
        if response.status >= 400:
            if response.status == HTTPStatus.UNAUTHORIZED:
                self._credentials.rejected()
            reason = response.reason or _phrase(response.status)
            error = ApiError(
                response.status,
                reason,
                response.data.decode(errors="replace"),
                retry_after_seconds(response.headers.get("Retry-After")),
            )
            namespace = namespace_of(path)
            if self.on_namespace_terminating is not None and namespace and namespace_terminating(error):
                self.on_namespace_terminating(namespace)
            raise error
        if not response.data:
            return {}
        answer: Manifest = json.loads(response.data)
        return answer

    def wait_for_event(self, path: str, query: Mapping[str, str], timeout: float) -> bool:
        """Open a watch on `path` (query: its selectors and resourceVersion) and wait at most `timeout` seconds for
        its first event: True when one came, whatever it says; False when the time passed without one. The stream
        is closed either way: a caller that wants the object reads it."""
        headers = {"Accept": JSON_CONTENT_TYPE, "User-Agent": USER_AGENT}
        pool, token = self._connection()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        seconds = max(1, math.ceil(timeout))
        parameters = {**query, "watch": "1", "timeoutSeconds": str(seconds)}
        url = self._base + path + "?" + urllib.parse.urlencode(parameters)
        response = pool.request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            retries=False,
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
        )
        try:
            if response.status >= 400:
                raise ApiError(response.status, response.reason or _phrase(response.status), response.data.decode())
            try:
                for chunk in response.stream(4096):
                    if chunk.strip():
                        return True
            except urllib3.exceptions.ReadTimeoutError:
                return False
            return False
        finally:
            response.close()

    # --- children ---------------------------------------------------------------------------------------------

    def _child_path(self, kind: str, namespace: str, name: str | None = None) -> str:
        prefix, plural = CHILD_PATHS[kind]
        path = f"{prefix}/namespaces/{_segment(namespace)}/{plural}"
        return path if name is None else f"{path}/{_segment(name)}"

    def get_child(self, kind: str, namespace: str, name: str) -> Manifest | None:
        """A Deployment or Service by name, None when there is none: whatever it is labelled and whoever owns it."""
        try:
            return {"kind": kind, **self._request("GET", self._child_path(kind, namespace, name))}
        except ApiError as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return None
            raise

    def list_children(self, kind: str, namespace: str, label_selector: str) -> list[Manifest]:
        """The Deployments or Services of `namespace` that `label_selector` selects, each with its apiVersion and
        kind as a watch event shows them (a list leaves both out of its items, and a pass compares what it builds,
        apiVersion included, with what the Store holds)."""
        answer = self._request("GET", self._child_path(kind, namespace), query={"labelSelector": label_selector})
        api_version = CHILD_PATHS[kind][0].removeprefix("/apis/").removeprefix("/api/")
        return [
            {"apiVersion": api_version, "kind": kind, **item}
            for item in answer.get("items") or []
            if isinstance(item, dict)
        ]

    def get_configmap(self, namespace: str, name: str) -> Manifest | None:
        """A ConfigMap that a smoke test names for its cases; None when there is none."""
        try:
            return self._request("GET", f"/api/v1/namespaces/{_segment(namespace)}/configmaps/{_segment(name)}")
        except ApiError as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return None
            raise

    def list_pods(self, namespace: str, label_selector: str) -> list[Manifest]:
        """The pods of `namespace` that `label_selector` selects (a smoke test asks their IPs)."""
        path = f"/api/v1/namespaces/{_segment(namespace)}/pods"
        answer = self._request("GET", path, query={"labelSelector": label_selector})
        return [item for item in answer.get("items") or [] if isinstance(item, dict)]

    def apply(self, manifest: Manifest, *, force: bool = True, create_only: bool = False) -> Manifest:
        """Server-side apply under our field manager. Forced onto the children the operator owns, which it owns
        outright. `create_only`: create it, or fail with 409 Conflict if any object of that name exists, whoever
        made it; nothing existing is changed (see CREATE_ONLY_VERSION)."""
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        path = self._child_path(kind, namespace, name)
        self._count("apply", kind)
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        if create_only:
            manifest = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": CREATE_ONLY_VERSION}}
        result = self._request("PATCH", path, query=query, body=manifest, content_type=APPLY_CONTENT_TYPE)
        log.info("Applied %s %s", kind, _kv(namespace=namespace, name=name))
        return result

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> Manifest:
        """Change only the replica count, leaving the pod template of an older revision as it was built."""
        self._count("scale", "Deployment")
        result = self._request(
            "PATCH",
            self._child_path("Deployment", namespace, name),
            query={"fieldManager": FIELD_MANAGER},
            body={"spec": {"replicas": replicas}},
            content_type=MERGE_CONTENT_TYPE,
        )
        log.info("Scaled Deployment %s", _kv(namespace=namespace, name=name, replicas=replicas))
        return result

    def delete_deployment(self, namespace: str, name: str) -> None:
        self._count("delete", "Deployment")
        try:
            self._request(
                "DELETE",
                self._child_path("Deployment", namespace, name),
                query={"propagationPolicy": "Background"},
            )
        except ApiError as error:
            if error.status != HTTPStatus.NOT_FOUND:
                raise
        log.info("Deleted Deployment %s", _kv(namespace=namespace, name=name))

    def delete_service(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete a Service; one already gone is no error. With `uid`, only the object of that uid: one made again
        under the name since it was seen is refused by the API server (409 Conflict), never deleted."""
        self._count("delete", "Service")
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        try:
            self._request(
                "DELETE",
                self._child_path("Service", namespace, name),
                query={"propagationPolicy": "Background"},
                body=options,
            )
        except ApiError as error:
            if error.status != HTTPStatus.NOT_FOUND:
                raise
        log.info("Deleted Service %s", _kv(namespace=namespace, name=name))

    def delete_child(self, kind: str, namespace: str, name: str, uid: str) -> bool:
        """Delete one Deployment or Service, only if it is still the object of `uid` (a precondition: the API
        server answers 409 Conflict for an object created under the name since). False when it was gone already
        or is another object now."""
        self._count("delete", kind)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid},
            "propagationPolicy": "Background",
        }
        try:
            self._request("DELETE", self._child_path(kind, namespace, name), body=body)
        except ApiError as error:
            if error.status in (HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT):
                return False
            raise
        log.info("Deleted %s %s", kind, _kv(namespace=namespace, name=name, uid=uid))
        return True

    # --- the resource itself ----------------------------------------------------------------------------------

    def _resource_path(self, namespace: str, name: str) -> str:
        return f"{RESOURCE_PREFIX}/namespaces/{_segment(namespace)}/{api.PLURAL}/{_segment(name)}"

    def get_resource(self, namespace: str, name: str) -> Manifest | None:
        try:
            return self._request("GET", self._resource_path(namespace, name))
        except ApiError as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return None
            raise

    def list_resource_versions(self, namespace: str, label_selector: str = "") -> tuple[str, dict[str, str]]:
        """The list's resourceVersion and each ModelDeployment's name and resourceVersion in `namespace` (those
        `label_selector` selects, when given): metadata only (a PartialObjectMetadataList), so the check for
        resources gone during a watch gap costs little."""
        answer = self._list_resources(namespace, label_selector)
        items = {
            str(item["metadata"]["name"]): str(item["metadata"].get("resourceVersion", ""))
            for item in answer.get("items") or []
        }
        return str((answer.get("metadata") or {}).get("resourceVersion", "")), items

    def list_resource_uids(self, namespace: str) -> dict[str, str]:
        """Each ModelDeployment's name and uid in `namespace` (metadata only)."""
        answer = self._list_resources(namespace, "")
        return {
            str(item["metadata"]["name"]): str(item["metadata"].get("uid", ""))
            for item in answer.get("items") or []
            if isinstance(item, dict) and isinstance(item.get("metadata"), dict) and item["metadata"].get("name")
        }

    def list_child_metadata(self, kind: str, namespace: str) -> list[Manifest]:
        """The children of `kind` labelled as the operator's in `namespace`: metadata only, each with its kind."""
        prefix, plural = CHILD_PATHS[kind]
        answer = self._request(
            "GET",
            f"{prefix}/namespaces/{_segment(namespace)}/{plural}",
            query={"labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY}"},
            accept=METADATA_LIST_ACCEPT,
        )
        return [
            {"kind": kind, "metadata": item["metadata"]}
            for item in answer.get("items") or []
            if isinstance(item, dict) and isinstance(item.get("metadata"), dict)
        ]

    def list_namespace_metadata(self) -> list[Manifest]:
        """The metadata of every namespace (a PartialObjectMetadataList): which are being deleted, by uid."""
        answer = self._request("GET", "/api/v1/namespaces", accept=METADATA_LIST_ACCEPT)
        return [
            item["metadata"]
            for item in answer.get("items") or []
            if isinstance(item, dict) and isinstance(item.get("metadata"), dict)
        ]

    def list_resource_keys(self, namespace: str | None, label_selector: str = "") -> set[tuple[str, str]]:
        """The namespace and name of every ModelDeployment `label_selector` selects, in `namespace` or (None) in
        every namespace: metadata only."""
        answer = self._list_resources(namespace, label_selector)
        return {
            (str(item["metadata"]["namespace"]), str(item["metadata"]["name"])) for item in answer.get("items") or []
        }

    def _list_resources(self, namespace: str | None, label_selector: str) -> Manifest:
        scope = f"/namespaces/{_segment(namespace)}" if namespace is not None else ""
        return self._request(
            "GET",
            f"{RESOURCE_PREFIX}{scope}/{api.PLURAL}",
            query={"labelSelector": label_selector} if label_selector else None,
            accept=METADATA_LIST_ACCEPT,
        )

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> Manifest:
        """One merge patch of the status subresource; the spec is never written. With `resource_version` (the
        version the status was decided from) the write is fenced: the API server answers 409 Conflict if the object
        changed since, so a decision made from a stale view never overwrites a newer write."""
        self._count("patch", "ModelDeployment/status")
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        # Merge patches replace lists whole, and a null removes a field: a track that ended is cleared.
        return self._request(
            "PATCH",
            self._resource_path(namespace, name) + "/status",
            body=body,
            content_type=MERGE_CONTENT_TYPE,
        )

    def request_command(self, namespace: str, name: str, command: str, body: dict[str, Any]) -> Manifest:
        """Record a promote/abort/retry request in status.commands, where the operator picks it up."""
        return self.patch_status(namespace, name, {"commands": {command: body}})

    def post_event(self, resource: Manifest, event_type: str, reason: str, message: str) -> None:
        """Record an Event about `resource`, as client-go's recorder does: a repeat within the aggregation window is
        counted on the Event it repeats (a patch of count and lastTimestamp), a burst of many messages of one reason
        is combined (kube/events.py decides which). Best-effort: a failure is a log line, never raised, but for the
        write fence, which stops every write."""
        metadata = resource["metadata"]
        involved = InvolvedObject(
            namespace=str(metadata["namespace"]), name=str(metadata["name"]), uid=str(metadata.get("uid") or "")
        )
        with self._lock:
            write = self._events.observe(involved, event_type, reason, message, self._clock())
        try:
            if write.create:
                self._create_event(resource, write)
                return
            try:
                self._patch_event(write)
            except ApiError as error:
                if error.status != HTTPStatus.NOT_FOUND:
                    raise
                # Expired (the API server keeps Events an hour by default) or deleted: written again, whole.
                self._create_event(resource, write)
        except ApiError as error:
            # An event is a courtesy; failing to record one must not fail the reconcile.
            level = logging.DEBUG if namespace_terminating(error) else logging.WARNING
            log.log(level, "Could not record Event %s", _kv(reason=reason, status=error.status))
        except (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as error:
            log.warning("Could not record Event %s", _kv(reason=reason, error=type(error).__name__))

    def _events_path(self, namespace: str, name: str | None = None) -> str:
        path = f"/api/v1/namespaces/{_segment(namespace)}/events"
        return path if name is None else f"{path}/{_segment(name)}"

    def _create_event(self, resource: Manifest, write: EventWrite) -> None:
        metadata = resource["metadata"]
        self._count("create", "Event")
        involved_object = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": write.involved.name,
            "namespace": write.involved.namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        }
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": write.name, "namespace": write.involved.namespace},
            # Fields the resource does not have are left out rather than sent as null.
            "involvedObject": {key: value for key, value in involved_object.items() if value is not None},
            "reason": write.reason,
            "message": write.message[:EVENT_MESSAGE_LIMIT],
            "type": write.type,
            "source": {"component": "modeldeploy"},
            "reportingComponent": "modeldeploy.io/operator",
            "reportingInstance": "modeldeploy",
            "firstTimestamp": _event_time(write.first_timestamp),
            "lastTimestamp": _event_time(write.last_timestamp),
            "count": write.count,
        }
        self._request("POST", self._events_path(write.involved.namespace), body=event)

    def _patch_event(self, write: EventWrite) -> None:
        self._count("patch", "Event")
        body: dict[str, Any] = {"count": write.count, "lastTimestamp": _event_time(write.last_timestamp)}
        if write.combined:
            body["message"] = write.message[:EVENT_MESSAGE_LIMIT]
        self._request(
            "PATCH",
            self._events_path(write.involved.namespace, write.name),
            body=body,
            content_type=MERGE_CONTENT_TYPE,
        )


def _event_time(moment: datetime) -> str:
    # firstTimestamp and lastTimestamp are metav1.Time: whole seconds, as kubectl shows them.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
