"""A Prometheus that misbehaves on request: a threaded HTTP server on 127.0.0.1 for the client's unit tests.

The first path segment picks the behaviour, so one server serves every case: a client given the address
`<url>/<case>` asks `/<case>/api/v1/query`. Every request is recorded, so a test can also say that nothing was
asked. Slow cases wait on an event that stop() sets, so the server never outlives its test.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DRIP_SECONDS = 1.0
HUGE_BYTES = 5 * 1024 * 1024


def vector(*values: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": labels or {}, "value": [1.0, v]} for v in values]},
    }


class Handler(BaseHTTPRequestHandler):
    server: MisbehavingPrometheus

    def log_message(self, format: str, *args: Any) -> None:
        pass  # The tests say what they need; a line per request would drown pytest's output.

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.asked.append(self.path)
        case = self.path.strip("/").split("/")[0]
        self.close_connection = True
        behaviour = CASES.get(case, CASES["not-found"])
        with contextlib.suppress(OSError):  # the client leaving mid-answer is part of the game
            behaviour(self)

    # --- building blocks ------------------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def answer(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        head = f"HTTP/1.1 {status} {self.responses.get(status, ('Whatever',))[0]}\r\n"
        fields = {"Content-Type": content_type, "Content-Length": str(len(body)), "Connection": "close", **headers}
        head += "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
        self.send_raw(head.encode() + body)

    def json(self, payload: Any, status: int = 200) -> None:
        self.answer(status, json.dumps(payload).encode())

    def wait(self, seconds: float) -> bool:
        """False when the server is stopping."""
        return not self.server.stopping.wait(seconds)


def _drip_body(handler: Handler) -> None:
    body = json.dumps(vector("1")).encode()
    handler.send_raw(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    for byte in body:
        if not handler.wait(DRIP_SECONDS):
            return
        handler.send_raw(bytes([byte]))


def _drip_headers(handler: Handler) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
        handler.send_raw(bytes([byte]))
        if not handler.wait(DRIP_SECONDS):
            return


def _silent(handler: Handler) -> None:
    handler.wait(60)


def _huge(handler: Handler) -> None:
    handler.send_raw(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {HUGE_BYTES}\r\n\r\n".encode()
    )
    chunk = b"[" * 65536
    for _ in range(HUGE_BYTES // len(chunk)):
        handler.send_raw(chunk)


def _huge_chunked(handler: Handler) -> None:
    """No Content-Length to refuse early: the cap must stop the reading."""
    handler.send_raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    for _ in range(HUGE_BYTES // len(chunk)):
        handler.send_raw(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    handler.send_raw(b"0\r\n\r\n")


def _redirect(handler: Handler) -> None:
    handler.answer(307, b"", Location="/value-0.5/api/v1/query")


def _close(handler: Handler) -> None:
    handler.wfile.close()


Behaviour = Callable[[Handler], None]

CASES: dict[str, Behaviour] = {
    "value-0.5": lambda h: h.json(vector("0.5")),
    "value-0.995": lambda h: h.json(vector("0.995")),
    "value-nan": lambda h: h.json(vector("NaN")),
    "value-inf": lambda h: h.json(vector("+Inf")),
    "value-minus-inf": lambda h: h.json(vector("-Inf")),
    "scalar-inf": lambda h: h.json({"status": "success", "data": {"resultType": "scalar", "result": [1, "+Inf"]}}),
    "status-500": lambda h: h.json({"status": "error", "errorType": "internal", "error": "E" * 100_000}, 500),
    "status-503-html": lambda h: h.answer(503, b"<html>" + b"overloaded " * 10_000 + b"</html>", "text/html"),
    "status-422": lambda h: h.json({"status": "error", "errorType": "execution", "error": "bad query"}, 422),
    "not-json": lambda h: h.answer(200, b"<html>hello</html>", "text/html"),
    "truncated-json": lambda h: h.answer(200, b'{"status": "success", "data": {'),
    "deep-json": lambda h: h.answer(200, b"[" * 200_000),
    "data-string": lambda h: h.json({"status": "success", "data": "x"}),
    "matrix": lambda h: h.json({"status": "success", "data": {"resultType": "matrix", "result": []}}),
    "value-not-a-number": lambda h: h.json(vector("lots")),
    "labels-not-strings": lambda h: h.json(
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"a": 1}, "value": [1, "1"]}]}}
    ),
    "too-many-series": lambda h: h.json(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"i": str(i)}, "value": [1, "1"]} for i in range(1001)],
            },
        }
    ),
    "huge-message": lambda h: h.json({"status": "weird-" + "W" * 100_000}),
    "huge": _huge,
    "huge-chunked": _huge_chunked,
    "drip-body": _drip_body,
    "drip-headers": _drip_headers,
    "silent": _silent,
    "redirect": _redirect,
    "close": _close,
    "not-found": lambda h: h.answer(404, b"404 page not found", "text/plain"),
}


class MisbehavingPrometheus(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.asked: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def address(self, case: str) -> str:
        assert case in CASES, case
        return f"{self.url}/{case}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def misbehaving_prometheus() -> Iterator[MisbehavingPrometheus]:
    server = MisbehavingPrometheus()
    server.start()
    try:
        yield server
    finally:
        server.stop()
