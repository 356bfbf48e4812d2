"""reconcile(): spec + status + observed children -> the writes that close the gap, and nothing else.

Level-based: it never asks which event woke it. It reads what the Store holds (fed by watch events and by the
results of our own writes), lets the pure planner decide, and writes only what differs: a pass with nothing to
change makes no API call at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

from pydantic import ValidationError

from modeldeploy.analysis import measure as analysis
from modeldeploy.analysis.prometheus import PrometheusClient
from modeldeploy.api import models as api
from modeldeploy.api.quantity import parse_quantity
from modeldeploy.api.times import format_time
from modeldeploy.children import builders, capacity, verification
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import smoke_runs
from modeldeploy.controller.store import Children, Key, Manifest, Store, key_of
from modeldeploy.kube.client import ApiError, permanent, status_message
from modeldeploy.metrics import ANALYSIS_MEASUREMENTS
from modeldeploy.rollout import plan as rollout
from modeldeploy.rollout import smoke as smoke_gate
from modeldeploy.rollout.changes import COUNTS_LAG_SECONDS, StatusChange, status_change, written_form
from modeldeploy.rollout.conditions import set_condition, sorted_conditions
from modeldeploy.rollout.smoke import SMOKE_PASSED_ANNOTATION
from modeldeploy.rollout.status import phase_change_event
from modeldeploy.traffic import routes

log = logging.getLogger("modeldeploy.reconcile")


class ClusterWriter(Protocol):
    """The writes a pass may make: what modeldeploy.kube.client.Kube offers, and an in-memory fake in the unit tests.
    Every method returns the object as the API server answered it, so the Store holds our own writes at once."""

    def get_child(self, kind: str, namespace: str, name: str) -> Manifest | None: ...

    def apply(self, manifest: Manifest, *, force: bool = True, create_only: bool = False) -> Manifest: ...

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> Manifest: ...

    def delete_deployment(self, namespace: str, name: str) -> None: ...

    def delete_service(self, namespace: str, name: str, uid: str | None = None) -> None: ...

    def delete_child(self, kind: str, namespace: str, name: str, uid: str) -> bool: ...

    def get_resource(self, namespace: str, name: str) -> Manifest | None: ...

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> Manifest: ...

    def post_event(self, resource: Manifest, event_type: str, reason: str, message: str) -> None: ...

    def list_pods(self, namespace: str, label_selector: str) -> list[Manifest]: ...

    def get_configmap(self, namespace: str, name: str) -> Manifest | None: ...


class ResourceGone(Exception):  # noqa: N818 - a fact about the resource, not a failure of the pass
    """The API server no longer has the resource (404 on its status write): its work ends here."""

    def __init__(self, key: Key, resource_version: str | None) -> None:
        super().__init__(f"{key[0]}/{key[1]} is gone")
        self.key = key
        self.resource_version = resource_version


QuerierFactory = Callable[[str], analysis.Querier]
"""A metrics querier for a Prometheus address: PrometheusClient in the operator, a fake in the unit tests."""

QUANTITY_MAPS = frozenset({"limits", "requests"})
"""Keys whose values are resource quantities, which the API server stores in canonical form ("1000m" comes back as
"1"): compared by amount, or every pass would re-apply an unchanged Deployment."""


def same_quantity(actual: Any, desired: Any) -> bool:
    if not isinstance(actual, str | int) or not isinstance(desired, str | int):
        return False
    try:
        return bool(parse_quantity(actual) == parse_quantity(desired))
    except ValueError:
        return False


def contains(actual: Any, desired: Any, *, quantities: bool = False) -> bool:
    """Whether every field we set is present in `actual` with our value (the server adds defaults around them).
    With `quantities`, values are resource quantities and compare by amount."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value, quantities=quantities or key in QUANTITY_MAPS)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    if quantities and actual != desired:
        return same_quantity(actual, desired)
    return bool(actual == desired)


def owned_by(child: Manifest, uid: str) -> bool:
    """Whether the child's controller owner reference names the resource with this uid (not merely its name: a
    resource deleted and created again has a new uid, and its predecessor's children are not its own)."""
    references = child["metadata"].get("ownerReferences") or []
    return any(isinstance(ref, dict) and ref.get("controller") and ref.get("uid") == uid for ref in references)


def observed_revisions(children: Children, owner_uid: str | None = None) -> dict[str, rollout.ObservedRevision]:
    """What each revision's Deployment shows; with `owner_uid`, whether the resource with that uid owns it."""
    observed = {}
    for deployment in children.deployments.values():
        labels = deployment["metadata"].get("labels") or {}
        revision = labels.get(builders.LABEL_REVISION)
        if not revision:
            continue
        status = deployment.get("status") or {}
        generation = deployment["metadata"].get("generation", 0)
        observed[revision] = rollout.ObservedRevision(
            revision=revision,
            version=labels.get(builders.LABEL_VERSION, ""),
            replicas=int(deployment["spec"].get("replicas", 0)),
            ready_replicas=int(status.get("readyReplicas") or 0),
            up_to_date=int(status.get("observedGeneration") or 0) >= int(generation),
            owned=owner_uid is None or owned_by(deployment, owner_uid),
            smoke_passed=str((deployment["metadata"].get("annotations") or {}).get(SMOKE_PASSED_ANNOTATION, "")),
        )
    return observed


def serving_revision(children: Children, resource: api.ModelDeployment) -> rollout.Serving | None:
    """The revision the operator last made serve, as a Service this resource owns says it: written in the same pass
    as the status but out of reach of a status patch. `<name>-stable` while it exists (a rollout is in progress),
    else `<name>`, whose selector names the serving revision at rest (and none during a rollout)."""
    uid = str(resource.metadata.get("uid", ""))
    stable, _ = builders.revision_service_names(resource)
    for name in (stable, builders.service_name(resource)):
        service = children.services.get(name)
        if service is None or not owned_by(service, uid):
            continue
        selector = (service.get("spec") or {}).get("selector") or {}
        revision = selector.get(builders.LABEL_REVISION) if isinstance(selector, dict) else None
        if isinstance(revision, str) and revision:
            return rollout.Serving(revision=revision, service=name)
    return None


CHILD_CONFLICT = "ChildConflict"
CONFLICT_RECHECK_SECONDS = 30.0
"""How often a resource that stands back from another object's name looks again: that object is not watched."""


def claim_children(
    kube: ClusterWriter,
    store: Store,
    children: Children,
    wanted: list[Manifest],
    uid: str,
    *,
    read_unknown: bool = True,
) -> list[Manifest]:
    """The objects that hold names of children this pass wants to write and are not this resource's (by the uid of
    their controller owner reference); [] when every name is free or this resource's own.

    The Store holds only what the watches show (labelled as ours, controlled by a ModelDeployment of this name), so
    an unlabelled Service or another owner's Deployment may hold a name all the same, and applying onto it would take
    it over. A name the Store lacks is read once from the API server (`read_unknown`); what the read finds and this
    resource owns (say, before the watches caught up after a restart) goes into the Store and into `children`. A
    name the Store holds under another owner is read again too, since what the Store holds may be gone.

    Without `read_unknown` (the Store holds no child of the resource: its first pass), names the Store lacks are not
    read: the writes that create the children are the check (create_only in _write_children), which saves a read
    per child of every new resource. Reading first keeps the rule that a pass that stands back writes nothing; for
    a new resource, the children it created before the refused one are its own, and wait with it."""
    taken = []
    for manifest in wanted:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        known = children.of_kind(kind)
        current = known.get(name)
        if current is not None and owned_by(current, uid):
            continue
        if current is not None:
            store.remove_child(current)
            del known[name]
        elif not read_unknown:
            continue
        current = kube.get_child(kind, manifest["metadata"]["namespace"], name)
        if current is None:
            continue
        if owned_by(current, uid):
            store.put_child(current)
            known[name] = current
            continue
        taken.append(current)
    return taken


class _NameTakenError(Exception):
    """A child could not be created: an object that is not this resource's holds its name."""

    def __init__(self, holder: Manifest) -> None:
        super().__init__(f"{holder.get('kind')}/{holder['metadata'].get('name')}")
        self.holder = holder


def _held_by(child: Manifest, resource: api.ModelDeployment) -> str:
    """`Service/x-canary (controlled by Deployment/y)`: the object and its controller, as a person would look for it."""
    references = child["metadata"].get("ownerReferences") or []
    controller = next((ref for ref in references if isinstance(ref, dict) and ref.get("controller")), None)
    if controller is None:
        owner = "no controller"
    elif controller.get("kind") == api.KIND and controller.get("name") == builders.resource_name(resource):
        owner = "an earlier ModelDeployment of this name"
    else:
        owner = f"controlled by {controller.get('kind')}/{controller.get('name')}"
    return f"{child['kind']}/{child['metadata']['name']} ({owner})"


def _stand_back(
    kube: ClusterWriter,
    store: Store,
    parent: Manifest,
    resource: api.ModelDeployment,
    taken: list[Manifest],
    events: list[rollout.Event],
    now: datetime,
) -> float:
    """A pass that writes no (further) child, since a name it needs is taken: Degraded ChildConflict and not Ready,
    the rest of status as it was (what the planner decided is not carried out), and a look again later. A name the
    Store did not show taken is found by the write that would create the child, after the children written before
    it in that pass (Services first); those are this resource's own and wait with it."""
    objects = ", ".join(_held_by(child, resource) for child in taken)
    exists = "exists and is" if len(taken) == 1 else "exist and are"
    message = f"{objects} {exists} not this ModelDeployment's: no child is written until the name is free"
    _hold(kube, store, parent, resource, CHILD_CONFLICT, message, events, now)
    return CONFLICT_RECHECK_SECONDS


ROUTER_NOT_ENABLED = "RouterNotEnabled"
ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
INVALID_SPEC = "InvalidSpec"
RECONCILE_ERROR = "ReconcileError"
ERROR_RECHECK_SECONDS = 300.0
"""How often a resource whose writes the API server refused (or whose children cannot be built) tries again: an
admission webhook or a quota may change its mind with no event the operator watches; a spec change comes sooner,
as its own event. Slow on purpose: the same writes are most likely refused again."""


def _refused(
    kube: ClusterWriter,
    store: Store,
    parent: Manifest,
    resource: api.ModelDeployment,
    what: str,
    error: ApiError,
    events: list[rollout.Event],
    now: datetime,
) -> float:
    """The API server refused a write of this pass for good (a child's shape admission of the ModelDeployment
    could not check, a webhook's policy, a status too large): Degraded ReconcileError naming the write and the
    server's reason, the rest of status as it was, and a try again later."""
    message = f"the API server refused {what} ({error.status}): {status_message(error.body)}"
    _hold(kube, store, parent, resource, RECONCILE_ERROR, message, events, now)
    return ERROR_RECHECK_SECONDS


def _unbuildable(
    kube: ClusterWriter,
    store: Store,
    parent: Manifest,
    resource: api.ModelDeployment,
    error: Exception,
    events: list[rollout.Event],
    now: datetime,
) -> float:
    """The children cannot be built from a spec admission accepted (a gap between the CRD's rules and the
    builders): Degraded ReconcileError with the builders' complaint, rather than a pass that fails forever."""
    log.warning(
        'Children not built namespace="%s" name="%s" error="%s: %s"',
        *key_of(parent),
        type(error).__name__,
        error,
    )
    message = f"the children cannot be built from this spec: {type(error).__name__}: {error}"
    _hold(kube, store, parent, resource, RECONCILE_ERROR, message, events, now)
    return ERROR_RECHECK_SECONDS


def _hold(
    kube: ClusterWriter,
    store: Store,
    parent: Manifest,
    resource: api.ModelDeployment,
    reason: str,
    message: str,
    events: list[rollout.Event],
    now: datetime,
) -> None:
    """Status as it was but Degraded and not Ready with `reason`, and a Warning Event of `reason`.

    The Warning is recorded on every hold, not only with the status write that starts it: each retry that stays held
    is counted on the same Event (count and lastTimestamp, see kube/events.py), as Kubernetes' own controllers count
    a failure that repeats, so the Event says how long and how often, and does not expire while the hold lasts."""
    namespace, name = key_of(parent)
    message = analysis.cap_message(message)
    generation = int(parent["metadata"].get("generation", 0))
    conditions = resource.status.conditions
    for kind, value in ((api.ConditionType.DEGRADED, True), (api.ConditionType.READY, False)):
        conditions = set_condition(conditions, kind, value, reason, message, generation=generation, now=now)
    status = resource.status.model_copy(
        update={
            "observedGeneration": generation,
            "phase": str(api.Phase.DEGRADED),
            "message": message,
            "conditions": conditions,
        }
    )
    log.warning('Holding namespace="%s" name="%s" reason="%s" message="%s"', namespace, name, reason, message)
    # The repairs' Events (if any) go out with the write that records them, as in a pass that carries on.
    written = _write_status(kube, store, parent, status, now=now, force=bool(events))
    # The hold's own Warning goes out at every retry that stays held: a repeat is counted on the same Event.
    _post_events(kube, store, parent, [*(events if written else []), rollout.Event("Warning", reason, message)])


def _invalid_status(parent: Manifest, error: ValidationError, now: datetime) -> api.ModelDeploymentStatus:
    previous, _ = rollout.read_status(parent.get("status"))
    generation = int(parent["metadata"].get("generation", 0))
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    # The location starts at the object ("spec.replicas"), so it is the field path as kubectl shows it.
    message = analysis.cap_message(f"{location}: {first['msg']}")
    conditions = set_condition(
        previous.conditions,
        api.ConditionType.DEGRADED,
        True,
        "InvalidSpec",
        message,
        generation=generation,
        now=now,
    )
    conditions = set_condition(
        conditions, api.ConditionType.READY, False, "InvalidSpec", message, generation=generation, now=now
    )
    return previous.model_copy(
        update={
            "observedGeneration": generation,
            "phase": str(api.Phase.DEGRADED),
            "message": message,
            "conditions": conditions,
        }
    )


ADDRESS_FIELD = "spec.rollout.analysis.prometheus.address"


def refused_prometheus_address(resource: api.ModelDeployment, config: OperatorConfig) -> str | None:
    """Why the spec's Prometheus address may not be asked, or None when it may (or the spec names none).

    Users choose the address and the operator asks it from inside the cluster, so which addresses a spec may name
    is the operator's setting (MODELDEPLOY_PROMETHEUS_ALLOWED_URLS, and its own MODELDEPLOY_PROMETHEUS_URL)."""
    spec = resource.spec.rollout.analysis
    if spec is None or not spec.prometheus.address or config.prometheus_address_allowed(spec.prometheus.address):
        return None
    allowed = ", ".join(str(prefix) for prefix in config.allowed_prometheus_prefixes()) or "none"
    return analysis.cap_message(
        f"{ADDRESS_FIELD}: {spec.prometheus.address} is not a Prometheus address this operator may ask "
        f"(allowed: {allowed})"
    )


def _refused_status(
    status: api.ModelDeploymentStatus,
    previous: api.ModelDeploymentStatus,
    message: str,
    now: datetime,
    *,
    reason: str = "InvalidSpec",
) -> api.ModelDeploymentStatus:
    """The planner's status, Degraded with `reason` and not Ready (InvalidSpec: as for a spec the models refuse).

    The conditions' transition times come from the stored status, not from the planner's (which does not know
    about the refusal, and would flip them every pass)."""
    generation = status.observedGeneration
    conditions = list(status.conditions)
    for kind, value in ((api.ConditionType.DEGRADED, True), (api.ConditionType.READY, False)):
        updated = set_condition(previous.conditions, kind, value, reason, message, generation=generation, now=now)
        conditions = [c for c in conditions if c.type != kind] + [c for c in updated if c.type == kind]
    return status.model_copy(
        update={"phase": str(api.Phase.DEGRADED), "message": message, "conditions": sorted_conditions(conditions)}
    )


CONFLICT_REPLANS = 3
"""Passes re-planned at once after a status write refused as stale; past that the queue retries with backoff."""


class _StaleError(Exception):
    """The status write carried a resourceVersion that is no longer current: someone wrote the object since."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


def reconcile(
    kube: ClusterWriter,
    store: Store,
    config: OperatorConfig,
    key: Key,
    now: datetime | None = None,
    queriers: QuerierFactory = PrometheusClient,
) -> float | None:
    """One level-based pass over one ModelDeployment. Returns seconds until a timed re-check, if one is due.

    Everything it depends on comes in: what was observed (the Store), the writer, the clock and the metrics querier,
    so the whole pass runs in unit tests against in-memory fakes.

    The status write is fenced by the resourceVersion the decision was made from. When it is refused (409), the
    resource is read again into the Store and the pass is planned again at once from what is there now: another
    writer's change (a command, a spec edit, another replica's status) is never overwritten by a stale decision,
    and a conflict costs one read, not a trip through the backoff."""
    now = now or datetime.now(UTC)
    for attempt in range(CONFLICT_REPLANS + 1):
        try:
            return _pass(kube, store, config, key, now, queriers)
        except _StaleError as stale:
            if attempt == CONFLICT_REPLANS:
                raise stale.error from stale
            fresh = kube.get_resource(*key)
            if fresh is None:
                raise ResourceGone(key, None) from stale
            store.put_parent(fresh)
            log.info(
                'Status conflict, planning again namespace="%s" name="%s" resourceVersion="%s"',
                *key,
                fresh["metadata"].get("resourceVersion"),
            )
    raise AssertionError("unreachable")


def _pass(
    kube: ClusterWriter,
    store: Store,
    config: OperatorConfig,
    key: Key,
    now: datetime,
    queriers: QuerierFactory,
) -> float | None:
    if store.namespace_terminating(key[0]):
        return None  # Its namespace is being deleted, and everything in it: nothing is written there any more.
    parent, children = store.snapshot(key)
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return None  # Gone or going: garbage collection removes the children.
    namespace = key[0]
    # Status is read apart from the spec: a status the models cannot read is repaired below, never an invalid spec.
    stored_status, unreadable = rollout.read_status(parent.get("status"))
    try:
        resource = api.ModelDeployment.model_validate({k: v for k, v in parent.items() if k != "status"})
    except ValidationError as error:
        # Admission should have refused it; an object stored before a schema change can still be invalid.
        status = _invalid_status(parent, error, now)
        if _write_status(kube, store, parent, status, now=now):
            _post_events(kube, store, parent, [rollout.Event("Warning", "InvalidSpec", status.message or "")])
        return None
    resource = resource.model_copy(update={"status": stored_status})

    try:
        desired_revision = builders.revision_of(resource, config)
    except Exception as error:
        return _unbuildable(kube, store, parent, resource, error, [], now)
    model = builders.model_name(resource)
    observed = observed_revisions(children, str(parent["metadata"].get("uid", "")))
    serving = serving_revision(children, resource)
    route_kind = routes.route_kind(resource)
    if route_kind is not None and route_kind not in config.traffic_routers:
        message = (
            f"spec.trafficRouting asks for a {route_kind}, but this operator does not route traffic with "
            f"{route_kind}s (enabled: {', '.join(sorted(config.traffic_routers)) or 'none'}): nothing is changed "
            "until it does (the chart's trafficRouting values) or the spec stops asking"
        )
        _hold(kube, store, parent, resource, ROUTER_NOT_ENABLED, message, [], now)
        return ERROR_RECHECK_SECONDS
    route_seen = routed_by(children, resource, route_kind)
    route = routes.route_state(route_seen, config.cluster_domain) if route_seen is not None else None
    # Status is untrusted input (anyone with patch on the status subresource writes it): it is checked against what
    # the Store shows before anything reads it, the measurement below included.
    resource, checked = rollout.trusted(
        resource,
        desired_revision,
        observed,
        now,
        model=model,
        serving=serving,
        history_limit=config.history_limit,
        retained=config.retained_revisions,
        route=route,
    )
    repairs = (*unreadable, *checked)
    for repair in repairs:
        log.warning(
            'Status repaired namespace="%s" name="%s" field="%s" action="%s"',
            namespace,
            key[1],
            repair.field,
            repair.action,
        )
    measurements = None
    if analysis.measurement_due(resource, desired_revision, now):
        measurements = measure(resource, model, config, now, queriers)
    smoke_round = None
    if smoke_gate.smoke_due(resource, desired_revision, observed):
        serving_now = resource.status.stable.revision if resource.status.stable is not None else desired_revision
        smoke_round = smoke_runs.run_smoke_round(kube, resource, model, desired_revision, serving_now)
    refused = refused_prometheus_address(resource, config)
    plan = rollout.plan(
        resource,
        desired_revision,
        observed,
        now,
        model=model,
        url=builders.service_url(resource, config),
        history_limit=config.history_limit,
        retained=config.retained_revisions,
        measurements=measurements,
        serving=serving,
        route=route,
        smoke_round=smoke_round,
    )

    stable = plan.status.stable
    assert stable is not None  # the planner always names a serving revision
    # The revision rolling out, None at rest: without a router, `<name>-stable` and `<name>-canary` exist only while
    # one does (the replica-ratio router routes through `<name>` alone); a router's route sends traffic through
    # them, so they always exist with one.
    canary_revision = plan.status.canary.revision if plan.status.canary else None
    repair_events = [repair.event() for repair in repairs]
    try:
        services = builders.build_services(
            resource,
            stable.revision,
            canary_revision,
            revision_services=route_kind is not None,
            canary_admitted=plan.canary_admitted,
        )
        applied = None
        if plan.apply_revision is not None:
            replicas = plan.replicas[plan.apply_revision]
            evidence = None
            if plan.smoke_evidence is not None and plan.smoke_evidence[0] == plan.apply_revision:
                evidence = {SMOKE_PASSED_ANNOTATION: plan.smoke_evidence[1]}
            applied = builders.build_deployment(resource, plan.apply_revision, replicas, config, annotations=evidence)
        route_wanted = routes.build_route(resource, plan.route_weight, plan.mirror, config.cluster_domain)
        capacity_wanted = capacity.build_capacity(resource)
    except Exception as error:
        return _unbuildable(kube, store, parent, resource, error, repair_events, now)
    uid = str(parent["metadata"].get("uid", ""))
    wanted = [
        *services,
        *([applied] if applied else []),
        *([route_wanted] if route_wanted else []),
        *capacity_wanted,
    ]
    first = not children.deployments and not children.services
    conflicts = claim_children(kube, store, children, wanted, uid, read_unknown=not first)
    if conflicts:
        return _stand_back(kube, store, parent, resource, conflicts, repair_events, now)
    # Only this resource's own Deployments are scaled or deleted: a predecessor's (same name, another uid) is left
    # to garbage collection.
    owned = {name: body for name, body in children.deployments.items() if owned_by(body, uid)}

    try:
        _write_children(kube, store, resource, plan, applied, services, children, owned, route_wanted)
        _write_capacity(kube, store, resource, children, capacity_wanted)
    except _NameTakenError as taken:
        # Every name that is taken, read now, so that the message names them all at once (the holder just found,
        # should it be gone again by this read).
        conflicts = claim_children(kube, store, children, wanted, uid) or [taken.holder]
        return _stand_back(kube, store, parent, resource, conflicts, repair_events, now)
    except _RefusedWriteError as refused_write:
        return _refused(kube, store, parent, resource, refused_write.what, refused_write.error, repair_events, now)

    status, events = plan.status, plan.events
    degraded: tuple[str, str] | None = None
    if refused is not None:
        # The rollout goes on as the planner decided, but its analysis cannot succeed: every measurement is an
        # Error (see measure()), so the canary never passes a step and is rolled back at consecutiveErrorLimit,
        # exactly as with a Prometheus that does not answer.
        degraded = (INVALID_SPEC, refused)
    elif route_seen is not None and (refusal := routes.route_refusal(route_seen)) is not None:
        # The gateway refuses the route (a listener that does not allow its namespace, a Service it cannot resolve):
        # no weight the operator sets is in force, so a step waits for it until the progress deadline.
        degraded = (ROUTE_NOT_ACCEPTED, f"the {route_seen['kind']} is not accepted: {refusal}")
    if degraded is not None:
        status = _refused_status(plan.status, resource.status, degraded[1], now, reason=degraded[0])
        planned = phase_change_event(resource.status, plan.status)
        events = [event for event in plan.events if event != planned]
        changed = phase_change_event(resource.status, status)
        if changed is not None:
            events.append(changed)
    status, events = with_artifact(resource, desired_revision, status, events)
    # The repairs go out with the status write that records them, once: the next pass reads the repaired status.
    events = repair_events + events
    try:
        written = _write_status(kube, store, parent, status, now=now, force=bool(repairs))
    except ApiError as error:
        if not permanent(error):
            raise
        return _refused(kube, store, parent, resource, "the status write", error, repair_events, now)
    if written:
        _post_events(kube, store, parent, events)
    return _sooner(plan.requeue_after, _counts_due_in(store, key, now))


class _RefusedWriteError(Exception):
    """A child write the API server refused for good: `what` names it as status shows it."""

    def __init__(self, what: str, error: ApiError) -> None:
        super().__init__(what)
        self.what = what
        self.error = error


def _create_child(
    kube: ClusterWriter,
    store: Store,
    resource: api.ModelDeployment,
    manifest: Manifest,
    same: Callable[[Manifest, Manifest], bool],
) -> None:
    """Create a child the Store does not hold. Refused because the name is held: by this resource (the watch has not
    shown it yet, say after a restart), it is brought up to date like any other; by anyone else, the pass stands
    back (_NameTakenError)."""
    _confirm_owner(kube, store, resource)
    try:
        store.put_child(kube.apply(manifest, force=False, create_only=True))
        return
    except ApiError as error:
        if error.status != HTTPStatus.CONFLICT:
            raise
        holder = kube.get_child(manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if holder is None:
            raise  # gone again since: the retried pass creates it
    if not owned_by(holder, str(resource.metadata.get("uid", ""))):
        raise _NameTakenError(holder)
    store.put_child(holder)
    if not same(holder, manifest):
        store.put_child(kube.apply(manifest, force=True))


def _write_children(
    kube: ClusterWriter,
    store: Store,
    resource: api.ModelDeployment,
    plan: rollout.Plan,
    applied: Manifest | None,
    services: list[Manifest],
    children: Children,
    owned: dict[str, Manifest],
    route: Manifest | None = None,
) -> None:
    """Apply, scale and delete what differs from the Store. A permanent refusal is raised as _RefusedWriteError
    naming the object; any other error ends the pass as it is (the queue retries it).

    The Services wanted come first, so that a rollout's Services exist (and `<name>` selects both revisions) before
    a canary pod can be Ready or the stable revision gives up one; the Services no longer wanted go last, once the
    Service `<name>` selects the stable revision alone and the canary's Deployment has been scaled.

    A router's route takes traffic away from the canary before anything else is written (before `<name>-canary`
    selects another revision, before the canary is scaled down) and gives it traffic after (once the Services and
    the Deployments are as wanted): a weight never points at pods that are not there."""
    namespace = resource.metadata["namespace"]
    what = ""

    uid = str(resource.metadata.get("uid", ""))

    route_current = None
    if route is not None:
        route_current = children.of_kind(route["kind"]).get(route["metadata"]["name"])
    route_first = route is not None and route_current is not None and _takes_traffic_away(route_current, route)

    def write_route() -> None:
        nonlocal what
        if route is None:
            return
        what = f"{route['kind']}/{route['metadata']['name']}"
        if route_current is None:
            _create_child(kube, store, resource, route, routes.same_route)
        elif not routes.same_route(route_current, route):
            store.put_child(kube.apply(route, force=True))

    try:
        if route_first:
            write_route()
        for service in services:
            current = children.services.get(service["metadata"]["name"])
            if current is None:
                what = f"Service/{service['metadata']['name']}"
                _create_child(kube, store, resource, service, same_service)
            elif not same_service(current, service):
                what = f"Service/{service['metadata']['name']}"
                store.put_child(kube.apply(service, force=True))
        for revision, replicas in plan.replicas.items():
            deployment_name = builders.deployment_name(resource, revision)
            current = owned.get(deployment_name)
            what = f"Deployment/{deployment_name}"
            if revision == plan.apply_revision:
                assert applied is not None
                if current is None:
                    _create_child(kube, store, resource, applied, contains)
                elif not contains(current, applied):
                    store.put_child(kube.apply(applied, force=True))
            elif current is not None and current["spec"].get("replicas") != replicas:
                what = f"the scale of Deployment/{deployment_name}"
                store.put_child(kube.scale_deployment(namespace, deployment_name, replicas))
        for deployment_name, deployment in owned.items():
            labelled = (deployment["metadata"].get("labels") or {}).get(builders.LABEL_REVISION)
            if labelled not in plan.replicas:
                what = f"the deletion of Deployment/{deployment_name}"
                kube.delete_deployment(namespace, deployment_name)
                store.remove_child(deployment)
        if not route_first:
            write_route()
        for kind in routes.ROUTE_KINDS:
            # A router no longer asked for (or another asked for instead): its route goes, once the other is there.
            stale = children.of_kind(kind).get(builders.resource_name(resource))
            if stale is None or not owned_by(stale, uid) or (route is not None and route["kind"] == kind):
                continue
            what = f"the deletion of {kind}/{stale['metadata']['name']}"
            kube.delete_child(kind, namespace, stale["metadata"]["name"], uid=str(stale["metadata"].get("uid")))
            store.remove_child(stale)
        wanted = {service["metadata"]["name"] for service in services}
        # `<name>-stable` last: it names the revision that served, and a pass that fails before it goes leaves that
        # evidence for the next pass, which then decides the same end again.
        for name in reversed(builders.revision_service_names(resource)):
            current = children.services.get(name)
            # Only this resource's own (by uid): a same-name Service of anyone else is never deleted, and one of an
            # earlier resource of this name is left to garbage collection.
            if name in wanted or current is None or not owned_by(current, uid):
                continue
            what = f"the deletion of Service/{name}"
            _delete_service(kube, namespace, current)
            store.remove_child(current)
    except ApiError as error:
        if not permanent(error):
            raise
        raise _RefusedWriteError(what, error) from error


def _write_capacity(
    kube: ClusterWriter, store: Store, resource: api.ModelDeployment, children: Children, wanted: list[Manifest]
) -> None:
    """Create or update the PodDisruptionBudget and the HorizontalPodAutoscaler the spec asks for, and delete this
    resource's own that it no longer asks for. After the Deployments: neither changes what serves."""
    namespace = resource.metadata["namespace"]
    uid = str(resource.metadata.get("uid", ""))
    by_kind = {manifest["kind"]: manifest for manifest in wanted}
    what = ""
    try:
        for kind in capacity.CAPACITY_KINDS:
            desired = by_kind.get(kind)
            current = children.of_kind(kind).get(builders.resource_name(resource))
            what = f"{kind}/{builders.resource_name(resource)}"
            if desired is not None and current is None:
                _create_child(kube, store, resource, desired, contains)
            elif desired is not None and current is not None and not contains(current, desired):
                store.put_child(kube.apply(desired, force=True))
            elif desired is None and current is not None and owned_by(current, uid):
                what = f"the deletion of {what}"
                kube.delete_child(kind, namespace, current["metadata"]["name"], uid=str(current["metadata"]["uid"]))
                store.remove_child(current)
    except ApiError as error:
        if not permanent(error):
            raise
        raise _RefusedWriteError(what, error) from error


def _takes_traffic_away(current: Manifest, desired: Manifest) -> bool:
    """Whether writing `desired` over `current` lowers the canary's weight or ends its mirror."""
    before, after = routes.route_state(current), routes.route_state(desired)
    return after.weight < before.weight or (before.mirror and not after.mirror)


def routed_by(children: Children, resource: api.ModelDeployment, kind: str | None) -> Manifest | None:
    """The route object of this resource's router, when one exists and is this resource's own."""
    if kind is None:
        return None
    current = children.of_kind(kind).get(builders.resource_name(resource))
    if current is None or not owned_by(current, str(resource.metadata.get("uid", ""))):
        return None
    return current


def _confirm_owner(kube: ClusterWriter, store: Store, resource: api.ModelDeployment) -> None:
    """Before a child is created after a child of this resource was seen deleted: the resource itself must still
    exist, with its uid. Garbage collection deletes the children of a resource deleted during a watch gap, and
    their deletions come while the Store may still hold it; re-creating them would give them a dead owner (and the
    collector would delete them again). One read, only then; ResourceGone ends the resource's work."""
    key = (resource.metadata["namespace"], resource.metadata["name"])
    if not store.children_lost(key):
        return
    live = kube.get_resource(*key)
    if live is None or live["metadata"].get("uid") != resource.metadata.get("uid"):
        raise ResourceGone(key, resource.metadata.get("resourceVersion"))
    store.owner_confirmed(key)


def same_service(current: Manifest, desired: Manifest) -> bool:
    """Whether a Service holds what we build. contains() cannot see a selector key we no longer set, and `<name>`
    drops its revision key when a rollout starts: that key is compared both ways."""
    if not contains(current, desired):
        return False
    selector = (current.get("spec") or {}).get("selector") or {}
    return bool(selector.get(builders.LABEL_REVISION) == desired["spec"]["selector"].get(builders.LABEL_REVISION))


def _delete_service(kube: ClusterWriter, namespace: str, current: Manifest) -> None:
    """Delete the Service the Store holds, that very object: under a precondition on its uid, so that one made again
    under the name since the Store saw it (by anyone) is refused (409) and left alone. Gone already (404) or made
    again, the Store's copy is of an object that no longer exists, and is forgotten all the same."""
    name = current["metadata"]["name"]
    try:
        kube.delete_service(namespace, name, uid=current["metadata"].get("uid"))
    except ApiError as error:
        if error.status != HTTPStatus.CONFLICT:
            raise
        log.info(
            'Service not deleted, made again since it was seen namespace="%s" name="%s"',
            namespace,
            name,
        )


def with_artifact(
    resource: api.ModelDeployment, revision: str, status: api.ModelDeploymentStatus, events: list[rollout.Event]
) -> tuple[api.ModelDeploymentStatus, list[rollout.Event]]:
    """status.artifact for the spec's revision, and a Warning Event the first time it would run unpinned code."""
    artifact = verification.artifact_status(resource, revision)
    warning = verification.unverified_warning(resource.status.artifact, artifact)
    if warning is not None:
        events = [*events, rollout.Event("Warning", verification.UNVERIFIED_ARTIFACT, warning)]
    return status.model_copy(update={"artifact": artifact}), events


def measure(
    resource: api.ModelDeployment,
    model: str,
    config: OperatorConfig,
    now: datetime,
    queriers: QuerierFactory = PrometheusClient,
) -> dict[str, api.Measurement]:
    """One measurement of every analysis metric of the resource's canary (see analysis.measurement_due)."""
    spec = resource.spec.rollout.analysis
    canary, stable = resource.status.canary, resource.status.stable
    assert spec is not None
    assert canary is not None
    assert stable is not None
    target = analysis.Target(
        namespace=resource.metadata["namespace"],
        name=resource.metadata["name"],
        model=model,
        canary_version=canary.version,
        canary_revision=canary.revision,
        stable_version=stable.version,
        stable_revision=stable.revision,
    )
    refused = refused_prometheus_address(resource, config)
    if refused is not None:
        # Not a single request to an address the operator may not ask.
        measurements = {
            metric.name: api.Measurement(
                phase=str(api.MeasurementPhase.ERROR),
                message=analysis.cap_message(f"not measured: {refused}"),
                time=format_time(now),
            )
            for metric in spec.metrics
        }
    else:
        client = queriers(spec.prometheus.address or config.prometheus_url)
        measurements = analysis.measure_all(spec, target, client, config.prometheus_timeout, format_time(now))
    kinds = {metric.name: metric.builtin or "query" for metric in spec.metrics}
    for name, measurement in measurements.items():
        ANALYSIS_MEASUREMENTS.labels(kinds[name], measurement.phase).inc()
        log.info(
            'Measured namespace="%s" name="%s" metric="%s" phase="%s" value="%s" message="%s"',
            target.namespace,
            target.name,
            name,
            measurement.phase,
            measurement.value,
            measurement.message,
        )
    return measurements


def _write_status(
    kube: ClusterWriter,
    store: Store,
    parent: Manifest,
    status: api.ModelDeploymentStatus,
    *,
    now: datetime,
    force: bool = False,
) -> bool:
    """Write the status when it differs meaningfully from what is stored, or (`force`) when what is stored had to
    be repaired, which a comparison of the parsed statuses cannot always see. One write per pass at most.

    A difference in ready counts alone (rollout/changes.py) waits: the next meaningful write carries it, or it is
    written by itself once it has lasted COUNTS_LAG_SECONDS (the pass asks to come back then)."""
    previous, _ = rollout.read_status(parent.get("status"))
    key = key_of(parent)
    change = status_change(previous, status)
    if not force and change == StatusChange.NONE:
        store.counts_written(key)
        return False
    if not force and change == StatusChange.COUNTS:
        behind = now - store.counts_behind(key, now)
        if behind.total_seconds() < COUNTS_LAG_SECONDS:
            return False
    namespace, name = key
    version = parent["metadata"].get("resourceVersion")
    try:
        updated = kube.patch_status(namespace, name, written_form(status), resource_version=version)
    except ApiError as error:
        if error.status == HTTPStatus.NOT_FOUND:
            raise ResourceGone((namespace, name), version) from error
        if error.status == HTTPStatus.CONFLICT:
            raise _StaleError(error) from error
        raise
    store.put_parent(updated)
    store.counts_written(key)
    if previous.phase != status.phase:
        log.info(
            'Status changed namespace="%s" name="%s" phase="%s" message="%s"',
            namespace,
            name,
            status.phase,
            status.message,
        )
    return True


def _counts_due_in(store: Store, key: Key, now: datetime) -> float | None:
    """Seconds until the counts that differ (and nothing else) are written by themselves, if any differ."""
    since = store.counts_behind_since(key)
    if since is None:
        return None
    return max(COUNTS_LAG_SECONDS - (now - since).total_seconds(), 0.0)


def _sooner(first: float | None, second: float | None) -> float | None:
    return min((delay for delay in (first, second) if delay is not None), default=None)


def _post_events(kube: ClusterWriter, store: Store, parent: Manifest, events: list[rollout.Event]) -> None:
    """Post `events`, and stop at the first one the API server refuses for a namespace being deleted."""
    namespace = key_of(parent)[0]
    for event in events:
        if store.namespace_terminating(namespace):
            return
        kube.post_event(parent, event.type, event.reason, event.message)
