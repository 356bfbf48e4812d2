"""Smoke tests, the pure part: the request each protocol gets, the outputs read from an answer, and the verdict on
them. Answers are untrusted: every malformed one is a failed case with a reason, never an exception."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.analysis import smoke, smoke_client
from modeldeploy.api import models as api
from modeldeploy_testkit.waiting import free_port

from .model_server import model_servers, seldon


def spec(**overrides: Any) -> api.SmokeTestSpec:
    body: dict[str, Any] = {"cases": [{"name": "typical", "input": [[0.5, 1.0], [2.0, 3.0]], "expected": [[1], [0]]}]}
    body.update(overrides)
    return api.SmokeTestSpec.model_validate(body)


def v2(data: Any) -> bytes:
    return json.dumps({"model_name": "fraud", "outputs": [{"name": "out", "shape": [2], "data": data}]}).encode()


def test_the_seldon_request_carries_the_rows_as_an_ndarray() -> None:
    request = smoke.request_for(spec().cases[0], "seldon", "fraud")
    assert request.path == "/api/v1.0/predictions"
    assert json.loads(request.body) == {"data": {"ndarray": [[0.5, 1.0], [2.0, 3.0]]}}


def test_the_v2_request_carries_one_fp64_tensor_of_the_rows_shape() -> None:
    request = smoke.request_for(spec().cases[0], "v2", "fraud")
    assert request.path == "/v2/models/fraud/infer"
    assert json.loads(request.body) == {
        "inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [0.5, 1.0, 2.0, 3.0]}]
    }


@pytest.mark.parametrize(
    ("body", "protocol", "outputs"),
    [
        (seldon([[1], [0]]), "seldon", [1.0, 0.0]),
        (seldon([0.25, 0.75]), "seldon", [0.25, 0.75]),
        (json.dumps({"data": {"tensor": {"shape": [2], "values": [3, 4]}}}).encode(), "seldon", [3.0, 4.0]),
        (v2([1, 0]), "v2", [1.0, 0.0]),
    ],
)
def test_outputs_are_read_flat_in_row_order(body: bytes, protocol: str, outputs: list[float]) -> None:
    assert smoke.outputs_of(body, protocol) == outputs


@pytest.mark.parametrize(
    ("body", "protocol", "why"),
    [
        (b"<html>oops</html>", "seldon", "not JSON"),
        (b"[1, 2]", "seldon", "not a JSON object"),
        (b'{"data": 3}', "seldon", "no data object"),
        (b'{"data": {"strData": "yes"}}', "seldon", "neither data.ndarray nor data.tensor.values"),
        (seldon([["fraud"]]), "seldon", "holds str, not a number"),
        (seldon([True]), "seldon", "holds bool"),
        (seldon([]), "seldon", "is empty"),
        (b'{"data": {"ndarray": [NaN]}}', "seldon", "holds nan"),
        (b'{"data": {"ndarray": [Infinity]}}', "seldon", "holds inf"),
        (seldon([[[[[[[[[[1]]]]]]]]]]), "seldon", "nested deeper"),
        (seldon([0.0] * (smoke.MAX_OUTPUTS + 1)), "seldon", "more than"),
        (b"{" + b" " * smoke.MAX_ANSWER_BYTES + b"}", "seldon", "larger than"),
        (b'{"outputs": []}', "v2", r"no outputs\[0\]"),
        (b'{"data": {"ndarray": [1]}}', "v2", r"no outputs\[0\]"),
    ],
)
def test_an_answer_of_another_shape_cannot_be_judged(body: bytes, protocol: str, why: str) -> None:
    with pytest.raises(smoke.AnswerError, match=why):
        smoke.outputs_of(body, protocol)


@pytest.mark.parametrize(
    ("actual", "reference", "tolerance", "difference"),
    [
        ([1.0, 0.0], [1.0, 0.0], {}, ""),
        ([1.0000005], [1.0], {}, ""),  # within the default absolute 1e-6
        ([1.01], [1.0], {"absolute": 0, "relative": 0.02}, ""),
        ([1.03], [1.0], {"absolute": 0, "relative": 0.02}, "output 0 is 1.03, the reference 1"),
        ([0.0, 0.5], [0.0, 0.4], {"absolute": 0.05}, "output 1 is 0.5, the reference 0.4"),
        ([1.0], [1.0, 2.0], {}, "answered 1 values, the reference has 2"),
    ],
)
def test_outputs_are_compared_value_by_value(
    actual: list[float], reference: list[float], tolerance: dict[str, float], difference: str
) -> None:
    found = smoke.compare(actual, reference, api.SmokeTolerance.model_validate(tolerance))
    assert found.startswith(difference) if difference else found == ""


def test_a_good_answer_passes_and_a_wrong_one_names_the_output_and_both_values() -> None:
    test = spec()
    case = test.cases[0]
    reference = smoke.expected_outputs(case)
    good = smoke.judge(test, case, "fraud-abc-1", smoke.Answer(seldon([[1], [0]])), reference, "seldon")
    assert good == smoke.Verdict("typical", "fraud-abc-1", True)
    wrong = smoke.judge(test, case, "fraud-abc-1", smoke.Answer(seldon([[0], [0]])), reference, "seldon")
    assert not wrong.passed
    assert wrong.message.startswith("output 0 is 0, the reference 1")
    assert "answered [0, 0], reference [1, 0]" in wrong.message
    message = smoke.message_of(wrong, case)
    assert message.startswith("case typical (input [0.5, 1, 2, 3]) on pod fraud-abc-1: output 0 is 0")


def test_no_answer_and_no_reference_both_fail() -> None:
    test = spec()
    case = test.cases[0]
    late = smoke.judge(test, case, "p", smoke.Answer(failure="no answer within 5 s"), [1.0, 0.0], "seldon")
    assert (late.passed, late.message) == (False, "no answer within 5 s")
    alone = smoke.judge(test, case, "p", smoke.Answer(seldon([[1], [0]])), None, "seldon")
    assert not alone.passed
    assert "stable revision gave no reference" in alone.message


def test_messages_are_bounded_for_status() -> None:
    test = spec(cases=[{"name": "wide", "input": [[1.0] * 256], "expected": [[1.0] * 256]}])
    case = test.cases[0]
    verdict = smoke.Verdict("wide", "p" * 300, False, "x" * 1000)
    message = smoke.message_of(verdict, case)
    assert len(message) == smoke.MAX_MESSAGE
    assert message.endswith("...")
    assert "... (256 values)" in message


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"cases": []}, "give cases, or casesFrom, exactly one of the two"),
        ({"cases": [{"name": "a", "input": [[1.0]]}]}, "every case needs expected when compareTo is Expected"),
        (
            {"cases": [{"name": "a", "input": [[1.0]], "expected": [[1.0]]}], "compareTo": "Stable"},
            "expected applies to compareTo Expected only",
        ),
        (
            {"cases": [{"name": "a", "input": [[1.0]], "expected": [[1.0]]}] * 2},
            "names must be unique",
        ),
        ({"cases": [{"name": "a", "input": [[1.0, 2.0], [1.0]], "expected": [[1.0]]}]}, "same number of features"),
        ({"cases": [{"name": "a", "input": [[1.0]], "expected": [[1.0, 2.0], [1.0]]}]}, "same number of outputs"),
        (
            {"cases": [{"name": f"c{i}", "input": [[1.0] * 256] * 16, "expected": [[1.0]]} for i in range(3)]},
            "at most 8192 values",
        ),
        ({"cases": [{"name": "a", "input": [[1e16]], "expected": [[1.0]]}]}, "less than or equal"),
        ({"cases": [{"name": "a", "input": [[1.0]], "expected": [[1.0]]}], "timeoutSeconds": 31}, "less than"),
    ],
)
def test_admission_refuses_what_cannot_run_and_names_the_field(body: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        api.SmokeTestSpec.model_validate(body)


@pytest.fixture
def servers() -> Iterator[Any]:
    with model_servers() as start:
        yield lambda name, behaviour: smoke_client.PodAddress(name, "127.0.0.1", start(behaviour))


def test_a_round_judges_every_case_on_every_pod(servers: Any) -> None:
    test = spec(
        cases=[
            {"name": "one", "input": [[0.5, 1.0]], "expected": [[0.5]]},
            {"name": "two", "input": [[2.0]], "expected": [[2.0]]},
        ]
    )
    verdicts = smoke_client.run_round(test, "seldon", "m", [servers("c-1", "echo"), servers("c-2", "shifted")], None)
    assert [(v.case, v.pod, v.passed) for v in verdicts] == [
        ("one", "c-1", True),
        ("two", "c-1", True),
        ("one", "c-2", False),
        ("two", "c-2", False),
    ]
    assert verdicts[2].message.startswith("output 0 is 1.5, the reference 0.5")


def test_compared_with_the_stable_the_reference_is_its_answer(servers: Any) -> None:
    test = spec(cases=[{"name": "one", "input": [[0.5, 1.0]]}], compareTo="Stable")
    stable = servers("s-1", "echo")
    same = smoke_client.run_round(test, "seldon", "m", [servers("c-1", "echo")], stable)
    assert [v.passed for v in same] == [True]
    shifted = smoke_client.run_round(test, "seldon", "m", [servers("c-2", "shifted")], stable)
    assert [v.passed for v in shifted] == [False]
    nobody = smoke_client.run_round(test, "seldon", "m", [servers("c-3", "echo")], servers("s-2", "error"))
    assert "stable revision gave no reference" in nobody[0].message


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [("slow", "no answer within 1 s"), ("error", "answered HTTP 500")],
)
def test_a_pod_that_does_not_answer_well_fails_with_the_reason(servers: Any, behaviour: str, why: str) -> None:
    test = spec(cases=[{"name": "one", "input": [[0.5]], "expected": [[0.5]]}], timeoutSeconds=1)
    (verdict,) = smoke_client.run_round(test, "seldon", "m", [servers("c-1", behaviour)], None)
    assert (verdict.passed, verdict.message.startswith(why)) == (False, True), verdict


def test_an_unreachable_pod_fails_rather_than_passes() -> None:
    test = spec(cases=[{"name": "one", "input": [[0.5]], "expected": [[0.5]]}], timeoutSeconds=1)
    closed = smoke_client.PodAddress("gone", "127.0.0.1", free_port())
    (verdict,) = smoke_client.run_round(test, "seldon", "m", [closed], None)
    assert not verdict.passed
    assert verdict.message.startswith("could not be reached")


CONFIGMAP_CASES = [{"name": "low", "input": [[0.1, 1.0]], "expected": [[0.1]]}]


def from_configmap(**overrides: Any) -> api.SmokeTestSpec:
    return api.SmokeTestSpec.model_validate({"casesFrom": {"name": "cases", "key": "cases.json"}, **overrides})


def test_cases_from_a_configmap_follow_the_rules_of_inline_ones() -> None:
    spec = smoke.with_cases_from(from_configmap(), json.dumps(CONFIGMAP_CASES), "ConfigMap cases key cases.json")
    assert [case.name for case in spec.cases] == ["low"]
    assert smoke.expected_outputs(spec.cases[0]) == [0.1]


@pytest.mark.parametrize(
    ("text", "overrides", "why"),
    [
        ("not json", {}, "is not JSON"),
        ("{}", {}, "must be a JSON list of cases"),
        ("[]", {}, "must be a JSON list of cases"),
        (json.dumps([{"name": "x"}]), {}, "case 0: input: Field required"),
        (json.dumps([{"name": "x", "input": [[1.0]]}]), {}, "every case needs expected"),
        (json.dumps(CONFIGMAP_CASES), {"compareTo": "Stable"}, "expected applies to compareTo Expected only"),
        (json.dumps(CONFIGMAP_CASES * 2), {}, "case names must be unique"),
        (
            json.dumps([{"name": f"c{i}", "input": [[1.0]], "expected": [[1.0]]} for i in range(31)]),
            {"timeoutSeconds": 4},
            "31 cases x timeoutSeconds 4 must be at most 120",
        ),
        (
            json.dumps([{"name": "c", "input": [[1.0]], "expected": [[1.0]]}] * (api.MAX_CONFIGMAP_SMOKE_CASES + 1)),
            {},
            "more than 100",
        ),
        ("[" + " " * smoke.MAX_CASES_BYTES + "]", {}, "more than 1048576 bytes"),
    ],
)
def test_cases_from_a_configmap_that_cannot_be_used_say_why(text: str, overrides: dict[str, Any], why: str) -> None:
    with pytest.raises(smoke.CasesError, match=why):
        smoke.with_cases_from(from_configmap(**overrides), text, "ConfigMap cases key cases.json")


def test_cases_inline_or_from_a_configmap_exactly_one() -> None:
    with pytest.raises(ValidationError, match="exactly one of the two"):
        api.SmokeTestSpec.model_validate({"cases": CONFIGMAP_CASES, "casesFrom": {"name": "c", "key": "k"}})
    with pytest.raises(ValidationError, match="exactly one of the two"):
        api.SmokeTestSpec.model_validate({})
