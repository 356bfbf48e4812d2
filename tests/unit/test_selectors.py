"""Label selectors in Kubernetes' text syntax: what parses (and its canonical text, which is what the API server is
sent), what matches, and what is refused with a message that names the problem."""

from __future__ import annotations

import pytest

from modeldeploy.api.selectors import LabelSelector, SelectorError, labels_of, parse_selector


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        pytest.param("", "", id="empty-selects-everything"),
        pytest.param("modeldeploy.io/shard=a", "modeldeploy.io/shard=a", id="equals"),
        pytest.param("shard == a", "shard=a", id="double-equals-and-spaces"),
        pytest.param("shard!=a", "shard!=a", id="not-equals"),
        pytest.param("shard=", "shard=", id="empty-value"),
        pytest.param("shard", "shard", id="exists"),
        pytest.param("!shard", "!shard", id="does-not-exist"),
        pytest.param("tier in (gold)", "tier in (gold)", id="in"),
        pytest.param("tier in(silver, gold,gold)", "tier in (gold,silver)", id="in-sorted-deduplicated"),
        pytest.param("tier notin (gold,silver)", "tier notin (gold,silver)", id="notin"),
        pytest.param("replicas>2", "replicas>2", id="greater-than"),
        pytest.param("replicas < -1", "replicas<-1", id="less-than-negative"),
        pytest.param("a=1, b in (x), !c", "a=1,b in (x),!c", id="several"),
        pytest.param("example.com/team_a.b-c=Value.1_x", "example.com/team_a.b-c=Value.1_x", id="every-character"),
    ],
)
def test_selectors_parse_to_their_canonical_text(text: str, canonical: str) -> None:
    selector = parse_selector(text)
    assert str(selector) == canonical
    assert parse_selector(str(selector)) == selector, "the canonical text parses to the same selector"


LABELS = {"modeldeploy.io/shard": "a", "tier": "gold", "replicas": "3", "empty": "", "word": "three"}


@pytest.mark.parametrize(
    ("text", "selected"),
    [
        ("", True),
        ("modeldeploy.io/shard=a", True),
        ("modeldeploy.io/shard=b", False),
        ("modeldeploy.io/shard!=b", True),
        ("missing!=b", True),
        ("missing=b", False),
        ("empty=", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("tier in (gold,silver)", True),
        ("tier in (silver)", False),
        ("missing in (gold)", False),
        ("tier notin (silver)", True),
        ("tier notin (gold)", False),
        ("missing notin (gold)", True),
        ("replicas>2", True),
        ("replicas>3", False),
        ("replicas<4", True),
        ("word>1", False),
        ("missing<4", False),
        ("modeldeploy.io/shard=a,tier in (gold)", True),
        ("modeldeploy.io/shard=a,tier in (silver)", False),
    ],
)
def test_a_selector_selects_as_the_api_server_does(text: str, selected: bool) -> None:
    assert parse_selector(text).matches(LABELS) is selected


def test_an_object_without_labels_is_selected_only_by_absence() -> None:
    assert parse_selector("!shard").matches(None)
    assert parse_selector("shard notin (a)").matches({})
    assert not parse_selector("shard").matches(labels_of({"metadata": {}}))
    assert LabelSelector(()).everything
    assert not parse_selector("a").everything


def test_labels_of_ignores_what_is_not_a_string() -> None:
    body = {"metadata": {"labels": {"a": "1", "b": 2, "c": None}}}
    assert labels_of(body) == {"a": "1"}
    assert labels_of({"metadata": {"labels": ["a"]}}) == {}
    assert labels_of({}) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a in ()", "the set of 'a in' is empty", id="empty-set"),
        pytest.param("a in (b", "',' or ')' in the set of 'a' expected at the end", id="unclosed-set"),
        pytest.param("a in b", "'(' expected after 'a in'", id="set-without-parentheses"),
        pytest.param("a in (b,)", "a value expected in the set of 'a', found ')'", id="empty-set-member"),
        pytest.param("a=b c", "',' expected between requirements, found 'c'", id="missing-comma"),
        pytest.param("a b", "one of =, ==, !=, in, notin, >, < or ',' expected, found 'b'", id="no-operator"),
        pytest.param(",", "a label key expected, found ','", id="leading-comma"),
        pytest.param("a,", "a label key expected at the end", id="trailing-comma"),
        pytest.param("!", "a label key after '!' expected at the end", id="bare-not"),
        pytest.param("in", "a label key expected, found the operator 'in'", id="operator-as-key"),
        pytest.param("x>y", "'x>' needs an integer, found 'y'", id="comparison-with-a-word"),
        pytest.param("a=(", "a value for 'a' expected, found '('", id="symbol-as-value"),
        pytest.param("-a=b", "invalid label key '-a'", id="key-starting-with-a-dash"),
        pytest.param("A.B/c=d", "invalid label key 'A.B/c'", id="upper-case-prefix"),
        pytest.param("a/b/c=d", "invalid label key 'a/b/c'", id="two-slashes"),
        pytest.param(f"{'k' * 64}=v", "the name is longer than 63 characters", id="long-name"),
        pytest.param(f"{'p.' * 127}p/k=v", "the prefix is longer than 253 characters", id="long-prefix"),
        pytest.param("a=-b", "invalid value '-b' for label 'a'", id="value-starting-with-a-dash"),
        pytest.param(f"a={'v' * 64}", "invalid value", id="long-value"),
        pytest.param("a=b/c", "invalid value 'b/c'", id="slash-in-value"),
        pytest.param("a in (b c)", "',' or ')' expected in the set of 'a', found 'c'", id="set-without-comma"),
    ],
)
def test_what_is_not_a_selector_is_refused_with_the_problem_named(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as raised:
        parse_selector(text)
    assert message in str(raised.value)
