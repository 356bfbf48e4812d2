"""Benchmark: what the model server adds to a small model's prediction latency.

Serves a tiny scikit-learn model with the real runtime (`modeldeploy-runtime`, i.e. seldon-core-microservice)
on loopback ports, sends a few thousand sequential single-row predictions over one keep-alive connection, and
prints p50/p99 over HTTP beside p50/p99 of the same model's predict() called in this process, and the
difference: the serving overhead (HTTP, seldon's JSON handling, payload conversion, metrics).

    .venv/bin/python -m modeldeploy_testkit.bench runtime [--requests 3000]

Finishes within a minute; the request loop also stops at a time budget, so a slow machine only shortens it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import requests

from modeldeploy_testkit.bench import options
from modeldeploy_testkit.runtime_server import LOOPBACK, start_server

LOOP_BUDGET_SECONDS = 30.0
WARMUP_REQUESTS = 100
FEATURES = 8


def percentile(samples_ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples_ms), q))


def train(directory: Path) -> tuple[Path, Any]:
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, FEATURES))
    labels = (features @ rng.normal(size=FEATURES) > 0).astype(int)
    model = LogisticRegression().fit(features, labels)
    path = directory / "model.joblib"
    joblib.dump(model, path)
    return path, model


def time_http(session: requests.Session, url: str, rows: npt.NDArray[np.float64], count: int) -> list[float]:
    latencies_ms: list[float] = []
    budget_end = time.monotonic() + LOOP_BUDGET_SECONDS
    for index in range(count):
        payload = {"data": {"ndarray": [rows[index % len(rows)].tolist()]}}
        started = time.perf_counter()
        response = session.post(url, json=payload, timeout=10)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        latencies_ms.append(elapsed * 1000)
        if time.monotonic() > budget_end:
            break
    return latencies_ms


def time_in_process(model: Any, rows: npt.NDArray[np.float64], count: int) -> list[float]:
    latencies_ms: list[float] = []
    for index in range(count):
        row = rows[index % len(rows)].reshape(1, -1)
        started = time.perf_counter()
        model.predict(row)
        latencies_ms.append((time.perf_counter() - started) * 1000)
    return latencies_ms


def server_side_mean_ms(session: requests.Session, metrics_port: int) -> float | None:
    """Mean of modeldeploy_model_request_duration_seconds: the part of a request spent in the runtime's code."""
    from prometheus_client.parser import text_string_to_metric_families

    text = session.get(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=10).text
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "modeldeploy_model_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return total / count * 1000 if count else None


def main(argv: list[str] | None = None) -> int:
    parser = options("runtime", __doc__)
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests to time (default 3000)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="modeldeploy-bench-") as scratch:
        workdir = Path(scratch)
        model_path, model = train(workdir)
        rows = np.random.default_rng(2).normal(size=(64, FEATURES)).round(4)
        model_env = {
            "MODEL_NAME": "bench",
            "MODEL_VERSION": "1",
            "MODEL_URI": str(model_path),
            "MODEL_FORMAT": "sklearn",
        }
        # The numeric libraries keep the threads they would have in production: this measures serving, not a cap.
        server = start_server("bench", model_env, workdir, threads=None)
        session = requests.Session()
        try:
            started = time.monotonic()
            server.wait_ready()
            startup_s = time.monotonic() - started
            url = f"http://{LOOPBACK}:{server.http_port}/api/v1.0/predictions"
            time_http(session, url, rows, WARMUP_REQUESTS)
            http_ms = time_http(session, url, rows, args.requests)
            server_mean_ms = server_side_mean_ms(session, server.metrics_port)
        finally:
            session.close()
            server.stop()
        time_in_process(model, rows, WARMUP_REQUESTS)
        local_ms = time_in_process(model, rows, len(http_ms))

    http_p50, http_p99 = percentile(http_ms, 50), percentile(http_ms, 99)
    local_p50, local_p99 = percentile(local_ms, 50), percentile(local_ms, 99)
    print(f"runtime benchmark: sklearn LogisticRegression, {FEATURES} features, one row per request")
    print(f"  server start to ready      {startup_s:8.2f} s")
    print(f"  requests timed             {len(http_ms):8d} (sequential, one keep-alive connection)")
    print(f"  throughput                 {len(http_ms) / (sum(http_ms) / 1000):8.0f} requests/s")
    print(
        f"  HTTP        p50 / p99      {http_p50:8.3f} / {http_p99:8.3f} ms   mean {statistics.fmean(http_ms):.3f} ms"
    )
    print(f"  in-process  p50 / p99      {local_p50:8.3f} / {local_p99:8.3f} ms")
    print(f"  overhead    p50 / p99      {http_p50 - local_p50:8.3f} / {http_p99 - local_p99:8.3f} ms")
    if server_mean_ms is not None:
        print(f"  runtime code (mean, from modeldeploy_model_request_duration_seconds) {server_mean_ms:.3f} ms")
    return 0
