"""Traffic to a model Service on the local cluster: one run of the load generator, or steady rounds in the background.

The load generator (modeldeploy_testkit.loadgen) resolves the Service's ready EndpointSlices like kube-proxy and
spreads requests over them, after checking that every pod IP is routed through our own veths.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.kubeapi import ApiError
from modeldeploy_testkit.loadgen import RefusedError, check_routes, resolve
from modeldeploy_testkit.loadgen import run as send_requests


def loadgen(cluster: Cluster, namespace: str, service: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "modeldeploy_testkit.loadgen", "-n", namespace, service, "--json", *args],
        env=cluster.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"loadgen failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@dataclass(frozen=True)
class TrafficRound:
    started: float
    """time.time() when the round began sending."""
    ended: float
    endpoints: int
    answered_by_version: dict[str, int]
    errors: int
    error_examples: list[str]


class SteadyTraffic:
    """Requests to a Service for as long as it runs, from the load generator's own sender, in short rounds.

    One run of loadgen resolves the Service's ready endpoints once, at its start. A canary's pods come and go during
    a rollout, so the traffic here is a sequence of loadgen runs of `round_seconds` each, every one to the ready
    endpoints of its moment, as a client behind kube-proxy sees pods join and leave.
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
        self.thread = threading.Thread(target=self._run, name=f"traffic to {namespace}/{service}", daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.round_seconds + 30)
        if self.crash is not None:
            raise AssertionError(f"the traffic thread crashed: {self.crash!r}") from self.crash

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._one_round()
        except BaseException as error:  # reported by stop(): a silent traffic thread would look like "no traffic"
            self.crash = error

    def _one_round(self) -> None:
        try:
            endpoints = resolve(self.api, self.namespace, self.service, "http")
            # The same refusal as loadgen's command line: nothing is sent to an IP outside our veths.
            check_routes(endpoints)
        except (RefusedError, ApiError, requests.RequestException) as error:
            self._problem(str(error))
            return
        if not endpoints:
            self._problem("no ready endpoints")
            return
        started = time.time()
        tally, _ = send_requests(
            endpoints,
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
                    endpoints=len(endpoints),
                    answered_by_version=dict(tally.by_version),
                    errors=sum(tally.errors.values()),
                    error_examples=list(tally.error_examples),
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

    def summary(self) -> str:
        with self.lock:
            rounds, problems = list(self.rounds), list(self.problems)
        answered: Counter[str] = Counter()
        for traffic_round in rounds:
            answered.update(traffic_round.answered_by_version)
        errors = sum(r.errors for r in rounds)
        examples = [example for r in rounds for example in r.error_examples][:3]
        return (
            f"{len(rounds)} rounds of traffic to {self.namespace}/{self.service}: answered {dict(answered)}, "
            f"{errors} errors{' (e.g. ' + '; '.join(examples) + ')' if examples else ''}; {len(problems)} rounds "
            f"not sent" + (f" (last: {problems[-1]})" if problems else "")
        )
