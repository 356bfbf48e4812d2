"""The Prometheus HTTP API client of canary analysis: instant queries, bounded by a timeout, nothing shared.

A client is made per measurement round, so resources never share connections or state, and a slow Prometheus
costs one reconcile its timeout, not the operator its workers.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from modeldeploy.analysis.measure import QueryError, Sample

USER_AGENT = "modeldeploy/0.1.0"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class PrometheusClient:
    def __init__(self, address: str) -> None:
        self.address = address.rstrip("/")
        # No proxy from the environment: the address configured is the one asked.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def query(self, promql: str, timeout: float) -> list[Sample]:
        if not self.address:
            raise QueryError(
                "no Prometheus address: set spec.rollout.analysis.prometheus.address or the operator's "
                "MODELDEPLOY_PROMETHEUS_URL"
            )
        body = urllib.parse.urlencode({"query": promql, "timeout": f"{max(timeout, 0.1):.3f}"}).encode()
        request = urllib.request.Request(
            f"{self.address}/api/v1/query",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=max(timeout, 0.1)) as response:
                payload = json.loads(response.read(MAX_RESPONSE_BYTES))
        except urllib.error.HTTPError as error:
            # Prometheus answers 400/422/503 with a JSON body that says why.
            raise QueryError(f"Prometheus answered {error.code}: {_error_text(error)}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise QueryError(f"Prometheus at {self.address} did not answer: {reason}") from None
        except ValueError as error:
            raise QueryError(f"Prometheus answered with something that is not JSON: {error}") from None
        return parse_result(payload)


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(error.read(65536))
        return f"{payload.get('errorType', 'error')}: {payload.get('error', '')}"
    except (ValueError, OSError):
        return str(error.reason)


def _number(text: Any) -> float:
    # Prometheus sends sample values as strings: "NaN", "+Inf" and "-Inf" included.
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def parse_result(payload: Any) -> list[Sample]:
    """Samples of an instant query's answer; a scalar is one sample without labels."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        detail = payload.get("error", "") if isinstance(payload, dict) else ""
        raise QueryError(f"Prometheus refused the query: {detail or repr(payload)}")
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [Sample({}, _number(result[1]))]
    if kind == "vector" and isinstance(result, list):
        return [
            Sample(dict(item.get("metric") or {}), _number((item.get("value") or [0, "NaN"])[1]))
            for item in result
            if isinstance(item, dict)
        ]
    raise QueryError(f"the query must return a scalar or an instant vector, not {kind}")
