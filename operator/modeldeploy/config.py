"""Operator configuration, read once at start from the environment (the Helm chart and manifests set it)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modeldeploy.api.models import ModelFormat

FIELD_MANAGER = "modeldeploy"
DEFAULT_RUNTIME_IMAGE = "modeldeploy/runtime:0.1.0"
# Graceful shutdown of the serving pods (docs/shutdown.md). Seconds the runtime is given to exit before the kubelet's
# SIGKILL, beyond its own shutdown timeout: its processes end, the last bytes are written.
SHUTDOWN_EXIT_MARGIN_SECONDS = 2
# Requests in flight when the runtime's drain ends keep at least this long (the runtime's own minimum).
SHUTDOWN_MIN_IN_FLIGHT_SECONDS = 1
SHUTDOWN_MAX_SECONDS = 3600


def _default_images() -> dict[str, str]:
    return {fmt.value: DEFAULT_RUNTIME_IMAGE for fmt in ModelFormat}


DEFAULT_PORTS = {"http": 80, "https": 443}
URL_PATTERN = re.compile(
    r"(?P<scheme>https?)://"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._~-]+))"
    r"(?::(?P<port>[0-9]{1,5}|\*))?"
    r"(?P<path>(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*)",
    re.IGNORECASE,
)
"""http(s)://host[:port][/path] and nothing else. Deliberately narrow, and the one parser for both the check of an
address and the connection to it (PrometheusClient), so the two cannot disagree about where a request goes."""


@dataclass(frozen=True)
class UrlPrefix:
    """An HTTP(S) URL reduced to what decides where a request goes: scheme, host, port (None: any) and path."""

    scheme: str
    host: str
    """Lower case; an IPv6 address without its brackets."""
    port: int | None
    path: str
    """Without a trailing slash: "" for the root."""

    @classmethod
    def parse(cls, text: str, *, any_port: bool = False) -> UrlPrefix:
        """Raises ValueError for anything but http(s)://host[:port][/path]. With `any_port`, the port may be `*`
        (any port of that host, e.g. for a test's Prometheus on a free port).

        Refused on purpose, since they would make an address mean something else than it reads: user info (whose
        `@` hides the real host), a query or fragment, backslashes, and `.` or `..` path segments (a server that
        resolves them leaves the prefix)."""
        match = URL_PATTERN.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not an http:// or https:// URL of the form scheme://host[:port][/path]")
        scheme = match["scheme"].lower()
        port: int | None
        if match["port"] == "*":
            if not any_port:
                raise ValueError(f"{text!r}: a port of * is for allowed prefixes only")
            port = None
        else:
            port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
            if not 0 < port < 65536:
                raise ValueError(f"{text!r}: port {port} is out of range")
        path = match["path"].rstrip("/")
        if any(segment.lower().replace("%2e", ".") in (".", "..") for segment in path.split("/")):
            raise ValueError(f"{text!r}: '.' and '..' path segments are not allowed")
        return cls(scheme=scheme, host=(match["ipv6"] or match["host"]).lower(), port=port, path=path)

    def covers(self, url: UrlPrefix) -> bool:
        """Whether `url` is this prefix or under it: a path matches only up to a segment boundary, so
        http://prom/a covers http://prom/a/b but not http://prom/ab, and http://prom never covers http://prom.evil."""
        return (
            url.scheme == self.scheme
            and url.host == self.host
            and (self.port is None or url.port == self.port)
            and (url.path == self.path or url.path.startswith(self.path + "/"))
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = ":*" if self.port is None else "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


def parse_url_prefixes(texts: Iterable[str], *, source: str) -> tuple[UrlPrefix, ...]:
    """Prefixes from settings; an invalid one stops the operator at start, naming `source`."""
    prefixes = []
    for text in texts:
        if not text.strip():
            continue
        try:
            prefixes.append(UrlPrefix.parse(text, any_port=True))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return tuple(prefixes)


@dataclass(frozen=True)
class OperatorConfig:
    """Settings that are the operator's, not any one resource's."""

    runtime_images: Mapping[str, str] = field(default_factory=_default_images)
    """Default model-server image per model format, for specs that leave spec.runtime.image empty."""
    history_limit: int = 10
    """How many revisions status.history keeps."""
    retained_revisions: int = 3
    """Recent revisions, the serving one included, whose Deployments are kept (the old ones scaled to zero) for a
    fast return; older ones are deleted. Revisions inside spec.rollout.rollbackWindow are kept too."""
    workers: int = 4
    """Reconciles that run at once (each in a thread: the API client in kube/client.py is synchronous)."""
    cluster_domain: str = "cluster.local"
    prometheus_url: str = ""
    """Prometheus for canary analysis, when a spec names none."""
    prometheus_timeout: float = 10.0
    """Seconds one measurement round of one resource may wait for Prometheus, all its metrics together."""
    prometheus_allowed_urls: tuple[UrlPrefix, ...] = ()
    """URL prefixes that spec.rollout.analysis.prometheus.address may name, besides prometheus_url. Users choose the
    address, and the operator sends queries from inside the cluster: without a list, a spec could make it ask any
    URL there."""
    prestop_delay_seconds: int = 5
    """The serving container's preStop sleep: how long a pod being deleted keeps serving as if nothing happened,
    while its endpoint's removal reaches every kube-proxy, ingress controller and mesh. 0: no preStop hook (for
    clusters older than 1.30, where the sleep action is off; the runtime's drain then does the waiting)."""
    drain_seconds: int = 5
    """MODEL_DRAIN_SECONDS of the runtime: after SIGTERM, readiness 503 and serving on, answering with
    `Connection: close` so that clients holding kept-alive connections move on."""
    termination_grace_period_seconds: int = 30
    """The pods' terminationGracePeriodSeconds: preStop delay, drain, requests in flight and the exit all fit in it.
    What is left after the preStop delay and a margin is the runtime's MODEL_SHUTDOWN_TIMEOUT_SECONDS."""

    traffic_routers: frozenset[str] = frozenset()
    """The routers whose route objects this operator may write and watches (TRAFFIC_ROUTERS): each needs its CRDs in
    the cluster and RBAC for its kind, so none is on unless asked for."""

    def __post_init__(self) -> None:
        for name in ("prestop_delay_seconds", "drain_seconds", "termination_grace_period_seconds"):
            value = getattr(self, name)
            if not 0 <= value <= SHUTDOWN_MAX_SECONDS:
                raise ValueError(f"{name} must be between 0 and {SHUTDOWN_MAX_SECONDS} seconds, not {value}")
        needed = (
            self.prestop_delay_seconds
            + self.drain_seconds
            + SHUTDOWN_MIN_IN_FLIGHT_SECONDS
            + SHUTDOWN_EXIT_MARGIN_SECONDS
        )
        if self.termination_grace_period_seconds < needed:
            raise ValueError(
                f"the serving pods' termination grace period ({self.termination_grace_period_seconds}s) must be at "
                f"least the preStop delay ({self.prestop_delay_seconds}s) + the drain ({self.drain_seconds}s) + "
                f"{SHUTDOWN_MIN_IN_FLIGHT_SECONDS}s for requests in flight + {SHUTDOWN_EXIT_MARGIN_SECONDS}s to "
                f"exit: {needed}s"
            )

    @property
    def runtime_shutdown_timeout_seconds(self) -> int:
        """MODEL_SHUTDOWN_TIMEOUT_SECONDS: from SIGTERM (after the preStop delay) to the runtime's exit, at most."""
        return self.termination_grace_period_seconds - self.prestop_delay_seconds - SHUTDOWN_EXIT_MARGIN_SECONDS

    def prometheus_address_allowed(self, address: str) -> bool:
        """Whether a spec may name `address`: the operator's own Prometheus, or an address under an allowed prefix
        (scheme and host compared without case, the default port made explicit, a trailing slash ignored)."""
        try:
            url = UrlPrefix.parse(address)
        except ValueError:
            return False
        return any(prefix.covers(url) for prefix in self.allowed_prometheus_prefixes())

    def allowed_prometheus_prefixes(self) -> tuple[UrlPrefix, ...]:
        own: tuple[UrlPrefix, ...] = ()
        if self.prometheus_url:
            try:
                own = (UrlPrefix.parse(self.prometheus_url),)
            except ValueError:
                own = ()  # A default that is not a URL: its queries fail with a message of their own.
        return own + tuple(self.prometheus_allowed_urls)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """MODELDEPLOY_RUNTIME_IMAGE sets every format's image; MODELDEPLOY_RUNTIME_IMAGE_<FORMAT> one format's."""
        env = os.environ if env is None else env
        base = env.get("MODELDEPLOY_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE)
        images = {fmt.value: env.get(f"MODELDEPLOY_RUNTIME_IMAGE_{fmt.value.upper()}", base) for fmt in ModelFormat}
        return cls(
            runtime_images=images,
            history_limit=int(env.get("MODELDEPLOY_HISTORY_LIMIT", "10")),
            retained_revisions=int(env.get("MODELDEPLOY_RETAINED_REVISIONS", "3")),
            workers=int(env.get("MODELDEPLOY_WORKERS", "4")),
            cluster_domain=env.get("MODELDEPLOY_CLUSTER_DOMAIN", "cluster.local"),
            prometheus_url=env.get("MODELDEPLOY_PROMETHEUS_URL", ""),
            prometheus_timeout=float(env.get("MODELDEPLOY_PROMETHEUS_TIMEOUT_SECONDS", "10")),
            prometheus_allowed_urls=parse_url_prefixes(
                env.get("MODELDEPLOY_PROMETHEUS_ALLOWED_URLS", "").split(","),
                source="MODELDEPLOY_PROMETHEUS_ALLOWED_URLS",
            ),
            prestop_delay_seconds=_whole_seconds(env, "MODELDEPLOY_PRESTOP_DELAY_SECONDS", 5),
            drain_seconds=_whole_seconds(env, "MODELDEPLOY_DRAIN_SECONDS", 5),
            termination_grace_period_seconds=_whole_seconds(env, "MODELDEPLOY_TERMINATION_GRACE_PERIOD_SECONDS", 30),
            traffic_routers=parse_traffic_routers(env.get("MODELDEPLOY_TRAFFIC_ROUTERS", "")),
        )


TRAFFIC_ROUTERS = {"gatewayAPI": "HTTPRoute", "istio": "VirtualService"}
"""spec.trafficRouting's routers and the kind of route object each writes."""


def parse_traffic_routers(raw: str) -> frozenset[str]:
    """MODELDEPLOY_TRAFFIC_ROUTERS, `gatewayAPI,istio`: the kinds of route object those routers write."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRAFFIC_ROUTERS]
    if unknown:
        raise ValueError(
            f"MODELDEPLOY_TRAFFIC_ROUTERS: unknown router {', '.join(unknown)} (known: {', '.join(TRAFFIC_ROUTERS)})"
        )
    return frozenset(TRAFFIC_ROUTERS[name] for name in names)


def _whole_seconds(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number of seconds") from None
