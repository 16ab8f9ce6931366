"""The one module through which every byte is read or written.

A `Storage` is rooted at a local path or an `s3://bucket/prefix` URL. Writes are atomic: the
payload is serialised in memory first, then placed in one operation (local: temp file in the same
folder + fsync + os.replace; S3: one PUT, or a multipart upload that is aborted on error and
is invisible until completed). A writer that raises or is killed therefore leaves no partial
object under its final key. S3 endpoint and credentials come from the standard AWS environment.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_PREFIX = ".tmp-"


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


class Storage:
    """A root URL and the filesystem behind it."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") or url
        self.fs, root = fsspec.core.url_to_fs(self.url)
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

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

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

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def info(self, rel: str) -> dict:
        return self.fs.info(self.path(rel))

    def sha256(self, rel: str, chunk_bytes: int = 8 * 2**20) -> str:
        """Streaming hash: bounded memory for any file size."""
        h = hashlib.sha256()
        with self.open_read(rel) as f:
            while chunk := f.read(chunk_bytes):
                h.update(chunk)
        return h.hexdigest()

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
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Place `data` at `rel` atomically: readers see the old object or the whole new one."""
        final = self.path(rel)
        if self.is_local:
            directory = posixpath.dirname(final)
            os.makedirs(directory, exist_ok=True)
            tmp = posixpath.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")
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
