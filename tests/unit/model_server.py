"""Model servers on 127.0.0.1 for the smoke tests' requests: they answer as the runtime's seldon protocol does, or
misbehave as asked. `echo` answers each row's first feature; `shifted` adds 1 to it; `slow` answers after 2 s;
`error` answers 500."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def seldon(ndarray: Any) -> bytes:
    return json.dumps({"data": {"names": [], "ndarray": ndarray}, "meta": {"tags": {"version": "2.0.0"}}}).encode()


class ModelServer(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        behaviour = self.server.behaviour  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", "0"))
        rows = json.loads(self.rfile.read(length))["data"]["ndarray"]
        if behaviour == "slow":
            time.sleep(2)
        if behaviour == "error":
            self.send_response(500)
            self.end_headers()
            return
        shift = 1.0 if behaviour == "shifted" else 0.0
        body = seldon([[row[0] + shift] for row in rows])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def model_servers() -> Iterator[Callable[[str], int]]:
    """start(behaviour) -> the port of a new server; all are stopped at the end."""
    started: list[http.server.ThreadingHTTPServer] = []

    def start(behaviour: str) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ModelServer)
        server.behaviour = behaviour  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return int(server.server_address[1])

    try:
        yield start
    finally:
        for server in started:
            server.shutdown()
            server.server_close()
