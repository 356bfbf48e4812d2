"""`modeldeploy-runtime`: start seldon-core-microservice serving the model the environment describes.

    modeldeploy-runtime [--http-port 9000] [--metrics-port 6000] [--grpc-port 5000] [--threads 4]
    modeldeploy-runtime digest PATH...     print the SHA-256 that MODEL_SHA256 must hold for each artifact

This runs seldon's own entry point (the function behind the seldon-core-microservice script) in this process,
after two preparations that must happen before seldon is imported: the prometheus_client multiprocess
directory and the metrics class seldon's metrics port answers with. The settings passed to seldon keep the pod
small:
- one gunicorn worker, so the model is in memory once;
- worker threads (gunicorn's gthread worker): health probes are answered while a prediction runs, and a slow
  prediction does not stop the worker's heartbeat to the arbiter (gunicorn's timeout is seldon's
  `seldon.io/rest-timeout` annotation when the pod has one);
- no gRPC server unless asked for (--grpc-workers): each gRPC worker would load its own copy of the model;
- a graceful shutdown (shutdown.py): SIGTERM makes readiness 503 at once, the server keeps answering for
  MODEL_DRAIN_SECONDS, then lets the requests in flight finish and exits 0, all within
  MODEL_SHUTDOWN_TIMEOUT_SECONDS.
seldon binds 0.0.0.0 and has no option for another address.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from modeldeploy_runtime.config import DEFAULT_MULTIPROC_DIR, MULTIPROC_DIR_ENV
from modeldeploy_runtime.drain import ShutdownConfigError, ShutdownSettings
from modeldeploy_runtime.logs import configure_logging, kv

logger = logging.getLogger("modeldeploy_runtime.cli")

# seldon's own variable names, so a pod spec written for seldon keeps working.
HTTP_PORT_ENV = "PREDICTIVE_UNIT_HTTP_SERVICE_PORT"
METRICS_PORT_ENV = "PREDICTIVE_UNIT_METRICS_SERVICE_PORT"
GRPC_PORT_ENV = "PREDICTIVE_UNIT_GRPC_SERVICE_PORT"
THREADS_ENV = "GUNICORN_THREADS"
GRPC_WORKERS_ENV = "GRPC_WORKERS"
DEFAULT_HTTP_PORT = 9000
DEFAULT_METRICS_PORT = 6000
DEFAULT_GRPC_PORT = 5000
DEFAULT_THREADS = 4
MODEL_CLASS_PATH = "modeldeploy_runtime.model.ModelServer"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modeldeploy-runtime",
        description="Serve the model described by MODEL_NAME, MODEL_VERSION, MODEL_URI, MODEL_FORMAT and "
        "MODEL_SHA256 with seldon-core-microservice.",
    )
    parser.add_argument("--http-port", type=int, default=_env_int(HTTP_PORT_ENV, DEFAULT_HTTP_PORT))
    parser.add_argument("--metrics-port", type=int, default=_env_int(METRICS_PORT_ENV, DEFAULT_METRICS_PORT))
    parser.add_argument("--grpc-port", type=int, default=_env_int(GRPC_PORT_ENV, DEFAULT_GRPC_PORT))
    parser.add_argument(
        "--grpc-workers",
        type=int,
        default=_env_int(GRPC_WORKERS_ENV, 0),
        help="gRPC server processes (default 0: REST only; each one holds its own copy of the model)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=_env_int(THREADS_ENV, DEFAULT_THREADS),
        help="threads of the single gunicorn worker",
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    options = parser.parse_args(argv)
    for name in ("http_port", "metrics_port", "grpc_port"):
        port = getattr(options, name)
        if not 0 < port < 65536:
            parser.error(f"--{name.replace('_', '-')} {port} is not a port")
    if options.http_port == options.metrics_port:
        parser.error("--http-port and --metrics-port must differ")
    if options.threads < 1 or options.grpc_workers < 0:
        parser.error("--threads must be at least 1 and --grpc-workers at least 0")
    return options


def seldon_argv(options: argparse.Namespace, log_level: str) -> list[str]:
    return [
        "seldon-core-microservice",
        MODEL_CLASS_PATH,
        "--service-type",
        "MODEL",
        "--http-port",
        str(options.http_port),
        "--metrics-port",
        str(options.metrics_port),
        "--grpc-port",
        str(options.grpc_port),
        "--grpc-workers",
        str(options.grpc_workers),
        "--workers",
        "1",
        "--threads",
        str(options.threads),
        "--log-level",
        log_level,
    ]


def prepare_multiprocess_dir(environ: MutableMapping[str, str]) -> Path:
    """Point prometheus_client at an empty directory, before anything imports it.

    Emptied on every start: /tmp is an emptyDir that outlives a container restart, and the files of the
    previous container's processes would otherwise be added to the new counts.
    """
    directory = Path(environ.get(MULTIPROC_DIR_ENV) or DEFAULT_MULTIPROC_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.suffix == ".db" and entry.is_file():
            entry.unlink()
    environ[MULTIPROC_DIR_ENV] = str(directory)
    return directory


def disable_gunicorn_control_socket() -> None:
    """Turn off the control socket gunicorn 25+ opens by default, before seldon builds its gunicorn configs.

    It lives under $HOME, which the read-only root filesystem does not let us create; seldon's two gunicorn
    servers would both claim the same path; and nothing here manages workers through it. seldon passes
    gunicorn only the settings it knows, so the setting's default is the one place to say so.
    """
    config = importlib.import_module("gunicorn.config")
    setting = getattr(config, "ControlSocketDisable", None)
    if setting is not None:
        setting.default = True


def serve(argv: Sequence[str]) -> None:
    options = parse_args(argv)
    try:
        shutdown = ShutdownSettings.from_env(os.environ)
    except ShutdownConfigError as error:
        raise SystemExit(str(error)) from None
    log_level = (options.log_level or os.environ.get("SELDON_LOG_LEVEL") or "INFO").upper()
    configure_logging(log_level)
    if "prometheus_client" in sys.modules:
        # Its value class is chosen at import; imported too early, our metrics would stay in the worker.
        raise SystemExit("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    metrics_dir = prepare_multiprocess_dir(os.environ)
    disable_gunicorn_control_socket()

    from seldon_core import microservice

    from modeldeploy_runtime.seldon_metrics import RuntimeSeldonMetrics
    from modeldeploy_runtime.shutdown import RuntimeApplication

    microservice.SeldonMetrics = RuntimeSeldonMetrics
    microservice.UserModelApplication = RuntimeApplication.configure(shutdown)
    logger.info(
        kv(
            "Starting model server",
            model=os.environ.get("MODEL_NAME", ""),
            version=os.environ.get("MODEL_VERSION", ""),
            format=os.environ.get("MODEL_FORMAT", ""),
            uri=os.environ.get("MODEL_URI", ""),
            httpPort=options.http_port,
            metricsPort=options.metrics_port,
            grpcWorkers=options.grpc_workers,
            threads=options.threads,
            drainSeconds=shutdown.drain_seconds,
            shutdownTimeoutSeconds=shutdown.timeout_seconds,
            metricsDir=str(metrics_dir),
        )
    )
    sys.argv = seldon_argv(options, log_level)
    microservice.main()


def digest(argv: Sequence[str]) -> int:
    from modeldeploy_runtime.artifacts import artifact_sha256

    if not argv:
        print("usage: modeldeploy-runtime digest PATH...", file=sys.stderr)
        return 2
    status = 0
    for raw in argv:
        path = Path(raw)
        if not path.exists():
            print(f"{raw}: no such file or directory", file=sys.stderr)
            status = 1
            continue
        print(f"{artifact_sha256(path)}  {raw}")
    return status


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "digest":
        sys.exit(digest(args[1:]))
    serve(args)


if __name__ == "__main__":
    main()
