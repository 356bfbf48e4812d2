"""The `modeldeploy` command: `modeldeploy run` starts the operator."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import urllib.parse
from collections.abc import Callable

import prometheus_client

from modeldeploy import redaction
from modeldeploy.api.selectors import LabelSelector, SelectorError, parse_selector
from modeldeploy.cli.commands import COMMAND_HELP, PLAIN_KUBECTL, command_body, render_status
from modeldeploy.cli.health import HealthServer, parse_bind_address
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import client as kube_client
from modeldeploy.kube.client import Kube
from modeldeploy.kube.config import current_namespace, load_settings
from modeldeploy.kube.lease import (
    DEFAULT_LEASE_NAME,
    ElectionSettings,
    ElectionStatus,
    KubeLeaseStore,
    LeaderElection,
    LeaderElector,
    exit_now,
    new_identity,
)

log = logging.getLogger("modeldeploy.cli")


MALLOC_ARENAS = 2
"""glibc gives each thread that allocates its own malloc arena, up to 8 per core, and an arena keeps what was freed
in it. The workers decode API answers in threads (bodies larger than Python's small-object allocator takes go to
malloc), so without a limit each worker thread holds its own high-water mark of them."""
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's arenas before any thread starts (MALLOC_ARENA_MAX, set in the environment, wins). False where the
    C library is not glibc or refuses."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def _run(args: argparse.Namespace) -> int:
    limit_malloc_arenas()
    try:
        # Read once here so that a bad setting stops the start with its message, before any lease is taken.
        config = OperatorConfig.from_env()
    except ValueError as error:
        print(f"modeldeploy run: {error}", file=sys.stderr)
        return 2
    # Imported here, not above: the kubectl plugin's commands need neither kopf nor its memory.
    from modeldeploy.kube.kopf_login import kopf

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    # On kopf's handlers, so that every line (ours, kopf's, a library's) is masked: spec URIs may be signed URLs.
    redaction.install()
    logging.getLogger("modeldeploy").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs every watch-event handler call; our own logs say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_bind_address:
        host, _, port = args.metrics_bind_address.rpartition(":")
        prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")
    identity = new_identity()
    # Every request names the replica, so the API server's audit log shows which one wrote. Set before any client
    # exists; the client reads it per request.
    kube_client.USER_AGENT = f"{kube_client.USER_AGENT} ({identity})"
    election = _election(args, identity) if args.leader_elect else None
    if args.health_bind_address:
        host, port = parse_bind_address(args.health_bind_address)
        # Before the wait for the Lease: a standby must answer its probes too, or it is never live nor Ready.
        HealthServer(host, port, election.status if election is not None else _single(identity)).start()
    if election is not None:
        if not _lead(election):
            return 0  # stopped while standing by
        kube_client.WRITE_FENCE = election.fence
    # Importing registers the handlers with kopf's default registry.
    import modeldeploy.main

    namespaces = args.namespace or []
    if not namespaces:
        modeldeploy.main.watch_namespaces()
    modeldeploy.main.watch_routes(config.traffic_routers)
    shard: LabelSelector | None = args.shard_selector
    if shard is not None:
        log.info(
            'Sharded selector="%s" lease="%s" namespaces="%s"',
            shard,
            args.leader_elect_lease_name or "",
            ",".join(namespaces) or "*",
        )
    try:
        kopf.run(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=_kopf_liveness_endpoint(args),
            # What the startup handler (modeldeploy.main.configure) needs from the command line.
            memo=kopf.Memo(shard=shard, namespaces=list(namespaces)),
        )
    finally:
        # kopf has stopped the controller (its cleanup handler waits for the passes in flight): nothing writes any
        # more, so the Lease can go to a standby now rather than when it expires.
        if election is not None:
            election.stop_and_release()
    return 0


def _kopf_liveness_endpoint(args: argparse.Namespace) -> str | None:
    """kopf's liveness URL (--health-endpoint), unless it is on the port of our own health server.

    Manifests from before --health-bind-address ask kopf's endpoint on :8081, which is now our default: there our
    /healthz answers instead (on a standby too), rather than two servers failing to share the port.
    """
    endpoint: str = args.health_endpoint
    if not endpoint or not args.health_bind_address:
        return endpoint or None
    if urllib.parse.urlsplit(endpoint).port != parse_bind_address(args.health_bind_address)[1]:
        return endpoint
    log.warning(
        "Not serving kopf's liveness: its port is the health server's %s",
        f'health_endpoint="{endpoint}" health_bind_address="{args.health_bind_address}"',
    )
    return None


def _single(identity: str) -> Callable[[], ElectionStatus]:
    """Without leader election the one process leads, and there is no Lease whose holder it could name."""
    status = ElectionStatus(role="leader", identity=identity, holder=None)
    return lambda: status


def _election(args: argparse.Namespace, identity: str) -> LeaderElection:
    """The election on the Lease of the settings; nothing is asked of the API server yet.

    Losing the Lease ends the process at once (exit code 1), so that it stops writing before the Lease can pass on.
    """
    settings = ElectionSettings(
        lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period,
    )
    namespace = args.leader_elect_namespace or current_namespace()
    name = args.leader_elect_lease_name or DEFAULT_LEASE_NAME
    store = KubeLeaseStore(Kube(load_settings(), pool_size=2), namespace, name)
    return LeaderElection(LeaderElector(store, name, namespace, identity, settings), on_lost=exit_now)


def _lead(election: LeaderElection) -> bool:
    """Stand by until this replica holds the Lease, then keep renewing it; False when stopped before leading.

    Neither kopf nor the controller starts before: a standby makes no watch and no write but its Lease attempts.
    """
    # Until kopf runs, SIGTERM (a pod being stopped) and SIGINT end the wait; kopf installs its own handlers later.
    previous = {
        number: signal.signal(number, lambda *_: election.stopping.set()) for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        if not election.acquire():
            return False
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    election.start_renewing()
    return True


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _shard_selector(text: str) -> LabelSelector:
    try:
        selector = parse_selector(text)
    except SelectorError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if selector.everything:
        raise argparse.ArgumentTypeError("an empty selector selects every resource: leave --shard-selector out")
    return selector


def _check_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that are wrong together. A shard must not share its Lease with another shard: they would elect one
    leader between them, and the other shard's resources would wait for it."""
    if args.shard_selector is not None and args.leader_elect and not args.leader_elect_lease_name:
        parser.error(
            "--shard-selector needs --leader-elect-lease-name: each shard elects its own leader on a Lease of its "
            "own (the chart names it after the release)"
        )


def _seconds(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration in seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r}")
    return value


def _kube() -> Kube:
    return Kube(load_settings(), pool_size=1)


def _request(args: argparse.Namespace) -> int:
    namespace = args.namespace or current_namespace()
    kube = _kube()
    body = kube.get_resource(namespace, args.name)
    if body is None:
        print(f"error: modeldeployment {args.name!r} not found in namespace {namespace!r}", file=sys.stderr)
        return 1
    kube.request_command(namespace, args.name, args.command, command_body(full=getattr(args, "full", False)))
    what = "promote --full" if getattr(args, "full", False) else args.command
    print(f"modeldeployment {namespace}/{args.name}: {what} requested")
    return 0


def _status(args: argparse.Namespace) -> int:
    namespace = args.namespace or current_namespace()
    body = _kube().get_resource(namespace, args.name)
    if body is None:
        print(f"error: modeldeployment {args.name!r} not found in namespace {namespace!r}", file=sys.stderr)
        return 1
    print(render_status(body))
    return 0


def _add_resource_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, help_text in COMMAND_HELP.items():
        command = commands.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. The spec is not touched. Without the plugin: "
            + PLAIN_KUBECTL.replace("COMMAND", name),
        )
        command.add_argument("name", help="the ModelDeployment")
        command.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig's)")
        if name == "promote":
            command.add_argument("--full", action="store_true", help="skip every remaining step")
        command.set_defaults(func=_request)
    status = commands.add_parser("status", help="show a rollout: steps, tracks, weights, what it waits for")
    status.add_argument("name", help="the ModelDeployment")
    status.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig's)")
    status.set_defaults(func=_status)


def build_plugin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl mdep", description="Promote, abort, retry and watch model rollouts.")
    _add_resource_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeploy", description="Safe rollouts of machine-learning models.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_resource_commands(commands)
    run = commands.add_parser(
        "run",
        help="run the operator against KUBECONFIG (or the in-cluster service account)",
        description="Run the operator. Without --namespace it watches every namespace.",
    )
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all")
    run.add_argument(
        "--shard-selector",
        type=_shard_selector,
        metavar="SELECTOR",
        help="act only on the ModelDeployments this label selector selects, in Kubernetes' syntax, e.g. "
        "'modeldeploy.io/shard=a' or 'tier in (gold,silver)'; other operators take the rest (docs/scaling.md). "
        "Needs --leader-elect-lease-name",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument(
        "--health-bind-address",
        default=":8081",
        help="serve /healthz (liveness) and /readyz (readiness, names the role) at HOST:PORT, on the leader and on "
        "a standby (default :8081; empty to disable)",
    )
    run.add_argument(
        "--health-endpoint",
        default="",
        help="also serve kopf's liveness at this URL, leader only, e.g. http://0.0.0.0:8082/healthz (off by default; "
        "kept for compatibility, --health-bind-address replaces it)",
    )
    run.add_argument(
        "--metrics-bind-address",
        default=":8080",
        help="serve Prometheus metrics at HOST:PORT (default :8080; empty to disable)",
    )
    election = run.add_argument_group("leader election", "one replica leads (runs the controller), the others wait")
    election.add_argument(
        "--leader-elect",
        type=_flag,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="hold a Lease before doing anything (default true; --leader-elect=false for a single process)",
    )
    election.add_argument(
        "--leader-elect-namespace",
        default="",
        help="the Lease's namespace (default: the kubeconfig context's, else the service account's, else default)",
    )
    election.add_argument(
        "--leader-elect-lease-name",
        default=None,
        help=f"the Lease's name (default {DEFAULT_LEASE_NAME}; required with --shard-selector, one per shard)",
    )
    election.add_argument(
        "--leader-elect-lease-duration",
        type=_seconds,
        default=15.0,
        metavar="SECONDS",
        help="how long a standby waits after the leader's last renewal before it takes over (default 15s)",
    )
    election.add_argument(
        "--leader-elect-renew-deadline",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long a leader keeps going without a renewal before it stops (default 10s)",
    )
    election.add_argument(
        "--leader-elect-retry-period",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how often to renew, or to try to take the Lease (default 2s)",
    )
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        _check_run(parser, args)
    result: int = args.func(args)
    return result


def kubectl_plugin(argv: list[str] | None = None) -> int:
    """`kubectl mdep ...`: kubectl runs `kubectl-mdep` from PATH."""
    args = build_plugin_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
