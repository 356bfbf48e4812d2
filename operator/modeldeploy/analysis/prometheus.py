"""The Prometheus HTTP API client of canary analysis: instant queries, each bounded by a wall-clock deadline.

Prometheus's answers are untrusted input: users choose the address, and whatever answers there decides whether a
canary goes on. So a query
- ends by its deadline, whatever the server does: name resolution, connecting, a server that accepts and stays
  silent, or one that sends a byte a second (a timeout per socket read would let it hold a worker for ever, and
  the operator has only a few, `MODELDEPLOY_WORKERS`, for the whole cluster);
- follows no redirect (an allowed address must not lead elsewhere) and uses no proxy from the environment;
- reads at most MAX_RESPONSE_BYTES and at most MAX_SERIES series;
- turns any answer that is not exactly the API's shape into a QueryError, the only exception it raises, which the
  analysis counts as an Error measurement (toward consecutiveErrorLimit).

A client is made per measurement round, so resources never share connections or state.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from modeldeploy.analysis import bounded_http
from modeldeploy.analysis.measure import QueryError, Sample
from modeldeploy.config import UrlPrefix

MAX_RESPONSE_BYTES = 1024 * 1024
"""An answer the analysis can use is a few series (predictionShift's are 22 buckets x at most 8 outputs): a
mebibyte is far more than any, and small enough to parse at once."""
MAX_SERIES = 1000
ERROR_TEXT_BYTES = 200
"""How much of an error answer is quoted."""


class PrometheusClient:
    def __init__(self, address: str) -> None:
        self.address = address.rstrip("/")

    def query(self, promql: str, timeout: float) -> list[Sample]:
        """Instant query within `timeout` seconds of wall-clock time. Raises QueryError, and nothing else."""
        if not self.address:
            raise QueryError(
                "no Prometheus address: set spec.rollout.analysis.prometheus.address or the operator's "
                "MODELDEPLOY_PROMETHEUS_URL"
            )
        if timeout <= 0:
            raise QueryError(f"not asked: no time left to query Prometheus at {self.address}")
        try:
            answer = self._post(promql, timeout)
            return _read_answer(answer)
        except QueryError:
            raise
        except Exception as error:
            # Whatever else went wrong with this answer, it is one failed query, not a failed pass.
            raise QueryError(f"Prometheus's answer could not be read: {type(error).__name__}: {error}") from None

    def _post(self, promql: str, timeout: float) -> bounded_http.Reply:
        try:
            # The parser that checked the address against the allowed ones (config.py): what was allowed is what
            # is asked.
            target = UrlPrefix.parse(self.address)
        except ValueError as error:
            raise QueryError(str(error)) from None
        # Prometheus stops evaluating at its own timeout too, so it does not go on working for nobody.
        form = urllib.parse.urlencode({"query": promql, "timeout": f"{timeout:.3f}"}).encode()
        try:
            return bounded_http.post(
                target,
                f"{target.path}/api/v1/query",
                form,
                content_type="application/x-www-form-urlencoded",
                timeout=timeout,
                max_bytes=MAX_RESPONSE_BYTES,
                name="prometheus-query",
            )
        except bounded_http.DeadlineError:
            raise QueryError(
                f"Prometheus at {self.address} did not answer within the {timeout:.3g}s deadline"
            ) from None
        except bounded_http.TooLargeError as error:
            declared = f" ({error.declared} bytes)" if error.declared is not None else ""
            raise QueryError(f"Prometheus's answer is larger than {MAX_RESPONSE_BYTES} bytes{declared}") from None
        except bounded_http.UnreachableError as error:
            raise QueryError(f"Prometheus at {self.address} did not answer: {error}") from None
        except bounded_http.ExchangeError as error:
            raise QueryError(f"Prometheus at {self.address} could not be asked: {error}") from None


def _read_answer(answer: bounded_http.Reply) -> list[Sample]:
    if 300 <= answer.status < 400:
        # An allowed address must not lead anywhere else, and a POST's redirect would not be one anyway.
        where = f" to {_quote(answer.location)}" if answer.location else ""
        raise QueryError(f"Prometheus answered {answer.status} (a redirect{where}), which is not followed")
    if answer.status != 200:
        # Prometheus answers 400, 422 and 503 with a JSON error that says why.
        raise QueryError(f"Prometheus answered {answer.status} {_quote(answer.reason)}: {_error_text(answer.body)}")
    try:
        payload = json.loads(answer.body)
    except (ValueError, RecursionError) as error:
        raise QueryError(f"Prometheus answered with something that is not JSON: {_quote(str(error))}") from None
    return parse_result(payload)


def _quote(text: str) -> str:
    encoded = text.encode(errors="replace")
    if len(encoded) <= ERROR_TEXT_BYTES:
        return text
    return encoded[:ERROR_TEXT_BYTES].decode(errors="ignore") + "\u2026"


def _error_text(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        kind = payload.get("errorType")
        return _quote(f"{kind}: {payload['error']}" if isinstance(kind, str) and kind else payload["error"])
    return _quote(body[: ERROR_TEXT_BYTES * 4].decode(errors="replace").strip()) or "(no body)"


def _number(value: Any) -> float:
    # Prometheus sends sample values as strings, "NaN", "+Inf" and "-Inf" included.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise QueryError(f"a sample value is not a number: {_quote(repr(value))}")


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise QueryError("a series' labels are not an object of strings")
    return dict(value)


def _sample_value(pair: Any) -> float:
    if not isinstance(pair, list) or len(pair) != 2:
        raise QueryError("a sample is not a [time, value] pair")
    return _number(pair[1])


def parse_result(payload: Any) -> list[Sample]:
    """Samples of an instant query's answer; a scalar is one sample without labels. Anything but the API's exact
    shape raises QueryError: a success answer that is not a scalar or a vector of at most MAX_SERIES float samples
    is not something the analysis can judge."""
    if not isinstance(payload, dict):
        raise QueryError(f"Prometheus answered with JSON that is not an object: {_quote(repr(payload))}")
    status = payload.get("status")
    if status != "success":
        error = payload.get("error")
        if status == "error" and isinstance(error, str):
            kind = payload.get("errorType")
            detail = f" ({_quote(kind)})" if isinstance(kind, str) and kind else ""
            raise QueryError(f"Prometheus refused the query: {_quote(error)}{detail}")
        raise QueryError(f"Prometheus answered status {_quote(repr(status))}, not success")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise QueryError(f"Prometheus's answer has no data object: {_quote(repr(data))}")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [Sample({}, _sample_value(result))]
    if kind == "vector":
        if not isinstance(result, list):
            raise QueryError("Prometheus's vector answer has no result list")
        if len(result) > MAX_SERIES:
            raise QueryError(f"the query returned {len(result)} series, more than {MAX_SERIES}")
        samples = []
        for item in result:
            if not isinstance(item, dict):
                raise QueryError("a series of the vector is not an object")
            if "value" not in item:
                # Native histograms come as "histogram"; the analysis reads classic buckets only.
                raise QueryError("a series of the vector has no float value (a native histogram?)")
            samples.append(Sample(_labels(item.get("metric", {})), _sample_value(item["value"])))
        return samples
    shown = kind if isinstance(kind, str) else repr(kind)
    raise QueryError(f"the query must return a scalar or an instant vector, not {_quote(shown)}")
