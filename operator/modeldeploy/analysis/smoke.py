"""Smoke tests: the requests each canary pod gets before it takes any traffic, and how its answers are judged.

Pure: a case and the runtime's protocol make a request; an answer (bytes, or the reason there is none) and a
reference make a verdict. The requests themselves are sent by modeldeploy.analysis.smoke_client.

Answers are untrusted input: a pod runs whatever artifact the spec names. An answer is judged only if it is a JSON
object of the protocol's shape, at most MAX_ANSWER_BYTES, whose outputs are finite numbers; anything else fails the
case with a message saying what was wrong. Every message is bounded (MAX_MESSAGE), because it lands in status.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modeldeploy.api import models as api

SELDON_PATH = "/api/v1.0/predictions"
MAX_ANSWER_BYTES = 1024 * 1024
"""A smoke case has at most MAX_SMOKE_ROWS x MAX_SMOKE_VALUES inputs; its answer, a few values per row, is far
smaller than this, and a pod that answers more is not answering the request."""
MAX_OUTPUTS = api.MAX_SMOKE_ROWS * api.MAX_SMOKE_VALUES
MAX_NESTING = 8
MAX_MESSAGE = 400
MAX_QUOTED_VALUES = 8


MAX_CASES_BYTES = 1024 * 1024
"""A ConfigMap's value holds at most this much JSON (a ConfigMap holds 1 MiB in all)."""


class CasesError(Exception):
    """Cases read from a ConfigMap that cannot be used; the message says why, for status."""


class AnswerError(Exception):
    """The answer cannot be judged: not JSON, not the protocol's shape, or outputs that are not finite numbers."""


@dataclass(frozen=True)
class SmokeRequest:
    path: str
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What one pod did with one case: its body when it answered 200, else why there is nothing to judge."""

    body: bytes | None = None
    failure: str = ""


@dataclass(frozen=True)
class Verdict:
    case: str
    pod: str
    passed: bool
    message: str = ""


@dataclass(frozen=True)
class SmokeRound:
    """The verdicts of one smoke round on a canary revision's pods."""

    revision: str
    pods: tuple[str, ...]
    verdicts: tuple[Verdict, ...]
    first_failure: str = ""
    """message_of() the first failed verdict; "" when every case passed on every pod."""

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(verdict.passed for verdict in self.verdicts)


def round_of(revision: str, pods: Sequence[str], verdicts: Sequence[Verdict], spec: api.SmokeTestSpec) -> SmokeRound:
    """A round with its first failure described; a round that asked no pod fails (it proved nothing)."""
    cases = {case.name: case for case in spec.cases}
    failure = next(
        (
            message_of(verdict, cases[verdict.case])
            for verdict in verdicts
            if not verdict.passed and verdict.case in cases
        ),
        "" if verdicts else "no canary pod could be asked",
    )
    return SmokeRound(revision, tuple(pods), tuple(verdicts), failure)


def with_cases_from(spec: api.SmokeTestSpec, text: str, where: str) -> api.SmokeTestSpec:
    """`spec` with its cases read from a ConfigMap's value (JSON: a list of cases). The rules of inline cases hold,
    with larger bounds; anything else raises CasesError, which fails the round: a smoke test that cannot be read
    cannot pass."""
    if len(text.encode()) > MAX_CASES_BYTES:
        raise CasesError(f"{where} holds more than {MAX_CASES_BYTES} bytes")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CasesError(f"{where} is not JSON: {error}") from None
    if not isinstance(raw, list) or not raw:
        raise CasesError(f"{where} must be a JSON list of cases, at least one")
    if len(raw) > api.MAX_CONFIGMAP_SMOKE_CASES:
        raise CasesError(f"{where} holds {len(raw)} cases, more than {api.MAX_CONFIGMAP_SMOKE_CASES}")
    cases = []
    for index, item in enumerate(raw):
        try:
            cases.append(api.SmokeTestCase.model_validate(item))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "the case"
            raise CasesError(f"{where}: case {index}: {field}: {first['msg']}") from None
    problems = [
        (len({case.name for case in cases}) == len(cases), "case names must be unique"),
        (
            sum(case.values for case in cases) <= api.MAX_CONFIGMAP_SMOKE_VALUES,
            f"at most {api.MAX_CONFIGMAP_SMOKE_VALUES} values (inputs and expected) in all",
        ),
        (
            len(cases) * spec.timeoutSeconds <= api.MAX_SMOKE_ROUND_SECONDS,
            f"{len(cases)} cases x timeoutSeconds {spec.timeoutSeconds} must be at most "
            f"{api.MAX_SMOKE_ROUND_SECONDS} (the longest a pod's round may take)",
        ),
        (
            spec.compareTo != api.CompareTo.EXPECTED or all(case.expected is not None for case in cases),
            "every case needs expected when compareTo is Expected",
        ),
        (
            spec.compareTo != api.CompareTo.STABLE or all(case.expected is None for case in cases),
            "expected applies to compareTo Expected only",
        ),
    ]
    for holds, rule in problems:
        if not holds:
            raise CasesError(f"{where}: {rule}")
    return spec.model_copy(update={"cases": cases})


def request_for(case: api.SmokeTestCase, protocol: str, model: str) -> SmokeRequest:
    """The request the runtime's protocol expects for the case's rows: seldon's data.ndarray, or one v2 FP64
    tensor of shape [rows, features]."""
    if protocol == api.Protocol.V2:
        rows, width = len(case.input), len(case.input[0])
        tensor = {"name": "input-0", "shape": [rows, width], "datatype": "FP64", "data": flatten_rows(case.input)}
        return SmokeRequest(f"/v2/models/{model}/infer", _json({"inputs": [tensor]}))
    return SmokeRequest(SELDON_PATH, _json({"data": {"ndarray": case.input}}))


def outputs_of(body: bytes, protocol: str) -> list[float]:
    """The answer's outputs, flattened in row order: seldon's data.ndarray or data.tensor.values, or the first v2
    output's data. Raises AnswerError for anything else."""
    if len(body) > MAX_ANSWER_BYTES:
        raise AnswerError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise AnswerError(f"the answer is not JSON: {error}") from error
    if not isinstance(answer, dict):
        raise AnswerError("the answer is not a JSON object")
    if protocol == api.Protocol.V2:
        outputs = answer.get("outputs")
        if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
            raise AnswerError("the answer has no outputs[0]")
        return _numbers(outputs[0].get("data"), "outputs[0].data")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise AnswerError("the answer has no data object")
    if "ndarray" in data:
        return _numbers(data["ndarray"], "data.ndarray")
    tensor = data.get("tensor")
    if isinstance(tensor, dict) and "values" in tensor:
        return _numbers(tensor["values"], "data.tensor.values")
    raise AnswerError("the answer has neither data.ndarray nor data.tensor.values")


def compare(actual: Sequence[float], reference: Sequence[float], tolerance: api.SmokeTolerance) -> str:
    """ "" when every output is within tolerance of the reference, else what differs first."""
    if len(actual) != len(reference):
        return f"answered {len(actual)} values, the reference has {len(reference)}"
    for index, (value, wanted) in enumerate(zip(actual, reference, strict=True)):
        allowed = tolerance.absolute + tolerance.relative * abs(wanted)
        if not abs(value - wanted) <= allowed:
            return f"output {index} is {value:.6g}, the reference {wanted:.6g} (allowed difference {allowed:.3g})"
    return ""


def judge(
    spec: api.SmokeTestSpec,
    case: api.SmokeTestCase,
    pod: str,
    answer: Answer,
    reference: Sequence[float] | None,
    protocol: str,
) -> Verdict:
    """One case on one pod. `reference` is the expected outputs, or the stable revision's (None when the stable
    could not answer, which fails the case: there is nothing to compare with, and a smoke test never passes on
    nothing)."""
    if answer.body is None:
        return _failed(case, pod, answer.failure or "no answer")
    try:
        actual = outputs_of(answer.body, protocol)
    except AnswerError as error:
        return _failed(case, pod, str(error))
    if reference is None:
        return _failed(case, pod, f"answered {quote(actual)}, but the stable revision gave no reference")
    difference = compare(actual, reference, spec.tolerance)
    if difference:
        return _failed(case, pod, f"{difference}: answered {quote(actual)}, reference {quote(reference)}")
    return Verdict(case.name, pod, True)


def expected_outputs(case: api.SmokeTestCase) -> list[float] | None:
    return None if case.expected is None else flatten_rows(case.expected)


def flatten_rows(rows: Sequence[Sequence[float]]) -> list[float]:
    return [value for row in rows for value in row]


def quote(values: Sequence[float]) -> str:
    shown = ", ".join(f"{value:.6g}" for value in values[:MAX_QUOTED_VALUES])
    more = f", ... ({len(values)} values)" if len(values) > MAX_QUOTED_VALUES else ""
    return f"[{shown}{more}]"


def message_of(verdict: Verdict, case: api.SmokeTestCase) -> str:
    """For status and the Event: the case, its input, the pod, and what went wrong; at most MAX_MESSAGE."""
    text = f"case {verdict.case} (input {quote(flatten_rows(case.input))}) on pod {verdict.pod}: {verdict.message}"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _failed(case: api.SmokeTestCase, pod: str, why: str) -> Verdict:
    return Verdict(case.name, pod, False, why)


def _numbers(value: Any, where: str) -> list[float]:
    """Nested lists of finite numbers, flattened; bools are not numbers here (JSON true is no prediction)."""
    flat: list[float] = []

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_NESTING:
            raise AnswerError(f"{where} is nested deeper than {MAX_NESTING}")
        if isinstance(node, list):
            for item in node:
                walk(item, depth + 1)
            return
        if isinstance(node, bool) or not isinstance(node, int | float):
            raise AnswerError(f"{where} holds {type(node).__name__}, not a number")
        number = float(node)
        if not math.isfinite(number):
            raise AnswerError(f"{where} holds {number}")
        flat.append(number)
        if len(flat) > MAX_OUTPUTS:
            raise AnswerError(f"{where} holds more than {MAX_OUTPUTS} values")

    walk(value, 0)
    if not flat:
        raise AnswerError(f"{where} is empty")
    return flat


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
