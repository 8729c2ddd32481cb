"""Where parameters come from: a local path (a mounted PVC), HTTP(S) or S3.

Each transport copies bytes into a staging area under a shared size budget, which also
carries the fetch's overall deadline (checked on every chunk received), and raises
`VerificationError` (`SourceNotFound`, `DownloadFailed`, `DeadlineExceeded`, `TooLarge`,
`UnsafeFile`, `SourceInvalid`). Nothing here verifies or unpacks; `fetch` does.

S3 uses the standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_REGION`) and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` for S3-compatible
stores such as MinIO (path-style addressing is used when an endpoint is set).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from modeldeploy.contract.reasons import (
    DEADLINE_EXCEEDED,
    DOWNLOAD_FAILED,
    SOURCE_INVALID,
    SOURCE_NOT_FOUND,
    TOO_LARGE,
    UNSAFE_FILE,
)
from modeldeploy.params.errors import TransportError, VerificationError

CHUNK = 1 << 20
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Settings:
    """Limits for one fetch."""

    max_bytes: int = 20 << 30
    max_expansion: float = 100.0  # unpacked bytes per archive byte
    timeout: float = 30.0  # per network operation
    deadline: float = 600.0  # the whole fetch: download, unpack, verify
    retries: int = 3
    backoff: float = 0.5
    environ: Mapping[str, str] | None = None  # S3 credentials and endpoint (AWS_*); default os.environ


def deadline_after(seconds: float) -> float:
    """The monotonic time `seconds` from now."""
    return time.monotonic() + seconds


class Budget:
    """Bytes written so far against `max_bytes`, shared by everything one fetch writes.

    A child budget (`limited`) counts against its own limit and its parent's; every
    `take` also checks the fetch's deadline.
    """

    def __init__(
        self, max_bytes: int, deadline: float | None = None, parent: Budget | None = None, limit: str = "the size limit"
    ) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.deadline = deadline
        self.parent = parent
        self.limit = limit

    def limited(self, max_bytes: int, limit: str) -> Budget:
        """A budget for part of the fetch with a tighter limit of its own."""
        return Budget(max_bytes, self.deadline, self, limit)

    def remaining_seconds(self) -> float:
        """Seconds left before the deadline (raises `DeadlineExceeded` when none are)."""
        if self.deadline is None:
            return float("inf")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TransportError(DEADLINE_EXCEEDED, "fetch did not finish within its deadline")
        return left

    def take(self, size: int, what: str) -> None:
        """Account for `size` more bytes of `what`; raise `TooLarge` past the limit."""
        self.remaining_seconds()
        self.used += size
        if self.used > self.max_bytes:
            raise VerificationError(TOO_LARGE, f"{what} exceeds {self.limit} of {self.max_bytes} bytes")
        if self.parent is not None:
            self.parent.take(size, what)


def write_chunks(chunks: Iterable[bytes], target: Path, budget: Budget, what: str) -> None:
    """Write `chunks` to a new file `target`, counting them against `budget`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        for chunk in chunks:
            budget.take(len(chunk), what)
            out.write(chunk)


def safe_relative(name: str) -> PurePosixPath:
    """`name` as a relative path that cannot leave its root (a backslash is an ordinary
    character, as in a directory source and in the signed manifest).

    Raises:
        ValueError: absolute, empty, or containing `..`.
    """
    path = PurePosixPath(name)
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or not parts or ".." in parts or "\0" in name:
        raise ValueError(f"unsafe path {name!r}")
    return PurePosixPath(*parts)


def redact(uri: str) -> str:
    """`uri` without user:password, for logs and the termination message."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def scheme_of(uri: str) -> str:
    """`file`, `http`, `https` or `s3`; a plain path is `file`."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("", "file"):
        return "file"
    if scheme in ("http", "https", "s3"):
        return scheme
    raise TransportError(SOURCE_INVALID, f"unsupported source scheme {scheme!r} in {redact(uri)}")


def local_path(uri: str) -> Path:
    """The filesystem path of a `file://` URI or a plain path, its own symlinks resolved
    (links inside a source directory are still refused)."""
    return (Path(unquote(urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)).resolve()


def download(uri: str, target: Path, budget: Budget, settings: Settings) -> Path | None:
    """Copy SOURCE into `target`: a directory tree there, or one file `target/archive`.

    Returns:
        The downloaded file when SOURCE is a single object (an archive), else None.
    """
    scheme = scheme_of(uri)
    if scheme == "file":
        path = local_path(uri)
        if path.is_dir():
            _copy_tree(path, target, budget)
            return None
        return _copy_file(path, target / "archive", budget)
    if scheme == "s3":
        return _S3(settings).download(uri, target, budget)
    return download_file(uri, target / "archive", budget, settings)


def download_file(uri: str, target: Path, budget: Budget, settings: Settings) -> Path:
    """Copy the single object at `uri` to `target`."""
    scheme = scheme_of(uri)
    if scheme == "file":
        return _copy_file(local_path(uri), target, budget)
    if scheme == "s3":
        bucket, key = _bucket_key(uri)
        return _S3(settings).get(bucket, key, target, budget)
    return _http_get(uri, target, budget, settings)


def _copy_file(path: Path, target: Path, budget: Budget) -> Path:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError as err:
        raise TransportError(SOURCE_NOT_FOUND, f"{path} does not exist") from err
    if not stat.S_ISREG(mode):
        raise VerificationError(UNSAFE_FILE, f"{path} is not a regular file")
    with path.open("rb") as src:
        write_chunks(iter(lambda: src.read(CHUNK), b""), target, budget, str(path))
    return target


def _copy_tree(root: Path, target: Path, budget: Budget) -> None:
    """Copy regular files and directories; refuse links and special files."""
    target.mkdir(parents=True, exist_ok=True)
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            source = Path(directory, name)
            relative = source.relative_to(root)
            mode = source.lstat().st_mode
            if stat.S_ISDIR(mode):
                (target / relative).mkdir(exist_ok=True)
            elif stat.S_ISREG(mode):
                _copy_file(source, target / relative, budget)
            else:
                raise VerificationError(UNSAFE_FILE, f"{relative} in {root} is a link or special file", [str(relative)])


def _http_get(url: str, target: Path, budget: Budget, settings: Settings) -> Path:
    """GET `url` with timeouts, retries with exponential backoff and the size budget."""
    shown = redact(url)
    problem = "no attempt"
    for attempt in range(settings.retries + 1):
        if attempt:
            time.sleep(min(settings.backoff * 2 ** (attempt - 1), budget.remaining_seconds()))
        mark = budget.used
        target.unlink(missing_ok=True)
        timeout = min(settings.timeout, budget.remaining_seconds())
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code == 404:
                    raise TransportError(SOURCE_NOT_FOUND, f"{shown}: HTTP 404 Not Found")
                if response.status_code in RETRYABLE_STATUS:
                    problem = f"HTTP {response.status_code} {response.reason_phrase}"
                    continue
                if response.is_error:
                    raise VerificationError(
                        DOWNLOAD_FAILED, f"{shown}: HTTP {response.status_code} {response.reason_phrase}"
                    )
                length = int(response.headers.get("content-length", 0))
                if length > budget.max_bytes - budget.used:
                    raise VerificationError(
                        TOO_LARGE, f"{shown} is {length} bytes, over the size limit of {budget.max_bytes} bytes"
                    )
                write_chunks(response.iter_bytes(), target, budget, shown)  # each piece as it arrives
                return target
        except httpx.TransportError as err:
            budget.remaining_seconds()
            budget.used = mark
            problem = f"{type(err).__name__}: {err}"
    raise TransportError(DOWNLOAD_FAILED, f"{shown}: {problem} (after {settings.retries + 1} attempts)")


def _bucket_key(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise TransportError(SOURCE_INVALID, f"{uri} names no bucket")
    return parts.netloc, unquote(parts.path.lstrip("/"))


class _S3:
    """A boto3 client with our timeouts and errors."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        environ = os.environ if settings.environ is None else settings.environ
        endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
        config = Config(
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            retries={"max_attempts": settings.retries + 1, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        session = boto3.session.Session() if settings.environ is None else boto3.session.Session(
            aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=environ.get("AWS_SESSION_TOKEN"),
            region_name=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
        )
        self.client: Any = session.client("s3", endpoint_url=endpoint, config=config)

    def download(self, uri: str, target: Path, budget: Budget) -> Path | None:
        """One object (an archive) to `target/archive`, or every object under the prefix."""
        bucket, key = _bucket_key(uri)
        if key and not key.endswith("/") and self._exists(bucket, key):
            return self.get(bucket, key, target / "archive", budget)
        prefix = f"{key.rstrip('/')}/" if key else ""
        keys = list(self._list(bucket, prefix))
        if not keys:
            raise TransportError(SOURCE_NOT_FOUND, f"{uri}: no object or prefix with that name")
        for name in keys:
            try:
                relative = safe_relative(name[len(prefix) :])
            except ValueError as err:
                raise VerificationError(UNSAFE_FILE, f"{uri}: object key {name!r} leaves the prefix") from err
            self.get(bucket, name, target / relative, budget)
        return None

    def get(self, bucket: str, key: str, target: Path, budget: Budget) -> Path:
        """Stream `s3://bucket/key` to `target` under the size budget."""
        from botocore.exceptions import BotoCoreError, ClientError

        uri = f"s3://{bucket}/{key}"
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            if response["ContentLength"] > budget.max_bytes - budget.used:
                raise VerificationError(
                    TOO_LARGE,
                    f"{uri} is {response['ContentLength']} bytes, over the size limit of {budget.max_bytes} bytes",
                )
            write_chunks(response["Body"].iter_chunks(1 << 16), target, budget, uri)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            reason = SOURCE_NOT_FOUND if code in ("NoSuchKey", "404", "NoSuchBucket") else DOWNLOAD_FAILED
            raise TransportError(reason, f"{uri}: {code or err}") from err
        except BotoCoreError as err:
            raise TransportError(DOWNLOAD_FAILED, f"{uri}: {err}") from err
        return target

    def _exists(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise TransportError(DOWNLOAD_FAILED, f"s3://{bucket}/{key}: {err}") from err
        except BotoCoreError as err:
            raise TransportError(DOWNLOAD_FAILED, f"s3://{bucket}/{key}: {err}") from err
        return True

    def _list(self, bucket: str, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        yield item["Key"]
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            reason = SOURCE_NOT_FOUND if code == "NoSuchBucket" else DOWNLOAD_FAILED
            raise TransportError(reason, f"s3://{bucket}/{prefix}: {code or err}") from err
        except BotoCoreError as err:
            raise TransportError(DOWNLOAD_FAILED, f"s3://{bucket}/{prefix}: {err}") from err
