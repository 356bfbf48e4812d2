"""Canary-analysis conditions such as `result >= 0.95`: a tokenizer, a recursive-descent parser and an evaluator.

A query metric's successCondition and failureCondition are written by whoever may edit a ModelDeployment, and the
operator that evaluates them holds rights over the cluster. Python's eval, even with empty builtins, and its ast
module start from the whole language and leave the refusing to a list of things to forbid, which is hard to keep
complete. Here the grammar below is the whole language: a condition can only do arithmetic on `result` and compare,
and anything else is a syntax error found by compile_condition, before a canary starts. Types are checked at the
same time, so a condition that compiles can only fail at evaluation by dividing by zero.

Loosest binding first; `not` binds looser than comparisons, as in Python, so `not result == 0` means what it says:

    condition   := disjunction END
    disjunction := conjunction (("or" | "||") conjunction)*
    conjunction := negation (("and" | "&&") negation)*
    negation    := ("not" | "!") negation | comparison
    comparison  := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)*      a < b < c is a < b and b < c
    sum         := product (("+" | "-") product)*
    product     := sign (("*" | "/") sign)*
    sign        := ("-" | "+") sign | primary
    primary     := NUMBER | "true" | "false" | "True" | "False" | "result" | "result" "[" "0" "]"
                 | "abs" "(" disjunction ")" | "isNaN" "(" disjunction ")" | "(" disjunction ")"

`result[0]` is there because Argo Rollouts conditions index the query's result vector; here it is one number.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, assert_never

# The CRD allows 256 characters; the depth bound keeps the parser's recursion far from Python's recursion limit.
_MAX_LENGTH: Final = 256
_MAX_DEPTH: Final = 32


class ExpressionError(ValueError):
    """A condition that cannot be compiled or evaluated; the message names the problem and its 1-based column."""


# --- Tokens -----------------------------------------------------------------------------------------------------

# ASCII only: str.isdigit and \d accept digits of every script, which float() would then read.
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Whatever sticks to a number without a space makes it malformed (`1e`, `1.`, `0x10`, `2result`), not two tokens.
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHITESPACE = frozenset(" \t\r\n")
# Longest first, so that `<=` is not read as `<` then `=`.
_SYMBOLS: Final = ("<=", ">=", "==", "!=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_LOOKALIKES: Final = {"=": "==", "&": "&&", "|": "||"}


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "word", "symbol", "end", "invalid"]
    text: str
    """The token as written; for an invalid one, what is wrong with it."""
    column: int


def _unexpected(token: _Token, reason: str = "") -> ExpressionError:
    if token.kind == "invalid":
        return ExpressionError(token.text)
    found = "end of condition" if token.kind == "end" else repr(token.text)
    return ExpressionError(f"unexpected {found} at column {token.column}" + (f": {reason}" if reason else ""))


def _tokenize(text: str) -> Iterator[_Token]:
    # The parser reads one token ahead. A bad token is yielded rather than raised, and reported only when the parser
    # reaches it, so that in `lambda: 1` the problem reported is the first one, `lambda`.
    position = 0
    while position < len(text):
        column = position + 1
        if text[position] in _WHITESPACE:
            position += 1
        elif number := _NUMBER.match(text, position):
            if tail := _NUMBER_TAIL.match(text, number.end()):
                yield _Token("invalid", f"malformed number {text[position : tail.end()]!r} at column {column}", column)
                return
            yield _Token("number", number.group(), column)
            position = number.end()
        elif word := _WORD.match(text, position):
            yield _Token("word", word.group(), column)
            position = word.end()
        else:
            symbol = next((symbol for symbol in _SYMBOLS if text.startswith(symbol, position)), None)
            if symbol is None:
                character = text[position]
                suggestion = f": did you mean {_LOOKALIKES[character]!r}?" if character in _LOOKALIKES else ""
                yield _Token("invalid", f"unexpected character {character!r} at column {column}{suggestion}", column)
                return
            yield _Token("symbol", symbol, column)
            position += len(symbol)
    yield _Token("end", "", len(text) + 1)


# --- Tree ---------------------------------------------------------------------------------------------------------
# Every node is either a number or a truth value by its class, so the parser's type checks are also what lets the
# evaluator be typed: a condition's tree is a _TruthNode, and nothing in it can produce the wrong kind of value.


@dataclass(frozen=True)
class _Number:
    value: float


@dataclass(frozen=True)
class _Result:
    pass


@dataclass(frozen=True)
class _Negation:
    operand: _NumberNode


@dataclass(frozen=True)
class _Absolute:
    argument: _NumberNode


@dataclass(frozen=True)
class _Arithmetic:
    operator: str
    left: _NumberNode
    right: _NumberNode
    column: int
    """Where the operator is, for the division-by-zero message."""


@dataclass(frozen=True)
class _Truth:
    value: bool


@dataclass(frozen=True)
class _Not:
    operand: _TruthNode


@dataclass(frozen=True)
class _And:
    operands: tuple[_TruthNode, ...]


@dataclass(frozen=True)
class _Or:
    operands: tuple[_TruthNode, ...]


@dataclass(frozen=True)
class _Comparison:
    first: _NumberNode
    rest: tuple[tuple[str, _NumberNode], ...]
    """Each comparison operator with the operand on its right; the left one is the previous operand."""


@dataclass(frozen=True)
class _IsNaN:
    argument: _NumberNode


_NumberNode = _Number | _Result | _Negation | _Absolute | _Arithmetic
_TruthNode = _Truth | _Not | _And | _Or | _Comparison | _IsNaN
_Node = _NumberNode | _TruthNode

_ARITHMETIC: Final[dict[str, Callable[[float, float], float]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
# Python's float comparisons are IEEE's: false with a NaN on either side, except `!=`.
_COMPARISONS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_TRUTH_WORDS: Final = {"true": True, "false": False, "True": True, "False": False}
_FUNCTIONS: Final = ("abs", "isNaN")
_CLOSERS: Final = {")": "(", "]": "["}


# --- Parser -------------------------------------------------------------------------------------------------------


def _number_operand(node: _Node, user: _Token) -> _NumberNode:
    if isinstance(node, _TruthNode):
        raise ExpressionError(f"{user.text!r} at column {user.column} takes numbers, not true or false")
    return node


def _truth_operand(node: _Node, user: _Token) -> _TruthNode:
    if isinstance(node, _NumberNode):
        raise ExpressionError(f"{user.text!r} at column {user.column} takes true or false, not a number")
    return node


class _Parser:
    def __init__(self, tokens: Iterator[_Token]) -> None:
        self._tokens = tokens
        self._lookahead = next(tokens)
        self._depth = 0

    def parse_condition(self) -> _TruthNode:
        start = self._peek()
        if start.kind == "end":
            raise ExpressionError("empty condition at column 1")
        tree = self._disjunction()
        trailing = self._peek()
        if trailing.kind != "end":
            opener = _CLOSERS.get(trailing.text) if trailing.kind == "symbol" else None
            raise _unexpected(trailing, f"no {opener!r} to close" if opener else "expected the end of the condition")
        if isinstance(tree, _NumberNode):
            raise ExpressionError(
                f"a condition must be true or false, but the expression at column {start.column} is a number"
            )
        return tree

    def _peek(self) -> _Token:
        return self._lookahead

    def _advance(self) -> _Token:
        token = self._lookahead
        if token.kind not in ("end", "invalid"):
            self._lookahead = next(self._tokens)
        return token

    def _accept(self, *spellings: str) -> _Token | None:
        token = self._lookahead
        if token.kind in ("word", "symbol") and token.text in spellings:
            return self._advance()
        return None

    def _enter(self, opener: _Token) -> None:
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            raise ExpressionError(f"nesting deeper than {_MAX_DEPTH} levels at column {opener.column}")

    def _leave(self) -> None:
        self._depth -= 1

    def _close(self, opener: _Token, closer: str) -> None:
        token = self._advance()
        if token.kind == "symbol" and token.text == closer:
            return
        if token.kind == "end":
            raise ExpressionError(f"unclosed {opener.text!r} at column {opener.column}")
        raise _unexpected(token, f"expected {closer!r}")

    def _disjunction(self) -> _Node:
        return self._logical(_Or, ("or", "||"), self._conjunction)

    def _conjunction(self) -> _Node:
        return self._logical(_And, ("and", "&&"), self._negation)

    def _logical(
        self, combine: type[_And] | type[_Or], spellings: tuple[str, ...], parse_operand: Callable[[], _Node]
    ) -> _Node:
        first = parse_operand()
        joiner = self._accept(*spellings)
        if joiner is None:
            return first
        # One node for the whole run keeps the tree shallow and lets all()/any() do the short-circuiting.
        operands = [_truth_operand(first, joiner)]
        while joiner is not None:
            operands.append(_truth_operand(parse_operand(), joiner))
            joiner = self._accept(*spellings)
        return combine(tuple(operands))

    def _negation(self) -> _Node:
        token = self._accept("not", "!")
        if token is None:
            return self._comparison()
        self._enter(token)
        operand = _truth_operand(self._negation(), token)
        self._leave()
        return _Not(operand)

    def _comparison(self) -> _Node:
        first = self._sum()
        token = self._accept(*_COMPARISONS)
        if token is None:
            return first
        first_number = _number_operand(first, token)
        rest: list[tuple[str, _NumberNode]] = []
        while token is not None:
            rest.append((token.text, _number_operand(self._sum(), token)))
            token = self._accept(*_COMPARISONS)
        return _Comparison(first_number, tuple(rest))

    def _sum(self) -> _Node:
        return self._arithmetic(("+", "-"), self._product)

    def _product(self) -> _Node:
        return self._arithmetic(("*", "/"), self._sign)

    def _arithmetic(self, spellings: tuple[str, ...], parse_operand: Callable[[], _Node]) -> _Node:
        # A loop, not recursion on the right, so that `1 - 2 - 3` is (1 - 2) - 3.
        left = parse_operand()
        while (token := self._accept(*spellings)) is not None:
            left_number = _number_operand(left, token)
            left = _Arithmetic(token.text, left_number, _number_operand(parse_operand(), token), token.column)
        return left

    def _sign(self) -> _Node:
        token = self._accept("-", "+")
        if token is None:
            return self._primary()
        self._enter(token)
        operand = _number_operand(self._sign(), token)
        self._leave()
        return _Negation(operand) if token.text == "-" else operand

    def _primary(self) -> _Node:
        token = self._advance()
        if token.kind == "number":
            return _Number(float(token.text))
        if token.kind == "symbol" and token.text == "(":
            self._enter(token)
            inner = self._disjunction()
            self._close(token, ")")
            self._leave()
            return inner
        if token.kind == "word" and token.text not in ("and", "or", "not"):
            if token.text in _TRUTH_WORDS:
                return _Truth(_TRUTH_WORDS[token.text])
            if token.text == "result":
                return self._result()
            if token.text in _FUNCTIONS:
                return self._call(token)
            if self._peek().kind == "symbol" and self._peek().text == "(":
                raise ExpressionError(
                    f"unknown function {token.text!r} at column {token.column}: only abs and isNaN are defined"
                )
            raise ExpressionError(f"unknown name {token.text!r} at column {token.column}: only result is defined")
        raise _unexpected(token)

    def _result(self) -> _Node:
        opener = self._accept("[")
        if opener is None:
            return _Result()
        index = self._advance()
        if index.kind != "number":
            raise _unexpected(index, "expected 0")
        if index.text != "0":
            raise ExpressionError(f"unknown index {index.text!r} at column {index.column}: only result[0] is defined")
        self._close(opener, "]")
        return _Result()

    def _call(self, function: _Token) -> _Node:
        opener = self._advance()
        if not (opener.kind == "symbol" and opener.text == "("):
            raise _unexpected(opener, f"{function.text} needs '(' and an argument")
        self._enter(opener)
        argument = self._disjunction()
        comma = self._accept(",")
        if comma is not None:
            raise ExpressionError(f"unexpected ',' at column {comma.column}: {function.text} takes one argument")
        self._close(opener, ")")
        self._leave()
        number = _number_operand(argument, function)
        return _Absolute(number) if function.text == "abs" else _IsNaN(number)


def _parse(text: str) -> _TruthNode:
    if len(text) > _MAX_LENGTH:
        raise ExpressionError(f"condition too long at column {_MAX_LENGTH + 1}: at most {_MAX_LENGTH} characters")
    return _Parser(_tokenize(text)).parse_condition()


# --- Evaluation ---------------------------------------------------------------------------------------------------


def _number(node: _NumberNode, result: float) -> float:
    match node:
        case _Number(value=value):
            return value
        case _Result():
            return result
        case _Negation(operand=operand):
            return -_number(operand, result)
        case _Absolute(argument=argument):
            return abs(_number(argument, result))
        case _Arithmetic(operator=spelling, left=left, right=right, column=column):
            left_value = _number(left, result)
            right_value = _number(right, result)
            if spelling == "/" and right_value == 0:
                raise ExpressionError(f"division by zero at column {column}")
            return _ARITHMETIC[spelling](left_value, right_value)
        case _:
            assert_never(node)


def _truth(node: _TruthNode, result: float) -> bool:
    match node:
        case _Truth(value=value):
            return value
        case _Not(operand=operand):
            return not _truth(operand, result)
        case _And(operands=operands):
            return all(_truth(operand, result) for operand in operands)
        case _Or(operands=operands):
            return any(_truth(operand, result) for operand in operands)
        case _Comparison(first=first, rest=rest):
            # Like Python's chains: each operand computed once, and none after the first false link.
            left = _number(first, result)
            for spelling, right_operand in rest:
                right = _number(right_operand, result)
                if not _COMPARISONS[spelling](left, right):
                    return False
                left = right
            return True
        case _IsNaN(argument=argument):
            return math.isnan(_number(argument, result))
        case _:
            assert_never(node)


# --- Public API ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A condition of `result`, checked when built: one that exists is well-formed and true or false."""

    text: str
    _tree: _TruthNode = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parsing here rather than in compile_condition alone: Condition(text) must not skip the checks.
        object.__setattr__(self, "_tree", _parse(self.text))

    def evaluate(self, result: float) -> bool:
        """Whether the condition holds for this measurement; NaN compares false (`!=` true), as in IEEE 754.

        Raises ExpressionError on a division by zero. A non-boolean outcome cannot happen: the condition's type was
        checked when it was compiled.
        """
        # A bool is an int to Python, and Prometheus' API returns numbers as strings: both are caller mistakes that
        # would otherwise compare quietly.
        if isinstance(result, bool) or not isinstance(result, numbers.Real):
            raise TypeError(f"result must be a number, not {type(result).__name__}")
        return _truth(self._tree, float(result))


def compile_condition(text: str) -> Condition:
    """The condition in `text`; raises ExpressionError for anything outside the grammar or of the wrong type."""
    return Condition(text)
