"""The Prometheus client against a real HTTP server that misbehaves (prometheus_server.py): every bad answer is a
QueryError with a short message, nothing else escapes, and no query outlives its wall-clock deadline.

The same server behind reconcile() is in test_reconcile.py: there, each case is counted as the right phase.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from modeldeploy.analysis.measure import QueryError, Sample
from modeldeploy.analysis.prometheus import MAX_RESPONSE_BYTES, PrometheusClient

from .prometheus_server import MisbehavingPrometheus, misbehaving_prometheus

DEADLINE = 1.0


@pytest.fixture(scope="module")
def server() -> Iterator[MisbehavingPrometheus]:
    with misbehaving_prometheus() as running:
        yield running


def query_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "prometheus-query"]


def wait_for_no_query_threads(within: float) -> None:
    ends = time.monotonic() + within
    while query_threads() and time.monotonic() < ends:
        time.sleep(0.02)
    assert not query_threads(), "a query's thread outlived its deadline"


@pytest.mark.parametrize(
    ("case", "value"),
    [("value-0.5", 0.5), ("value-inf", math.inf), ("value-minus-inf", -math.inf), ("scalar-inf", math.inf)],
)
def test_answers_are_read(server: MisbehavingPrometheus, case: str, value: float) -> None:
    assert PrometheusClient(server.address(case)).query("up", DEADLINE) == [Sample({}, value)]


def test_nan_is_read_as_nan(server: MisbehavingPrometheus) -> None:
    [sample] = PrometheusClient(server.address("value-nan")).query("up", DEADLINE)
    assert math.isnan(sample.value)


def test_the_query_is_posted_under_the_address_path(server: MisbehavingPrometheus) -> None:
    before = len(server.asked)
    PrometheusClient(server.address("value-0.5") + "/").query("up", DEADLINE)
    assert server.asked[before:] == ["/value-0.5/api/v1/query"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("status-500", r"Prometheus answered 500 Internal Server Error: internal: EEEE+\u2026$"),
        ("status-503-html", r"Prometheus answered 503 Service Unavailable: <html>overloaded"),
        ("status-422", r"Prometheus answered 422 Unprocessable Entity: execution: bad query"),
        ("not-found", "Prometheus answered 404 Not Found: 404 page not found"),
        ("not-json", "not JSON"),
        ("truncated-json", "not JSON"),
        ("deep-json", "not JSON"),
        ("data-string", "no data object"),
        ("matrix", "not matrix"),
        ("value-not-a-number", "a sample value is not a number: 'lots'"),
        ("labels-not-strings", "labels are not an object of strings"),
        ("too-many-series", "the query returned 1001 series, more than 1000"),
        ("huge-message", r"answered status 'weird-WWWW+\u2026"),
        ("huge", rf"larger than {MAX_RESPONSE_BYTES} bytes \(5242880 bytes\)"),
        ("huge-chunked", rf"larger than {MAX_RESPONSE_BYTES} bytes$"),
        ("redirect", r"answered 307 \(a redirect to /value-0\.5/api/v1/query\), which is not followed"),
        ("close", "did not answer: RemoteDisconnected"),
    ],
)
def test_every_bad_answer_is_a_short_query_error(server: MisbehavingPrometheus, case: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(QueryError, match=message) as raised:
        PrometheusClient(server.address(case)).query("up", DEADLINE)
    assert time.monotonic() - started < DEADLINE + 1
    # The analysis caps what it stores; the client already quotes an answer only in part.
    assert len(str(raised.value).encode()) < 1024


def test_a_redirect_is_not_followed(server: MisbehavingPrometheus) -> None:
    before = len(server.asked)
    with pytest.raises(QueryError, match="307"):
        PrometheusClient(server.address("redirect")).query("up", DEADLINE)
    assert server.asked[before:] == ["/redirect/api/v1/query"]


@pytest.mark.parametrize("case", ["drip-body", "drip-headers", "silent"])
def test_a_server_that_drips_or_stays_silent_gets_the_deadline_and_not_a_second_more(
    server: MisbehavingPrometheus, case: str
) -> None:
    """A timeout per socket read would let a byte a second hold the query for as long as the server likes."""
    started = time.monotonic()
    with pytest.raises(QueryError, match=r"did not answer within the 1s deadline"):
        PrometheusClient(server.address(case)).query("up", DEADLINE)
    elapsed = time.monotonic() - started
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + 1, elapsed
    # The socket is shut down at the deadline: the thread that read from it ends too.
    wait_for_no_query_threads(within=1.0)


def test_connect_is_inside_the_deadline() -> None:
    """A listener whose backlog is full leaves the next connect hanging: the deadline covers it too."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        address = f"http://127.0.0.1:{full.getsockname()[1]}"
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(full.getsockname())
                fillers.append(filler)
            started = time.monotonic()
            with pytest.raises(QueryError, match=r"did not answer within the 0\.5s deadline"):
                PrometheusClient(address).query("up", 0.5)
            assert time.monotonic() - started < 0.5 + 1
        finally:
            for filler in fillers:
                filler.close()


def test_a_refused_connection_is_an_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(QueryError, match="did not answer: ConnectionRefusedError"):
        PrometheusClient(f"http://127.0.0.1:{port}").query("up", DEADLINE)


@pytest.mark.parametrize(
    "address",
    ["ftp://127.0.0.1/", "http://", "http://127.0.0.1:notaport", "http://127.0.0.1:0", "http://u:p@127.0.0.1"],
)
def test_an_address_that_is_not_a_url_is_an_error(address: str) -> None:
    with pytest.raises(QueryError, match=r"is not an http:// or https:// URL|out of range"):
        PrometheusClient(address).query("up", DEADLINE)


def test_no_time_left_asks_nothing(server: MisbehavingPrometheus) -> None:
    before = len(server.asked)
    with pytest.raises(QueryError, match="no time left"):
        PrometheusClient(server.address("value-0.5")).query("up", 0.0)
    assert server.asked[before:] == []


def test_no_proxy_from_the_environment(server: MisbehavingPrometheus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that does not exist: asked, it would fail the query."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert PrometheusClient(server.address("value-0.5")).query("up", DEADLINE) == [Sample({}, 0.5)]
