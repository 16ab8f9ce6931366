"""The one module through which every byte is read or written.

A `Storage` is rooted at a local path or an `s3://bucket/prefix` URL. Writes are atomic: the
payload is serialised in memory first, then placed in one operation (local: temp file in the same
folder + fsync + os.replace; S3: one PUT, or a multipart upload that is aborted on error and
is invisible until completed). A writer that raises or is killed therefore leaves no partial
object under its final key. S3 endpoint and credentials come from the standard AWS environment.

S3 faults (5xx, throttling, reset connections, stalled responses) are retried with bounded
backoff (settings.s3_attempts, s3_*_timeout_s); what still fails raises StorageError, which
names the operation and the object: a stage's user sees which key, not a botocore traceback.
"""
from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from infra.secrets import refuse_userinfo

TMP_PREFIX = ".tmp-"


class StorageError(OSError):
    """An S3 operation that failed after its retries; the message names the object."""


# Not faults: the caller asked for something that is not there (or not allowed), and retrying
# cannot change that; they pass through as they are (callers test for FileNotFoundError).
_NOT_FAULTS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def s3_options() -> dict:
    """s3fs options from the settings and the AWS environment. The endpoint is passed explicitly
    (it is read by botocore anyway) so that fsspec's instance cache, keyed by these options,
    never hands out a filesystem that talks to another endpoint than the environment names."""
    from infra.settings import get_settings

    s = get_settings()
    config = {"retries": {"total_max_attempts": s.s3_attempts, "mode": "standard"},
              "connect_timeout": s.s3_connect_timeout_s, "read_timeout": s.s3_read_timeout_s}
    options = {"config_kwargs": config}
    if os.environ.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
    return options


def _named(op: str):
    """Storage methods on S3: a fault that outlived the retries becomes a StorageError naming
    `op` and the object's URL (the first argument, relative to the root)."""
    def wrap(method):
        @functools.wraps(method)
        def inner(self: "Storage", rel="", *args, **kwargs):
            if self.is_local:
                return method(self, rel, *args, **kwargs)
            try:
                return method(self, rel, *args, **kwargs)
            except (_NOT_FAULTS + (PathEscapeError, StorageError)):
                raise
            except _faults() as e:
                target = self.uri(rel) if isinstance(rel, str) else f"{len(rel)} objects under {self.url}"
                raise StorageError(f"S3 {op} of {target} failed after its retries ({_attempts()} attempts "
                                   f"per request, REINSTRUMENT_S3_ATTEMPTS): {type(e).__name__}: {e}") from e
        return inner
    return wrap


def _faults() -> tuple[type[BaseException], ...]:
    """What S3 raises for a fault (s3fs translates most into OSError); anything else is a bug
    and keeps its own type and traceback."""
    from aiohttp import ClientError as HTTPError
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, TimeoutError, BotoCoreError, ClientError, HTTPError)


def _attempts() -> int:
    from infra.settings import get_settings

    return get_settings().s3_attempts


class PathEscapeError(ValueError):
    """A relative path that would leave its root (`..`, absolute, or a URL)."""


def safe_relpath(rel: str) -> str:
    """Normalise a relative POSIX path and refuse any that escapes its root."""
    if not isinstance(rel, str) or rel == "":
        raise PathEscapeError("empty path; expected a path relative to the root")
    if "://" in rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        raise PathEscapeError(f"path {rel!r} is absolute or a URL; expected a relative path")
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise PathEscapeError(f"path {rel!r} escapes its root; expected a path inside it")
    return norm


# botocore's own rule for a bucket name; checked here so that a mistyped URL fails at once with
# what was wrong, not after every retry of every request as a "storage fault"
_BUCKET = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")


def _check_bucket(url: str) -> None:
    scheme, _, rest = url.partition("://")
    if scheme in ("s3", "s3a"):
        bucket = rest.split("/", 1)[0]
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{url}: {bucket!r} is not an S3 bucket name; expected s3://BUCKET/prefix with a bucket "
                             "of letters, digits, '.', '-' and '_'")


class Storage:
    """A root URL and the filesystem behind it."""

    def __init__(self, url: str):
        # credentials in the URL would be stored with every record, log and error naming it
        refuse_userinfo(url, "storage URL")
        self.url = url.rstrip("/") or url
        _check_bucket(self.url)
        options = s3_options() if self.url.startswith(("s3://", "s3a://")) else {}
        self.fs, root = fsspec.core.url_to_fs(self.url, **options)
        if options:
            # s3fs's own retry loop (around botocore's) covers what botocore cannot see, a body
            # cut off while s3fs reads it. Bounded: a dead endpoint is tried at most
            # s3_attempts^2 times (botocore's tries in each of s3fs's rounds), a 5xx s3_attempts
            self.fs.retries = _attempts()
        self.root = root.rstrip("/") if root != "/" else root
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # -- paths --------------------------------------------------------------------------
    def path(self, rel: str = "") -> str:
        return self.root if rel in ("", ".") else posixpath.join(self.root, safe_relpath(rel))

    def uri(self, rel: str = "") -> str:
        return self.url if rel in ("", ".") else f"{self.url}/{safe_relpath(rel)}"

    def absolute_url(self) -> str:
        """The URL as another process sees it: local paths made absolute (a Ray worker's working
        directory is not the driver's)."""
        return self.root if self.is_local else self.url

    def child(self, rel: str) -> "Storage":
        return Storage(self.uri(rel))

    def relative(self, full_path: str) -> str:
        """Path of an object relative to this root (as returned by `find`)."""
        p = full_path[len(self.root):].lstrip("/") if full_path.startswith(self.root) else full_path
        return p

    # -- reads --------------------------------------------------------------------------
    @_named("existence check")
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def escapes_root(self, rel: str) -> bool:
        """Local: whether `rel` is (or passes through) a symbolic link that resolves outside the
        root, so reading it would read a file the user never put under it. S3 has no links."""
        if not self.is_local:
            return False
        root = os.path.realpath(self.root)
        target = os.path.realpath(self.path(rel))
        return os.path.commonpath([root, target]) != root

    @_named("read")
    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    @_named("read")
    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """Several small objects at once (S3: concurrent GETs in one call), keyed by `rels`."""
        if not rels:
            return {}
        got = self.fs.cat([self.path(r) for r in rels])
        return {r: got[self.path(r)] for r in rels}

    @contextmanager
    def open_read(self, rel: str) -> Iterator[IO[bytes]]:
        """A seekable binary stream (S3: ranged reads), for decoding large files lazily."""
        with self.fs.open(self.path(rel), "rb") as f:
            yield f

    @_named("size check")
    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    @_named("metadata read")
    def info(self, rel: str) -> dict:
        return self.fs.info(self.path(rel))

    def sha256(self, rel: str, chunk_bytes: int = 8 * 2**20) -> str:
        """Streaming hash: bounded memory for any file size."""
        h = hashlib.sha256()
        with self.open_read(rel) as f:
            while chunk := f.read(chunk_bytes):
                h.update(chunk)
        return h.hexdigest()

    @_named("listing")
    def find(self, rel: str = "") -> list[str]:
        """All objects under `rel`, as paths relative to the root, sorted; fresh listing.
        Hidden temp files of in-flight or crashed writers are never listed."""
        self.refresh()
        base = self.path(rel)
        if not self.fs.exists(base):
            return []
        out = []
        for p in self.fs.find(base):
            r = self.relative(p)
            if not any(part.startswith(TMP_PREFIX) for part in r.split("/")):
                out.append(r)
        return sorted(out)

    def refresh(self) -> None:
        """Drop cached listings: other writers may have changed the store."""
        self.fs.invalidate_cache()

    # -- writes -------------------------------------------------------------------------
    @staticmethod
    def _local_tmp(final: str) -> str:
        """A hidden temp name beside `final` (same filesystem: a rename places it), its folder made."""
        directory = posixpath.dirname(final)
        os.makedirs(directory, exist_ok=True)
        return posixpath.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")

    @_named("write")
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Place `data` at `rel` atomically: readers see the old object or the whole new one."""
        final = self.path(rel)
        if self.is_local:
            tmp = self._local_tmp(final)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            # One PUT (or an aborted-on-error multipart upload): never a partial object.
            self.fs.pipe_file(final, data)
            self.fs.invalidate_cache(final)

    @contextmanager
    def writer(self, rel: str) -> Iterator[str]:
        """A local path to write a large object to (streamed, never whole in memory), placed at
        `rel` atomically when the block ends without error; removed otherwise. Local: a hidden temp
        file in the destination folder, fsynced and renamed; S3: a temp file uploaded in one
        (multipart) upload, invisible until complete."""
        final = self.path(rel)
        if self.is_local:
            tmp = self._local_tmp(final)
        else:
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=posixpath.basename(final))
            os.close(fd)
        try:
            yield tmp
            if self.is_local:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            else:
                self._put(rel, tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @_named("write")
    def _put(self, rel: str, local: str) -> None:
        self.fs.put_file(local, self.path(rel))
        self.fs.invalidate_cache(self.path(rel))

    @_named("delete")
    def delete(self, rel: str) -> None:
        if self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=True)
            self.refresh()


@contextmanager
def staging_dir(final_dir: str) -> Iterator[str]:
    """A hidden temporary folder beside `final_dir` (same filesystem, so `replace_tree` is a
    rename); removed on exit, whatever happened."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(final_dir)}")
    os.makedirs(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_tree(staged: str, final_dir: str) -> None:
    """Put the folder `staged` in place of `final_dir` (local): the old tree is moved aside first
    and removed only after the new one is in place."""
    aside = None
    if os.path.exists(final_dir):
        aside = f"{staged}.old"
        os.replace(final_dir, aside)
    os.replace(staged, final_dir)
    if aside:
        shutil.rmtree(aside, ignore_errors=True)
