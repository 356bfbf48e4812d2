"""Graceful shutdown of the inference server: drain on SIGTERM, finish what is in flight, exit 0.

What gunicorn does by itself on SIGTERM is to stop listening at once and give the requests in flight its graceful
timeout. A pod is still in some load balancers' and proxies' lists for a moment after it is told to stop (a
kube-proxy that has not seen the EndpointSlice change yet, a client holding a kept-alive connection), so
connections refused at once are requests lost. Here SIGTERM instead:

1. turns readiness to 503 at once (drain.DRAIN, which the worker reads), so whatever still probes the pod takes
   it out of rotation;
2. keeps serving for the drain period: requests that still arrive are answered as usual, but every answer says
   `Connection: close`, so a client with a kept-alive connection opens its next one elsewhere;
3. then stops as gunicorn does: the listening socket is closed in every process (new connections are refused,
   none waits in a backlog that nobody accepts from), and the requests in flight get what is left of the
   shutdown timeout before the worker is killed;
4. exits 0.

A second SIGTERM during the drain changes nothing; SIGINT or SIGQUIT stop at once, as in gunicorn.

How it is wired in: seldon's production server builds `UserModelApplication(...)` by that module-level name in
seldon_core.microservice, as it does SeldonMetrics; the cli hands it `RuntimeApplication`, which runs the REST
server with `DrainingArbiter` and `DrainingThreadWorker`. seldon's metrics server is a plain gunicorn application
and keeps gunicorn's own behaviour: it stops when the main process ends.

Import this module only after PROMETHEUS_MULTIPROC_DIR is set: seldon's modules import prometheus_client.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker
from seldon_core.gunicorn_utils import UserModelApplication

from modeldeploy_runtime.drain import DRAIN, ShutdownSettings
from modeldeploy_runtime.logs import kv

logger = logging.getLogger(__name__)


class DrainingThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's threaded worker, plus: `Connection: close` on every answer while draining, and the listening
    socket closed as soon as the worker stops accepting (gunicorn closes it only once the last request is done,
    and connections that arrive in between would wait in the backlog, then be reset)."""

    def handle_request(self, req: Any, conn: Any) -> Any:
        if DRAIN.draining:
            req.must_close = True
        return super().handle_request(req, conn)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter, whose SIGTERM begins the drain instead of stopping at once."""

    def __init__(self, app: Any, settings: ShutdownSettings) -> None:
        self.shutdown_settings = settings
        self._drain_ends: float | None = None
        super().__init__(app)

    def handle_term(self) -> None:
        now = time.monotonic()
        ends = self._drain_ends if self._drain_ends is not None else self._begin_drain(now)
        if now < ends:
            return
        logger.info(kv("Drained, stopping", inFlightSeconds=self.shutdown_settings.in_flight_seconds))
        raise StopIteration

    def _begin_drain(self, now: float) -> float:
        DRAIN.begin()
        drain = self.shutdown_settings.drain_seconds
        self._drain_ends = now + drain
        logger.info(
            kv(
                "Received SIGTERM, draining",
                drainSeconds=drain,
                inFlightSeconds=self.shutdown_settings.in_flight_seconds,
            )
        )
        if drain > 0:
            # The main loop waits on SIG_QUEUE (a thread-safe queue): a second SIGTERM, queued when the drain is
            # over, wakes it and finds the drain done.
            timer = threading.Timer(drain, self.SIG_QUEUE.put_nowait, args=(signal.SIGTERM,))
            timer.daemon = True
            timer.start()
        return self._drain_ends


class RuntimeApplication(UserModelApplication):  # type: ignore[misc]
    """seldon's REST application with the draining arbiter and worker; the shutdown settings come from the cli
    (`configure`) because seldon constructs this class itself."""

    settings = ShutdownSettings(drain_seconds=0.0, in_flight_seconds=30.0)

    @classmethod
    def configure(cls, settings: ShutdownSettings) -> type[RuntimeApplication]:
        cls.settings = settings
        return cls

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("worker_class", DrainingThreadWorker)
        # Whole seconds (gunicorn's setting), rounded down: the shutdown timeout is a bound.
        self.cfg.set("graceful_timeout", max(1, math.floor(self.settings.in_flight_seconds)))

    def run(self) -> None:
        try:
            DrainingArbiter(self, self.settings).run()
        except RuntimeError as error:  # what gunicorn's own run() does with a configuration it cannot start
            print(f"\nError: {error}\n", file=sys.stderr, flush=True)
            sys.exit(1)
