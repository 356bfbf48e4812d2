"""Label selectors in Kubernetes' text syntax (`kubectl get -l`, the API's `labelSelector` parameter), parsed and
matched here so that the operator agrees with the API server on which objects a shard owns.

The grammar is apimachinery's: requirements joined by commas, all of which must hold.

    key              the label is there            !key              it is not
    key=value        there, with that value        key==value        the same
    key!=value       not there, or another value
    key in (a,b)     there, with one of the values
    key notin (a,b)  not there, or none of the values
    key>5, key<5     there, and an integer above (below) the number

Keys are qualified names (`prefix/name`), values label values (63 characters at most, alphanumeric at both ends).
This parser is stricter than the API server in one place: a set may not hold an empty value (`in (a,)`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class SelectorError(ValueError):
    """A selector that does not parse, with what is wrong and where."""


class Operator(StrEnum):
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    GREATER_THAN = ">"
    LESS_THAN = "<"


_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_KEY = re.compile(rf"(?:(?P<prefix>{_DNS_LABEL}(?:\.{_DNS_LABEL})*)/)?(?P<name>{_NAME})")
_VALUE = re.compile(rf"(?:{_NAME})?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_NAME_LENGTH = 63
MAX_PREFIX_LENGTH = 253

# Characters that end an identifier, and the tokens they start.
_SPECIAL = "!=<>(),"
_SYMBOLS = ("!=", "==", "!", "=", "<", ">", "(", ")", ",")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.operator:
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None
            case Operator.EQUALS | Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.GREATER_THAN | Operator.LESS_THAN:
                if value is None or _INTEGER.fullmatch(value) is None:
                    return False
                bound = int(self.values[0])
                return int(value) > bound if self.operator is Operator.GREATER_THAN else int(value) < bound
        raise AssertionError(self.operator)  # pragma: no cover - every operator is matched above

    def __str__(self) -> str:
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator} ({','.join(self.values)})"
            case _:
                return f"{self.key}{self.operator}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """Requirements that must all hold. No requirement at all selects everything."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        present = labels or {}
        return all(requirement.matches(present) for requirement in self.requirements)

    @property
    def everything(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        """The canonical text: what is sent to the API server, so that it filters as matches() does."""
        return ",".join(str(requirement) for requirement in self.requirements)


def parse_selector(text: str) -> LabelSelector:
    """The selector `text` stands for; SelectorError naming the problem when it is not one."""
    return _Parser(text).selector()


def labels_of(body: Mapping[str, object]) -> Mapping[str, str]:
    """An object's labels, as far as they are strings (anything else in a body is untrusted and ignored)."""
    metadata = body.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {key: value for key, value in labels.items() if isinstance(key, str) and isinstance(value, str)}


def _check_key(key: str) -> str:
    match = _KEY.fullmatch(key)
    if match is None:
        raise SelectorError(
            f"invalid label key {key!r}: a name of letters, digits, '-', '_' and '.' that starts and ends with a "
            "letter or digit, optionally after a DNS subdomain prefix and '/'"
        )
    if len(match["name"]) > MAX_NAME_LENGTH:
        raise SelectorError(f"invalid label key {key!r}: the name is longer than {MAX_NAME_LENGTH} characters")
    if match["prefix"] is not None and len(match["prefix"]) > MAX_PREFIX_LENGTH:
        raise SelectorError(f"invalid label key {key!r}: the prefix is longer than {MAX_PREFIX_LENGTH} characters")
    return key


def _check_value(key: str, value: str) -> str:
    if len(value) > MAX_NAME_LENGTH or _VALUE.fullmatch(value) is None:
        raise SelectorError(
            f"invalid value {value!r} for label {key!r}: at most {MAX_NAME_LENGTH} letters, digits, '-', '_' and "
            "'.', starting and ending with a letter or digit"
        )
    return value


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        symbol = next((symbol for symbol in _SYMBOLS if text.startswith(symbol, position)), None)
        if symbol is not None:
            tokens.append(symbol)
            position += len(symbol)
            continue
        start = position
        while position < len(text) and not text[position].isspace() and text[position] not in _SPECIAL:
            position += 1
        tokens.append(text[start:position])
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _next(self, what: str) -> str:
        token = self._peek()
        if token is None:
            raise SelectorError(f"{self.text!r}: {what} expected at the end")
        self.position += 1
        return token

    def _identifier(self, what: str) -> str:
        token = self._next(what)
        if token in _SYMBOLS:
            raise SelectorError(f"{self.text!r}: {what} expected, found {token!r}")
        return token

    def selector(self) -> LabelSelector:
        requirements: list[Requirement] = []
        if self._peek() is None:
            return LabelSelector(())
        while True:
            requirements.append(self._requirement())
            token = self._peek()
            if token is None:
                return LabelSelector(tuple(requirements))
            if token != ",":
                raise SelectorError(f"{self.text!r}: ',' expected between requirements, found {token!r}")
            self.position += 1

    def _requirement(self) -> Requirement:
        if self._peek() == "!":
            self.position += 1
            return Requirement(_check_key(self._identifier("a label key after '!'")), Operator.DOES_NOT_EXIST)
        key = self._identifier("a label key")
        if key in ("in", "notin"):
            raise SelectorError(f"{self.text!r}: a label key expected, found the operator {key!r}")
        key = _check_key(key)
        token = self._peek()
        if token is None or token == ",":
            return Requirement(key, Operator.EXISTS)
        self.position += 1
        if token in ("=", "=="):
            return Requirement(key, Operator.EQUALS, (self._single_value(key),))
        if token == "!=":
            return Requirement(key, Operator.NOT_EQUALS, (self._single_value(key),))
        if token in (">", "<"):
            number = self._identifier(f"a number after '{key}{token}'")
            if _INTEGER.fullmatch(number) is None:
                raise SelectorError(f"{self.text!r}: '{key}{token}' needs an integer, found {number!r}")
            return Requirement(key, Operator(token), (str(int(number)),))
        if token in ("in", "notin"):
            return Requirement(key, Operator(token), self._value_set(key, token))
        raise SelectorError(
            f"{self.text!r}: after label key {key!r} one of =, ==, !=, in, notin, >, < or ',' expected, found {token!r}"
        )

    def _single_value(self, key: str) -> str:
        token = self._peek()
        if token is None or token == ",":
            return ""  # `key=` selects the label with an empty value
        return _check_value(key, self._identifier(f"a value for {key!r}"))

    def _value_set(self, key: str, operator: str) -> tuple[str, ...]:
        if self._next(f"'(' after '{key} {operator}'") != "(":
            raise SelectorError(f"{self.text!r}: '(' expected after '{key} {operator}'")
        values: list[str] = []
        while True:
            token = self._next(f"a value or ')' in the set of {key!r}")
            if token == ")" and not values:
                raise SelectorError(f"{self.text!r}: the set of '{key} {operator}' is empty")
            if token in _SYMBOLS:
                raise SelectorError(f"{self.text!r}: a value expected in the set of {key!r}, found {token!r}")
            values.append(_check_value(key, token))
            closing = self._next(f"',' or ')' in the set of {key!r}")
            if closing == ")":
                return tuple(sorted(set(values)))
            if closing != ",":
                raise SelectorError(f"{self.text!r}: ',' or ')' expected in the set of {key!r}, found {closing!r}")
