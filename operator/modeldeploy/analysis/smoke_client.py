"""Sends a smoke round: every case to each canary pod (and, with compareTo Stable, to one stable pod first), each
request bounded by the spec's timeoutSeconds (modeldeploy.analysis.bounded_http), the answers judged by
modeldeploy.analysis.smoke.

Pods are reached at their IPs, as the gateway and kube-proxy reach them; an operator that cannot reach pod IPs
(outside the cluster network) fails every case with "could not be reached", which rolls the canary back: a smoke
test that cannot run must not pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modeldeploy.analysis import bounded_http, smoke
from modeldeploy.api import models as api
from modeldeploy.config import UrlPrefix

MAX_PODS = 10
"""Canary pods asked per round; beyond them (a mirror step of a large model), the first ten by name. All are asked
side by side, so a round lasts at most cases x timeoutSeconds (admission keeps that within 120 s)."""


@dataclass(frozen=True)
class PodAddress:
    pod: str
    ip: str
    port: int


def ask(address: PodAddress, request: smoke.SmokeRequest, timeout: float) -> smoke.Answer:
    target = UrlPrefix(scheme="http", host=address.ip, port=address.port, path="")
    try:
        reply = bounded_http.post(
            target,
            request.path,
            request.body,
            content_type="application/json",
            timeout=timeout,
            max_bytes=smoke.MAX_ANSWER_BYTES,
            name="smoke-request",
        )
    except bounded_http.DeadlineError:
        return smoke.Answer(failure=f"no answer within {timeout:g} s")
    except bounded_http.TooLargeError:
        return smoke.Answer(failure=f"the answer is larger than {smoke.MAX_ANSWER_BYTES} bytes")
    except bounded_http.UnreachableError as error:
        return smoke.Answer(failure=f"could not be reached: {error}")
    except bounded_http.ExchangeError as error:
        return smoke.Answer(failure=f"could not be asked: {error}")
    if reply.status != 200:
        return smoke.Answer(failure=f"answered HTTP {reply.status} {reply.reason}".strip())
    return smoke.Answer(reply.body)


def run_round(
    spec: api.SmokeTestSpec,
    protocol: str,
    model: str,
    canary: Sequence[PodAddress],
    stable: PodAddress | None,
) -> list[smoke.Verdict]:
    """Every case on each of (at most MAX_PODS) canary pods. Cases run one after another on a pod (a model server
    may serve one request at a time), pods side by side."""
    requests = [smoke.request_for(case, protocol, model) for case in spec.cases]
    references: list[list[float] | None]
    if spec.compareTo == api.CompareTo.STABLE:
        references = [_reference(stable, request, spec, protocol) for request in requests]
    else:
        references = [smoke.expected_outputs(case) for case in spec.cases]

    def on_pod(address: PodAddress) -> list[smoke.Verdict]:
        return [
            smoke.judge(spec, case, address.pod, ask(address, request, spec.timeoutSeconds), reference, protocol)
            for case, request, reference in zip(spec.cases, requests, references, strict=True)
        ]

    pods = sorted(canary, key=lambda address: address.pod)[:MAX_PODS]
    with ThreadPoolExecutor(max_workers=MAX_PODS, thread_name_prefix="smoke") as pool:
        return [verdict for verdicts in pool.map(on_pod, pods) for verdict in verdicts]


def _reference(
    stable: PodAddress | None, request: smoke.SmokeRequest, spec: api.SmokeTestSpec, protocol: str
) -> list[float] | None:
    if stable is None:
        return None
    answer = ask(stable, request, spec.timeoutSeconds)
    if answer.body is None:
        return None
    try:
        return smoke.outputs_of(answer.body, protocol)
    except smoke.AnswerError:
        return None
