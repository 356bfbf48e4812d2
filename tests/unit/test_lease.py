"""Leader election against an in-memory Lease store and a fake clock: client-go's semantics, case by case."""

from __future__ import annotations

import copy
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3

from modeldeploy.kube.client import Manifest
from modeldeploy.kube.lease import (
    ElectionSettings,
    LeaderElection,
    LeaderElector,
    LeaseConflictError,
    NotLeadingError,
)
from modeldeploy.metrics import LEADER

SETTINGS = ElectionSettings(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLeaseStore:
    """One Lease with the API server's optimistic concurrency: an update must carry the current resourceVersion."""

    def __init__(self) -> None:
        self.lease: Manifest | None = None
        self.version = 0
        self.writes: list[Manifest] = []
        self.fail_with: Exception | None = None
        self.watch_fails_with: Exception | None = None
        self.watches: list[tuple[str | None, float]] = []
        self.clock: Clock | None = None  # moved by a watch that times out, when set

    def _stamp(self, lease: Manifest) -> Manifest:
        self.version += 1
        stored = copy.deepcopy(lease)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.lease = stored
        self.writes.append(copy.deepcopy(stored))
        return copy.deepcopy(stored)

    def get(self) -> Manifest | None:
        if self.fail_with is not None:
            raise self.fail_with
        return copy.deepcopy(self.lease)

    def create(self, lease: Manifest) -> Manifest:
        if self.fail_with is not None:
            raise self.fail_with
        if self.lease is not None:
            raise LeaseConflictError("already exists")
        return self._stamp(lease)

    def update(self, lease: Manifest) -> Manifest:
        if self.fail_with is not None:
            raise self.fail_with
        assert self.lease is not None
        if lease["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise LeaseConflictError("the object has been modified")
        return self._stamp(lease)

    def wait_for_change(self, resource_version: str | None, timeout: float) -> bool:
        """A watch from `resource_version`: True at once when the Lease is newer, else (nothing changes while a
        test waits) False after `timeout` of the test's clock, or the error set for watches."""
        self.watches.append((resource_version, timeout))
        if self.watch_fails_with is not None:
            raise self.watch_fails_with
        if self.lease is not None and self.lease["metadata"]["resourceVersion"] != resource_version:
            return True
        if self.clock is not None:
            self.clock.now += timeout
        return False

    def hold(self, holder: str, duration: int = 15, **spec: Any) -> None:
        """Someone else writes the Lease."""
        self._stamp(
            {
                "metadata": {"name": "modeldeploy-operator", "namespace": "ops"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "leaseTransitions": 3, **spec},
            }
        )


def elector(store: FakeLeaseStore, clock: Clock, identity: str = "me") -> LeaderElector:
    return LeaderElector(
        store,
        "modeldeploy-operator",
        "ops",
        identity,
        SETTINGS,
        clock=clock,
        wall_clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_acquires_a_lease_that_does_not_exist() -> None:
    store, clock = FakeLeaseStore(), Clock()
    candidate = elector(store, clock)
    assert candidate.try_acquire_or_renew()
    assert candidate.leading
    assert store.lease is not None
    spec = store.lease["spec"]
    assert spec["holderIdentity"] == "me"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["renewTime"] == "2026-01-01T00:00:00.000000Z"
    assert spec["leaseTransitions"] == 0


def test_acquires_a_released_lease_at_once() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("", duration=1)
    candidate = elector(store, clock)
    assert candidate.try_acquire_or_renew()
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "me"


def test_does_not_acquire_a_lease_someone_holds() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    candidate = elector(store, clock)
    for _ in range(7):  # renewals the holder does not make, within its 15 s
        assert not candidate.try_acquire_or_renew()
        clock.now += 2
    assert not candidate.leading
    assert len(store.writes) == 1


def test_acquires_an_expired_lease_measured_from_when_this_replica_saw_it() -> None:
    store, clock = FakeLeaseStore(), Clock()
    # The holder's renewTime is far in the past by its own clock: that does not count, only what we observed.
    store.hold("other", renewTime="2000-01-01T00:00:00.000000Z")
    candidate = elector(store, clock)
    assert not candidate.try_acquire_or_renew()
    clock.now += 14.5
    assert not candidate.try_acquire_or_renew()  # within the duration: not yet
    clock.now += 0.5
    assert candidate.try_acquire_or_renew()
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "me"
    assert store.lease["spec"]["leaseTransitions"] == 4
    assert store.lease["spec"]["acquireTime"] == "2026-01-01T00:00:00.000000Z"


def test_a_renewal_by_the_holder_restarts_the_wait() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    candidate = elector(store, clock)
    assert not candidate.try_acquire_or_renew()
    clock.now += 10
    store.hold("other")  # renewed: a new resourceVersion
    assert not candidate.try_acquire_or_renew()
    clock.now += 10
    assert not candidate.try_acquire_or_renew()  # 20 s since the first look, 10 s since the renewal
    clock.now += 6
    assert candidate.try_acquire_or_renew()


def test_renews_keeping_acquire_time_and_transitions() -> None:
    store, clock = FakeLeaseStore(), Clock()
    candidate = elector(store, clock)
    assert candidate.try_acquire_or_renew()
    assert store.lease is not None
    acquired = store.lease["spec"]["acquireTime"]
    clock.now += 2
    assert candidate.try_acquire_or_renew()
    assert candidate.renewed_at == clock.now
    assert store.lease["spec"]["acquireTime"] == acquired
    assert store.lease["spec"]["leaseTransitions"] == 0
    assert len(store.writes) == 2


def test_two_candidates_at_once_only_one_wins_the_conflict() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("", duration=1)
    first, second = elector(store, clock, "first"), elector(store, clock, "second")
    lease = store.get()
    original_get = store.get
    # Both read the same version before either writes.
    store.get = lambda: copy.deepcopy(lease)  # type: ignore[method-assign]
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    store.get = original_get  # type: ignore[method-assign]
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "first"


def test_a_leader_whose_renewal_conflicts_loses_and_stops() -> None:
    store, clock = FakeLeaseStore(), Clock()
    lost: list[str] = []
    candidate = elector(store, clock)
    election = LeaderElection(candidate, on_lost=lost.append)
    assert election.acquire()
    store.hold("other")  # taken over (we were paused past the lease, say)
    assert not candidate.try_acquire_or_renew()
    assert candidate.holder == "other"
    election._renew_loop = lambda: None  # type: ignore[method-assign]
    # What the renew loop does after a failed attempt that shows another holder:
    election._lost(f"the lease is held by {candidate.holder}")
    assert lost == ["the lease is held by other"]
    assert election.stopping.is_set()
    assert LEADER.labels(identity="me")._value.get() == 0


def test_a_leader_that_cannot_renew_stops_before_the_lease_can_pass_on() -> None:
    store, clock = FakeLeaseStore(), Clock()
    candidate = elector(store, clock, "leader")
    standby = elector(store, clock, "standby")
    assert candidate.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()
    store.fail_with = OSError("connection refused")
    stopped_at = None
    while clock.now < 1000 + 30:
        clock.now += 0.5
        if stopped_at is None and candidate.renew_expired():
            stopped_at = clock.now
        with pytest.raises(OSError, match="connection refused"):
            candidate.try_acquire_or_renew()
    assert stopped_at is not None
    assert stopped_at - 1000 <= SETTINGS.renew_deadline + 0.5
    # The standby, which saw the lease at the same moment, can take it only after the full duration.
    store.fail_with = None
    clock.now = 1000 + SETTINGS.lease_duration - 0.5
    assert not standby.try_acquire_or_renew()
    assert stopped_at < clock.now
    clock.now += 0.5
    assert standby.try_acquire_or_renew()


def test_the_renewing_threads_call_on_lost_within_the_renew_deadline() -> None:
    store = FakeLeaseStore()
    fast = ElectionSettings(lease_duration=1.5, renew_deadline=0.6, retry_period=0.1)
    candidate = LeaderElector(store, "modeldeploy-operator", "ops", "fast", fast)
    lost = threading.Event()
    election = LeaderElection(candidate, on_lost=lambda _: lost.set())
    assert election.acquire()
    started = time.monotonic()
    election.start_renewing()
    time.sleep(0.3)
    assert not lost.is_set()  # renewing fine
    store.fail_with = OSError("connection refused")
    failing_since = time.monotonic()
    assert lost.wait(timeout=5)
    assert time.monotonic() - failing_since < fast.lease_duration
    assert time.monotonic() - started > fast.renew_deadline


def test_the_write_fence_lets_a_leader_write_until_its_renew_deadline_passes() -> None:
    store, clock = FakeLeaseStore(), Clock()
    lost: list[str] = []
    election = LeaderElection(elector(store, clock), on_lost=lost.append)
    with pytest.raises(NotLeadingError, match="not leading"):
        election.fence()  # a standby never writes
    lost.clear()
    election.stopping.clear()
    assert election.acquire()
    clock.now += SETTINGS.renew_deadline
    election.fence()  # renewed just within the deadline: the write may go
    assert lost == []
    # Frozen past the deadline (the renewing threads had no chance to run): the first write stops the process.
    clock.now += 0.1
    with pytest.raises(NotLeadingError, match="not renewed within 10s"):
        election.fence()
    assert lost == ["not renewed within 10s"]
    with pytest.raises(NotLeadingError):
        election.fence()  # and every write after it, with on_lost called once
    assert lost == ["not renewed within 10s"]


def test_release_on_shutdown_frees_the_lease_for_the_next_at_once() -> None:
    store, clock = FakeLeaseStore(), Clock()
    leader, standby = elector(store, clock, "leader"), elector(store, clock, "standby")
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()
    election = LeaderElection(leader, on_lost=lambda _: None)
    election.stop_and_release()
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == ""
    assert store.lease["spec"]["leaseDurationSeconds"] == 1
    assert not leader.leading
    clock.now += 1.5  # the released lease's one second, as this standby observes it
    assert standby.try_acquire_or_renew()
    assert store.lease["spec"]["holderIdentity"] == "standby"


def test_release_does_nothing_when_not_leading() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    candidate = elector(store, clock)
    assert not candidate.try_acquire_or_renew()
    assert not candidate.release()
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "other"


def test_acquire_waits_until_stopped() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    election.stopping.set()
    assert not election.acquire()


@pytest.mark.parametrize(
    "error",
    [
        OSError("unreachable"),
        # What the client's pool raises while the API server restarts: not an OSError.
        urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
        urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out."),  # type: ignore[arg-type]
    ],
    ids=["oserror", "new-connection", "protocol", "read-timeout"],
)
def test_a_failed_attempt_is_logged_not_raised(error: Exception) -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.fail_with = error
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    assert not election._attempt()


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [(10, 10, 2), (15, 2, 2), (15, 10, 0)],
)
def test_settings_keep_client_go_s_order(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        ElectionSettings(lease_duration=duration, renew_deadline=deadline, retry_period=retry)


def test_seconds_until_expiry_counts_from_when_the_lease_was_observed() -> None:
    store, clock = FakeLeaseStore(), Clock()
    candidate = elector(store, clock)
    assert candidate.seconds_until_expiry() is None  # nothing observed yet
    store.hold("other")
    assert not candidate.try_acquire_or_renew()
    assert candidate.seconds_until_expiry() == 15
    clock.now += 14.25
    assert candidate.seconds_until_expiry() == pytest.approx(0.75)
    clock.now += 1
    assert candidate.seconds_until_expiry() == pytest.approx(-0.25)
    # Our own Lease, or one without a holder, has nothing to wait out.
    store.hold("", duration=1)
    assert candidate.try_acquire_or_renew()
    assert candidate.seconds_until_expiry() is None


def test_a_standby_waits_the_retry_period_or_until_the_observed_lease_expires() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    assert not election._attempt()
    assert election.next_wait() == SETTINGS.retry_period
    clock.now += 14  # 1 s left: shorter than the retry period
    assert election.next_wait() == pytest.approx(1.0)
    clock.now += 0.99  # a tiny rest does not become a burst of requests
    assert election.next_wait() == pytest.approx(0.05)
    clock.now += 1  # expired, yet the attempt failed (a conflict, an error): back to the usual pace
    assert election.next_wait() == SETTINGS.retry_period


def test_acquire_takes_an_expired_lease_when_it_expires_not_a_retry_period_later() -> None:
    """With the holder gone just after a renewal, client-go's standby takes over up to a retry period after the
    expiry; this one wakes at the expiry."""
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    clock.now += 0.5  # an attempt out of step with the expiry: 0.5 + k * 2 never hits 15 exactly
    waits: list[float] = []

    def wait(timeout: float | None = None) -> bool:
        assert timeout is not None
        waits.append(timeout)
        clock.now += timeout
        return False

    election.stopping.wait = wait  # type: ignore[method-assign]
    first_seen = clock.now
    assert election.acquire()
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "me"
    assert clock.now - first_seen == pytest.approx(SETTINGS.lease_duration)
    assert waits == [2.0] * 7 + [pytest.approx(1.0)]


def test_a_standby_says_once_who_it_stands_by_for(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    attempts = 0

    def wait(timeout: float | None = None) -> bool:
        nonlocal attempts
        attempts += 1
        clock.now += 1
        if attempts == 3:
            store.hold("another")
        if attempts == 5:
            election.stopping.set()
        return election.stopping.is_set()

    election.stopping.wait = wait  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="modeldeploy.lease"):
        assert not election.acquire()
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Standing by")]
    assert lines == [
        'Standing by namespace="ops" name="modeldeploy-operator" identity="me" holder="other"',
        'Standing by namespace="ops" name="modeldeploy-operator" identity="me" holder="another"',
    ]


def test_a_standby_wakes_as_soon_as_the_lease_changes_not_at_its_next_retry() -> None:
    """A graceful stop releases the Lease: the watch from the version last seen returns at once, and the standby
    attempts again without waiting out its retry period."""
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    assert not election._attempt()
    observed = election.elector.observed_version
    store.hold("")  # released
    started = time.monotonic()
    election._wait(2.0)
    assert time.monotonic() - started < 1.0
    assert store.watches == [(observed, 2.0)]


def test_a_standby_whose_watch_times_out_waits_no_longer_than_the_retry_period() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.clock = clock
    store.hold("other")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    assert not election._attempt()
    before = clock.now
    started = time.monotonic()
    election._wait(2.0)
    assert clock.now - before == 2.0  # the watch's own timeout, on the test's clock
    assert time.monotonic() - started < 1.0  # and nothing waited after it


def test_a_failed_watch_falls_back_to_waiting_the_rest_of_the_time() -> None:
    store, clock = FakeLeaseStore(), Clock()
    store.hold("other")
    store.watch_fails_with = urllib3.exceptions.ProtocolError("Connection aborted.")
    election = LeaderElection(elector(store, clock), on_lost=lambda _: None)
    assert not election._attempt()
    started = time.monotonic()
    election._wait(0.3)
    assert time.monotonic() - started >= 0.25
