"""Graceful shutdown: the settings, and the one bit of state the server's processes share about it.

On SIGTERM the server's main process (gunicorn's arbiter) starts draining (shutdown.py); the worker, another
process, answers readiness and decides whether to keep connections alive. The two meet in one byte of anonymous
shared memory, mapped here at import: import this module in the main process before seldon forks anything (the
cli does), so that every process holds the same mapping.

Standard library only: the cli imports it before PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Mapping
from dataclasses import dataclass

from modeldeploy_runtime.config import ENV_DRAIN_SECONDS, ENV_SHUTDOWN_TIMEOUT

DEFAULT_DRAIN_SECONDS = 5.0
# Below the 30 s a kubelet waits by default between SIGTERM and SIGKILL, with room for the processes to exit.
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 25.0
# Requests in flight when the drain ends always get at least this long to finish.
MIN_IN_FLIGHT_SECONDS = 1.0
MAX_SECONDS = 3600.0


class ShutdownConfigError(ValueError):
    """A shutdown variable that is not a number of seconds the server can honour."""


@dataclass(frozen=True)
class ShutdownSettings:
    """From SIGTERM: `drain_seconds` of serving as usual (readiness 503), then `in_flight_seconds` at most for the
    requests still running, then exit. The two add up to the shutdown timeout, which the operator sets below the
    pod's terminationGracePeriodSeconds so that the kubelet's SIGKILL never comes first."""

    drain_seconds: float
    in_flight_seconds: float

    @property
    def timeout_seconds(self) -> float:
        return self.drain_seconds + self.in_flight_seconds

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ShutdownSettings:
        drain = _seconds(environ, ENV_DRAIN_SECONDS, DEFAULT_DRAIN_SECONDS, minimum=0.0)
        timeout = _seconds(
            environ, ENV_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT_SECONDS, minimum=MIN_IN_FLIGHT_SECONDS
        )
        # The timeout is the bound: a drain that would leave less than the minimum for requests in flight is cut.
        drain = min(drain, timeout - MIN_IN_FLIGHT_SECONDS)
        return cls(drain_seconds=drain, in_flight_seconds=timeout - drain)


def _seconds(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ShutdownConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or not minimum <= value <= MAX_SECONDS:
        raise ShutdownConfigError(f"{name}={raw!r} must be between {minimum:g} and {MAX_SECONDS:g} seconds")
    return value


class DrainState:
    """Whether the server is shutting down: written by the arbiter, read by the worker on every request."""

    def __init__(self) -> None:
        # Anonymous and MAP_SHARED (mmap's default): a forked process sees the parent's writes and vice versa.
        self._shared = mmap.mmap(-1, 1)

    @property
    def draining(self) -> bool:
        return self._shared[0] == 1

    def begin(self) -> None:
        self._shared[0] = 1

    def reset(self) -> None:
        """For tests that run the model class in process."""
        self._shared[0] = 0


DRAIN = DrainState()
