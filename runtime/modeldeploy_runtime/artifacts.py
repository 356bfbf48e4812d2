"""Where the model artifact comes from: URI parsing, fetching into the local cache, and the SHA-256 check.

Local artifacts (plain paths, file://, pvc://) are read in place: copying a multi-gigabyte model out of a
volume would only double the disk it needs. Remote ones (http(s)://, s3://, gs://) are downloaded into the
cache directory, staged under a temporary name and renamed when complete, so an interrupted download never
looks whole and never stays behind.

Every download attempt has one wall-clock deadline (MODEL_DOWNLOAD_TIMEOUT_SECONDS: connecting, every object of
a prefix, every byte) and one byte allowance (MODEL_MAX_BYTES, which the operator derives from the cache volume's
sizeLimit): a server that drips or sends too much fails the attempt instead of holding it or filling the disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3

from modeldeploy_runtime.config import (
    DEFAULT_DOWNLOAD_TIMEOUT_SECONDS,
    DEFAULT_MAX_BYTES,
    ENV_MODEL_DOWNLOAD_TIMEOUT,
    ENV_MODEL_MAX_BYTES,
    ENV_MODEL_STORAGE_ANONYMOUS,
    HTTP_HEADER_ENV_PREFIX,
    ConfigError,
)
from modeldeploy_runtime.errors import LoadFailure, ModelLoadError
from modeldeploy_runtime.logs import kv
from modeldeploy_runtime.redaction import redact

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
_CONNECT_TIMEOUT_SECONDS = 10.0
# Bytecode caches appear next to a custom model's sources whenever Python may write there; they must not
# change the directory's digest between one start and the next.
_DIGEST_IGNORED_DIRS = frozenset({"__pycache__"})
_DEFAULT_FILE_NAME = "model"


class Scheme(StrEnum):
    FILE = "file"
    PVC = "pvc"
    HTTP = "http"
    S3 = "s3"
    GS = "gs"


@dataclass(frozen=True)
class ArtifactLocation:
    uri: str
    scheme: Scheme
    # Set for file and pvc: the artifact on this machine.
    path: Path | None = None
    # Set for s3 and gs.
    bucket: str = ""
    key: str = ""

    @property
    def is_local(self) -> bool:
        return self.path is not None


def parse_model_uri(uri: str, pvc_root: Path) -> ArtifactLocation:
    """Turn MODEL_URI into a location; raises ConfigError for anything the runtime cannot fetch."""
    text = uri.strip()
    if not text:
        raise ConfigError("the model URI is empty")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "":
        return ArtifactLocation(uri=text, scheme=Scheme.FILE, path=Path(text))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file URI {text!r} names host {parts.netloc!r}; only local files can be read")
        path = unquote(parts.path)
        if not path:
            raise ConfigError(f"file URI {text!r} has no path")
        return ArtifactLocation(uri=text, scheme=Scheme.FILE, path=Path(path))
    if scheme == "pvc":
        claim = parts.netloc
        if not claim:
            raise ConfigError(f"pvc URI {text!r} has no claim name (pvc://CLAIM/path)")
        inner = _safe_relative(unquote(parts.path), text)
        return ArtifactLocation(uri=text, scheme=Scheme.PVC, path=pvc_root / claim / inner)
    if parts.netloc.rpartition("@")[0]:
        # Credentials in a URI end up in the Deployment, in logs and in health answers: refused everywhere.
        raise ConfigError(
            f"URI {redact(text)!r} holds user info (user:password@); send credentials as headers "
            f"({HTTP_HEADER_ENV_PREFIX}<Name>) or through the object store's credentials"
        )
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ConfigError(f"URL {text!r} has no host")
        return ArtifactLocation(uri=text, scheme=Scheme.HTTP)
    if scheme in ("s3", "gs"):
        key = parts.path.lstrip("/")
        if not parts.netloc or not key:
            raise ConfigError(f"{scheme} URI {text!r} needs a bucket and a key ({scheme}://bucket/key)")
        return ArtifactLocation(uri=text, scheme=Scheme(scheme), bucket=parts.netloc, key=key)
    raise ConfigError(f"URI scheme {parts.scheme!r} of {text!r} is not supported (file, pvc, http(s), s3, gs)")


def _safe_relative(path: str, uri: str) -> PurePosixPath:
    relative = PurePosixPath(path.lstrip("/"))
    if ".." in relative.parts:
        raise ConfigError(f"URI {uri!r} climbs out of its volume with '..'")
    return relative


# ---- digests


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's listing of file digests.

    A directory's digest equals the coreutils pipeline
        cd DIR && find . -type f ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
            | xargs -0 sha256sum | sha256sum
    so anyone can compute it without this package (or with `modeldeploy-runtime digest DIR`).
    """
    if not path.is_dir():
        return file_sha256(path)
    entries: list[tuple[bytes, str]] = []
    for current, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in _DIGEST_IGNORED_DIRS]
        for name in files:
            full = Path(current) / name
            if full.is_symlink() or not full.is_file():
                continue  # find -type f lists neither symlinks nor special files
            relative = "./" + full.relative_to(path).as_posix()
            entries.append((os.fsencode(relative), file_sha256(full)))
    listing = hashlib.sha256()
    for relative_bytes, file_digest in sorted(entries):
        listing.update(file_digest.encode() + b"  " + relative_bytes + b"\n")
    return listing.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> str:
    """Return the artifact's digest; refuse it when it is not the expected one."""
    actual = artifact_sha256(path)
    if expected is not None and actual != expected:
        raise ModelLoadError(
            LoadFailure.DIGEST_MISMATCH, f"artifact digest mismatch: expected sha256 {expected}, got {actual}"
        )
    return actual


# ---- fetching


@dataclass(frozen=True)
class DownloadLimits:
    """What one download attempt may take: wall-clock seconds in all, and bytes written to the cache."""

    timeout_seconds: float = DEFAULT_DOWNLOAD_TIMEOUT_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    # Sent with http(s) requests only, never to another origin a redirect points at.
    headers: tuple[tuple[str, str], ...] = ()
    # Unsigned object-store reads; without it, missing credentials are an error, never a silent fallback.
    anonymous: bool = False


class _Budget:
    """The deadline and the byte allowance of one attempt, shared by every object it fetches."""

    def __init__(self, uri: str, limits: DownloadLimits) -> None:
        self._shown = redact(uri)
        self._limits = limits
        self._deadline = time.monotonic() + limits.timeout_seconds
        self._written = 0

    def remaining(self) -> float:
        """Seconds left; raises once there are none."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> ModelLoadError:
        return ModelLoadError(
            LoadFailure.DOWNLOAD_FAILED,
            f"{self._shown}: the download did not finish within {self._limits.timeout_seconds:g}s "
            f"({ENV_MODEL_DOWNLOAD_TIMEOUT})",
        )

    def past_deadline(self) -> bool:
        return time.monotonic() >= self._deadline

    def announce(self, size: int) -> None:
        """A size the store states before sending anything: refused at once when it cannot fit."""
        if self._written + size > self._limits.max_bytes:
            raise self._too_large(f"is {size} bytes")

    def add(self, count: int) -> None:
        """Counted before the bytes are written, so the cache never holds more than the limit."""
        self._written += count
        if self._written > self._limits.max_bytes:
            raise self._too_large("sent more")

    def _too_large(self, what: str) -> ModelLoadError:
        return ModelLoadError(
            LoadFailure.TOO_LARGE,
            f"{self._shown} {what} than {ENV_MODEL_MAX_BYTES}={self._limits.max_bytes} bytes allow",
        )


def fetch_artifact(
    location: ArtifactLocation,
    cache_dir: Path,
    *,
    timeout_seconds: float = DEFAULT_DOWNLOAD_TIMEOUT_SECONDS,
    expected_sha256: str | None,
    limits: DownloadLimits | None = None,
) -> Path:
    """Return a local path holding the artifact, downloading it first when it is remote.

    Local artifacts are read in place: nothing is copied, so the cache limits do not apply to them."""
    if location.path is not None:
        if not location.path.exists():
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"model artifact {location.path} does not exist")
        return location.path

    limits = limits or DownloadLimits(timeout_seconds=timeout_seconds)
    final_dir = cache_dir / hashlib.sha256(location.uri.encode()).hexdigest()[:16]
    cached = _cached_artifact(final_dir, expected_sha256)
    if cached is not None:
        logger.info(kv("Reusing cached artifact", uri=location.uri, path=str(cached)))
        return cached

    # Whatever an earlier start left here is not reusable: it goes before the new download, so the cache never
    # holds two copies (the volume's sizeLimit is sized for one), and no partial download of a killed process
    # stays behind.
    _remove_leftovers(final_dir)
    staging_dir = final_dir.with_name(f"{final_dir.name}.partial-{os.getpid()}")
    budget = _Budget(location.uri, limits)
    try:
        staging_dir.mkdir(parents=True)
        if location.scheme is Scheme.HTTP:
            name = _download_http(location.uri, staging_dir, budget, limits.headers)
        elif location.scheme is Scheme.S3:
            name = _download_s3(location, staging_dir, budget, limits.anonymous)
        else:
            name = _download_gcs(location, staging_dir, budget, limits.anonymous)
        staging_dir.replace(final_dir)
    except OSError as error:
        if budget.past_deadline():
            raise budget.expired() from error
        raise ModelLoadError(
            LoadFailure.DOWNLOAD_FAILED, f"cannot store {redact(location.uri)}: {_short(error)}"
        ) from error
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return final_dir / name


def _remove_leftovers(final_dir: Path) -> None:
    shutil.rmtree(final_dir, ignore_errors=True)
    if final_dir.parent.is_dir():
        for partial in final_dir.parent.glob(f"{final_dir.name}.partial-*"):
            shutil.rmtree(partial, ignore_errors=True)


def _cached_artifact(final_dir: Path, expected_sha256: str | None) -> Path | None:
    """A download finished by an earlier start of this pod; reused only when a digest proves it unchanged."""
    if expected_sha256 is None or not final_dir.is_dir():
        return None
    entries = list(final_dir.iterdir())
    if len(entries) != 1:
        return None
    try:
        return entries[0] if artifact_sha256(entries[0]) == expected_sha256 else None
    except OSError:
        return None


def _name_from_path(path: str) -> str:
    # Keep the remote file name: some loaders (xgboost) tell formats apart by extension.
    name = PurePosixPath(unquote(path)).name
    return name if name and name not in (".", "..") else _DEFAULT_FILE_NAME


def _copy(read: Callable[[int], bytes], out: BinaryIO, budget: _Budget, before_read: Callable[[float], None]) -> None:
    while True:
        before_read(budget.remaining())
        chunk = read(_CHUNK_BYTES)
        if not chunk:
            break
        budget.add(len(chunk))
        out.write(chunk)
    budget.remaining()


def _copy_response(stream: Any, out: BinaryIO, budget: _Budget, *, decode: bool | None) -> None:
    """Copy a urllib3-style response body with the attempt's deadline and byte allowance.

    A plain read(n) waits until n bytes have come, so a server sending a byte a second holds it for days with
    every single receive well within a timeout. read1() returns what one receive brings, and before each one the
    socket's timeout is set to what is left of the deadline: no receive outlives it."""
    read1 = getattr(stream, "read1", None)
    read: Callable[[int], bytes]
    if callable(read1):
        read = (lambda n: read1(n, decode_content=decode)) if decode is not None else read1
    else:
        read = stream.read

    def before_read(left: float) -> None:
        sock = getattr(getattr(stream, "connection", None), "sock", None)
        if sock is not None and hasattr(sock, "settimeout"):
            sock.settimeout(left)

    _copy(read, out, budget, before_read)


_MAX_REDIRECTS = 5


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _get(session: requests.Session, url: str, headers: tuple[tuple[str, str], ...], budget: _Budget) -> Any:
    """GET with redirects followed by hand: the headers (credentials) go to the URI's own origin only."""
    current, sent = url, dict(headers)
    for _ in range(_MAX_REDIRECTS + 1):
        left = budget.remaining()
        response = session.get(
            current,
            stream=True,
            allow_redirects=False,
            headers={"Accept-Encoding": "identity", **sent},
            timeout=(min(_CONNECT_TIMEOUT_SECONDS, left), left),
        )
        if not response.is_redirect:
            return response
        target = urljoin(current, response.headers["location"])
        response.close()
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"GET {redact(current)} redirects off http(s)")
        if _origin(target) != _origin(url):
            sent = {}
        current = target
    raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"GET {redact(url)}: more than {_MAX_REDIRECTS} redirects")


def _download_http(url: str, staging_dir: Path, budget: _Budget, headers: tuple[tuple[str, str], ...]) -> str:
    name = _name_from_path(urlsplit(url).path)
    shown = redact(url)
    try:
        with requests.Session() as session, _get(session, url, headers, budget) as response:
            if response.status_code in (404, 410):
                raise ModelLoadError(LoadFailure.NOT_FOUND, f"GET {shown} answered {response.status_code}")
            if response.status_code >= 400:
                raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"GET {shown} answered {response.status_code}")
            length = response.headers.get("Content-Length", "")
            if length.isdigit():
                budget.announce(int(length))
            with (staging_dir / name).open("wb") as out:
                _copy_response(response.raw, out, budget, decode=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        if budget.past_deadline():
            raise budget.expired() from error
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"GET {shown} failed: {_short(error)}") from error
    return name


def _download_s3(location: ArtifactLocation, staging_dir: Path, budget: _Budget, anonymous: bool) -> str:
    """One object, or every object under the key taken as a prefix (a directory such as a custom model)."""
    # Imported here: the client libraries are large and only a pod serving from S3 should pay for them.
    import boto3
    import botocore
    import botocore.config
    import botocore.exceptions

    uri = redact(location.uri)
    session = boto3.session.Session()
    if not anonymous and session.get_credentials() is None:
        raise ModelLoadError(
            LoadFailure.NO_CREDENTIALS,
            f"{uri}: no AWS credentials found (AWS_* variables, web identity, instance profile); for a public "
            f"bucket set {ENV_MODEL_STORAGE_ANONYMOUS}=true",
        )
    left = budget.remaining()
    options: dict[str, Any] = {
        "connect_timeout": min(_CONNECT_TIMEOUT_SECONDS, left),
        "read_timeout": left,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
    if anonymous:
        options["signature_version"] = botocore.UNSIGNED
    client: Any = session.client("s3", config=botocore.config.Config(**options))

    def copy(key: str, target: Path) -> None:
        budget.remaining()
        body = client.get_object(Bucket=location.bucket, Key=key)["Body"]
        # The urllib3 response under botocore's wrapper, for read1 and its socket (see _copy_response).
        stream = getattr(body, "_raw_stream", body)
        try:
            with target.open("wb") as out:
                _copy_response(stream, out, budget, decode=None)
        finally:
            body.close()

    try:
        try:
            head = client.head_object(Bucket=location.bucket, Key=location.key)
        except botocore.exceptions.ClientError as error:
            if _s3_status(error) != 404:
                raise
        else:
            budget.announce(int(head.get("ContentLength") or 0))
            name = _name_from_path(location.key)
            copy(location.key, staging_dir / name)
            return name

        prefix = location.key.rstrip("/") + "/"
        name = _name_from_path(prefix.rstrip("/"))
        entries: list[tuple[str, int]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
            budget.remaining()
            for entry in page.get("Contents", []):
                if not entry["Key"].endswith("/"):  # not the folder placeholders some consoles create
                    entries.append((entry["Key"], int(entry.get("Size") or 0)))
        if not entries:
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: no such object or prefix")
        budget.announce(sum(size for _, size in entries))
        for key, _ in entries:
            target = staging_dir / name / _safe_relative(key[len(prefix) :], location.uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy(key, target)
        return name
    except botocore.exceptions.ClientError as error:
        if _s3_status(error) == 404:
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: {_short(error)}") from error
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"{uri}: {_short(error)}") from error
    except (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError) as error:
        if budget.past_deadline():
            raise budget.expired() from error
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"{uri}: {_short(error)}") from error


def _s3_status(error: Any) -> int:
    response = getattr(error, "response", {}) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        return 404
    return int(status or 0)


class _BoundedWriter:
    """A file the GCS client writes into, chunk by chunk, each counted and timed before it lands."""

    def __init__(self, out: BinaryIO, budget: _Budget) -> None:
        self._out = out
        self._budget = budget
        self._written = 0

    def write(self, data: bytes) -> int:
        self._budget.remaining()
        self._budget.add(len(data))
        self._written += len(data)
        return self._out.write(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # The client starts over (a transcoded object served whole after a retry): so does the count.
        if (offset, whence) != (0, os.SEEK_SET):
            raise OSError("only a rewind to the start is supported")
        self._budget.add(-self._written)
        self._written = 0
        self._out.seek(0)
        self._out.truncate()
        return 0

    def flush(self) -> None:
        self._out.flush()


def _download_gcs(location: ArtifactLocation, staging_dir: Path, budget: _Budget, anonymous: bool) -> str:
    """Like _download_s3: one object, or every object under the key taken as a prefix."""
    import google.api_core.exceptions
    import google.auth.exceptions
    from google.cloud import storage

    uri = redact(location.uri)

    def copy(blob: Any, target: Path) -> None:
        left = budget.remaining()
        with target.open("wb") as out:
            blob.download_to_file(_BoundedWriter(out, budget), timeout=(min(_CONNECT_TIMEOUT_SECONDS, left), left))

    try:
        if anonymous:
            client: Any = storage.Client.create_anonymous_client()
        else:
            try:
                client = storage.Client()
            except google.auth.exceptions.DefaultCredentialsError as error:
                raise ModelLoadError(
                    LoadFailure.NO_CREDENTIALS,
                    f"{uri}: no Google credentials found (application default credentials, workload identity); "
                    f"for a public bucket set {ENV_MODEL_STORAGE_ANONYMOUS}=true",
                ) from error
        blob = client.bucket(location.bucket).get_blob(location.key, timeout=budget.remaining())
        if blob is not None:
            budget.announce(int(blob.size or 0))
            name = _name_from_path(location.key)
            copy(blob, staging_dir / name)
            return name

        prefix = location.key.rstrip("/") + "/"
        name = _name_from_path(prefix.rstrip("/"))
        entries = [
            entry
            for entry in client.list_blobs(location.bucket, prefix=prefix, timeout=budget.remaining())
            if not entry.name.endswith("/")
        ]
        if not entries:
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: no such object or prefix")
        budget.announce(sum(int(entry.size or 0) for entry in entries))
        for entry in entries:
            target = staging_dir / name / _safe_relative(entry.name[len(prefix) :], location.uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy(entry, target)
        return name
    except google.api_core.exceptions.NotFound as error:
        raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: {_short(error)}") from error
    except (
        google.api_core.exceptions.GoogleAPIError,
        google.auth.exceptions.GoogleAuthError,
        requests.RequestException,
    ) as error:
        if budget.past_deadline():
            raise budget.expired() from error
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"{uri}: {_short(error)}") from error


def _short(error: BaseException) -> str:
    """One line, bounded: these messages go into a log line and a health response."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
