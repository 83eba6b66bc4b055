"""Where an output may go, and what to do when something is already there. One policy for `ffray swap`,
`ffray batch`, `ffray swap-image` and the driver:

- an output is never one of the job's inputs (the target, a source image, the manifest): compared as
  files (os.path.samefile: through `.`/`..`, symlinks and hard links) where both exist, as resolved
  real paths otherwise, and as normalised URL strings for URLs;
- an output is never an existing directory;
- a batch row's output stays below its --output-root (resolved, so a symlink cannot lead out of it);
- an existing output is kept: if it is byte for byte what this same job wrote before (the driver
  records the sha256 of every output it writes, per video key) it counts as already done, else it is
  refused unless the user passed --overwrite.

Records: `<work-dir>/videos/<video_key>/outputs/<hash of the output URI>.json`, one small file per
output (two requests sharing a key remux concurrently; one file each needs no read-modify-write).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from ffray.errors import InputError
from ffray.pipeline.storage import is_url, join, local_path, write_json_atomic

log = logging.getLogger(__name__)

OUTPUTS = "outputs"  # folder of output records below a video key's folder


def _local(path: str | os.PathLike) -> str:
    return str(local_path(path))


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, `.`/`..`/`//` and a trailing `/` removed from the path."""
    parts = urlsplit(url)
    path = posixpath.normpath(parts.path) if parts.path else ""
    path = "" if path in (".", "/") else path
    if path.startswith("//"):  # normpath keeps a leading '//'
        path = "/" + path.lstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def output_id(uri: str | os.PathLike) -> str:
    """The output's identity: its normalised URL, or its resolved real path."""
    uri = os.fspath(uri)
    return normalise_url(uri) if is_url(uri) else os.path.realpath(_local(uri))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = os.fspath(a), os.fspath(b)
    if is_url(a) or is_url(b):
        return is_url(a) and is_url(b) and normalise_url(a) == normalise_url(b)
    try:
        return os.path.samefile(_local(a), _local(b))  # st_dev + st_ino: hard links too
    except OSError:  # one of them does not exist (yet)
        return output_id(a) == output_id(b)


def check_destination(output: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike]] = ()) -> None:
    """InputError unless `output` can be written without harming an input: it is none of `inputs`
    ((what, path) pairs such as ("the target", t)) and not an existing directory."""
    output = os.fspath(output)
    for what, uri in inputs:
        if uri and same_file(output, uri):
            named = "" if os.fspath(uri) == output else f" {os.fspath(uri)}"
            raise InputError(f"{output}: is the same file as {what}{named}; choose another output")
    if _is_dir(output):
        raise InputError(f"{output}: is a directory; give the output a file name")


def request_inputs(target: str, sources: Iterable[str] = (), reference: str | None = None) -> list[tuple[str, str]]:
    """(what, path) pairs of a swap's inputs, for check_destination."""
    inputs = [("the target", target), *(("the source image", s) for s in sources)]
    return [*inputs, ("the reference face image", reference)] if reference else inputs


def check_inside_root(output: str | os.PathLike, root: str | os.PathLike) -> None:
    """InputError unless `output` resolves below `root` (a batch's --output-root)."""
    output, root = os.fspath(output), os.fspath(root)
    if is_url(root):
        base = normalise_url(root)
        inside = is_url(output) and normalise_url(output).startswith(base.rstrip("/") + "/")
    elif is_url(output):
        inside = False
    else:
        real_root = os.path.realpath(_local(root))
        real = os.path.realpath(_local(output))
        inside = real != real_root and os.path.commonpath([real, real_root]) == real_root
    if not inside:
        raise InputError(f"{output}: outside --output-root {root}; widen --output-root to allow it")


def record_uri(video_dir: str, output: str | os.PathLike) -> str:
    name = hashlib.sha256(output_id(output).encode()).hexdigest()[:24]
    return join(video_dir, OUTPUTS, name + ".json")


def write_record(video_dir: str, output: str | os.PathLike, info: dict) -> None:
    """Remember that this video key wrote `output` with `info` (sha256, size, frames, ...)."""
    write_json_atomic(record_uri(video_dir, output), {**info, "output_id": output_id(output)})


def read_record(video_dir: str, output: str | os.PathLike) -> dict | None:
    from ffray.media.io import split_uri

    fs, path = split_uri(record_uri(video_dir, output))
    try:
        fs.invalidate_cache(path)  # an earlier process may have written it since
        with fs.open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):  # missing, or not a record this version can read
        return None
    return data if isinstance(data, dict) and data.get("output_id") == output_id(output) else None


def existing_output(output: str | os.PathLike, video_dir: str, *, overwrite: bool = False) -> dict | None:
    """What is at `output` before a job writes it: None when nothing is there (or --overwrite lets it
    be replaced); this key's record, marked `already_done`, when the file is byte for byte what this
    same job wrote before; InputError otherwise."""
    from ffray.media.io import sha256_and_size

    output = os.fspath(output)
    if not _exists(output):
        return None
    if _is_dir(output):
        raise InputError(f"{output}: is a directory; give the output a file name")
    record = read_record(video_dir, output)
    if record is not None:
        try:
            sha, size = sha256_and_size(output if is_url(output) else output_id(output))
        except OSError as exc:
            raise InputError(f"{output}: exists and cannot be read ({exc})") from exc
        if (sha, size) == (record.get("sha256"), record.get("size")):
            return {**record, "already_done": True}
    if overwrite:
        return None
    raise InputError(f"{output}: exists; pass --overwrite to replace it")


def check_overwrite(output: str | os.PathLike, overwrite: bool) -> None:
    """Outputs with no record (swap-image): an existing file is refused unless --overwrite."""
    output = os.fspath(output)
    if _is_dir(output):
        raise InputError(f"{output}: is a directory; give the output a file name")
    if not overwrite and _exists(output):
        raise InputError(f"{output}: exists; pass --overwrite to replace it")


def _exists(uri: str) -> bool:
    if not is_url(uri):
        # resolved too: 'missing/../out.mp4' names out.mp4 to the writer, though the kernel cannot open it;
        # not resolved: a dangling symlink is something we would replace as well
        return os.path.lexists(_local(uri)) or os.path.exists(output_id(uri))
    from ffray.media.io import split_uri

    fs, path = split_uri(uri)
    try:
        return bool(fs.exists(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{uri}: cannot check whether it exists ({exc})") from exc


def _is_dir(uri: str) -> bool:
    if not is_url(uri):
        return os.path.isdir(output_id(uri))
    from ffray.media.io import split_uri

    fs, path = split_uri(uri)
    try:
        return bool(fs.isdir(path))
    except (OSError, ValueError):
        return False
