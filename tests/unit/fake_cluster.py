"""An in-memory stand-in for the API server as reconcile() sees it, for unit tests of whole passes.

It implements the ClusterWriter protocol (what Kube offers reconcile) with the server behaviour reconcile relies on:
resourceVersions that increase, a uid per object made, a Deployment's generation that moves when its spec changes,
server-side apply that merges our fields into the object and removes those our last apply set and this one does not,
merge-patches of status where null removes a field, deletions under a uid precondition, and errors on demand. It
does not run controllers: a test says when a Deployment's pods are ready (`make_ready`). The real API server is
exercised by the end-to-end tests; this fake exists so that every branch of a pass runs in milliseconds.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import models as api
from modeldeploy.api.selectors import labels_of, parse_selector
from modeldeploy.children.builders import LABEL_MANAGED_BY, MANAGED_BY
from modeldeploy.controller.store import Key, Manifest, Store
from modeldeploy.kube.client import ApiError
from modeldeploy.kube.events import EventCorrelator, InvolvedObject


@dataclass(frozen=True)
class RecordedEvent:
    type: str
    reason: str
    message: str


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def without_dropped(target: Any, before: Any, now: Any) -> Any:
    """`target` without the fields our last apply (`before`) set and this one (`now`) does not: server-side apply
    removes the fields a manager stops applying (if no other manager owns them; here none does)."""
    if not isinstance(target, dict) or not isinstance(before, dict):
        return target
    now = now if isinstance(now, dict) else {}
    kept = {}
    for key, value in target.items():
        if key in before and key not in now:
            continue
        kept[key] = without_dropped(value, before.get(key), now.get(key)) if key in before else value
    return kept


class FakeCluster:
    """Objects by (kind, namespace, name); `writes` counts calls the way Kube does ("apply Deployment", ...)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Manifest] = {}
        self.writes: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        """Writes refused with nothing written: a create_only apply onto a name that is held."""
        self.events: list[RecordedEvent] = []
        """Every Event recorded, repeats included (see event_counts for the Event objects they make)."""
        self.event_counts: dict[str, int] = {}
        """Event objects by name, with their count."""
        self.correlator = EventCorrelator()
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """The time Events are stamped with: a Harness sets its own."""
        self.fail_next: dict[str, ApiError] = {}
        """Method name -> the error its next call raises (once), as the API server would answer."""
        self.reads: Counter[str] = Counter()
        self.foreign: set[tuple[str, str, str]] = set()
        """Objects someone else made (add_foreign): applying onto one without force is a 409 Conflict."""
        self.conflicts = 0
        """Status writes refused because they carried a resourceVersion that was no longer current."""
        self.applied: dict[tuple[str, str, str], Manifest] = {}
        """What our field manager last applied to each object: the fields it owns."""
        self.terminating: set[str] = set()
        """Namespaces being deleted: creates there are refused (403), as the API server does; patches are not."""
        self.on_namespace_terminating: Callable[[str], None] | None = None
        """As Kube's: told of each request refused because its namespace is being deleted."""
        self.journal: list[tuple[str, Manifest]] = []
        """Every write in order: ("apply HTTPRoute/x", what it stored), ("scale Deployment/y", ...), ..."""
        self._version = 100
        self._uids = 0

    # --- what tests set up and read ----------------------------------------------------------------------------

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _fail(self, method: str, kind: str = "") -> None:
        """Raise the error set for `method` ("apply"), or for it on one kind ("apply Service")."""
        error = self.fail_next.pop(method, None) or self.fail_next.pop(f"{method} {kind}", None)
        if error is not None:
            raise error

    def _new_uid(self, kind: str, name: str) -> str:
        self._uids += 1
        return f"uid-{kind.lower()}-{name}-{self._uids}"

    def _refuse_create(self, kind: str, namespace: str) -> None:
        """A create in a namespace being deleted: what the API server answers, with Kube's call to its hook."""
        if namespace not in self.terminating:
            return
        if self.on_namespace_terminating is not None:
            self.on_namespace_terminating(namespace)
        raise ApiError(
            403,
            "Forbidden",
            f'{{"message": "{kind.lower()}s is forbidden: unable to create new content in namespace {namespace} '
            'because it is being terminated", "reason": "Forbidden", "code": 403}',
        )

    def create_resource(
        self,
        spec: dict[str, Any],
        *,
        name: str = "fraud-detector",
        namespace: str = "models",
        labels: dict[str, str] | None = None,
    ) -> Key:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": self._next_version(),
        }
        if labels is not None:
            metadata["labels"] = dict(labels)
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": metadata, "spec": copy.deepcopy(spec)}
        self.objects[(api.KIND, namespace, name)] = body
        return namespace, name

    def relabel(self, key: Key, labels: dict[str, str]) -> Manifest:
        """`kubectl label --overwrite`: the resource's labels become `labels`; what a watch would show now."""
        body = self.objects[(api.KIND, *key)]
        body["metadata"]["labels"] = dict(labels)
        body["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(body)

    def update_spec(self, key: Key, spec: dict[str, Any]) -> None:
        body = self.objects[(api.KIND, *key)]
        body["spec"] = copy.deepcopy(spec)
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = self._next_version()

    def replace_status(self, key: Key, status: Any) -> None:
        """Someone else's write to the status subresource (anyone with patch on it): the stored status becomes
        `status`, whatever it holds, as the watch would then show it."""
        body = self.objects[(api.KIND, *key)]
        body["status"] = copy.deepcopy(status)
        body["metadata"]["resourceVersion"] = self._next_version()

    def add_foreign(self, manifest: Manifest) -> Manifest:
        """An object someone else made, with whatever labels and owners it has. The Store sees it only if the
        watches would (labelled as ours, with a controller owner reference to a ModelDeployment)."""
        body = copy.deepcopy(manifest)
        metadata = body["metadata"]
        metadata.setdefault("generation", 1)
        metadata.setdefault("uid", self._new_uid(body["kind"], metadata["name"]))
        metadata["resourceVersion"] = self._next_version()
        key = (body["kind"], metadata["namespace"], metadata["name"])
        self.objects[key] = body
        self.foreign.add(key)
        self.applied.pop(key, None)
        return copy.deepcopy(body)

    def delete_resource(self, key: Key) -> None:
        """The resource deleted (and its children collected), with no watch event: as during a watch gap."""
        self.objects.pop((api.KIND, *key), None)
        uid = f"uid-{key[1]}"
        for object_key, body in list(self.objects.items()):
            references = body["metadata"].get("ownerReferences") or []
            if object_key[1] == key[0] and any(ref.get("uid") == uid for ref in references):
                del self.objects[object_key]
        self._next_version()

    def _selected(self, kind: str, namespace: str | None, label_selector: str) -> list[Manifest]:
        selector = parse_selector(label_selector)
        return [
            body
            for (object_kind, ns, _), body in self.objects.items()
            if object_kind == kind and (namespace is None or ns == namespace) and selector.matches(labels_of(body))
        ]

    def list_resource_versions(self, namespace: str, label_selector: str = "") -> tuple[str, dict[str, str]]:
        self._fail("list_resource_versions")
        self.reads["list ModelDeployment"] += 1
        items = {
            str(body["metadata"]["name"]): str(body["metadata"]["resourceVersion"])
            for body in self._selected(api.KIND, namespace, label_selector)
        }
        return str(self._version), items

    def list_resource_uids(self, namespace: str) -> dict[str, str]:
        self._fail("list_resource_uids")
        self.reads["list ModelDeployment"] += 1
        return {
            name: str(body["metadata"]["uid"])
            for (kind, ns, name), body in self.objects.items()
            if kind == api.KIND and ns == namespace
        }

    def list_child_metadata(self, kind: str, namespace: str) -> list[Manifest]:
        """As Kube's: the objects of `kind` labelled as the operator's, metadata only."""
        self._fail("list_child_metadata")
        self.reads[f"list {kind}"] += 1
        return [
            {"kind": kind, "metadata": copy.deepcopy(body["metadata"])}
            for (k, ns, _), body in self.objects.items()
            if k == kind
            and ns == namespace
            and (body["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        ]

    def delete_child(self, kind: str, namespace: str, name: str, uid: str) -> bool:
        """As Kube's: only while the object is still the one of `uid` (a precondition)."""
        self._fail("delete_child")
        self.writes[f"delete {kind}"] += 1
        current = self.objects.get((kind, namespace, name))
        if current is None or current["metadata"].get("uid") != uid:
            return False
        del self.objects[(kind, namespace, name)]
        return True

    def delete_resource_only(self, key: Key) -> None:
        """The resource deleted and its children left: garbage collection missed the deletion (a watch gap)."""
        self.objects.pop((api.KIND, *key), None)
        self._next_version()

    def list_resource_keys(self, namespace: str | None, label_selector: str = "") -> set[Key]:
        self._fail("list_resource_keys")
        self.reads["list ModelDeployment"] += 1
        return {
            (str(body["metadata"]["namespace"]), str(body["metadata"]["name"]))
            for body in self._selected(api.KIND, namespace, label_selector)
        }

    def list_children(self, kind: str, namespace: str, label_selector: str) -> list[Manifest]:
        self._fail("list_children")
        self.reads[f"list {kind}"] += 1
        return [copy.deepcopy(body) for body in self._selected(kind, namespace, label_selector)]

    def add_pod(self, namespace: str, name: str, labels: dict[str, str], ip: str, *, ready: bool = True) -> None:
        """A pod as the kubelet reports it (no controller makes pods here): a smoke round lists them."""
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        self.objects[("Pod", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "status": {"podIP": ip, "conditions": [condition]},
        }

    def add_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.objects[("ConfigMap", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }

    def get_configmap(self, namespace: str, name: str) -> Manifest | None:
        self._fail("get_configmap")
        self.reads["get ConfigMap"] += 1
        found = self.objects.get(("ConfigMap", namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list_pods(self, namespace: str, label_selector: str) -> list[Manifest]:
        self._fail("list_pods")
        self.reads["list Pod"] += 1
        return [copy.deepcopy(body) for body in self._selected("Pod", namespace, label_selector)]

    def resource(self, key: Key) -> Manifest:
        return self.objects[(api.KIND, *key)]

    def status(self, key: Key) -> dict[str, Any]:
        status: dict[str, Any] = self.resource(key).get("status") or {}
        return status

    def of_kind(self, kind: str) -> dict[str, Manifest]:
        return {name: body for (k, _, name), body in self.objects.items() if k == kind}

    def make_ready(self, store: Store) -> None:
        """What the Deployment controller and kubelets would do: every Deployment's pods ready, seen by the Store."""
        for body in self.of_kind("Deployment").values():
            replicas = int(body["spec"].get("replicas", 0))
            body["status"] = {
                "observedGeneration": body["metadata"]["generation"],
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "updatedReplicas": replicas,
            }
            body["metadata"]["resourceVersion"] = self._next_version()
            store.put_child(copy.deepcopy(body))

    # --- ClusterWriter ------------------------------------------------------------------------------------------

    def get_child(self, kind: str, namespace: str, name: str) -> Manifest | None:
        self._fail("get_child")
        self.reads[f"get {kind}"] += 1
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def apply(self, manifest: Manifest, *, force: bool = True, create_only: bool = False) -> Manifest:
        kind, metadata = manifest["kind"], manifest["metadata"]
        self._fail("apply", kind)
        key = (kind, metadata["namespace"], metadata["name"])
        current = self.objects.get(key)
        if current is not None and create_only:
            # The resourceVersion precondition the real client sends, which no object has: refused, nothing written.
            self.refused[f"apply {kind}"] += 1
            raise ApiError(409, "Conflict", f'{{"message": "Operation cannot be fulfilled on {kind} {key[2]}"}}')
        self.writes[f"apply {kind}"] += 1
        if current is None:
            self._refuse_create(kind, metadata["namespace"])
        if current is not None and key in self.foreign and not force:
            # Another field manager set these fields to other values; only force would take them.
            raise ApiError(409, "Conflict", f'{{"message": "Apply failed with conflicts on {kind} {key[2]}"}}')
        if current is None:
            body = copy.deepcopy(manifest)
            body["metadata"]["generation"] = 1
            body["metadata"]["uid"] = self._new_uid(kind, metadata["name"])
        else:
            body = merge_patch(without_dropped(current, self.applied.get(key), manifest), manifest)
            if body.get("spec") != current.get("spec"):
                body["metadata"]["generation"] = current["metadata"]["generation"] + 1
        body["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key] = body
        self.applied[key] = copy.deepcopy(manifest)
        self.journal.append((f"apply {kind}/{key[2]}", copy.deepcopy(body)))
        return copy.deepcopy(body)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> Manifest:
        self._fail("scale_deployment")
        self.writes["scale Deployment"] += 1
        body = self.objects[("Deployment", namespace, name)]
        body["spec"]["replicas"] = replicas
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = self._next_version()
        self.journal.append((f"scale Deployment/{name}", copy.deepcopy(body)))
        return copy.deepcopy(body)

    def delete_deployment(self, namespace: str, name: str) -> None:
        self._fail("delete_deployment")
        self.writes["delete Deployment"] += 1
        self.objects.pop(("Deployment", namespace, name), None)

    def delete_service(self, namespace: str, name: str, uid: str | None = None) -> None:
        self._fail("delete_service")
        self.writes["delete Service"] += 1
        key = ("Service", namespace, name)
        current = self.objects.get(key)
        if current is None:
            return  # already gone: as Kube, which takes the 404 for done
        if uid and current["metadata"].get("uid") != uid:
            raise ApiError(
                409,
                "Conflict",
                f'{{"message": "Precondition failed: UID in precondition: {uid}, UID in object meta: '
                f'{current["metadata"].get("uid")}", "reason": "Conflict"}}',
            )
        del self.objects[key]
        self.applied.pop(key, None)
        self.foreign.discard(key)

    def get_resource(self, namespace: str, name: str) -> Manifest | None:
        self._fail("get_resource")
        self.reads["get ModelDeployment"] += 1
        found = self.objects.get((api.KIND, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> Manifest:
        self._fail("patch_status")
        self.writes["patch ModelDeployment/status"] += 1
        key = (api.KIND, namespace, name)
        if key not in self.objects:
            raise ApiError(404, "Not Found", '{"message": "modeldeployments not found"}')
        body = self.objects[key]
        if resource_version is not None and resource_version != body["metadata"]["resourceVersion"]:
            # As the API server answers a merge patch that carries metadata.resourceVersion.
            self.conflicts += 1
            raise ApiError(409, "Conflict", '{"message": "the object has been modified; please apply your changes"}')
        body["status"] = merge_patch(body.get("status") or {}, status)
        body["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(body)

    def post_event(self, resource: Manifest, event_type: str, reason: str, message: str) -> None:
        """Aggregated as Kube does it (the same EventCorrelator): a repeat is a patch of the Event it repeats; a
        create in a namespace being deleted is refused, and, as with Kube.post_event, only that."""
        metadata = resource["metadata"]
        try:
            self._refuse_create("Event", metadata["namespace"])
        except ApiError:
            self.writes["create Event"] += 1
            return
        involved = InvolvedObject(metadata["namespace"], metadata["name"], str(metadata.get("uid") or ""))
        write = self.correlator.observe(involved, event_type, reason, message, self.clock())
        self.writes["create Event" if write.create else "patch Event"] += 1
        self.events.append(RecordedEvent(event_type, reason, message))
        self.event_counts[write.name] = write.count

    def list_namespace_metadata(self) -> list[Manifest]:
        """Every namespace that holds an object, and those being deleted (with a deletionTimestamp)."""
        names = {namespace for _, namespace, _ in self.objects} | self.terminating
        return [
            {"name": name, "uid": f"uid-ns-{name}"}
            | ({"deletionTimestamp": "2026-12-01T12:00:00Z"} if name in self.terminating else {})
            for name in sorted(names)
        ]
