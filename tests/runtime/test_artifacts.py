"""URI parsing, digests and fetching, without a server."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from modeldeploy_runtime.artifacts import (
    ArtifactLocation,
    Scheme,
    artifact_sha256,
    fetch_artifact,
    parse_model_uri,
    verify_sha256,
)
from modeldeploy_runtime.config import ConfigError
from modeldeploy_runtime.errors import LoadFailure, ModelLoadError
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
    def __init__(self, store: dict[str, bytes], name: str) -> None:
        self._store = store
        self.name = name

    def exists(self, timeout: float | None = None) -> bool:
        return self.name in self._store

    def download_to_filename(self, filename: str, timeout: float | None = None) -> None:
        Path(filename).write_bytes(self._store[self.name])


class _FakeBucket:
    def __init__(self, store: dict[str, bytes]) -> None:
        self._store = store

    def blob(self, name: str) -> _FakeBlob:
        return _FakeBlob(self._store, name)


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


def test_gcs_missing_is_not_found(tmp_path: Path, gcs: type[_FakeGcsClient]) -> None:
    with pytest.raises(ModelLoadError) as missing:
        fetch_artifact(
            parse_model_uri("gs://models/absent", PVC_ROOT), tmp_path, timeout_seconds=5, expected_sha256=None
        )
    assert missing.value.reason is LoadFailure.NOT_FOUND


def test_gcs_without_credentials_reads_anonymously(
    tmp_path: Path, gcs: type[_FakeGcsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "credentials_available", False)
    monkeypatch.setattr(gcs, "anonymous_clients", [])

    path = fetch_artifact(
        parse_model_uri("gs://public/iris/model.joblib", PVC_ROOT), tmp_path, timeout_seconds=5, expected_sha256=None
    )

    assert path.read_bytes() == b"gcs object"
    assert len(gcs.anonymous_clients) == 1
