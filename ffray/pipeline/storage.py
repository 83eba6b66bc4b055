"""Where the work dir lives: a local or shared path, or any fsspec URL (s3://bucket/prefix, gs://, ...).

Everything the driver and the stages keep there (segments, chunk records, job tables, reports) goes
through these helpers, so the same code runs on a shared filesystem and on an object store. Whole
objects only: object stores cannot append or rename, so every file is written once, atomically
(fsynced temporary file + rename on a filesystem, a single put on an object store).

Object-store settings come from the environment, as fsspec/botocore read it (AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION, credentials, FSSPEC_S3_* ...). Ray workers do not share the driver's environment
on a cluster, so when a job touches a non-local URL the driver forwards those variables to every stage
through Ray's runtime_env (visible to whoever can read the cluster's job table: prefer node roles over
keys in the environment on shared clusters).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# variables that tell fsspec, s3fs/botocore, gcsfs, adlfs and ffray's model store how to reach storage
FORWARDED_ENV_PREFIXES = ("AWS_", "FSSPEC_", "FFRAY_", "GOOGLE_", "AZURE_")


def is_url(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def work_root(work_dir: str) -> str:
    """The work dir as an absolute path, or the URL as given."""
    if is_url(work_dir):
        return work_dir.rstrip("/")
    if work_dir.startswith("file://"):
        work_dir = work_dir[len("file://"):]
    return str(Path(work_dir).expanduser().absolute())


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


def storage_env(uris: Iterable[str]) -> dict[str, str]:
    """The storage variables of this process to give Ray workers; none when every URI is local."""
    if not any(is_url(os.fspath(u)) for u in uris if u):
        return {}
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
