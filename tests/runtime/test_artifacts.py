"""URI parsing, digests and fetching, without a server."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from modeldeploy_runtime.artifacts import (
    ArtifactLocation,
    DownloadLimits,
    Scheme,
    artifact_sha256,
    fetch_artifact,
    parse_model_uri,
    verify_sha256,
)
from modeldeploy_runtime.config import ConfigError, ModelIdentity, RuntimeConfig
from modeldeploy_runtime.errors import LoadFailure, ModelLoadError
from modeldeploy_runtime.loading import ModelLoader, State, Status
from modeldeploy_runtime.logs import KlogFormatter
from modeldeploy_runtime.metrics import RuntimeMetrics
from modeldeploy_testkit.runtime_server import file_server
from modeldeploy_testkit.waiting import free_port

PVC_ROOT = Path("/mnt/models")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "/models/m.joblib",
            ArtifactLocation("/models/m.joblib", Scheme.FILE, path=Path("/models/m.joblib")),
        ),
        ("models/m.joblib", ArtifactLocation("models/m.joblib", Scheme.FILE, path=Path("models/m.joblib"))),
        (
            "file:///models/m.joblib",
            ArtifactLocation("file:///models/m.joblib", Scheme.FILE, Path("/models/m.joblib")),
        ),
        ("file://localhost/a%20b", ArtifactLocation("file://localhost/a%20b", Scheme.FILE, Path("/a b"))),
        (
            "pvc://claim/dir/m.txt",
            ArtifactLocation("pvc://claim/dir/m.txt", Scheme.PVC, PVC_ROOT / "claim/dir/m.txt"),
        ),
        ("pvc://claim", ArtifactLocation("pvc://claim", Scheme.PVC, PVC_ROOT / "claim")),
        ("http://host:8080/m.onnx", ArtifactLocation("http://host:8080/m.onnx", Scheme.HTTP)),
        ("HTTPS://host/m.onnx?sig=1", ArtifactLocation("HTTPS://host/m.onnx?sig=1", Scheme.HTTP)),
        (
            "s3://bucket/a/b.joblib",
            ArtifactLocation("s3://bucket/a/b.joblib", Scheme.S3, bucket="bucket", key="a/b.joblib"),
        ),
        ("gs://bucket/dir/", ArtifactLocation("gs://bucket/dir/", Scheme.GS, bucket="bucket", key="dir/")),
    ],
)
def test_parse_model_uri(uri: str, expected: ArtifactLocation) -> None:
    assert parse_model_uri(uri, PVC_ROOT) == expected


def test_pvc_root_is_configurable() -> None:
    assert parse_model_uri("pvc://c/m", Path("/data")).path == Path("/data/c/m")


@pytest.mark.parametrize(
    ("uri", "phrase"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("file://otherhost/m", "only local files"),
        ("pvc:///m.joblib", "no claim name"),
        ("pvc://claim/../../etc/passwd", "climbs out"),
        ("http:///m", "no host"),
        ("s3://bucket", "needs a bucket and a key"),
        ("gs:///key", "needs a bucket and a key"),
        ("ftp://host/m", "not supported"),
    ],
)
def test_parse_model_uri_refuses(uri: str, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        parse_model_uri(uri, PVC_ROOT)


def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    artifact = tmp_path / "m.bin"
    artifact.write_bytes(b"model bytes" * 1000)

    assert artifact_sha256(artifact) == hashlib.sha256(b"model bytes" * 1000).hexdigest()


def _directory(tmp_path: Path) -> Path:
    root = tmp_path / "custom"
    (root / "pkg").mkdir(parents=True)
    (root / "model.py").write_text("class Model: ...\n")
    (root / "pkg" / "weights.bin").write_bytes(bytes(range(256)))
    (root / "Z-upper.txt").write_text("sorted by bytes: upper case first\n")
    return root


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils")
def test_directory_digest_matches_the_documented_shell_pipeline(tmp_path: Path) -> None:
    root = _directory(tmp_path)
    pipeline = "find . -type f ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"

    shell = subprocess.run(["bash", "-c", pipeline], cwd=root, check=True, capture_output=True, text=True)

    assert artifact_sha256(root) == shell.stdout.split()[0]


def test_directory_digest_ignores_bytecode_caches_and_sees_content(tmp_path: Path) -> None:
    root = _directory(tmp_path)
    before = artifact_sha256(root)

    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "model.cpython-312.pyc").write_bytes(b"\x00" * 16)
    assert artifact_sha256(root) == before

    (root / "pkg" / "weights.bin").write_bytes(b"changed")
    assert artifact_sha256(root) != before


def test_verify_sha256(tmp_path: Path) -> None:
    artifact = tmp_path / "m.bin"
    artifact.write_bytes(b"x")
    digest = hashlib.sha256(b"x").hexdigest()

    assert verify_sha256(artifact, digest) == digest
    assert verify_sha256(artifact, None) == digest
    with pytest.raises(ModelLoadError) as refused:
        verify_sha256(artifact, "f" * 64)
    assert refused.value.reason is LoadFailure.DIGEST_MISMATCH
    assert digest in refused.value.message


def test_local_artifacts_are_used_in_place(tmp_path: Path) -> None:
    artifact = tmp_path / "m.joblib"
    artifact.write_bytes(b"x")
    location = parse_model_uri(artifact.as_uri(), PVC_ROOT)

    assert fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=None) == artifact
    assert not (tmp_path / "cache").exists()


def test_missing_local_artifact_is_not_found(tmp_path: Path) -> None:
    location = parse_model_uri(str(tmp_path / "absent"), PVC_ROOT)

    with pytest.raises(ModelLoadError) as missing:
        fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=None)
    assert missing.value.reason is LoadFailure.NOT_FOUND


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    content = tmp_path / "served"
    content.mkdir()
    (content / "model.ubj").write_bytes(b"remote model")
    with file_server(content) as base_url:
        yield base_url, content


def test_http_download_keeps_the_file_name(tmp_path: Path, served: tuple[str, Path]) -> None:
    base_url, _ = served
    location = parse_model_uri(f"{base_url}/model.ubj", PVC_ROOT)

    path = fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=None)

    assert path.name == "model.ubj"
    assert path.read_bytes() == b"remote model"
    assert path.is_relative_to(tmp_path / "cache")
    # No staging leftovers next to the finished download.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.parent.name]


def test_http_download_is_reused_only_when_a_digest_proves_it(tmp_path: Path, served: tuple[str, Path]) -> None:
    base_url, content = served
    location = parse_model_uri(f"{base_url}/model.ubj", PVC_ROOT)
    digest = hashlib.sha256(b"remote model").hexdigest()
    first = fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=digest)

    (content / "model.ubj").write_bytes(b"changed upstream")
    again = fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=digest)
    assert again == first
    assert again.read_bytes() == b"remote model"

    fresh = fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=None)
    assert fresh.read_bytes() == b"changed upstream"


def test_http_404_is_not_found(tmp_path: Path, served: tuple[str, Path]) -> None:
    base_url, _ = served
    location = parse_model_uri(f"{base_url}/absent.joblib", PVC_ROOT)

    with pytest.raises(ModelLoadError) as missing:
        fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=None)
    assert missing.value.reason is LoadFailure.NOT_FOUND


def test_unreachable_http_is_a_retryable_download_failure(tmp_path: Path) -> None:
    location = parse_model_uri(f"http://127.0.0.1:{free_port()}/x", PVC_ROOT)

    with pytest.raises(ModelLoadError) as failed:
        fetch_artifact(location, tmp_path / "cache", timeout_seconds=5, expected_sha256=None)
    assert failed.value.reason is LoadFailure.DOWNLOAD_FAILED
    assert failed.value.reason.retryable
    assert not list((tmp_path / "cache").iterdir())


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An in-process S3 (moto): boto3's requests never leave the process."""
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        client.put_object(Bucket="models", Key="iris/1.0/model.joblib", Body=b"one object")
        client.put_object(Bucket="models", Key="custom/2.0/model.py", Body=b"class Model: ...\n")
        client.put_object(Bucket="models", Key="custom/2.0/lib/helper.py", Body=b"X = 1\n")
        yield client


def test_s3_object(tmp_path: Path, s3: object) -> None:
    location = parse_model_uri("s3://models/iris/1.0/model.joblib", PVC_ROOT)

    path = fetch_artifact(location, tmp_path, timeout_seconds=5, expected_sha256=None)

    assert path.name == "model.joblib"
    assert path.read_bytes() == b"one object"


def test_s3_prefix_is_a_directory(tmp_path: Path, s3: object) -> None:
    location = parse_model_uri("s3://models/custom/2.0", PVC_ROOT)

    path = fetch_artifact(location, tmp_path, timeout_seconds=5, expected_sha256=None)

    assert path.is_dir()
    assert (path / "model.py").read_bytes() == b"class Model: ...\n"
    assert (path / "lib" / "helper.py").read_bytes() == b"X = 1\n"


@pytest.mark.parametrize("uri", ["s3://models/absent.joblib", "s3://no-such-bucket/m.joblib"])
def test_s3_missing_is_not_found(tmp_path: Path, s3: object, uri: str) -> None:
    with pytest.raises(ModelLoadError) as missing:
        fetch_artifact(parse_model_uri(uri, PVC_ROOT), tmp_path, timeout_seconds=5, expected_sha256=None)
    assert missing.value.reason is LoadFailure.NOT_FOUND


class _FakeBlob:
    # What the object's metadata says its size is, when a test wants it to lie.
    stated_size: ClassVar[int | None] = None

    def __init__(self, store: dict[str, bytes], name: str) -> None:
        self._store = store
        self.name = name
        self.size = self.stated_size if self.stated_size is not None else len(store.get(name, b""))

    def download_to_file(self, stream: Any, timeout: object = None) -> None:
        data = self._store[self.name]
        # As the real client does: in chunks, each written as it comes.
        for start in range(0, len(data), 4):
            stream.write(data[start : start + 4])


class _FakeBucket:
    def __init__(self, store: dict[str, bytes]) -> None:
        self._store = store

    def get_blob(self, name: str, timeout: float | None = None) -> _FakeBlob | None:
        return _FakeBlob(self._store, name) if name in self._store else None


_GCS_OBJECTS = {
    "iris/model.joblib": b"gcs object",
    "custom/model.py": b"class Model: ...\n",
    "custom/data/w.txt": b"1 2 3\n",
}


class _FakeGcsClient:
    """Stands in for google.cloud.storage.Client: there is no GCS emulator here, and no network."""

    credentials_available = True

    def __init__(self, anonymous: bool = False) -> None:
        if not anonymous and not self.credentials_available:
            import google.auth.exceptions

            raise google.auth.exceptions.DefaultCredentialsError("no credentials")  # type: ignore[no-untyped-call]
        self.anonymous = anonymous

    def bucket(self, name: str) -> _FakeBucket:
        return _FakeBucket(_GCS_OBJECTS)

    def list_blobs(self, bucket: str, prefix: str, timeout: float | None = None) -> list[_FakeBlob]:
        return [_FakeBlob(_GCS_OBJECTS, name) for name in sorted(_GCS_OBJECTS) if name.startswith(prefix)]

    @classmethod
    def create_anonymous_client(cls) -> _FakeGcsClient:
        created = cls(anonymous=True)
        cls.anonymous_clients.append(created)
        return created

    anonymous_clients: ClassVar[list[_FakeGcsClient]] = []


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> type[_FakeGcsClient]:
    from google.cloud import storage

    monkeypatch.setattr(storage, "Client", _FakeGcsClient)
    monkeypatch.setattr(_FakeGcsClient, "anonymous_clients", [])
    return _FakeGcsClient


def test_gcs_object_and_prefix(tmp_path: Path, gcs: type[_FakeGcsClient]) -> None:
    single = fetch_artifact(
        parse_model_uri("gs://models/iris/model.joblib", PVC_ROOT), tmp_path, timeout_seconds=5, expected_sha256=None
    )
    directory = fetch_artifact(
        parse_model_uri("gs://models/custom", PVC_ROOT), tmp_path, timeout_seconds=5, expected_sha256=None
    )

    assert single.read_bytes() == b"gcs object"
    assert (directory / "model.py").read_bytes() == b"class Model: ...\n"
    assert (directory / "data" / "w.txt").read_bytes() == b"1 2 3\n"
    assert gcs.anonymous_clients == []


def test_gcs_missing_is_not_found(tmp_path: Path, gcs: type[_FakeGcsClient]) -> None:
    with pytest.raises(ModelLoadError) as missing:
        fetch_artifact(
            parse_model_uri("gs://models/absent", PVC_ROOT), tmp_path, timeout_seconds=5, expected_sha256=None
        )
    assert missing.value.reason is LoadFailure.NOT_FOUND


def test_gcs_without_credentials_is_an_error_not_anonymous(
    tmp_path: Path, gcs: type[_FakeGcsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "credentials_available", False)

    with pytest.raises(ModelLoadError) as refused:
        fetch_artifact(parse_model_uri("gs://public/iris/model.joblib", PVC_ROOT), tmp_path, expected_sha256=None)

    assert refused.value.reason is LoadFailure.NO_CREDENTIALS
    assert "MODEL_STORAGE_ANONYMOUS=true" in refused.value.message
    assert gcs.anonymous_clients == []


def test_gcs_reads_anonymously_only_when_asked(
    tmp_path: Path, gcs: type[_FakeGcsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "credentials_available", False)

    path = fetch_artifact(
        parse_model_uri("gs://public/iris/model.joblib", PVC_ROOT),
        tmp_path,
        expected_sha256=None,
        limits=DownloadLimits(anonymous=True),
    )

    assert path.read_bytes() == b"gcs object"
    assert len(gcs.anonymous_clients) == 1


def test_gcs_size_limit(tmp_path: Path, gcs: type[_FakeGcsClient]) -> None:
    with pytest.raises(ModelLoadError) as refused:
        fetch_artifact(
            parse_model_uri("gs://models/custom", PVC_ROOT),
            tmp_path,
            expected_sha256=None,
            limits=DownloadLimits(max_bytes=10),
        )
    assert refused.value.reason is LoadFailure.TOO_LARGE
    assert list(tmp_path.iterdir()) == []


def test_gcs_size_limit_holds_when_the_stated_size_is_wrong(
    tmp_path: Path, gcs: type[_FakeGcsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_FakeBlob, "stated_size", 1)

    with pytest.raises(ModelLoadError) as refused:
        fetch_artifact(
            parse_model_uri("gs://models/iris/model.joblib", PVC_ROOT),
            tmp_path,
            expected_sha256=None,
            limits=DownloadLimits(max_bytes=5),
        )
    assert refused.value.reason is LoadFailure.TOO_LARGE
    assert list(tmp_path.iterdir()) == []


# ---- limits, headers and credentials against misbehaving servers


class _Misbehaving(BaseHTTPRequestHandler):
    """GET .../drip: one byte every 0.2 s of a stated megabyte; .../big: 5000 bytes, no length stated;
    .../stated-big: a terabyte announced; .../redirect: to `redirect_to`; anything else: 5 bytes. Every request's
    headers are kept for the tests to read."""

    seen: ClassVar[list[dict[str, str]]] = []
    redirect_to: ClassVar[str] = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests' output stays clean

    def do_HEAD(self) -> None:
        self.seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        path = urlsplit(self.path).path
        if path.endswith("/drip"):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the client gave up, as it should
        elif path.endswith("/big"):
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"y" * 5000)
        elif path.endswith("/stated-big"):
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif path.endswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            body = b"model"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def misbehaving(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(_Misbehaving, "seen", [])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _leftovers(cache: Path) -> list[str]:
    return [str(p.relative_to(cache)) for p in cache.rglob("*")] if cache.exists() else []


def test_a_dripping_server_meets_the_overall_deadline(tmp_path: Path, misbehaving: str) -> None:
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as failed:
        fetch_artifact(
            parse_model_uri(f"{misbehaving}/drip", PVC_ROOT),
            tmp_path / "cache",
            expected_sha256=None,
            limits=DownloadLimits(timeout_seconds=1.5),
        )
    elapsed = time.monotonic() - started

    assert failed.value.reason is LoadFailure.DOWNLOAD_FAILED
    assert "did not finish within 1.5s" in failed.value.message
    # Every byte came well within any per-read timeout; only a wall-clock deadline stops it.
    assert elapsed < 3.0
    assert _leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("path", ["big", "stated-big"])
def test_too_much_is_refused_and_nothing_stays(tmp_path: Path, misbehaving: str, path: str) -> None:
    with pytest.raises(ModelLoadError) as refused:
        fetch_artifact(
            parse_model_uri(f"{misbehaving}/{path}", PVC_ROOT),
            tmp_path / "cache",
            expected_sha256=None,
            limits=DownloadLimits(max_bytes=1000),
        )

    assert refused.value.reason is LoadFailure.TOO_LARGE
    assert not refused.value.reason.retryable
    assert "MODEL_MAX_BYTES=1000" in refused.value.message
    assert _leftovers(tmp_path / "cache") == []


def test_exactly_the_limit_is_allowed(tmp_path: Path, misbehaving: str) -> None:
    path = fetch_artifact(
        parse_model_uri(f"{misbehaving}/model.bin", PVC_ROOT),
        tmp_path / "cache",
        expected_sha256=None,
        limits=DownloadLimits(max_bytes=5),
    )
    assert path.read_bytes() == b"model"


def test_partial_downloads_of_an_earlier_process_are_removed(tmp_path: Path, misbehaving: str) -> None:
    uri = f"{misbehaving}/model.bin"
    cache = tmp_path / "cache"
    stale = cache / (hashlib.sha256(uri.encode()).hexdigest()[:16] + ".partial-1")
    stale.mkdir(parents=True)
    (stale / "model.bin").write_bytes(b"half")

    path = fetch_artifact(parse_model_uri(uri, PVC_ROOT), cache, expected_sha256=None)

    assert _leftovers(cache) == [path.parent.name, f"{path.parent.name}/model.bin"]


def test_headers_go_to_the_uris_origin_only(tmp_path: Path, misbehaving: str) -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        _Misbehaving.redirect_to = f"http://127.0.0.1:{other.server_address[1]}/model.bin"
        headers = (("Authorization", "Bearer s3cr3t"), ("X-Api-Key", "k"))
        fetch_artifact(
            parse_model_uri(f"{misbehaving}/redirect", PVC_ROOT),
            tmp_path / "cache",
            expected_sha256=None,
            limits=DownloadLimits(headers=headers),
        )
    finally:
        other.shutdown()
        other.server_close()

    first, second = _Misbehaving.seen
    assert (first["Authorization"], first["X-Api-Key"]) == ("Bearer s3cr3t", "k")
    assert "Authorization" not in second
    assert "X-Api-Key" not in second


def test_a_uri_with_user_info_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_model_uri("https://user:hunter2@models.example/m.joblib", PVC_ROOT)
    assert "user info" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "text",
    [
        "GET https://b.s3.amazonaws.com/m?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123 failed",
        'uri="https://storage.googleapis.com/b/m?X-Goog-Signature=abc123&X-Goog-Date=1"',
        "https://acct.blob.core.windows.net/c/m?sv=2022&sig=abc123",
        "https://h/m?token=abc123#frag",
        "https://user:abc123@h/m",
    ],
)
def test_signed_query_strings_are_redacted_in_log_lines(text: str) -> None:
    record = logging.LogRecord("modeldeploy_runtime", logging.ERROR, "artifacts.py", 1, text, None, None)

    line = KlogFormatter().format(record)

    assert "abc123" not in line
    assert "REDACTED" in line
    assert "AKIA" not in line


def test_a_failed_load_logs_and_serves_a_redacted_uri(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/m.joblib?X-Amz-Signature=abc123"
    config = RuntimeConfig.from_env(
        {"MODEL_URI": url, "MODEL_FORMAT": "sklearn", "MODEL_CACHE_DIR": str(tmp_path / "cache")}
    )
    metrics = RuntimeMetrics(ModelIdentity("m", "1"), CollectorRegistry())
    loader = ModelLoader(ModelIdentity("m", "1"), config, "", metrics)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(KlogFormatter())
    logging.getLogger("modeldeploy_runtime").addHandler(handler)
    try:
        loader.start()
        status = _wait_failed(loader)
        loader.stop()
    finally:
        logging.getLogger("modeldeploy_runtime").removeHandler(handler)

    assert isinstance(handler.stream, io.StringIO)
    logged = handler.stream.getvalue()
    assert "Model load failed" in logged
    assert "abc123" not in logged
    assert "abc123" not in status.message
    assert "X-Amz-Signature=REDACTED" in status.message


def _wait_failed(loader: ModelLoader) -> Status:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = loader.status()
        if status.state is State.FAILED:
            return status
        time.sleep(0.05)
    raise AssertionError(f"the loader did not fail: {loader.status()}")


@pytest.fixture
def fake_s3(misbehaving: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """botocore pointed at the misbehaving server: a real socket, so the deadline meets a real slow read."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": misbehaving,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return misbehaving


def test_a_dripping_s3_endpoint_meets_the_overall_deadline(tmp_path: Path, fake_s3: str) -> None:
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as failed:
        fetch_artifact(
            parse_model_uri("s3://models/drip", PVC_ROOT),
            tmp_path / "cache",
            expected_sha256=None,
            limits=DownloadLimits(timeout_seconds=1.5),
        )

    assert failed.value.reason is LoadFailure.DOWNLOAD_FAILED, failed.value.message
    assert time.monotonic() - started < 3.5
    assert _leftovers(tmp_path / "cache") == []


def test_s3_size_limit(tmp_path: Path, s3: object) -> None:
    for uri in ("s3://models/iris/1.0/model.joblib", "s3://models/custom/2.0"):
        with pytest.raises(ModelLoadError) as refused:
            fetch_artifact(
                parse_model_uri(uri, PVC_ROOT), tmp_path, expected_sha256=None, limits=DownloadLimits(max_bytes=5)
            )
        assert refused.value.reason is LoadFailure.TOO_LARGE
    assert list(tmp_path.iterdir()) == []


def _no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_s3_without_credentials_is_a_clear_error(tmp_path: Path, s3: object, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_aws_credentials(monkeypatch, tmp_path)

    with pytest.raises(ModelLoadError) as refused:
        fetch_artifact(
            parse_model_uri("s3://models/iris/1.0/model.joblib", PVC_ROOT), tmp_path / "cache", expected_sha256=None
        )

    assert refused.value.reason is LoadFailure.NO_CREDENTIALS
    assert "MODEL_STORAGE_ANONYMOUS=true" in refused.value.message


def test_s3_reads_unsigned_when_asked(tmp_path: Path, fake_s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_aws_credentials(monkeypatch, tmp_path)

    path = fetch_artifact(
        parse_model_uri("s3://models/model.bin", PVC_ROOT),
        tmp_path / "cache",
        expected_sha256=None,
        limits=DownloadLimits(anonymous=True),
    )

    assert path.read_bytes() == b"model"
    assert _Misbehaving.seen
    assert all("Authorization" not in headers for headers in _Misbehaving.seen)


def test_gcs_starting_over_counts_from_zero(
    tmp_path: Path, gcs: type[_FakeGcsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def twice(self: _FakeBlob, stream: Any, timeout: object = None) -> None:
        # As the client does when a transcoded object comes back whole after a retry: rewind, then all again.
        stream.write(self._store[self.name])
        stream.seek(0)
        stream.write(self._store[self.name])

    monkeypatch.setattr(_FakeBlob, "download_to_file", twice)

    path = fetch_artifact(
        parse_model_uri("gs://models/iris/model.joblib", PVC_ROOT),
        tmp_path,
        expected_sha256=None,
        limits=DownloadLimits(max_bytes=len(b"gcs object")),
    )

    assert path.read_bytes() == b"gcs object"
