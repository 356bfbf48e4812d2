"""Where the model artifact comes from: URI parsing, fetching into the local cache, and the SHA-256 check.

Local artifacts (plain paths, file://, pvc://) are read in place: copying a multi-gigabyte model out of a
volume would only double the disk it needs. Remote ones (http(s)://, s3://, gs://) are downloaded into the
cache directory, staged under a temporary name and renamed when complete, so an interrupted download never
looks whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from modeldeploy_runtime.config import ConfigError
from modeldeploy_runtime.errors import LoadFailure, ModelLoadError
from modeldeploy_runtime.logs import kv

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


def fetch_artifact(
    location: ArtifactLocation, cache_dir: Path, *, timeout_seconds: float, expected_sha256: str | None
) -> Path:
    """Return a local path holding the artifact, downloading it first when it is remote."""
    if location.path is not None:
        if not location.path.exists():
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"model artifact {location.path} does not exist")
        return location.path

    final_dir = cache_dir / hashlib.sha256(location.uri.encode()).hexdigest()[:16]
    cached = _cached_artifact(final_dir, expected_sha256)
    if cached is not None:
        logger.info(kv("Reusing cached artifact", uri=location.uri, path=str(cached)))
        return cached

    staging_dir = final_dir.with_name(f"{final_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging_dir, ignore_errors=True)
    try:
        staging_dir.mkdir(parents=True)
        if location.scheme is Scheme.HTTP:
            name = _download_http(location.uri, staging_dir, timeout_seconds)
        elif location.scheme is Scheme.S3:
            name = _download_s3(location, staging_dir, timeout_seconds)
        else:
            name = _download_gcs(location, staging_dir, timeout_seconds)
        shutil.rmtree(final_dir, ignore_errors=True)
        staging_dir.replace(final_dir)
    except OSError as error:
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"cannot store {location.uri}: {error}") from error
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return final_dir / name


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


def _download_http(url: str, staging_dir: Path, timeout_seconds: float) -> str:
    name = _name_from_path(urlsplit(url).path)
    try:
        with requests.get(url, stream=True, timeout=(_CONNECT_TIMEOUT_SECONDS, timeout_seconds)) as response:
            if response.status_code in (404, 410):
                raise ModelLoadError(LoadFailure.NOT_FOUND, f"GET {url} answered {response.status_code}")
            if response.status_code >= 400:
                raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"GET {url} answered {response.status_code}")
            with (staging_dir / name).open("wb") as out:
                for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                    out.write(chunk)
    except requests.RequestException as error:
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"GET {url} failed: {_short(error)}") from error
    return name


def _download_s3(location: ArtifactLocation, staging_dir: Path, timeout_seconds: float) -> str:
    """One object, or every object under the key taken as a prefix (a directory such as a custom model)."""
    # Imported here: the client libraries are large and only a pod serving from S3 should pay for them.
    import boto3
    import botocore.config
    import botocore.exceptions

    uri = location.uri
    client: Any = boto3.client(
        "s3",
        config=botocore.config.Config(connect_timeout=_CONNECT_TIMEOUT_SECONDS, read_timeout=timeout_seconds),
    )
    try:
        try:
            client.head_object(Bucket=location.bucket, Key=location.key)
        except botocore.exceptions.ClientError as error:
            if _s3_status(error) != 404:
                raise
        else:
            name = _name_from_path(location.key)
            client.download_file(location.bucket, location.key, str(staging_dir / name))
            return name

        prefix = location.key.rstrip("/") + "/"
        name = _name_from_path(prefix.rstrip("/"))
        found = False
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                key: str = entry["Key"]
                if key.endswith("/"):
                    continue  # folder placeholders some consoles create
                target = staging_dir / name / _safe_relative(key[len(prefix) :], uri)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(location.bucket, key, str(target))
                found = True
        if not found:
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: no such object or prefix")
        return name
    except botocore.exceptions.ClientError as error:
        if _s3_status(error) == 404:
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: {_short(error)}") from error
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"{uri}: {_short(error)}") from error
    except botocore.exceptions.BotoCoreError as error:
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"{uri}: {_short(error)}") from error


def _s3_status(error: Any) -> int:
    response = getattr(error, "response", {}) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        return 404
    return int(status or 0)


def _download_gcs(location: ArtifactLocation, staging_dir: Path, timeout_seconds: float) -> str:
    """Like _download_s3: one object, or every object under the key taken as a prefix."""
    import google.api_core.exceptions
    import google.auth.exceptions
    from google.cloud import storage

    uri = location.uri
    try:
        try:
            client: Any = storage.Client()
        except google.auth.exceptions.DefaultCredentialsError:
            # No credentials in the pod: public buckets still answer anonymous reads.
            client = storage.Client.create_anonymous_client()
        bucket = client.bucket(location.bucket)
        blob = bucket.blob(location.key)
        if blob.exists(timeout=timeout_seconds):
            name = _name_from_path(location.key)
            blob.download_to_filename(str(staging_dir / name), timeout=timeout_seconds)
            return name

        prefix = location.key.rstrip("/") + "/"
        name = _name_from_path(prefix.rstrip("/"))
        found = False
        for entry in client.list_blobs(location.bucket, prefix=prefix, timeout=timeout_seconds):
            key: str = entry.name
            if key.endswith("/"):
                continue
            target = staging_dir / name / _safe_relative(key[len(prefix) :], uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            entry.download_to_filename(str(target), timeout=timeout_seconds)
            found = True
        if not found:
            raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: no such object or prefix")
        return name
    except google.api_core.exceptions.NotFound as error:
        raise ModelLoadError(LoadFailure.NOT_FOUND, f"{uri}: {_short(error)}") from error
    except (
        google.api_core.exceptions.GoogleAPIError,
        google.auth.exceptions.GoogleAuthError,
        requests.RequestException,
    ) as error:
        raise ModelLoadError(LoadFailure.DOWNLOAD_FAILED, f"{uri}: {_short(error)}") from error


def _short(error: BaseException) -> str:
    """One line, bounded: these messages go into a log line and a health response."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
