"""Where media bytes come from and go to: local paths and any fsspec URL.

Local paths (and file:// URLs) go to FFmpeg as plain paths so it uses its own fast I/O; every other
URL (s3://, memory://, gs://, ...) is opened through fsspec and handed to PyAV as a seekable file object.
Outputs are always written to a local temporary file first, then renamed (local) or uploaded with a
single put (object stores), so a reader never sees a half-written file at the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import fsspec
from fsspec.core import url_to_fs

from ffray.errors import MediaError

_LOCAL_PROTOCOLS = {"file", "local"}


def split_uri(uri: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or an fsspec URL."""
    return url_to_fs(os.fspath(uri))


def sha256_and_size(uri: str | os.PathLike) -> tuple[str, int]:
    """(sha256, bytes) of a file at a path or fsspec URL; FileNotFoundError when it is not there."""
    fs, path = split_uri(uri)
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def is_local(uri: str | os.PathLike) -> bool:
    fs, _ = split_uri(uri)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & _LOCAL_PROTOCOLS)


def local_path(uri: str | os.PathLike) -> str | None:
    """The plain filesystem path of a local URI, else None."""
    fs, path = split_uri(uri)
    return path if is_local(uri) else None


def check_readable(uri: str | os.PathLike) -> int:
    """Size in bytes of an existing, non-empty file; MediaError otherwise."""
    try:
        fs, path = split_uri(uri)
        if not fs.exists(path):
            raise MediaError(uri, "file not found")
        if fs.isdir(path):
            raise MediaError(uri, "is a directory, not a media file")
        size = int(fs.size(path) or 0)
    except MediaError:
        raise
    except (OSError, ValueError) as exc:
        raise MediaError(uri, f"cannot read: {exc}") from exc
    if size == 0:
        raise MediaError(uri, "empty file (0 bytes)")
    return size


@contextlib.contextmanager
def open_input(uri: str | os.PathLike, **options) -> Iterator[av.container.InputContainer]:
    """An open PyAV input container for a local path or fsspec URL; raises MediaError when FFmpeg
    cannot read it."""
    path = local_path(uri)
    handle = None
    try:
        if path is not None:
            source = path
        else:
            fs, remote = split_uri(uri)
            handle = fs.open(remote, "rb")
            source = handle
        try:
            container = av.open(source, "r", **options)
        except av.error.FFmpegError as exc:
            raise MediaError(uri, f"not a readable media file, or truncated ({exc.strerror or exc})") from exc
        try:
            yield container
        finally:
            container.close()
    finally:
        if handle is not None:
            handle.close()


def read_head_tail(uri: str | os.PathLike, size: int, length: int) -> tuple[bytes, bytes]:
    """The first and last `length` bytes of a file (two ranged reads on object stores)."""
    fs, path = split_uri(uri)
    with fs.open(path, "rb") as handle:
        head = handle.read(length)
        handle.seek(max(0, size - length))
        tail = handle.read(length)
    return head, tail


@contextlib.contextmanager
def open_output_atomic(uri: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a local temporary path to write a whole file to; on a clean exit it becomes `uri`
    (os.replace on the same filesystem, or one put to an object store). On an exception the
    temporary file is removed and nothing appears at `uri`."""
    uri = os.fspath(uri)
    suffix = suffix if suffix is not None else Path(split_uri(uri)[1]).suffix
    dest = local_path(uri)
    if dest is not None:
        parent = Path(dest).resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        # same directory, so the rename is atomic; hidden name so globbing readers skip it
        tmp = parent / f".{Path(dest).name}.{uuid.uuid4().hex}.part{suffix}"
    else:
        fd, name = tempfile.mkstemp(prefix="ffray-", suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield str(tmp)
        if dest is not None:
            os.replace(tmp, dest)
        else:
            fs, remote = split_uri(uri)
            parent = remote.rsplit("/", 1)[0] if "/" in remote else ""
            if parent:
                # object stores have no folders; only filesystems that do need this
                with contextlib.suppress(OSError, NotImplementedError, ValueError):
                    fs.makedirs(parent, exist_ok=True)
            fs.put_file(str(tmp), remote)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
