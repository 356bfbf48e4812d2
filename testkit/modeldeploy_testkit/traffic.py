"""Traffic to a model Service on the local cluster: one run of the load generator, or steady traffic in the background.

The load generator (modeldeploy_testkit.loadgen) follows the Service's EndpointSlices with a watch, as kube-proxy
does, and spreads requests over the endpoints ready at each moment, after checking that every pod IP is routed
through our own veths.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.kubeapi import ApiError
from modeldeploy_testkit.loadgen import EndpointWatch, RefusedError
from modeldeploy_testkit.loadgen import run as send_requests


def loadgen(cluster: Cluster, namespace: str, service: str, *args: str) -> dict[str, Any]:
    return _loadgen(["-n", namespace, service, *args], cluster.env())


def loadgen_via_gateway(address: str, port: int, host: str, *args: str) -> dict[str, Any]:
    """One run of the load generator through a gateway on this machine, every request with Host `host`."""
    return _loadgen(["--gateway", f"{address}:{port}", "--host", host, *args], None)


def _loadgen(args: list[str], env: dict[str, str] | None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "modeldeploy_testkit.loadgen", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"loadgen failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


class GatewayLoad:
    """The load generator through a gateway, running in the background from `start()` until `stop()`, which
    ends it with SIGTERM and returns its report: traffic for exactly as long as what a test watches takes."""

    def __init__(self, address: str, port: int, host: str, *args: str) -> None:
        self._args = ["--gateway", f"{address}:{port}", "--host", host, *args]
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> GatewayLoad:
        command = [sys.executable, "-m", "modeldeploy_testkit.loadgen", "--json", *self._args]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def stop(self) -> dict[str, Any]:
        assert self._process is not None, "the load generator was never started"
        self._process.terminate()
        out, err = self._process.communicate(timeout=60)
        assert self._process.returncode == 0, f"loadgen failed ({self._process.returncode}):\n{err}{out}"
        report: dict[str, Any] = json.loads(out)
        return report

    def __enter__(self) -> GatewayLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


@dataclass(frozen=True)
class TrafficRound:
    started: float
    """time.time() when the round began sending."""
    ended: float
    endpoints: int
    """Ready endpoints when the round began."""
    answered_by_version: dict[str, int]
    errors: int
    error_examples: list[str]
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    retried: int = 0


class SteadyTraffic:
    """Requests to a Service at a steady rate for as long as it runs, from the load generator's own sender.

    One EndpointWatch follows the Service's EndpointSlices for the whole run, so every request goes to an endpoint
    ready at the moment it is sent, as a client behind kube-proxy sees pods join and leave during a rollout. The
    results are kept in rounds of `round_seconds`, so that a test can ask about what happened after a moment.
    A round that finds no ready endpoint at its start is not sent (see `problems`); one that loses them all while
    it runs counts every request it could not send as a failure of kind no_endpoint.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        service: str,
        *,
        payload: dict[str, Any],
        rate: float = 20.0,
        round_seconds: float = 1.0,
        concurrency: int = 4,
    ) -> None:
        self.api = cluster.api()
        self.namespace = namespace
        self.service = service
        self.payload = payload
        self.rate = rate
        self.round_seconds = round_seconds
        self.concurrency = concurrency
        self.rounds: list[TrafficRound] = []
        self.problems: list[str] = []
        """Rounds not sent, and why (no ready endpoint yet, a route refused, the API server briefly away)."""
        self.crash: BaseException | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.endpoints = EndpointWatch(self.api, namespace, service, "http")
        self.thread = threading.Thread(target=self._run, name=f"traffic to {namespace}/{service}", daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        """Lists the Service's EndpointSlices (here, so that a missing Service fails the caller), then sends."""
        try:
            self.endpoints.start()
        except (RefusedError, ApiError, requests.RequestException) as error:
            raise AssertionError(f"no traffic to {self.namespace}/{self.service}: {error}") from error
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.round_seconds + 30)
        self.endpoints.stop()
        if self.crash is not None:
            raise AssertionError(f"the traffic thread crashed: {self.crash!r}") from self.crash

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._one_round()
        except BaseException as error:  # reported by stop(): a silent traffic thread would look like "no traffic"
            self.crash = error

    def _one_round(self) -> None:
        # An endpoint whose IP is not routed through our veths is never offered by the watch (summary() names it).
        ready = len(self.endpoints.ready())
        if not ready:
            self._problem("no ready endpoints")
            return
        started = time.time()
        tally, _ = send_requests(
            self.endpoints,
            rate=self.rate,
            requests=None,
            duration=self.round_seconds,
            concurrency=self.concurrency,
            path="/api/v1.0/predictions",
            payload=self.payload,
            timeout=5.0,
            seed=None,
        )
        with self.lock:
            self.rounds.append(
                TrafficRound(
                    started=started,
                    ended=time.time(),
                    endpoints=ready,
                    answered_by_version=dict(tally.by_version),
                    errors=sum(tally.failures.values()),
                    error_examples=list(tally.error_examples),
                    errors_by_kind=dict(tally.failures),
                    sent=tally.sent,
                    retried=tally.retried,
                )
            )

    def _problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        self.stopping.wait(0.2)

    def answered(self, since: float = 0.0) -> Counter[str]:
        """Answers by version, from the rounds that started at or after `since` (time.time())."""
        with self.lock:
            rounds = [r for r in self.rounds if r.started >= since]
        total: Counter[str] = Counter()
        for traffic_round in rounds:
            total.update(traffic_round.answered_by_version)
        return total

    def errors(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(r.errors for r in self.rounds if r.started >= since)

    def error_examples(self, since: float = 0.0) -> list[str]:
        """Up to 5 examples per round (as loadgen keeps them): `pod (ip): HTTP 500: body` when a model server
        answered with an error, `pod (ip): ConnectionRefusedError: ...` when nothing answered."""
        with self.lock:
            return [example for r in self.rounds if r.started >= since for example in r.error_examples]

    def sent(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(r.sent for r in self.rounds if r.started >= since)

    def errors_by_kind(self, since: float = 0.0) -> Counter[str]:
        with self.lock:
            rounds = [r for r in self.rounds if r.started >= since]
        total: Counter[str] = Counter()
        for traffic_round in rounds:
            total.update(traffic_round.errors_by_kind)
        return total

    def summary(self) -> str:
        with self.lock:
            rounds, problems = list(self.rounds), list(self.problems)
        answered: Counter[str] = Counter()
        for traffic_round in rounds:
            answered.update(traffic_round.answered_by_version)
        errors = sum(r.errors for r in rounds)
        kinds: Counter[str] = Counter()
        for traffic_round in rounds:
            kinds.update(traffic_round.errors_by_kind)
        by_kind = f" {dict(kinds)}" if kinds else ""
        examples = [example for r in rounds for example in r.error_examples][:3]
        return (
            f"{len(rounds)} rounds of traffic to {self.namespace}/{self.service}: sent {sum(r.sent for r in rounds)}, "
            f"answered {dict(answered)}, {errors} errors{by_kind}"
            f"{' (e.g. ' + '; '.join(examples) + ')' if examples else ''}; {len(problems)} rounds not sent"
            + (f" (last: {problems[-1]})" if problems else "")
            + f"; the ready endpoints changed {max(len(self.endpoints.changes) - 1, 0)} times"
            + "".join(f"; never sent to {ip}: {why}" for ip, why in self.endpoints.refused.items())
        )
