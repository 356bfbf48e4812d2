"""Canary-analysis conditions: what each form means, what binds tighter, and that every error names its column."""

from __future__ import annotations

import dataclasses
import dis
import math
import re
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.api import expressions
from modeldeploy.api.expressions import Condition, ExpressionError, compile_condition

NAN = math.nan
INF = math.inf


def holds(text: str, result: float = 0.0) -> bool:
    return compile_condition(text).evaluate(result)


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        # The examples the CRD documents.
        pytest.param("result >= 0.95", 0.96, True, id="at-least-above"),
        pytest.param("result >= 0.95", 0.95, True, id="at-least-equal"),
        pytest.param("result >= 0.95", 0.94, False, id="at-least-below"),
        pytest.param("result < 0.5 || result > 2", 0.4, True, id="outside-low"),
        pytest.param("result < 0.5 || result > 2", 1, False, id="outside-inside"),
        pytest.param("result < 0.5 || result > 2", 3, True, id="outside-high"),
        pytest.param("abs(result - 1) <= 0.1 and not result == 0", 1.05, True, id="near-one"),
        pytest.param("abs(result - 1) <= 0.1 and not result == 0", 0.8, False, id="far-from-one"),
        # Comparisons.
        pytest.param("result < 1", 0.5, True, id="lt-true"),
        pytest.param("result < 1", 1, False, id="lt-equal"),
        pytest.param("result <= 1", 1, True, id="le-equal"),
        pytest.param("result <= 1", 1.5, False, id="le-false"),
        pytest.param("result > 1", 1.5, True, id="gt-true"),
        pytest.param("result > 1", 1, False, id="gt-equal"),
        pytest.param("result >= 1", 1, True, id="ge-equal"),
        pytest.param("result >= 1", 0.5, False, id="ge-false"),
        pytest.param("result == 2", 2, True, id="eq-true"),
        pytest.param("result == 2", 2.5, False, id="eq-false"),
        pytest.param("result != 2", 2.5, True, id="ne-true"),
        pytest.param("result != 2", 2, False, id="ne-false"),
        # Arithmetic.
        pytest.param("result + 1 == 3", 2, True, id="add"),
        pytest.param("result - 1 == 1", 2, True, id="subtract"),
        pytest.param("result * 3 == 6", 2, True, id="multiply"),
        pytest.param("result / 4 == 0.5", 2, True, id="divide"),
        pytest.param("-result == -2", 2, True, id="negate"),
        pytest.param("- -result == 2", 2, True, id="negate-twice"),
        pytest.param("+result == 2", 2, True, id="unary-plus"),
        pytest.param("abs(result) == 2", -2, True, id="abs"),
        pytest.param("abs(-result - 1) == 3", 2, True, id="abs-of-expression"),
        # Logic, in both spellings.
        pytest.param("not result > 1", 0, True, id="not"),
        pytest.param("!(result > 1)", 2, False, id="bang"),
        pytest.param("!!true", 0, True, id="bang-twice"),
        pytest.param("result > 0 and result < 1", 0.5, True, id="and-true"),
        pytest.param("result > 0 and result < 1", 1.5, False, id="and-false"),
        pytest.param("result > 0 && result < 1", 0.5, True, id="ampersands"),
        pytest.param("result < 0 or result > 1", 0.5, False, id="or-false"),
        pytest.param("result < 0 or result > 1", 1.5, True, id="or-true"),
        pytest.param("result < 0 || result > 1", -1, True, id="bars"),
        pytest.param("true", 0, True, id="true"),
        pytest.param("false", 0, False, id="false"),
        pytest.param("True and not False", 0, True, id="python-spelling"),
        pytest.param("isNaN(result)", 0, False, id="isnan-number"),
        pytest.param("isNaN(result) || result > 0.9", 0.95, True, id="isnan-in-logic"),
        # Numbers in every form.
        pytest.param("result == 1", 1, True, id="integer"),
        pytest.param("result == 0.95", 0.95, True, id="decimal"),
        pytest.param("result == .5", 0.5, True, id="leading-dot"),
        pytest.param("result == 1e-3", 0.001, True, id="exponent"),
        pytest.param("result == 2.5E+2", 250, True, id="exponent-upper-signed"),
        pytest.param("result == 007", 7, True, id="leading-zeros"),
        # Argo Rollouts' spelling.
        pytest.param("result[0] >= 0.95", 0.96, True, id="indexed"),
        pytest.param("result [ 0 ] < 0.95", 0.96, False, id="indexed-spaced"),
        # Whitespace, including the newlines of a YAML block scalar.
        pytest.param("\tresult >= 0.95\n", 0.96, True, id="tabs-newlines"),
        pytest.param("result>=0.95&&result<1", 0.96, True, id="no-spaces"),
    ],
)
def test_evaluates(text: str, result: float, expected: bool) -> None:
    assert holds(text, result) is expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1 - 2 - 3 == -4", id="minus-left-associative"),
        pytest.param("8 / 4 / 2 == 1", id="divide-left-associative"),
        pytest.param("2 * 3 + 1 == 7", id="times-before-plus"),
        pytest.param("1 + 2 * 3 == 7", id="times-before-plus-right"),
        pytest.param("10 - 4 / 2 == 8", id="divide-before-minus"),
        pytest.param("(1 + 2) * 3 == 9", id="parentheses"),
        pytest.param("-2 * 3 == -6", id="sign-before-times"),
        pytest.param("2 - -1 == 3", id="sign-after-minus"),
        pytest.param("1 + 1 > 1 + 0.5", id="arithmetic-before-comparison"),
        pytest.param("!(not true and false)", id="not-before-and"),
        pytest.param("not true or true", id="not-before-or"),
        pytest.param("not (false and false)", id="parenthesised-not"),
        pytest.param("true or false and false", id="and-before-or"),
        pytest.param("false and false or true", id="and-before-or-left"),
        pytest.param("not 1 > 2", id="comparison-before-not"),
        pytest.param("!1 > 2", id="comparison-before-bang"),
        pytest.param("((((true))))", id="nested-parentheses"),
    ],
)
def test_precedence_and_associativity(text: str) -> None:
    # Each row is true under the documented precedence and false (or ill-typed) under the likely mistake.
    assert holds(text) is True


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        pytest.param("0.9 <= result < 1", 0.95, True, id="between"),
        pytest.param("0.9 <= result < 1", 0.9, True, id="at-lower-bound"),
        pytest.param("0.9 <= result < 1", 1, False, id="at-upper-bound"),
        pytest.param("0.9 <= result < 1", 0.8, False, id="below"),
        pytest.param("1 < result > 0", 2, True, id="not-transitive"),
        pytest.param("1 < 3 < 2", 0, False, id="second-link-false"),
        pytest.param("result == result == result", 1, True, id="equalities"),
        pytest.param("0 < result < 1 < 2", 0.5, True, id="three-links"),
        pytest.param("not 0 < result < 1", 2, True, id="negated"),
    ],
)
def test_chained_comparisons(text: str, result: float, expected: bool) -> None:
    assert holds(text, result) is expected


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        pytest.param("false && 1/0 > 0", 0, False, id="and"),
        pytest.param("false and result / 0 > 0", 0, False, id="and-words"),
        pytest.param("true || 1/0 > 0", 0, True, id="or"),
        pytest.param("result == 0 or 1 / result > 1", 0, True, id="guarded-division"),
        pytest.param("result != 0 and 1 / result > 1", 0, False, id="guard-and"),
        pytest.param("false and true and 1/0 > 0", 0, False, id="long-and"),
        pytest.param("1 > 2 > 1/0", 0, False, id="comparison-chain"),
    ],
)
def test_short_circuit(text: str, result: float, expected: bool) -> None:
    assert holds(text, result) is expected


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        pytest.param("result >= 0.95", NAN, False, id="ge"),
        pytest.param("result < 0.95", NAN, False, id="lt"),
        pytest.param("result == result", NAN, False, id="eq-itself"),
        pytest.param("result != result", NAN, True, id="ne-itself"),
        pytest.param("result != 1", NAN, True, id="ne"),
        pytest.param("not result < 1", NAN, True, id="negated-comparison"),
        pytest.param("0 <= result <= 1", NAN, False, id="chain"),
        pytest.param("abs(result) >= 0", NAN, False, id="abs"),
        pytest.param("result * 0 == 0", NAN, False, id="arithmetic"),
        pytest.param("isNaN(result)", NAN, True, id="isnan"),
        pytest.param("not isNaN(result) and result >= 0.95", NAN, False, id="nan-safe"),
        pytest.param("isNaN(result - result)", INF, True, id="inf-minus-inf"),
        pytest.param("isNaN(result)", INF, False, id="inf-is-a-number"),
        pytest.param("result > 1e308", INF, True, id="inf-compares"),
    ],
)
def test_nan_and_infinity(text: str, result: float, expected: bool) -> None:
    assert holds(text, result) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Unknown names, functions and indices.
        pytest.param("foo > 1", "unknown name 'foo' at column 1: only result is defined", id="unknown-name"),
        pytest.param("result > threshold", "unknown name 'threshold' at column 10: only result is defined", id="name"),
        pytest.param("Result > 1", "unknown name 'Result' at column 1: only result is defined", id="case-matters"),
        pytest.param("TRUE", "unknown name 'TRUE' at column 1: only result is defined", id="shouted-true"),
        pytest.param(
            "len(result) > 1",
            "unknown function 'len' at column 1: only abs and isNaN are defined",
            id="unknown-function",
        ),
        pytest.param(
            "isnan(result)", "unknown function 'isnan' at column 1: only abs and isNaN are defined", id="function-case"
        ),
        pytest.param("result[1] > 0", "unknown index '1' at column 8: only result[0] is defined", id="unknown-index"),
        pytest.param("result[0.0] > 0", "unknown index '0.0' at column 8: only result[0] is defined", id="float-index"),
        pytest.param("result[-1] > 0", "unexpected '-' at column 8: expected 0", id="negative-index"),
        pytest.param("result[0 > 1", "unexpected '>' at column 10: expected ']'", id="index-unclosed"),
        # Bad tokens.
        pytest.param("result > 0.9 @", "unexpected character '@' at column 14", id="bad-character"),
        pytest.param("result = 1", "unexpected character '=' at column 8: did you mean '=='?", id="single-equals"),
        pytest.param("result > 0 & true", "unexpected character '&' at column 12: did you mean '&&'?", id="ampersand"),
        pytest.param("result > 0 | true", "unexpected character '|' at column 12: did you mean '||'?", id="bar"),
        pytest.param("result ≥ 1", "unexpected character '≥' at column 8", id="unicode-operator"),
        pytest.param("result > \u0661", "unexpected character '\u0661' at column 10", id="unicode-digit"),
        pytest.param("result > 1e", "malformed number '1e' at column 10", id="exponent-without-digits"),
        pytest.param("result > 1.", "malformed number '1.' at column 10", id="trailing-dot"),
        pytest.param("result > 1.2.3", "malformed number '1.2.3' at column 10", id="two-dots"),
        pytest.param("result > 0x10", "malformed number '0x10' at column 10", id="hexadecimal"),
        pytest.param("result > 1_000", "malformed number '1_000' at column 10", id="underscore"),
        pytest.param("2result > 1", "malformed number '2result' at column 1", id="number-then-name"),
        pytest.param("result > 'a'", 'unexpected character "\'" at column 10', id="string"),
        pytest.param("result ** 2 > 1", "unexpected '*' at column 9", id="power"),
        pytest.param("result <> 1", "unexpected '>' at column 9", id="diamond"),
        # Unbalanced parentheses.
        pytest.param("(result > 1", "unclosed '(' at column 1", id="unclosed"),
        pytest.param("((result > 1)", "unclosed '(' at column 1", id="unclosed-outer"),
        pytest.param("abs(result > 1", "unclosed '(' at column 4", id="unclosed-call"),
        pytest.param("result[0", "unclosed '[' at column 7", id="unclosed-index"),
        pytest.param("(result > 1))", "unexpected ')' at column 13: no '(' to close", id="extra-close"),
        pytest.param("result > 1)", "unexpected ')' at column 11: no '(' to close", id="close-only"),
        pytest.param("result] > 1", "unexpected ']' at column 7: no '[' to close", id="extra-bracket"),
        pytest.param("result > )", "unexpected ')' at column 10", id="close-for-operand"),
        pytest.param("()", "unexpected ')' at column 2", id="empty-parentheses"),
        pytest.param("(result > 1 2)", "unexpected '2' at column 13: expected ')'", id="junk-before-close"),
        # Incomplete or trailing input.
        pytest.param("result >", "unexpected end of condition at column 9", id="missing-operand"),
        pytest.param("result > 1 and", "unexpected end of condition at column 15", id="missing-conjunct"),
        pytest.param("> 1", "unexpected '>' at column 1", id="missing-left"),
        pytest.param(
            "result > 1 2", "unexpected '2' at column 12: expected the end of the condition", id="trailing-number"
        ),
        pytest.param(
            "result > 1 result", "unexpected 'result' at column 12: expected the end of the condition", id="trailing"
        ),
        pytest.param("1 + not true", "unexpected 'not' at column 5", id="not-as-operand"),
        pytest.param("and", "unexpected 'and' at column 1", id="keyword-alone"),
        # Function calls.
        pytest.param("abs > 1", "unexpected '>' at column 5: abs needs '(' and an argument", id="function-uncalled"),
        pytest.param("abs() > 1", "unexpected ')' at column 5", id="no-argument"),
        pytest.param("abs(1, 2) > 1", "unexpected ',' at column 6: abs takes one argument", id="two-arguments"),
        pytest.param("result, 1", "unexpected ',' at column 7: expected the end of the condition", id="comma"),
        # Conditions that are not true or false.
        pytest.param(
            "result + 1",
            "a condition must be true or false, but the expression at column 1 is a number",
            id="number-condition",
        ),
        pytest.param(
            "  result",
            "a condition must be true or false, but the expression at column 3 is a number",
            id="result-alone",
        ),
        pytest.param(
            "abs(result)",
            "a condition must be true or false, but the expression at column 1 is a number",
            id="abs-alone",
        ),
        pytest.param(
            "(0.95)", "a condition must be true or false, but the expression at column 1 is a number", id="literal"
        ),
        # Booleans are not numbers, and numbers are not booleans.
        pytest.param("true + 1 > 0", "'+' at column 6 takes numbers, not true or false", id="bool-plus"),
        pytest.param("1 * false > 0", "'*' at column 3 takes numbers, not true or false", id="bool-times"),
        pytest.param("-true", "'-' at column 1 takes numbers, not true or false", id="bool-negated"),
        pytest.param("+(result > 1)", "'+' at column 1 takes numbers, not true or false", id="bool-plus-sign"),
        pytest.param("true == true", "'==' at column 6 takes numbers, not true or false", id="bool-equality"),
        pytest.param("1 < 2 < true", "'<' at column 7 takes numbers, not true or false", id="bool-in-chain"),
        pytest.param("abs(true) > 0", "'abs' at column 1 takes numbers, not true or false", id="bool-abs"),
        pytest.param("isNaN(result > 0)", "'isNaN' at column 1 takes numbers, not true or false", id="bool-isnan"),
        pytest.param("not result", "'not' at column 1 takes true or false, not a number", id="number-not"),
        pytest.param("!1", "'!' at column 1 takes true or false, not a number", id="number-bang"),
        pytest.param("result and true", "'and' at column 8 takes true or false, not a number", id="number-and"),
        pytest.param("true || 1", "'||' at column 6 takes true or false, not a number", id="number-or"),
        # Empty text.
        pytest.param("", "empty condition at column 1", id="empty"),
        pytest.param(" \t\n", "empty condition at column 1", id="whitespace-only"),
    ],
)
def test_refuses_with_column(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_condition(text)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "__import__('os')",
            "unknown function '__import__' at column 1: only abs and isNaN are defined",
            id="import",
        ),
        pytest.param(
            "__import__('os').system('true') == 0",
            "unknown function '__import__' at column 1: only abs and isNaN are defined",
            id="import-system",
        ),
        pytest.param("result.__class__", "unexpected character '.' at column 7", id="attribute"),
        pytest.param(
            "result.__class__.__bases__[0].__subclasses__()", "unexpected character '.' at column 7", id="subclasses"
        ),
        pytest.param("lambda: 1", "unknown name 'lambda' at column 1: only result is defined", id="lambda"),
        pytest.param("().__class__", "unexpected ')' at column 2", id="tuple-attribute"),
        pytest.param("[c for c in ()]", "unexpected '[' at column 1", id="comprehension"),
        pytest.param(
            "open('/etc/passwd')", "unknown function 'open' at column 1: only abs and isNaN are defined", id="open"
        ),
        pytest.param("eval('1') > 0", "unknown function 'eval' at column 1: only abs and isNaN are defined", id="eval"),
        pytest.param(
            "globals()", "unknown function 'globals' at column 1: only abs and isNaN are defined", id="globals"
        ),
        pytest.param(
            "result if true else 1",
            "unexpected 'if' at column 8: expected the end of the condition",
            id="conditional-expression",
        ),
        pytest.param("result > 1; 1", "unexpected character ';' at column 11", id="statement"),
        pytest.param("(x := 1) > 0", "unknown name 'x' at column 2: only result is defined", id="walrus"),
        pytest.param("abs.__globals__", "unexpected character '.' at column 4", id="function-attribute"),
    ],
)
def test_refuses_code(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_condition(text)
    assert str(raised.value) == message


def nested(depth: int) -> str:
    return "(" * depth + "result > 0" + ")" * depth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "result > " + "1" * 248, "condition too long at column 257: at most 256 characters", id="too-long"
        ),
        pytest.param(" " * 257, "condition too long at column 257: at most 256 characters", id="long-whitespace"),
        pytest.param(nested(33), "nesting deeper than 32 levels at column 33", id="parentheses-too-deep"),
        pytest.param(
            "abs(" * 33 + "result" + ")" * 33 + " > 0", "nesting deeper than 32 levels at column 132", id="calls-deep"
        ),
        pytest.param("not " * 33 + "true", "nesting deeper than 32 levels at column 129", id="nots-too-deep"),
        pytest.param("-" * 33 + "result > 0", "nesting deeper than 32 levels at column 33", id="signs-too-deep"),
        pytest.param(
            "(" * 16 + "-" * 17 + "result" + ")" * 16 + " > 0",
            "nesting deeper than 32 levels at column 33",
            id="mixed-too-deep",
        ),
    ],
)
def test_limits(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_condition(text)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("result < " + "1" * 247, id="longest"),
        pytest.param(nested(32), id="parentheses-deepest"),
        pytest.param("not " * 32 + "true", id="nots-deepest"),
        pytest.param("-" * 32 + "result < 1", id="signs-deepest"),
        # Long runs of operators at one level are not nesting.
        pytest.param(" + ".join(["1"] * 60) + " == 60", id="long-sum"),
        pytest.param(" and ".join(["true"] * 25), id="long-and"),
    ],
)
def test_within_limits(text: str) -> None:
    assert len(text) <= 256
    assert compile_condition(text).evaluate(0.5) is True


@pytest.mark.parametrize(
    ("text", "result", "message"),
    [
        pytest.param("result / 0 > 1", 1, "division by zero at column 8", id="by-literal"),
        pytest.param("1 / result > 1", 0, "division by zero at column 3", id="by-result"),
        pytest.param("1 / -result > 1", 0, "division by zero at column 3", id="by-negative-zero"),
        pytest.param("1 / (result - 1) > 1", 1, "division by zero at column 3", id="by-expression"),
        pytest.param("result / result > 1", 0, "division by zero at column 8", id="zero-by-zero"),
        pytest.param("isNaN(result / 0)", NAN, "division by zero at column 14", id="nan-by-zero"),
        pytest.param("1 / 0 > 1 / 0", 0, "division by zero at column 3", id="leftmost-first"),
    ],
)
def test_division_by_zero_at_evaluation(text: str, result: float, message: str) -> None:
    condition = compile_condition(text)  # compiles: whether the divisor is zero depends on the measurement
    with pytest.raises(ExpressionError) as raised:
        condition.evaluate(result)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(True, id="bool"),
        pytest.param("0.99", id="prometheus-string"),
        pytest.param(None, id="none"),
    ],
)
def test_result_must_be_a_number(result: object) -> None:
    with pytest.raises(TypeError, match="result must be a number"):
        compile_condition("result > 0.5").evaluate(result)  # type: ignore[arg-type]


def test_integer_results_are_numbers() -> None:
    assert compile_condition("result == 2").evaluate(2) is True


def test_a_condition_is_a_frozen_value_of_its_text() -> None:
    condition = compile_condition("result >= 0.95")
    assert condition.text == "result >= 0.95"
    assert condition == Condition("result >= 0.95")
    assert hash(condition) == hash(Condition("result >= 0.95"))
    assert condition != compile_condition("result >= 0.9")
    assert repr(condition) == "Condition(text='result >= 0.95')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.text = "true"  # type: ignore[misc]


def test_building_a_condition_directly_checks_it_too() -> None:
    with pytest.raises(ExpressionError, match=re.escape("unknown name 'foo' at column 1")):
        Condition("foo > 1")


def test_expression_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty condition"):
        compile_condition("")


def instructions(code: types.CodeType) -> Iterator[tuple[str, object]]:
    for instruction in dis.get_instructions(code):
        yield instruction.opname, instruction.argval
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from instructions(constant)


def test_does_not_use_python_evaluation() -> None:
    # Read from the bytecode rather than the text: `re.compile` and the docstring's words are not calls to compile.
    source = Path(expressions.__file__).read_text()
    used = set(instructions(compile(source, expressions.__file__, "exec")))
    forbidden = {"eval", "exec", "compile", "__import__"}
    assert {name for opname, name in used if opname in ("LOAD_GLOBAL", "LOAD_NAME") and name in forbidden} == set()
    assert ("IMPORT_NAME", "ast") not in used
