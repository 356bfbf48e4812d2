"""The work queue between watch events and reconcile().

Watch events (of the resources and of their children) only mark a resource as needing a pass; workers run the
passes, one at a time per resource, in threads because the API client (kube/client.py) is synchronous. Events
that arrive while a pass runs coalesce into one more pass. Timed re-checks (deadlines) and retries after errors go
through the same queue. Errors are classified (kube/client.py): transient ones come back with jittered exponential
backoff (at least what a Retry-After asks), permanent ones with a slow re-check, since reconcile() has already said
why in status where it could.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modeldeploy.analysis.measure import cap_message
from modeldeploy.api.selectors import LabelSelector, labels_of
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import orphans
from modeldeploy.controller.reconcile import ERROR_RECHECK_SECONDS, ResourceGone, reconcile
from modeldeploy.controller.store import Key, Manifest, Store, key_of, owner_key
from modeldeploy.kube.client import ApiError, Kube, namespace_terminating, permanent, status_message, transient
from modeldeploy.metrics import (
    API_WAIT,
    EVENT_HANDOFF,
    QUEUE_DEPTH,
    QUEUE_WAIT,
    RECONCILE_COMPUTE,
    RECONCILE_DURATION,
    RECONCILES,
    RESOURCES,
    THREAD_HANDOFF,
)

log = logging.getLogger("modeldeploy.controller")

SWEEP_INTERVAL_SECONDS = 300.0
"""How often the Store is compared with a list of the resources, for deletions no watch event reported."""
RELIST_SETTLE_SECONDS = 5.0
"""How long after the last listed object of a (re-)list the comparison runs: a re-list after a watch gap reports
no DELETED for what went meanwhile, so it is checked at once rather than at the next interval."""

TRACEBACKS_PER_KEY = 16
"""Distinct unexpected errors whose traceback is logged per resource; later ones get one line each."""

PRIME_ATTEMPTS = 3
"""Tries of a shard's start-up list of its resources; without it the shard still works, with a few more reads."""


@dataclass
class Backoff:
    """Exponential backoff with equal jitter: after n consecutive failures, a delay between half and all of
    min(cap, base * 2**n). The jitter spreads the retries of resources that failed together (an API server
    restart fails them all at once); the half that is kept means a retry never comes at once. `rng` is injectable
    so that tests see fixed delays."""

    base: float = 0.2
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(failures, 32))
        return float(ceiling / 2 + self.rng.uniform(0.0, ceiling / 2))


class WorkQueue:
    """A de-duplicating queue of keys with delayed adds, in the manner of client-go's rate-limited work queue."""

    def __init__(
        self, handle: Callable[[Key], Awaitable[float | None]], workers: int, backoff: Backoff | None = None
    ) -> None:
        self._handle = handle
        self._workers = workers
        self._backoff = backoff or Backoff()
        self._reported: dict[Key, set[str]] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._queued_at: dict[Key, float] = {}  # perf_counter() of the hand-off, for the queue's wait
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = False

    def add(self, key: Key) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queued_at[key] = time.perf_counter()
            self._queue.put_nowait(key)
            QUEUE_DEPTH.set(self._queue.qsize())

    def add_after(self, key: Key, delay: float) -> None:
        """Add `key` after `delay` seconds, unless an earlier re-check is already scheduled."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._reported.pop(key, None)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"reconcile-worker-{n}") for n in range(self._workers)]

    async def stop(self) -> None:
        self.stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            QUEUE_DEPTH.set(self._queue.qsize())
            self._queued.discard(key)
            taken = time.perf_counter()
            QUEUE_WAIT.observe(taken - self._queued_at.pop(key, taken))
            self._processing.add(key)
            try:
                requeue_after = await self._handle(key)
            except Exception as error:
                if isinstance(error, ApiError) and namespace_terminating(error):
                    # The namespace and the resource are going; its deletion event ends the story, retries would
                    # only fill the log until then.
                    log.debug('Namespace terminating namespace="%s" name="%s"', key[0], key[1])
                    self._failures.pop(key, None)
                    continue
                self.add_after(key, self._retry_delay(key, error))
            else:
                self._failures.pop(key, None)
                if requeue_after is not None:
                    self.add_after(key, requeue_after)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)

    def _retry_delay(self, key: Key, error: Exception) -> float:
        """When to try `key` again after `error`, logged as one line (a traceback only for the unexpected)."""
        namespace, name = key
        if permanent(error):
            assert isinstance(error, ApiError)
            # The same writes would be refused again; what a person changes (the spec) comes sooner as an event.
            self._failures.pop(key, None)
            log.warning(
                'Reconcile refused namespace="%s" name="%s" status=%s reason="%s" message="%s" retry_in=%.0fs',
                namespace,
                name,
                error.status,
                error.reason,
                _refusal(error),
                ERROR_RECHECK_SECONDS,
            )
            return ERROR_RECHECK_SECONDS
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = self._backoff.delay(failures)
        if isinstance(error, ApiError):
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            log.warning(
                'Reconcile failed namespace="%s" name="%s" status=%s reason="%s" retry_in=%.1fs',
                namespace,
                name,
                error.status,
                error.reason,
                delay,
            )
        elif transient(error):
            log.warning(
                'Reconcile failed namespace="%s" name="%s" error="%s" retry_in=%.1fs',
                namespace,
                name,
                type(error).__name__,
                delay,
            )
        else:
            signature = f"{type(error).__qualname__}: {error}"
            reported = self._reported.setdefault(key, set())
            if signature in reported or len(reported) >= TRACEBACKS_PER_KEY:
                log.warning(
                    'Reconcile failed namespace="%s" name="%s" error="%s" retry_in=%.1fs',
                    namespace,
                    name,
                    signature,
                    delay,
                )
            else:
                reported.add(signature)
                log.exception('Reconcile failed namespace="%s" name="%s" retry_in=%.1fs', namespace, name, delay)
        return delay


def _refusal(error: ApiError) -> str:
    return cap_message(status_message(error.body))


class Controller:
    """Feeds the Store from watch events and keeps every known resource reconciled.

    With `shard` (a label selector), the controller is one of several operators that split the resources between
    them: the resource watch is filtered by the API server with the same selector, and the Store admits only
    resources it selects. Children are watched whole (a label selector cannot name an owner), so a child event is
    kept only for a resource this shard holds or expects (listed at start-up, `prime()`); everything else is
    dropped at once. A resource that joins the shard later (relabelled, or created in the list before its first
    event) has its children listed once, before its first pass (`_adopt()`), since their events went by unkept."""

    def __init__(self, kube: Kube, config: OperatorConfig, shard: LabelSelector | None = None) -> None:
        self.kube = kube
        self.config = config
        self.shard = shard
        self.store = Store(admits=self._selects if shard is not None else None)
        self.queue = WorkQueue(self._reconcile, workers=config.workers)
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._sweeping: asyncio.Task[list[Key]] | None = None
        self.namespaces_watched = False
        """Whether the namespace watch (cluster-wide only) says which namespaces are being deleted; without it, the
        API server's refusals do (namespace_refused)."""
        # Set by a (re-)list: the next sweep also looks for children that garbage collection missed (orphans.py).
        self._orphan_scan_due = False
        self._collections: set[asyncio.Task[list[Manifest]]] = set()
        # Resources listed at start-up that the watch has not shown yet: their children's events are kept.
        self._expected: set[Key] = set()
        # Resources that joined the shard with a status (someone reconciled them): children listed before a pass.
        self._adopting: set[Key] = set()

    def _selects(self, body: Manifest) -> bool:
        return self.shard is None or self.shard.matches(labels_of(body))

    @property
    def _selector(self) -> str:
        return str(self.shard) if self.shard is not None else ""

    async def prime(self, namespaces: list[str]) -> None:
        """Learn which resources this shard owns before the watches start (one metadata-only list per namespace,
        or one for the cluster), so that their children's events are kept from the first one on, whatever order
        the watches deliver in. Best effort: if the list fails, those resources are adopted one by one instead."""
        if self.shard is None:
            return
        expected: set[Key] = set()
        scopes: list[str | None] = list(namespaces) or [None]
        for namespace in scopes:
            for attempt in range(PRIME_ATTEMPTS):
                try:
                    keys = await asyncio.to_thread(self.kube.list_resource_keys, namespace, self._selector)
                    break
                except Exception as error:
                    if attempt + 1 < PRIME_ATTEMPTS and transient(error):
                        await asyncio.sleep(2.0**attempt)
                        continue
                    log.warning(
                        'Shard list failed namespace="%s" selector="%s" error="%s"',
                        namespace or "",
                        self._selector,
                        error,
                    )
                    return
            expected.update(keys)
        self._expected = expected
        log.info('Shard primed selector="%s" resources=%d', self._selector, len(expected))

    async def _reconcile(self, key: Key) -> float | None:
        started = time.perf_counter()
        outcome = "error"
        try:
            if key in self._adopting:
                await asyncio.to_thread(self._adopt, key)
                self._adopting.discard(key)
            held = self.store.holds(key)
            result = await asyncio.to_thread(self._timed_pass, key, datetime.now(UTC), started)
            outcome = "success"
            if self.shard is not None and held and not self.store.holds(key):
                # The read after a conflict found it relabelled out of the shard, and the Store dropped it.
                self._release(key)
                log.info(
                    'Resource left the shard namespace="%s" name="%s" selector="%s" seen="read"', *key, self._selector
                )
                return None
            return result
        except ResourceGone as gone:
            # Deleted while the watch did not say so (or not yet): nothing more to write for it, ever.
            outcome = "success"
            if self.store.forget(key, gone.resource_version):
                self.queue.forget(key)
                RESOURCES.forget(*key)
                log.info('Resource gone namespace="%s" name="%s"', *key)
            return None
        except ApiError as error:
            if namespace_terminating(error):
                self.namespace_refused(key[0])
                if self.store.namespace_terminating(key[0]):
                    self._drop_work(key[0])
            raise
        finally:
            RECONCILES.labels(outcome=outcome).inc()
            RECONCILE_DURATION.labels(outcome=outcome).observe(time.perf_counter() - started)

    def _timed_pass(self, key: Key, now: datetime, handed: float) -> float | None:
        """reconcile() in the worker thread, timed: how long the pass waited for the thread, and its own time without
        the API server's round trips (which modeldeploy_api_request_duration_seconds has)."""
        began = time.perf_counter()
        THREAD_HANDOFF.observe(began - handed)
        waited_before = API_WAIT.seconds
        try:
            return reconcile(self.kube, self.store, self.config, key, now)
        finally:
            waited = API_WAIT.seconds - waited_before
            RECONCILE_COMPUTE.observe(max(time.perf_counter() - began - waited, 0.0))

    def _adopt(self, key: Key) -> None:
        """List the children of a resource that joined the shard: their watch events went by while another shard
        owned it, and a pass that saw none of them would take the serving revision for missing. Two reads, once."""
        namespace, name = key
        selector = f"{builders.LABEL_INSTANCE}={name},{builders.LABEL_MANAGED_BY}={builders.MANAGED_BY}"
        found = {"Deployment": 0, "Service": 0, "PodDisruptionBudget": 0, "HorizontalPodAutoscaler": 0}
        for kind in found:
            for child in self.kube.list_children(kind, namespace, selector):
                if owner_key(child) == key:
                    self.store.put_child(child)
                    found[kind] += 1
        log.info(
            'Adopted namespace="%s" name="%s" deployments=%d services=%d disruptionBudgets=%d autoscalers=%d',
            namespace,
            name,
            found["Deployment"],
            found["Service"],
            found["PodDisruptionBudget"],
            found["HorizontalPodAutoscaler"],
        )

    def _release(self, key: Key) -> None:
        """Nothing more to do for a resource the Store no longer holds: no timer, no retry, no metric series."""
        self._expected.discard(key)
        self._adopting.discard(key)
        self.queue.forget(key)
        RESOURCES.forget(*key)

    def _schedule_sweep(self, delay: float) -> None:
        """Compare the Store with a list after `delay` seconds, replacing any comparison scheduled before."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # fed outside an event loop (a test of the Store's feed): no worker runs either
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_timer = loop.call_later(delay, self._start_sweep)

    def _start_sweep(self) -> None:
        self._sweep_timer = None
        if self.queue.stopped:
            return
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.create_task(self.sweep(), name="store-sweep")
        self._schedule_sweep(SWEEP_INTERVAL_SECONDS)

    async def sweep(self) -> list[Key]:
        """Drop from the Store (and the queue) every resource a list no longer shows: after a watch gap the re-list
        reports no DELETED for what went meanwhile, and a resource kept would have its children applied again with
        a dead owner, which garbage collection deletes, and so on. The lists run in a worker thread."""
        dropped: list[Key] = []
        if self.shard is not None:
            # The watches have delivered their lists by now: what was expected and has not come is not this
            # shard's any more, and the children kept for it are not either. (Unsharded, children are kept whoever
            # their owner: a resource whose list event comes late must find its children there.)
            self._expected.clear()
            orphans = self.store.drop_orphans()
            if orphans:
                log.debug("Dropped the children of %d resources not held", len(orphans))
        namespaces = sorted(self.store.namespaces())
        for namespace in namespaces:
            try:
                list_version, items = await asyncio.to_thread(
                    self.kube.list_resource_versions, namespace, label_selector=self._selector
                )
            except Exception as error:  # the next sweep tries again; the watches carry on meanwhile
                log.warning('Resource list failed namespace="%s" error="%s"', namespace, error)
                continue
            for key, version in self.store.absent(namespace, set(items), list_version):
                if self.store.forget(key, version):
                    self.queue.forget(key)
                    RESOURCES.forget(*key)
                    dropped.append(key)
                    log.info('Resource gone namespace="%s" name="%s" seen="list"', *key)
        if self._orphan_scan_due:
            self._orphan_scan_due = False
            await self._look_for_orphans(namespaces)
        return dropped

    async def _look_for_orphans(self, namespaces: list[str]) -> None:
        """After a re-list: children whose owner no list shows are left to garbage collection for a while, then
        deleted if still orphaned (see orphans.py). Runs for the namespaces the Store knew before the sweep."""
        for namespace in namespaces:
            try:
                candidates = await asyncio.to_thread(orphans.find, self.kube, namespace)
            except Exception as error:  # a later re-list looks again; nothing depends on this one
                log.warning('Orphan search failed namespace="%s" error="%s"', namespace, error)
                continue
            if not candidates:
                continue
            log.info(
                'Children without their owner namespace="%s" count="%d" collectingIn="%gs"',
                namespace,
                len(candidates),
                orphans.ORPHAN_GRACE_SECONDS,
            )
            asyncio.get_running_loop().call_later(
                orphans.ORPHAN_GRACE_SECONDS, self._start_collection, namespace, candidates
            )

    def _start_collection(self, namespace: str, candidates: list[Manifest]) -> None:
        if self.queue.stopped:
            return
        task = asyncio.create_task(self._collect(namespace, candidates), name="orphan-collection")
        self._collections.add(task)
        task.add_done_callback(self._collections.discard)

    async def _collect(self, namespace: str, candidates: list[Manifest]) -> list[Manifest]:
        try:
            deleted = await asyncio.to_thread(orphans.collect, self.kube, namespace, candidates)
        except Exception as error:
            log.warning('Orphan collection failed namespace="%s" error="%s"', namespace, error)
            return []
        held = set(self.store.keys())
        for child in deleted:
            # A resource created again under the owner's name stood back from these names: its turn now, rather
            # than at its next look.
            key = owner_key(child)
            if key in held:
                self.queue.add(key)
        return deleted

    def observe_resource(self, event_type: str | None, body: Manifest) -> None:
        received = time.perf_counter()
        key = key_of(body)
        if event_type is None or self._sweep_timer is None:
            # kopf reports the objects of a (re-)list with no event type; the first event also starts the sweeps.
            self._schedule_sweep(RELIST_SETTLE_SECONDS)
            if event_type is None:
                self._orphan_scan_due = True
        if event_type == "DELETED" or not self._selects(body):
            # Deleted, or (sharded) relabelled out of the selector, which the API server reports as DELETED with the
            # object as it last matched: the watch cannot tell the two apart, and neither needs to.
            held = self.store.holds(key)
            self.store.gone(key, str(body["metadata"].get("resourceVersion", "")))
            self._release(key)
            if self.shard is not None and held:
                log.info(
                    'Resource left the shard namespace="%s" name="%s" selector="%s" seen="watch"', *key, self._selector
                )
            return
        if self.shard is not None and not self.store.holds(key):
            if key not in self._expected and body.get("status"):
                # Reconciled before, by another shard: its children exist, and their events were not kept.
                self._adopting.add(key)
            self._expected.discard(key)
        if not self.store.put_parent(body):
            return
        RESOURCES.observe(*key, body.get("status"))
        self.queue.add(key)
        EVENT_HANDOFF.labels(kind="resource").observe(time.perf_counter() - received)

    def load_namespaces(self) -> None:
        """Which namespaces are being deleted, from one list, before the first pass: the namespace watch's events
        may come after the first resources' (a freshly started operator would write into them meanwhile)."""
        for metadata in self.kube.list_namespace_metadata():
            self._namespace(metadata, None, phase=None)

    def observe_namespace(self, event_type: str | None, body: Manifest) -> None:
        """A namespace watch event (cluster-wide only): a namespace being deleted gets no write any more, and its
        resources' queued work is dropped."""
        self._namespace(body.get("metadata") or {}, event_type, phase=(body.get("status") or {}).get("phase"))

    def _namespace(self, metadata: dict[str, Any], event_type: str | None, phase: object) -> None:
        name, uid = metadata.get("name"), metadata.get("uid")
        if not isinstance(name, str) or not name:
            return
        terminating = bool(metadata.get("deletionTimestamp")) or phase == "Terminating"
        news = self.store.observe_namespace(name, str(uid or ""), terminating=terminating, gone=event_type == "DELETED")
        if news:
            log.info('Namespace terminating namespace="%s" seen="watch"', name)
            self._drop_work(name)

    def namespace_refused(self, namespace: str) -> None:
        """The API server refused a write in `namespace` because it is being deleted (any write: Events included,
        which the client does not raise). Called from the worker threads; heeded only without a namespace watch,
        which knows better (it sees the namespace's uid, hence when one of that name is created again)."""
        if self.namespaces_watched:
            return
        if self.store.namespace_refused(namespace, datetime.now(UTC)):
            log.info('Namespace terminating namespace="%s" seen="refusal"', namespace)

    def _drop_work(self, namespace: str) -> None:
        """Timed re-checks and retries of the namespace's resources end; a pass already queued writes nothing."""
        for key in self.store.keys_in(namespace):
            self.queue.forget(key)

    def observe_child(self, event_type: str | None, body: Manifest) -> None:
        received = time.perf_counter()
        if self.shard is not None:
            if event_type is None and self._sweep_timer is None:
                # Children kept for a resource expected at start-up are dropped at the first comparison with a list
                # if it never came; a shard whose resources all went before it started has no other event to wait on.
                self._schedule_sweep(RELIST_SETTLE_SECONDS)
            owner = owner_key(body)
            if owner is None or not (self.store.holds(owner) or owner in self._expected):
                return  # another shard's resource (or nobody's): neither kept nor queued
        key = self.store.child_deleted(body) if event_type == "DELETED" else self.store.put_child(body)
        if key is not None:
            self.queue.add(key)
            EVENT_HANDOFF.labels(kind="child").observe(time.perf_counter() - received)
