"""The operator's own health endpoint, served by the leader and by a standby alike.

kopf's liveness endpoint exists only once kopf runs, i.e. on the leader: probes that asked it would never find a
standby live or Ready. This one starts before the replica waits for the Lease:

- `/healthz` (liveness): 200 while the election loop works: a standby attempts the Lease regularly, a leader renews
  it within its renew deadline. 500 with a one-line reason otherwise, so the kubelet restarts a stuck replica.
- `/readyz` (readiness): 200 for the leader and for a standby, with a JSON body naming the role, the replica's
  identity and the holder it observed. A standby is Ready on purpose: with two replicas, a RollingUpdate with
  maxUnavailable 1 and a PodDisruptionBudget both count Ready pods, and a standby that were never Ready would stall
  every upgrade and drain. No traffic depends on it: the operator's Service serves metrics only.

kopf's own health is not part of `/healthz`: kopf runs in the main thread, and when it stops the process ends (the
Deployment restarts it). An event loop that hangs without ending is not detected here; kopf's endpoint
(`--health-endpoint`) would answer from that same loop, so asking it would not tell more.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from modeldeploy.kube.lease import ElectionStatus

log = logging.getLogger("modeldeploy.health")

StatusSource = Callable[[], ElectionStatus]


def parse_bind_address(address: str) -> tuple[str, int]:
    """HOST:PORT, :PORT (every interface) or [IPv6]:PORT."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            status = self.server.source()
        except Exception as error:
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, f"health check failed: {error}\n", "text/plain")
            return
        if path == "/healthz":
            if status.problem is None:
                self._answer(HTTPStatus.OK, "ok\n", "text/plain")
            else:
                self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, f"{status.problem}\n", "text/plain")
        elif path == "/readyz":
            body = {"role": status.role, "identity": status.identity, "holder": status.holder}
            self._answer(HTTPStatus.OK, json.dumps(body) + "\n", "application/json")
        else:
            self._answer(HTTPStatus.NOT_FOUND, "not found\n", "text/plain")

    def _answer(self, code: HTTPStatus, text: str, content_type: str) -> None:
        payload = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        # Probes come every few seconds; a line for each would drown the operator's log.
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: StatusSource) -> None:
        self.source = source
        super().__init__(address, _Handler)


class HealthServer:
    """`/healthz` and `/readyz` on HOST:PORT, from a thread of their own (port 0: any free port)."""

    def __init__(self, host: str, port: int, source: StatusSource) -> None:
        self.host = host
        self._server = _Server((host, port), source)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("Serving health %s", f'address="{self.host}:{self.port}"')
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
