"""A fault-injecting relay in front of the tests' real Prometheus: a test double of the network path between the
operator and Prometheus, nothing more.

It listens on 127.0.0.1 (a port of its own) and, while no fault is set, forwards every request (the operator's
POST /api/v1/query, or a GET) to the real Prometheus and hands its answer back unchanged. With a fault set it
answers as a broken or hostile Prometheus would, or as the path to it would fail:

- `http-5xx`: 503 Service Unavailable with a short text body;
- `not-json`: 200 with an HTML page;
- `wrong-shape`: 200 with JSON that is not the query API's shape (a vector whose result is an object);
- `huge-body`: 200 with a JSON answer of several MiB (the operator reads at most 1 MiB);
- `nan`: the real Prometheus' answer, every sample's value replaced by "NaN";
- `empty-result`: the real Prometheus' answer with an empty result (no series);
- `slow`: the real answer, held back `slow_seconds` (longer than the operator's query deadline);
- `unreachable`: the port closed (nothing listens on it; connecting is refused) until the fault is lifted.

No root and no node agent are needed: it is a plain HTTP server, and faults change only what it answers.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modeldeploy_testkit.waiting import free_port

HTTP_5XX = "http-5xx"
NOT_JSON = "not-json"
WRONG_SHAPE = "wrong-shape"
HUGE_BODY = "huge-body"
NAN = "nan"
EMPTY_RESULT = "empty-result"
SLOW = "slow"
UNREACHABLE = "unreachable"
FAULTS = (HTTP_5XX, NOT_JSON, WRONG_SHAPE, HUGE_BODY, NAN, EMPTY_RESULT, SLOW, UNREACHABLE)
HUGE_BYTES = 4 * 1024 * 1024
UPSTREAM_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    relay: FaultRelay


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the case reports what it needs."""

    def do_GET(self) -> None:
        self._relay(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._relay(self.rfile.read(length) if length else b"")

    def _relay(self, body: bytes) -> None:
        relay = self.server.relay
        fault = relay.fault
        relay.count(fault)
        try:
            if fault == HTTP_5XX:
                self._send(503, b"prometheus is overloaded (injected by the test relay)\n", "text/plain")
            elif fault == NOT_JSON:
                self._send(200, b"<html><body><h1>It works!</h1></body></html>\n", "text/html")
            elif fault == WRONG_SHAPE:
                shape = {"status": "success", "data": {"resultType": "vector", "result": {"value": [1, "1"]}}}
                self._send(200, json.dumps(shape).encode(), "application/json")
            elif fault == HUGE_BODY:
                self._send_huge()
            else:
                if fault == SLOW and relay.stopping.wait(relay.slow_seconds):
                    return
                status, content_type, answer = relay.forward(self.command, self.path, body)
                if fault in (NAN, EMPTY_RESULT) and status == 200:
                    answer = _rewritten(answer, fault)
                self._send(status, answer, content_type)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the operator gave up on the answer (its deadline, or its size cap): what the fault is for

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_huge(self) -> None:
        """A well-formed answer, far beyond the operator's cap, written in chunks."""
        head = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"padding":"'
        tail = b'"},"value":[1,"1"]}]}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(head) + HUGE_BYTES + len(tail)))
        self.end_headers()
        self.wfile.write(head)
        chunk = b"x" * 65536
        for _ in range(HUGE_BYTES // len(chunk)):
            self.wfile.write(chunk)
        self.wfile.write(tail)


def _rewritten(answer: bytes, fault: str) -> bytes:
    """The real answer with its values made NaN, or its result emptied; unchanged when it is not the API's JSON."""
    try:
        payload = json.loads(answer)
        data = payload["data"]
        if fault == EMPTY_RESULT:
            data["result"] = []
        elif data.get("resultType") == "scalar":
            data["result"][1] = "NaN"
        else:
            for series in data["result"]:
                if "value" in series:
                    series["value"][1] = "NaN"
                for pair in series.get("values") or []:
                    pair[1] = "NaN"
    except (ValueError, KeyError, TypeError, IndexError):
        return answer
    return json.dumps(payload).encode()


class FaultRelay:
    """The relay: start() it, point an analysis at `url`, set `fault` (None forwards), stop() it at the end."""

    def __init__(self, upstream: str, slow_seconds: float = 5.0) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.slow_seconds = slow_seconds
        self.port = free_port()
        self.stopping = threading.Event()
        self.requests: dict[str, int] = {}
        self._fault: str | None = None
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, fault: str | None) -> None:
        """Set (or lift, with None) a fault; `unreachable` closes the port, lifting it opens the same port again."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        with self._lock:
            self._fault = fault
        if fault == UNREACHABLE:
            self._close()
        elif self._server is None and not self.stopping.is_set():
            self._open()

    def count(self, fault: str | None) -> None:
        with self._lock:
            key = fault or "forwarded"
            self.requests[key] = self.requests.get(key, 0) + 1

    def forward(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """The real Prometheus' answer to the same request: status, content type, body."""
        host = self.upstream.hostname or "127.0.0.1"
        connection = http.client.HTTPConnection(host, self.upstream.port or 80, timeout=UPSTREAM_TIMEOUT)
        try:
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {}
            connection.request(method, self.upstream.path.rstrip("/") + path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type") or "application/json", response.read()
        except OSError as error:
            return 502, "text/plain", f"relay: the real Prometheus did not answer: {error}\n".encode()
        finally:
            connection.close()

    def start(self) -> FaultRelay:
        self._open()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._close()

    def _open(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.relay = self
        thread = threading.Thread(target=server.serve_forever, name=f"prometheus relay :{self.port}", daemon=True)
        thread.start()
        self._server, self._thread = server, thread

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
