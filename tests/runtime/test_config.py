"""The environment contract, log lines and the metrics' own behaviour."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from modeldeploy_runtime import metrics as names
from modeldeploy_runtime.cli import parse_args, prepare_multiprocess_dir, seldon_argv
from modeldeploy_runtime.config import ConfigError, ModelFormat, ModelIdentity, RuntimeConfig, parse_sha256
from modeldeploy_runtime.errors import RequestError
from modeldeploy_runtime.logs import KlogFormatter, kv
from modeldeploy_testkit.runtime_server import metric_key, parse_metrics

BASE_ENV = {
    "MODEL_NAME": "iris",
    "MODEL_VERSION": "1.2.0",
    "MODEL_URI": "s3://models/iris.joblib",
    "MODEL_FORMAT": "sklearn",
}


def test_config_from_env_with_defaults() -> None:
    config = RuntimeConfig.from_env(BASE_ENV)

    assert config.identity == ModelIdentity("iris", "1.2.0")
    assert config.format is ModelFormat.SKLEARN
    assert config.sha256 is None
    assert config.model_class == "Model"
    assert config.predict_method == "predict"
    assert config.cache_dir == Path("/tmp/modeldeploy-models")
    assert config.pvc_root == Path("/mnt/models")


def test_config_overrides() -> None:
    config = RuntimeConfig.from_env(
        {
            **BASE_ENV,
            "MODEL_FORMAT": "Custom",
            "MODEL_CLASS": "Scorer",
            "MODEL_CACHE_DIR": "/tmp/c",
            "MODEL_PVC_ROOT": "/data",
            "MODEL_DOWNLOAD_TIMEOUT_SECONDS": "5",
        }
    )

    assert config.format is ModelFormat.CUSTOM
    assert (config.model_class, config.cache_dir, config.pvc_root) == (
        "Scorer",
        Path("/tmp/c"),
        Path("/data"),
    )
    assert config.download_timeout_seconds == 5.0


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"MODEL_URI": ""}, "MODEL_URI is not set"),
        ({"MODEL_FORMAT": ""}, "MODEL_FORMAT is not set"),
        ({"MODEL_FORMAT": "tensorflow"}, "not one of sklearn"),
        ({"MODEL_SHA256": "abc"}, "64 hex characters"),
        ({"MODEL_PREDICT_METHOD": "transform"}, "not one of predict"),
        ({"MODEL_FORMAT": "onnx", "MODEL_PREDICT_METHOD": "predict_proba"}, "sklearn format only"),
        ({"MODEL_DOWNLOAD_TIMEOUT_SECONDS": "soon"}, "not a number"),
        ({"MODEL_DOWNLOAD_TIMEOUT_SECONDS": "0"}, "positive"),
    ],
)
def test_config_errors(overrides: dict[str, str], phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        RuntimeConfig.from_env({**BASE_ENV, **overrides})


def test_identity_is_known_even_without_the_variables() -> None:
    assert ModelIdentity.from_env({}) == ModelIdentity("unknown", "unknown")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", None), ("  ", None), ("AB" * 32, "ab" * 32), ("sha256:" + "0" * 64, "0" * 64)],
)
def test_parse_sha256(raw: str, expected: str | None) -> None:
    assert parse_sha256(raw) == expected


def test_cli_ports_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "9100")
    monkeypatch.delenv("PREDICTIVE_UNIT_METRICS_SERVICE_PORT", raising=False)
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    monkeypatch.delenv("GRPC_WORKERS", raising=False)

    from_env = parse_args([])
    from_flags = parse_args(["--http-port", "9200", "--metrics-port", "9201", "--threads", "2"])

    assert (from_env.http_port, from_env.metrics_port, from_env.grpc_workers) == (9100, 6000, 0)
    argv = seldon_argv(from_flags, "INFO")
    assert argv[:4] == [
        "seldon-core-microservice",
        "modeldeploy_runtime.model.ModelServer",
        "--service-type",
        "MODEL",
    ]
    flags = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert flags["--http-port"] == "9200"
    assert flags["--metrics-port"] == "9201"
    assert flags["--workers"] == "1"
    assert flags["--threads"] == "2"
    assert flags["--grpc-workers"] == "0"


def test_cli_refuses_one_port_for_two_servers() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--http-port", "9000", "--metrics-port", "9000"])


def test_multiprocess_dir_is_emptied_of_stale_values(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}

    assert prepare_multiprocess_dir(environ) == directory
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


def test_kv_quotes_strings_and_keeps_numbers_bare() -> None:
    line = kv("Loaded model", model="iris", err='bad "thing"\nhere', seconds=0.5, attempt=2, verified=True)

    assert line == ('"Loaded model" model="iris" err="bad \\"thing\\"\\nhere" seconds=0.5 attempt=2 verified=true')


def test_klog_header() -> None:
    record = logging.LogRecord("x", logging.ERROR, "/src/loading.py", 88, kv("Model load failed"), None, None)

    line = KlogFormatter().format(record)

    assert re.match(r'^E\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ loading\.py:88\] "Model load failed"$', line)


def test_metrics_names_labels_and_zero_series() -> None:
    registry = CollectorRegistry()
    metrics = names.RuntimeMetrics(ModelIdentity("iris", "2"), registry)
    labels = {"model": "iris", "version": "2"}

    metrics.start()
    samples = parse_metrics(generate_latest(registry).decode())

    assert samples[metric_key(names.REQUESTS_TOTAL, **labels, outcome="success")] == 0
    assert samples[metric_key(names.REQUESTS_TOTAL, **labels, outcome="error")] == 0
    for reason in RequestError:
        assert samples[metric_key(names.ERRORS_TOTAL, **labels, reason=reason.value)] == 0
    assert samples[metric_key(names.MODEL_READY, **labels)] == 0
    assert samples[metric_key(names.REQUEST_DURATION_SECONDS + "_count", **labels)] == 0


def test_metrics_record_outcomes_and_outputs() -> None:
    registry = CollectorRegistry()
    metrics = names.RuntimeMetrics(ModelIdentity("iris", "2"), registry)
    labels = {"model": "iris", "version": "2"}
    metrics.start()

    metrics.record_success(0.002, np.array([[0.25, 0.75], [np.nan, 1.5]]))
    metrics.record_error(RequestError.NOT_READY)
    metrics.mark_ready("sklearn", "a" * 64)
    samples = parse_metrics(generate_latest(registry).decode())

    assert samples[metric_key(names.REQUESTS_TOTAL, **labels, outcome="success")] == 1
    assert samples[metric_key(names.REQUESTS_TOTAL, **labels, outcome="error")] == 1
    assert samples[metric_key(names.ERRORS_TOTAL, **labels, reason="not_ready")] == 1
    assert samples[metric_key(names.REQUEST_DURATION_SECONDS + "_bucket", **labels, le="0.0025")] == 1
    # The NaN is dropped: it would poison the histogram's sum.
    assert samples[metric_key(names.PREDICTION_VALUE + "_count", **labels, output="0")] == 1
    assert samples[metric_key(names.PREDICTION_VALUE + "_count", **labels, output="1")] == 2
    assert samples[metric_key(names.PREDICTION_VALUE + "_bucket", **labels, output="1", le="1.0")] == 1
    assert samples[metric_key(names.PREDICTION_VALUE + "_bucket", **labels, output="1", le="2.0")] == 2
    assert samples[metric_key(names.MODEL_READY, **labels)] == 1
    assert samples[metric_key(names.MODEL_INFO, **labels, format="sklearn", sha256="a" * 64)] == 1


def test_download_limits_and_headers_from_env() -> None:
    config = RuntimeConfig.from_env(
        {
            **BASE_ENV,
            "MODEL_MAX_BYTES": "1048576",
            "MODEL_STORAGE_ANONYMOUS": "true",
            "MODEL_HTTP_HEADER_Authorization": "Bearer t\n",
            "MODEL_HTTP_HEADER_X-Api-Key": "k",
        }
    )

    assert config.max_bytes == 1048576
    assert config.anonymous_storage is True
    assert config.http_headers == (("Authorization", "Bearer t"), ("X-Api-Key", "k"))


def test_download_defaults() -> None:
    config = RuntimeConfig.from_env(BASE_ENV)

    assert config.download_timeout_seconds == 600.0
    assert config.max_bytes == 4 * 1024**3
    assert config.anonymous_storage is False
    assert config.http_headers == ()


@pytest.mark.parametrize(
    ("name", "value", "phrase"),
    [
        ("MODEL_MAX_BYTES", "1Gi", "whole number"),
        ("MODEL_MAX_BYTES", "0", "positive"),
        ("MODEL_STORAGE_ANONYMOUS", "maybe", "true or false"),
        ("MODEL_HTTP_HEADER_Bad Name", "v", "header name"),
        ("MODEL_HTTP_HEADER_X", "a\r\nInjected: 1", "line break"),
    ],
)
def test_download_settings_refused(name: str, value: str, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase) as refused:
        RuntimeConfig.from_env({**BASE_ENV, name: value})
    assert "Injected" not in str(refused.value)
