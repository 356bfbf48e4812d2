"""The operator's settings: MODELDEPLOY_PROMETHEUS_ALLOWED_URLS, the prefixes a spec's Prometheus address must be
under, and the one URL parser that both the check and the Prometheus client use; the serving pods' shutdown."""

from __future__ import annotations

import pytest

from modeldeploy.config import OperatorConfig, UrlPrefix, parse_url_prefixes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://prom:9090", UrlPrefix("http", "prom", 9090, "")),
        ("HTTP://Prom.Monitoring:9090/", UrlPrefix("http", "prom.monitoring", 9090, "")),
        ("https://prom.example", UrlPrefix("https", "prom.example", 443, "")),
        ("http://prom", UrlPrefix("http", "prom", 80, "")),
        ("http://prom/a/b/", UrlPrefix("http", "prom", 80, "/a/b")),
        ("http://10.0.0.1:9090/x", UrlPrefix("http", "10.0.0.1", 9090, "/x")),
        ("http://[::1]:9090", UrlPrefix("http", "::1", 9090, "")),
        ("http://prom/a%20b", UrlPrefix("http", "prom", 80, "/a%20b")),
    ],
)
def test_urls_are_normalised(text: str, expected: UrlPrefix) -> None:
    assert UrlPrefix.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "prom:9090",
        "ftp://prom",
        "http://",
        "http://user:secret@prom",
        "http://prom@evil",
        "http://prom:9090@evil",
        "http://prom?x=1",
        "http://prom/#top",
        "http://prom\\@evil",
        "http://prom/a/../b",
        "http://prom/a/%2E%2e/b",
        "http://prom/./a",
        "http://prom:0",
        "http://prom:65536",
        "http://prom:port",
        "http://prom:*",
        "http://pr om",
        "http://prom/a b",
        "http://prom\n.evil",
        "http://pröm",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"http|allowed|range|port"):
        UrlPrefix.parse(text)


def test_a_prefix_may_allow_any_port_of_a_host() -> None:
    [prefix] = parse_url_prefixes(["http://127.0.0.1:*"], source="X")
    assert prefix == UrlPrefix("http", "127.0.0.1", None, "")
    assert str(prefix) == "http://127.0.0.1:*"
    assert prefix.covers(UrlPrefix.parse("http://127.0.0.1:41234/x"))
    assert not prefix.covers(UrlPrefix.parse("https://127.0.0.1:41234"))
    assert not prefix.covers(UrlPrefix.parse("http://127.0.0.10:41234"))


@pytest.mark.parametrize(
    ("prefix", "address", "covered"),
    [
        ("http://prom", "http://prom", True),
        ("http://prom", "http://prom:80/", True),
        ("http://prom", "http://PROM/x", True),
        ("http://prom", "http://prom.evil", False),
        ("http://prom", "http://prom:8080", False),
        ("http://prom", "https://prom", False),
        ("http://prom/a", "http://prom/a/b", True),
        ("http://prom/a/", "http://prom/a", True),
        ("http://prom/a", "http://prom/ab", False),
        ("http://prom/a", "http://prom/", False),
        ("http://prom/A", "http://prom/a", False),
        ("https://prom:443", "https://prom", True),
    ],
)
def test_a_prefix_ends_at_a_path_boundary(prefix: str, address: str, covered: bool) -> None:
    assert UrlPrefix.parse(prefix).covers(UrlPrefix.parse(address)) == covered


def test_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
            "MODELDEPLOY_PROMETHEUS_ALLOWED_URLS": " http://prometheus.team-a:9090/ ,,https://thanos.example/q",
        }
    )
    assert [str(prefix) for prefix in config.prometheus_allowed_urls] == [
        "http://prometheus.team-a:9090",
        "https://thanos.example/q",
    ]
    assert [str(prefix) for prefix in config.allowed_prometheus_prefixes()] == [
        "http://prometheus.monitoring:9090",
        "http://prometheus.team-a:9090",
        "https://thanos.example/q",
    ]
    assert config.prometheus_address_allowed("http://prometheus.monitoring:9090/")
    assert config.prometheus_address_allowed("https://thanos.example/q/tenant-a")
    assert not config.prometheus_address_allowed("https://thanos.example/query")
    assert not config.prometheus_address_allowed("not a url")


def test_by_default_only_the_operators_own_prometheus_is_allowed() -> None:
    own = OperatorConfig.from_env({"MODELDEPLOY_PROMETHEUS_URL": "http://prometheus.monitoring:9090"})
    assert own.prometheus_address_allowed("http://prometheus.monitoring:9090")
    assert not own.prometheus_address_allowed("http://prometheus.elsewhere:9090")
    nothing = OperatorConfig.from_env({})
    assert nothing.allowed_prometheus_prefixes() == ()
    assert not nothing.prometheus_address_allowed("http://prometheus.monitoring:9090")


def test_an_invalid_prefix_stops_the_operator_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^MODELDEPLOY_PROMETHEUS_ALLOWED_URLS: 'http://user@prom'"):
        OperatorConfig.from_env({"MODELDEPLOY_PROMETHEUS_ALLOWED_URLS": "http://ok,http://user@prom"})


# --- the serving pods' graceful shutdown ------------------------------------------------------------------------------


def test_shutdown_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert (config.prestop_delay_seconds, config.drain_seconds, config.termination_grace_period_seconds) == (5, 5, 30)
    assert config.runtime_shutdown_timeout_seconds == 23


def test_shutdown_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_PRESTOP_DELAY_SECONDS": "10",
            "MODELDEPLOY_DRAIN_SECONDS": " 3 ",
            "MODELDEPLOY_TERMINATION_GRACE_PERIOD_SECONDS": "45",
        }
    )
    assert (config.prestop_delay_seconds, config.drain_seconds, config.termination_grace_period_seconds) == (10, 3, 45)
    assert config.runtime_shutdown_timeout_seconds == 33


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"MODELDEPLOY_DRAIN_SECONDS": "5s"}, "MODELDEPLOY_DRAIN_SECONDS='5s' is not a whole", id="unit"),
        pytest.param({"MODELDEPLOY_PRESTOP_DELAY_SECONDS": "-1"}, "prestop_delay_seconds must be", id="negative"),
        pytest.param(
            {"MODELDEPLOY_TERMINATION_GRACE_PERIOD_SECONDS": "7200"}, "termination_grace_period_seconds", id="huge"
        ),
        # 5 + 5 + 1 for requests in flight + 2 to exit = 13: a grace period of 12 would let SIGKILL come first.
        pytest.param({"MODELDEPLOY_TERMINATION_GRACE_PERIOD_SECONDS": "12"}, "must be at least .*: 13s", id="short"),
        pytest.param(
            {"MODELDEPLOY_PRESTOP_DELAY_SECONDS": "20", "MODELDEPLOY_DRAIN_SECONDS": "10"},
            "must be at least .*: 33s",
            id="delays-past-the-default-grace",
        ),
    ],
)
def test_shutdown_settings_that_cannot_fit_stop_the_operator(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env(env)


def test_the_tightest_shutdown_that_fits() -> None:
    config = OperatorConfig(prestop_delay_seconds=0, drain_seconds=0, termination_grace_period_seconds=3)
    assert config.runtime_shutdown_timeout_seconds == 1
