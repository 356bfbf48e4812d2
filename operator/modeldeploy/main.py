"""kopf handlers, and nothing else: login and settings at start-up, watch events into the controller's queue."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modeldeploy.api import models as api
from modeldeploy.api.selectors import LabelSelector
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.queue import Controller
from modeldeploy.kube.client import Kube
from modeldeploy.kube.config import load_settings
from modeldeploy.kube.kopf_login import NoDiffBase, connection_info, kopf

CHILD_LABELS = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY}
CHILD_SELECTOR = f"{builders.LABEL_MANAGED_BY}={builders.MANAGED_BY}"

log = logging.getLogger("modeldeploy.main")


@dataclass
class _Watches:
    namespaces: bool = False
    routes: frozenset[str] = frozenset()
    """Kinds of route object watched (HTTPRoute, VirtualService): only those of the routers turned on."""


WATCHES = _Watches()
"""Watches registered on demand, before kopf runs (see watch_namespaces)."""


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    # The same settings as the API client's, and the only login kopf has (see kube/kopf_login.py). kopf calls it again
    # after a 401, so a rotated token file or an expired plugin token is read again.
    return connection_info(load_settings())


EXTRA_THREADS = 4
"""Threads beyond the workers: the orphan scans, namespace and shard lists, and lease renewals' reads."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # The command line hands over the shard (a label selector, `--shard-selector`) and the namespaces in the memo.
    shard: LabelSelector | None = memo.get("shard")
    namespaces: list[str] = list(memo.get("namespaces") or [])
    # Only watch-event handlers are registered, so kopf keeps no progress annotations and adds no finalizer;
    # these names are set anyway so that any later handler stays under our own prefix.
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # We record our own Events for transitions; kopf's would be one API write per log line.
    settings.posting.enabled = False
    # The CRD is installed with the operator: no cluster-wide discovery (and no RBAC for it) needed.
    settings.scanning.disabled = True
    # Re-establish silent or broken watch streams instead of waiting on them forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    # kopf keeps a task per object that had an event, holding that event's whole body, until the object has been
    # quiet this long (5 s by default). The handlers only hand the event to the Store and return, so nothing is
    # gained by keeping them, and during a burst (a thousand resources applied at once) thousands are alive.
    settings.queueing.idle_timeout = 0.5
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Filtered by the API server, not here: the operator is sent only its own children, not every Deployment and
    # Service of the cluster, and a shard only its own resources (one that leaves the selector comes as DELETED).
    settings.watching.label_selectors["apps", "v1", "deployments"] = CHILD_SELECTOR
    settings.watching.label_selectors["", "v1", "services"] = CHILD_SELECTOR
    settings.watching.label_selectors["policy", "v1", "poddisruptionbudgets"] = CHILD_SELECTOR
    settings.watching.label_selectors["autoscaling", "v2", "horizontalpodautoscalers"] = CHILD_SELECTOR
    for kind in WATCHES.routes:
        group, version, plural = ROUTE_RESOURCES[kind]
        settings.watching.label_selectors[group, version, plural] = CHILD_SELECTOR
    if shard is not None:
        settings.watching.label_selectors[api.GROUP, api.VERSION, api.PLURAL] = str(shard)

    config = OperatorConfig.from_env()
    # Every pass runs in a thread (asyncio.to_thread): the default pool has min(32, cores + 4) threads, which on a
    # small node is fewer than the workers, and a worker waiting for a thread is a pass not sent.
    threads = config.workers + EXTRA_THREADS
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="modeldeploy"))
    kube = Kube(load_settings(), pool_size=threads)
    controller = Controller(kube, config, shard=shard)
    kube.on_namespace_terminating = controller.namespace_refused
    if WATCHES.namespaces:
        controller.namespaces_watched = True
        try:
            await asyncio.to_thread(controller.load_namespaces)
        except Exception as error:  # the watch tells soon enough; the operator must not fail to start over it
            log.warning('Namespace list failed error="%s"', error)
    # Startup handlers finish before any watch starts: the shard knows its resources before their children's events.
    await controller.prime(namespaces)
    controller.queue.start()
    memo["controller"] = controller


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.queue.stop()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def resource_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.observe_resource(event.get("type"), dict(event["object"]))


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
async def deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.observe_child(event.get("type"), {"kind": "Deployment", **event["object"]})


@kopf.on.event("", "v1", "services", labels=CHILD_LABELS)
async def service_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.observe_child(event.get("type"), {"kind": "Service", **event["object"]})


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=CHILD_LABELS)
async def disruption_budget_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.observe_child(event.get("type"), {"kind": "PodDisruptionBudget", **event["object"]})


@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=CHILD_LABELS)
async def autoscaler_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.observe_child(event.get("type"), {"kind": "HorizontalPodAutoscaler", **event["object"]})


async def namespace_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.observe_namespace(event.get("type"), dict(event["object"]))


def watch_namespaces() -> None:
    """Watch namespaces, so that nothing is written for resources whose namespace is being deleted (the API server
    refuses only creates there; status patches and applies to existing objects go through, for nothing).

    Cluster-wide only: called before kopf runs when no --namespace is given. kopf watches a cluster-scoped resource
    across the cluster whatever namespaces it serves, and a namespaced install has no ClusterRole for that; there
    the API server's refusals tell instead (Controller.namespace_refused)."""
    if not WATCHES.namespaces:
        WATCHES.namespaces = True
        kopf.on.event("", "v1", "namespaces")(namespace_event)


ROUTE_RESOURCES = {
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "VirtualService": ("networking.istio.io", "v1", "virtualservices"),
}


def _route_handler(kind: str) -> Any:
    async def route_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo["controller"]
        controller.observe_child(event.get("type"), {"kind": kind, **event["object"]})

    route_event.__name__ = f"{kind.lower()}_event"
    return route_event


def watch_routes(kinds: frozenset[str]) -> None:
    """Watch the route objects of the routers turned on (config.traffic_routers), called before kopf runs: their
    CRDs exist only where a gateway or mesh is installed, and a watch of a missing resource would fail forever."""
    for kind in sorted(kinds - WATCHES.routes):
        group, version, plural = ROUTE_RESOURCES[kind]
        kopf.on.event(group, version, plural, labels=CHILD_LABELS)(_route_handler(kind))
    WATCHES.routes = WATCHES.routes | kinds
