"""The `modeldeploy` command: `modeldeploy run` starts the operator."""

from __future__ import annotations

import argparse
import logging
import sys

import kopf
import prometheus_client


def _run(args: argparse.Namespace) -> int:
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("modeldeploy").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs every watch-event handler call; our own logs say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_bind_address:
        host, _, port = args.metrics_bind_address.rpartition(":")
        prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")
    # Importing registers the handlers with kopf's default registry.
    import modeldeploy.main  # noqa: F401

    namespaces = args.namespace or []
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=args.health_endpoint or None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeploy", description="Safe rollouts of machine-learning models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the operator against KUBECONFIG (or the in-cluster service account)",
        description="Run the operator. Without --namespace it watches every namespace.",
    )
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument(
        "--health-endpoint",
        default="",
        help="serve liveness at this URL, e.g. http://0.0.0.0:8080/healthz (off by default)",
    )
    run.add_argument(
        "--metrics-bind-address",
        default=":8080",
        help="serve Prometheus metrics at HOST:PORT (default :8080; empty to disable)",
    )
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
