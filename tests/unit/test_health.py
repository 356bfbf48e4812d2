"""The operator's own health endpoint, on a free port, against a real election over an in-memory Lease and a fake
clock: /healthz and /readyz for a leader, a standby and a stuck loop, and the flag's compatibility with kopf's."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from modeldeploy.cli.health import HealthServer, parse_bind_address
from modeldeploy.cli.main import _kopf_liveness_endpoint, _single, build_parser
from modeldeploy.kube.lease import ElectionStatus, LeaderElection, LeaderElector
from tests.unit.test_lease import SETTINGS, Clock, FakeLeaseStore


def get(server: HealthServer, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class Replica:
    """One replica's election on the shared store, its clock and its health server."""

    def __init__(self, store: FakeLeaseStore, clock: Clock, identity: str) -> None:
        elector = LeaderElector(
            store,
            "modeldeploy-operator",
            "ops",
            identity,
            SETTINGS,
            clock=clock,
            wall_clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        )
        self.election = LeaderElection(elector, on_lost=lambda _: None)
        self.server = HealthServer("127.0.0.1", 0, self.election.status).start()


@pytest.fixture
def pair() -> Iterator[tuple[Replica, Replica, Clock]]:
    store, clock = FakeLeaseStore(), Clock()
    leader, standby = Replica(store, clock, "leader-a"), Replica(store, clock, "standby-b")
    try:
        yield leader, standby, clock
    finally:
        leader.server.stop()
        standby.server.stop()


def test_before_the_first_attempt_a_replica_is_live_and_ready_as_a_standby(
    pair: tuple[Replica, Replica, Clock],
) -> None:
    leader, _, _ = pair
    assert get(leader.server, "/healthz") == (200, "ok\n")
    status, body = get(leader.server, "/readyz")
    assert status == 200
    assert json.loads(body) == {"role": "standby", "identity": "leader-a", "holder": ""}


def test_leader_and_standby_are_both_live_and_ready_and_say_who_leads(pair: tuple[Replica, Replica, Clock]) -> None:
    leader, standby, clock = pair
    assert leader.election._attempt()
    assert not standby.election._attempt()
    clock.now += SETTINGS.retry_period
    for replica in (leader, standby):
        assert get(replica.server, "/healthz") == (200, "ok\n")
    status, body = get(leader.server, "/readyz")
    assert status == 200
    assert json.loads(body) == {"role": "leader", "identity": "leader-a", "holder": "leader-a"}
    status, body = get(standby.server, "/readyz")
    assert status == 200
    assert json.loads(body) == {"role": "standby", "identity": "standby-b", "holder": "leader-a"}


def test_a_standby_that_stopped_attempting_is_not_live_but_stays_ready(pair: tuple[Replica, Replica, Clock]) -> None:
    leader, standby, clock = pair
    assert leader.election._attempt()
    assert not standby.election._attempt()
    clock.now += SETTINGS.lease_duration + SETTINGS.retry_period - 0.1
    assert get(standby.server, "/healthz")[0] == 200
    clock.now += 0.2
    status, body = get(standby.server, "/healthz")
    assert status == 500
    assert body == "standby: no lease attempt for 17.1s\n"
    assert body.count("\n") == 1
    # Readiness is not liveness: the kubelet restarts it, the rollout does not wait on it meanwhile.
    assert get(standby.server, "/readyz")[0] == 200
    # A failed attempt is still an attempt: an API server that is away is not the replica's fault.
    standby.election.elector.store.fail_with = OSError("connection refused")  # type: ignore[attr-defined]
    assert not standby.election._attempt()
    assert get(standby.server, "/healthz") == (200, "ok\n")


def test_a_leader_past_its_renew_deadline_is_not_live(pair: tuple[Replica, Replica, Clock]) -> None:
    leader, _, clock = pair
    assert leader.election._attempt()
    clock.now += SETTINGS.renew_deadline
    assert get(leader.server, "/healthz")[0] == 200
    clock.now += 0.5
    status, body = get(leader.server, "/healthz")
    assert status == 500
    assert body.startswith("leader: lease not renewed for 10.5s")


def test_a_stopping_replica_that_released_the_lease_stays_live(pair: tuple[Replica, Replica, Clock]) -> None:
    leader, _, clock = pair
    assert leader.election._attempt()
    leader.election.stop_and_release()
    clock.now += 60
    assert get(leader.server, "/healthz") == (200, "ok\n")
    assert json.loads(get(leader.server, "/readyz")[1])["role"] == "standby"


def test_without_leader_election_the_one_process_leads() -> None:
    server = HealthServer("127.0.0.1", 0, _single("solo")).start()
    try:
        assert get(server, "/healthz") == (200, "ok\n")
        assert json.loads(get(server, "/readyz")[1]) == {"role": "leader", "identity": "solo", "holder": None}
        assert get(server, "/metrics")[0] == 404
    finally:
        server.stop()


def test_a_status_that_cannot_be_computed_is_not_live() -> None:
    def broken() -> ElectionStatus:
        raise RuntimeError("boom")

    server = HealthServer("127.0.0.1", 0, broken).start()
    try:
        assert get(server, "/healthz") == (500, "health check failed: boom\n")
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("address", "parsed"),
    [(":8081", ("0.0.0.0", 8081)), ("127.0.0.1:9", ("127.0.0.1", 9)), ("[::1]:8081", ("::1", 8081))],
)
def test_bind_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert parse_bind_address(address) == parsed


@pytest.mark.parametrize("address", ["8081", "host:", "host:http"])
def test_a_bind_address_without_a_port_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_bind_address(address)


def test_the_flag_defaults_to_8081_and_kopf_s_endpoint_on_that_port_gives_way() -> None:
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert args.health_bind_address == ":8081"
    assert _kopf_liveness_endpoint(args) is None
    # A manifest from before the flag: kopf's endpoint on :8081 would take the port ours serves.
    old = parser.parse_args(["run", "--health-endpoint=http://0.0.0.0:8081/healthz"])
    assert _kopf_liveness_endpoint(old) is None
    elsewhere = parser.parse_args(["run", "--health-endpoint=http://0.0.0.0:8082/healthz"])
    assert _kopf_liveness_endpoint(elsewhere) == "http://0.0.0.0:8082/healthz"
    ours_off = parser.parse_args(["run", "--health-bind-address=", "--health-endpoint=http://0.0.0.0:8081/healthz"])
    assert _kopf_liveness_endpoint(ours_off) == "http://0.0.0.0:8081/healthz"
