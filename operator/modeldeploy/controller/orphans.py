"""Children whose ModelDeployment is gone and which garbage collection missed.

The garbage collector deletes a child once its controller owner is gone, which it learns from its own watches; a
watch gap (an API server restart, an etcd compaction) can hide that from it in two ways. A deletion during the gap
is reported by no event, and an owner deleted and created again under the same name shows in its re-list as an
update of one object, so the predecessor's uid is never seen to go. Both were seen on the local control plane: the
children stayed, and a re-created resource stood back from its predecessor's names for good.

So after a re-list (when the operator's own watches had a gap, and the collector's likely too) the operator looks
for such children itself: labelled as ours, controlled by a ModelDeployment whose name and uid no list shows. It
waits a while for the collector, lists again, and deletes what is still orphaned, each under a precondition on the
child's own uid, so that an object created under the name since is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from modeldeploy.api import models as api
from modeldeploy.controller.store import Manifest, owner_key

log = logging.getLogger("modeldeploy.controller")

ORPHAN_GRACE_SECONDS = 30.0
"""How long children found without their owner are left to garbage collection, which normally deletes them within
seconds, before the operator lists again and deletes those still orphaned."""
CHILD_KINDS = ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")


class OrphanWriter(Protocol):
    def list_child_metadata(self, kind: str, namespace: str) -> list[Manifest]: ...

    def list_resource_uids(self, namespace: str) -> dict[str, str]: ...

    def delete_child(self, kind: str, namespace: str, name: str, uid: str) -> bool: ...


def owner_uid(child: Manifest) -> str:
    """The uid in the child's controller reference to a ModelDeployment ("" for none)."""
    for reference in child["metadata"].get("ownerReferences") or []:
        if isinstance(reference, dict) and reference.get("controller") and reference.get("kind") == api.KIND:
            return str(reference.get("uid") or "")
    return ""


def identity(child: Manifest) -> tuple[str, str, str, str]:
    """Kind, namespace, name and uid: one object, not whatever holds its name later."""
    metadata = child["metadata"]
    return str(child.get("kind", "")), metadata["namespace"], metadata["name"], str(metadata.get("uid") or "")


def orphaned(children: Iterable[Manifest], live: dict[str, str]) -> list[Manifest]:
    """The children controlled by a ModelDeployment that `live` (name -> uid of those that exist) does not show:
    none of that name, or one of another uid. Children without such a controller, or without a uid to fence a
    delete by, are not ours to judge."""
    found = []
    for child in children:
        key = owner_key(child)
        if key is None or not child["metadata"].get("uid"):
            continue
        if live.get(key[1]) != owner_uid(child):
            found.append(child)
    return found


def find(kube: OrphanWriter, namespace: str) -> list[Manifest]:
    """One look at a namespace: its children (metadata only) against its ModelDeployments."""
    children = [child for kind in CHILD_KINDS for child in kube.list_child_metadata(kind, namespace)]
    if not children:
        return []
    return orphaned(children, kube.list_resource_uids(namespace))


def collect(kube: OrphanWriter, namespace: str, candidates: list[Manifest]) -> list[Manifest]:
    """Delete the candidates that a fresh list still shows orphaned; the ones deleted."""
    if not candidates:
        return []
    still = orphaned(candidates, kube.list_resource_uids(namespace))
    deleted = []
    for child in still:
        kind, _, name, uid = identity(child)
        key = owner_key(child)
        if kube.delete_child(kind, namespace, name, uid):
            deleted.append(child)
            log.info(
                'Deleted orphaned %s namespace="%s" name="%s" owner="%s" ownerUid="%s"',
                kind,
                namespace,
                name,
                key[1] if key else "",
                owner_uid(child),
            )
    return deleted
