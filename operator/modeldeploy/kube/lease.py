"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

One replica holds the Lease and runs the controller; the others only try to take it. A Lease is free when it has no
holder, or when its holder has not renewed it within its leaseDurationSeconds. That duration is measured on our own
monotonic clock from the moment we first saw the Lease's current resourceVersion, never from the renewTime it
carries: the replicas' clocks need not agree. Every write sends the resourceVersion it was decided from, so of two
replicas that try at once only one succeeds (the other gets 409 Conflict).

A leader that has not renewed within the renew deadline stops at once (the caller exits the process). The renew
deadline is shorter than the lease duration, so the old leader has stopped before any standby can see the Lease as
expired and take it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

import urllib3

from modeldeploy.api.times import format_time
from modeldeploy.kube.client import ApiError, Kube, Manifest
from modeldeploy.metrics import LEADER

log = logging.getLogger("modeldeploy.lease")

DEFAULT_LEASE_NAME = "modeldeploy-operator"
# What a Lease request may raise when the API server is away or refuses: urllib3's connection errors are not
# OSErrors (the pool raises them as they are, without retries).
REQUEST_ERRORS = (ApiError, OSError, ValueError, urllib3.exceptions.HTTPError)
LEASE_PREFIX = "/apis/coordination.k8s.io/v1"


class LeaseConflictError(Exception):
    """Someone else wrote the Lease (409) or created it first: our decision was made from a stale version."""


class NotLeadingError(Exception):
    """A write was stopped because this replica may no longer hold the Lease."""


class LeaseStore(Protocol):
    """Where the Lease lives: the API server, or a fake in tests."""

    def get(self) -> Manifest | None: ...

    def create(self, lease: Manifest) -> Manifest: ...

    def update(self, lease: Manifest) -> Manifest: ...

    def wait_for_change(self, resource_version: str | None, timeout: float) -> bool:
        """Block until the Lease changes after `resource_version` (True) or `timeout` passes (False)."""
        ...


class KubeLeaseStore:
    """One Lease, read and written through the operator's API client."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._collection = f"{LEASE_PREFIX}/namespaces/{urllib.parse.quote(namespace, safe='')}/leases"

    def get(self) -> Manifest | None:
        try:
            # The client's one request method, used as is: lease writes are not the operator's writes, so they are
            # not counted with them (the write counts per resource stay what `make bench` measures).
            return self.kube._request("GET", f"{self._collection}/{urllib.parse.quote(self.name, safe='')}")
        except ApiError as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return None
            raise

    def create(self, lease: Manifest) -> Manifest:
        try:
            return self.kube._request("POST", self._collection, body=lease)
        except ApiError as error:
            if error.status == HTTPStatus.CONFLICT:
                raise LeaseConflictError(str(error)) from error
            raise

    def update(self, lease: Manifest) -> Manifest:
        try:
            return self.kube._request("PUT", f"{self._collection}/{urllib.parse.quote(self.name, safe='')}", body=lease)
        except ApiError as error:
            if error.status == HTTPStatus.CONFLICT:
                raise LeaseConflictError(str(error)) from error
            raise

    def wait_for_change(self, resource_version: str | None, timeout: float) -> bool:
        """A watch of this one Lease (a field selector on its name: served from the API server's watch cache),
        from the version last seen, for at most `timeout`: a release or a takeover wakes a standby at once instead
        of at its next retry."""
        query = {"fieldSelector": f"metadata.name={self.name}"}
        if resource_version:
            query["resourceVersion"] = resource_version
        return self.kube.wait_for_event(self._collection, query, timeout)


@dataclass(frozen=True)
class ElectionSettings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go's checks: a leader must give up before its lease can pass on, and retry within its deadline.
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")
        if not self.renew_deadline > self.retry_period:
            raise ValueError("the renew deadline must be longer than the retry period")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")


def new_identity() -> str:
    """The pod's name (its hostname) and a random suffix: a restarted container is a new candidate."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def _kv(**values: object) -> str:
    return " ".join(f'{key}="{value}"' for key, value in values.items())


class LeaderElector:
    """Tries to take or renew the Lease; thread-safe only in that `release` may follow the loops' end."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        namespace: str,
        identity: str,
        settings: ElectionSettings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self._observed: Manifest | None = None
        self._observed_version: str | None = None
        self._observed_at = 0.0
        # When we last held the Lease by a successful write; None while we do not lead.
        self.renewed_at: float | None = None

    @property
    def leading(self) -> bool:
        return self.renewed_at is not None

    @property
    def observed_version(self) -> str | None:
        """The Lease's resourceVersion as last seen."""
        return self._observed_version

    @property
    def holder(self) -> str:
        """The holder as last observed ("" for none)."""
        spec = (self._observed or {}).get("spec") or {}
        return str(spec.get("holderIdentity") or "")

    def _observe(self, lease: Manifest, now: float) -> None:
        version = lease.get("metadata", {}).get("resourceVersion")
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = now
        self._observed = lease

    def _spec(self, now_wall: datetime, previous: dict[str, Any], taking_over: bool) -> dict[str, Any]:
        stamp = format_time(now_wall)
        transitions = int(previous.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration)),
            "acquireTime": stamp if taking_over else previous.get("acquireTime") or stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions + 1 if taking_over and previous.get("holderIdentity") else transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt, as client-go's tryAcquireOrRenew: True when we hold the Lease afterwards."""
        now = self.clock()
        lease = self.store.get()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(self.wall_clock(), {}, taking_over=True),
            }
            try:
                created = self.store.create(body)
            except LeaseConflictError:
                return False
            self._observe(created, now)
            self.renewed_at = now
            return True
        self._observe(lease, now)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > now:
            return False  # held by someone else, and not expired as far as we have seen
        taking_over = holder != self.identity
        updated = {**lease, "spec": {**spec, **self._spec(self.wall_clock(), spec, taking_over)}}
        try:
            written = self.store.update(updated)
        except LeaseConflictError:
            return False
        self._observe(written, now)
        self.renewed_at = now
        return True

    def seconds_until_expiry(self) -> float | None:
        """Seconds until the Lease as last observed expires for us (negative once it has); None when it has no other
        holder, i.e. when there is nothing to wait out."""
        if self._observed is None:
            return None
        spec = self._observed.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        if not holder or holder == self.identity:
            return None
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        return self._observed_at + duration - self.clock()

    def renew_expired(self) -> bool:
        """True when a leader has gone longer than the renew deadline without a successful renewal."""
        return self.renewed_at is not None and self.clock() - self.renewed_at > self.settings.renew_deadline

    def release(self) -> bool:
        """Give the Lease up at once (client-go's ReleaseOnCancel): no holder, a one-second duration."""
        if not self.leading or self._observed is None or self.holder != self.identity:
            return False
        stamp = format_time(self.wall_clock())
        spec = self._observed.get("spec") or {}
        released = {
            **self._observed,
            "spec": {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": stamp, "acquireTime": stamp},
        }
        try:
            self.store.update(released)
        except (LeaseConflictError, ApiError, OSError, urllib3.exceptions.HTTPError) as error:
            log.warning("Could not release the lease %s", _kv(identity=self.identity, error=error))
            return False
        finally:
            self.renewed_at = None
        log.info("Released the lease %s", _kv(namespace=self.namespace, name=self.name, identity=self.identity))
        return True


# The shortest wait between two attempts of a standby: it wakes when the observed Lease expires, and a tiny remaining
# time must not become a burst of requests.
MIN_RETRY_WAIT = 0.05


@dataclass(frozen=True)
class ElectionStatus:
    """What the health endpoint says about this replica's part in the election."""

    role: str  # "leader" or "standby"
    identity: str
    holder: str | None  # the holder as last observed ("" for none); None without leader election
    problem: str | None = None  # why the election loop is not working, or None when it is


class LeaderElection:
    """The process's side of the election: wait to lead, then keep renewing in a thread and call `on_lost` (which
    must stop every write, e.g. by exiting) when the renew deadline passes or someone else holds the Lease."""

    def __init__(self, elector: LeaderElector, on_lost: Callable[[str], None]) -> None:
        self.elector = elector
        self.on_lost = on_lost
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        # When the last attempt ended (succeeded or failed): a standby whose loop is stuck (a request that hangs, a
        # dead thread) stops attempting, and its liveness says so. Counted from now until the first attempt ends.
        self.attempted_at = elector.clock()
        LEADER.labels(identity=elector.identity).set(0)

    def _attempt(self) -> bool:
        try:
            return self.elector.try_acquire_or_renew()
        except REQUEST_ERRORS as error:
            # Any failure (the API server away, a timeout) is a failed attempt; the deadline decides what it costs.
            log.warning("Lease attempt failed %s", _kv(identity=self.elector.identity, error=error))
            return False
        finally:
            self.attempted_at = self.elector.clock()

    def next_wait(self) -> float:
        """How long a standby waits after a failed attempt: the retry period, or less when the Lease it observed
        expires sooner, so that it takes over when the Lease expires rather than up to a retry period later."""
        retry = self.elector.settings.retry_period
        remaining = self.elector.seconds_until_expiry()
        if remaining is None or remaining <= 0:
            # Nothing to wait out, or already expired and still not ours (a conflict, an error): the usual pace.
            return retry
        return min(retry, max(MIN_RETRY_WAIT, remaining))

    def status(self) -> ElectionStatus:
        """Role, observed holder and liveness, for the health endpoint (any thread may ask)."""
        elector = self.elector
        settings = elector.settings
        now = elector.clock()
        renewed_at = elector.renewed_at
        problem = None
        if renewed_at is not None:
            # A leader past its renew deadline exits at once (the watchdog); this only covers the moment between.
            if now - renewed_at > settings.renew_deadline:
                problem = f"leader: lease not renewed for {now - renewed_at:.1f}s, past the renew deadline"
        elif not self.stopping.is_set() and now - self.attempted_at > settings.lease_duration + settings.retry_period:
            # A stopping process no longer attempts on purpose; a standby must, or it could never take over.
            problem = f"standby: no lease attempt for {now - self.attempted_at:.1f}s"
        return ElectionStatus(
            role="leader" if renewed_at is not None else "standby",
            identity=elector.identity,
            holder=elector.holder,
            problem=problem,
        )

    def acquire(self) -> bool:
        """Try until we lead (True) or `stopping` is set (False): every retry period, and once more as soon as the
        observed Lease expires, so a standby takes over at most a retry period after the holder's last renewal plus
        the lease duration (client-go waits up to a further retry period)."""
        elector = self.elector
        log.info(
            "Waiting to lead %s",
            _kv(namespace=elector.namespace, name=elector.name, identity=elector.identity),
        )
        standing_by_for: str | None = None
        while not self.stopping.is_set():
            if self._attempt():
                LEADER.labels(identity=elector.identity).set(1)
                log.info(
                    "Became leader %s",
                    _kv(namespace=elector.namespace, name=elector.name, identity=elector.identity),
                )
                return True
            if elector.holder and elector.holder != standing_by_for:
                # Once per holder: says which replica leads, without a line every retry period.
                standing_by_for = elector.holder
                log.info(
                    "Standing by %s",
                    _kv(
                        namespace=elector.namespace, name=elector.name, identity=elector.identity, holder=elector.holder
                    ),
                )
            self._wait(self.next_wait())
        return False

    def _wait(self, seconds: float) -> None:
        """Until the next attempt: `seconds`, or less when the Lease changes meanwhile (a graceful stop releases it,
        and the standby takes over at once rather than at its next retry). A watch that fails is no worse than a
        plain wait: the rest of the time is waited out."""
        started = self.elector.clock()
        try:
            if self.elector.store.wait_for_change(self.elector.observed_version, seconds):
                return
        except REQUEST_ERRORS as error:
            log.debug("Lease watch failed %s", _kv(identity=self.elector.identity, error=error))
        self.stopping.wait(max(0.0, seconds - (self.elector.clock() - started)))

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._thread.start()
        # A renewal may hang in a request longer than the deadline; the watchdog does not wait for it.
        self._watchdog = threading.Thread(target=self._watch_deadline, name="lease-watchdog", daemon=True)
        self._watchdog.start()

    def _lost(self, reason: str) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        LEADER.labels(identity=self.elector.identity).set(0)
        log.error("Lost leadership %s", _kv(identity=self.elector.identity, reason=reason))
        self.on_lost(reason)

    def fence(self) -> None:
        """The write fence (kube.client.WRITE_FENCE): raises NotLeadingError, after `on_lost`, unless this replica
        renewed the Lease within the renew deadline. Checked against the monotonic clock, which runs on while the
        process is stopped, so a leader that wakes after its Lease may have passed on stops before its first write
        rather than when the watchdog thread next looks."""
        elector = self.elector
        if elector.renewed_at is None:
            reason = "not leading"
        elif elector.renew_expired():
            reason = f"not renewed within {elector.settings.renew_deadline:g}s"
        elif self.stopping.is_set():
            reason = "stopping"
        else:
            return
        self._lost(reason)
        raise NotLeadingError(f"write refused: {reason}")

    def _renew_loop(self) -> None:
        elector = self.elector
        while not self.stopping.wait(elector.settings.retry_period):
            if self._attempt():
                continue
            if elector.holder and elector.holder != elector.identity:
                self._lost(f"the lease is held by {elector.holder}")
                return

    def _watch_deadline(self) -> None:
        interval = min(0.5, self.elector.settings.retry_period / 4)
        while not self.stopping.wait(interval):
            if self.elector.renew_expired():
                self._lost(f"not renewed within {self.elector.settings.renew_deadline:g}s")
                return

    def stop_and_release(self) -> None:
        """Stop renewing, then release the Lease: called after the controller has stopped writing."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.elector.settings.renew_deadline)
        LEADER.labels(identity=self.elector.identity).set(0)
        self.elector.release()


def exit_now(reason: str) -> None:
    """Stop every write at once: the process ends without waiting for threads or handlers, and the Deployment starts
    it again as a standby."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)
