"""Where the work dir lives: a local or shared path, or any fsspec URL (s3://bucket/prefix, gs://, ...).

Everything the driver and the stages keep there (segments, chunk records, job tables, reports) goes
through these helpers, so the same code runs on a shared filesystem and on an object store. Whole
objects only: object stores cannot append or rename, so every file is written once, atomically
(fsynced temporary file + rename on a filesystem, a single put on an object store).

Object-store settings and credentials come from each process's own environment and config files, as
fsspec/botocore read them (instance roles, IRSA/workload identity, AWS_PROFILE, AWS_ENDPOINT_URL,
FSSPEC_S3_* ...). The driver forwards none of them to Ray workers: anything put in a runtime_env is
written in plain text to Ray's logs and shown by its state API. A local Ray that ffray starts inherits
the driver's environment; on a cluster, set them where `ray start` runs (README, cluster/).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def is_url(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str | os.PathLike) -> Path:
    """A local path or file:// URL as an absolute path (`~` expanded, symlinks kept)."""
    return Path(os.fspath(uri).removeprefix("file://")).expanduser().absolute()


def work_root(work_dir: str) -> str:
    """The work dir as an absolute path, or the URL as given."""
    return work_dir.rstrip("/") if is_url(work_dir) else str(local_path(work_dir))


def failure_reason(exc: BaseException) -> str:
    """Why a storage operation failed, in the system's words ("No space left on device"), else the first
    line of the message (object stores' own errors), else the exception's type."""
    first = (str(exc).splitlines() or [""])[0]
    return getattr(exc, "strerror", None) or first or type(exc).__name__


def join(base: str, *parts: str) -> str:
    """A path or URL below `base` ('/' serves local paths and every fsspec URL)."""
    return "/".join([base.rstrip("/"), *parts])


def write_atomic(uri: str, data: bytes) -> None:
    """`data` at `uri` whole or not at all (ffray.media.io.open_output_atomic), fsynced first."""
    from ffray.media.io import open_output_atomic

    with open_output_atomic(uri) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(uri: str | os.PathLike, data: Any) -> None:
    write_atomic(os.fspath(uri), (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())

