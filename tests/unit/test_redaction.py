"""Signed query strings and URI user info never reach the operator's log lines (and the runtime masks the same)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from modeldeploy import redaction
from modeldeploy_runtime import redaction as runtime_redaction

SIGNED = [
    "https://b.s3.amazonaws.com/m.joblib?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA1%2F2&X-Amz-Signature=abc123",
    "https://storage.googleapis.com/b/m.onnx?X-Goog-Algorithm=GOOG4&X-Goog-Signature=abc123&X-Goog-Date=1",
    "https://acct.blob.core.windows.net/c/m.onnx?sv=2022-11-02&sig=abc123&se=2026",
    "https://models.example/m.joblib?token=abc123#part",
    "https://models.example/m.joblib?a=1&access_token=abc123",
    "https://user:abc123@models.example/m.joblib",
]


@pytest.mark.parametrize("url", SIGNED)
def test_redact(url: str) -> None:
    masked = redaction.redact(f'"Apply failed" uri="{url}"')
    assert "abc123" not in masked
    assert "AKIA" not in masked
    assert "REDACTED" in masked
    # What is not a secret stays readable.
    assert masked.startswith('"Apply failed" uri="https://')


def test_other_query_parameters_stay() -> None:
    url = "https://models.example/m.joblib?version=3&X-Amz-Date=20261201"
    assert redaction.redact(url) == url


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test-redaction")
    logger.propagate = False
    logger.addHandler(handler)
    redaction.install(logger)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("url", SIGNED)
def test_every_log_line_is_masked(logged: tuple[logging.Logger, io.StringIO], url: str) -> None:
    logger, stream = logged
    logger.warning('Apply failed namespace="%s" uri="%s"', "models", url)
    try:
        raise RuntimeError(f"422 Deployment is invalid: env MODEL_URI={url}")
    except RuntimeError:
        logger.exception("Reconcile failed")

    output = stream.getvalue()
    assert "abc123" not in output
    assert output.count("REDACTED") >= 2
    assert "Traceback" in output


def test_install_reaches_kopfs_handler_and_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    from modeldeploy.kube.kopf_login import kopf

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        kopf.configure(verbose=False, log_format=kopf.LogFormat.PLAIN)
        redaction.install()
        redaction.install()
        assert all(
            sum(isinstance(f, redaction.RedactingFilter) for f in handler.filters) == 1 for handler in root.handlers
        )
        logging.getLogger("modeldeploy.reconcile").warning("GET %s failed", SIGNED[0])
        assert "abc123" not in capsys.readouterr().err
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)


def test_the_runtime_masks_the_same() -> None:
    assert redaction.SECRET_QUERY_PARAMETERS == runtime_redaction.SECRET_QUERY_PARAMETERS
    for url in [*SIGNED, "https://models.example/m?version=3"]:
        assert redaction.redact(url) == runtime_redaction.redact(url)
