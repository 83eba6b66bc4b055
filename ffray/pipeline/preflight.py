"""Checks the driver runs before the first frame, and before Ray starts, so that a mistake is one line
naming the file or option instead of a traceback from inside an actor after work was done.

Job-wide (raise, the job does not start): model options name known models of the right kind; every model
the job will use resolves (registry models: fetched if needed and hash-verified; custom `name=PATH`
models: loaded and checked against their type's I/O contract); the work dir can be written.
Per request (the caller records the error on that row only): the source images are there; the output's
folder can be written.

Writability is tested by really creating and deleting a small object there: permissions, read-only
mounts, a path component that is a file, or missing object-store credentials all show up the same way.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import uuid
from collections.abc import Sequence

from ffray.errors import InputError, MediaError, ModelError
from ffray.faces.options import FaceOptions
from ffray.pipeline.config import PipelineConfig
from ffray.pipeline.storage import failure_reason, is_url, local_path

PROBE_PREFIX = ".ffray-probe-"

# custom model files already loaded and contract-checked in this process: (name, path, sha256). A batch
# runs one job per option group; the same private model is checked once.
_checked_custom: set[tuple[str, str, str]] = set()


def check_job(options: FaceOptions, config: PipelineConfig) -> None:
    """Everything job-wide, cheapest first. InputError / ModelError with one line."""
    options.check_pack_supports_filters()
    check_model_names(options)
    check_work_dir(config.work_dir)
    check_models(options, config)
    if config.sign_cert:  # a certificate c2pa refuses fails now, not after the last frame
        from ffray.label import check_signing_credentials

        check_signing_credentials(config.sign_cert, config.sign_key)


def check_model_names(options: FaceOptions) -> None:
    """Every model option names a known model of its kind, `many` where the option allows it, or (builtin
    pack, which loads none of them) `builtin`. Checked for options a job does not use too: a typo there
    is still a typo, and would surface when the pack or the mask types change."""
    from ffray.faces.packs import MODEL_OPTIONS
    from ffray.models.registry import MODELS
    from ffray.models.store import parse_model_ref

    for field, (flag, kind) in MODEL_OPTIONS.items():
        ref = getattr(options, field)
        if ref is None:
            continue
        try:
            name, location = parse_model_ref(ref)
        except ModelError as exc:
            raise InputError(f"{flag} {ref}: a model is NAME or NAME=PATH_OR_URL") from exc
        if location is None and name == "many" and kind in ("detector", "landmarker"):
            continue
        if location is None and options.pack == "builtin" and (name == "builtin" or
                                                               (name == "hog" and kind == "detector")):
            continue  # the builtin pack's own names (`hog`: its old detector, dlib's HOG)
        spec = MODELS.get(name)
        if spec is None:
            names = [n for n, s in MODELS.items() if s.kind == kind]
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(names))}"
            if options.pack == "builtin":
                hint += ("; the builtin pack takes 'builtin', 'hog' (detector) or a FaceFusion name, which it "
                         "does not load")
            raise InputError(f"{flag} {name}: not a known {kind} model ({hint})")
        if spec.kind != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise InputError(f"{flag} {name}: {name} is a {spec.kind} model, not {article} {kind}")


def check_models(options: FaceOptions, config: PipelineConfig) -> None:
    """Resolve every model the job will use, as the actors will (same store settings): a registry model
    is fetched if needed and hash-verified; a custom file is loaded on CPU and its I/O contract checked
    (ffray.models.sessions.create_session). ModelError naming the file."""
    from ffray.faces.packs import model_refs
    from ffray.models.sessions import ExecutionOptions, create_session
    from ffray.models.store import ModelStore

    refs = model_refs(options)
    if not refs:
        return
    store = ModelStore(**config.store_settings())
    execution = ExecutionOptions(providers=("cpu",), intra_op_threads=config.intra_op_threads)
    for _, ref, _ in refs:
        resolved = store.resolve(ref)
        key = (resolved.spec.name, str(resolved.path), resolved.sha256)
        if resolved.custom and key not in _checked_custom:
            create_session(resolved, execution, check_contract=True)  # dropped at once: only the check counts
            _checked_custom.add(key)


def check_work_dir(work_dir: str) -> None:
    """The work dir exists (created if need be) and takes a new object. InputError otherwise."""
    from ffray.pipeline.storage import work_root

    root = work_root(work_dir)
    problem = probe_writable(root, create=True)
    if problem:
        raise InputError(f"{work_dir}: work dir is not writable ({problem})")


def check_sources(paths: Sequence[str]) -> None:
    """Each source image is there and not empty (decoded later, once, by the source analysis)."""
    from ffray.media.io import check_readable, split_uri

    for path in paths:
        try:
            fs, inner = split_uri(path)
            missing = not fs.exists(inner)
        except (OSError, ValueError):
            missing = False  # check_readable names what is wrong with it
        if missing:
            raise MediaError(path, "source image not found")
        check_readable(path)  # a folder, an empty file, unreadable


class OutputFolders:
    """Probes each distinct output folder once per job; a folder that cannot be written fails only the
    requests whose output goes there."""

    def __init__(self) -> None:
        self._problems: dict[str, str | None] = {}

    def check(self, output: str) -> None:
        folder = _parent(output)
        if folder not in self._problems:
            self._problems[folder] = probe_writable(folder, create=False)
        if self._problems[folder]:
            raise InputError(f"{output}: cannot write to the output folder ({self._problems[folder]})")


def _parent(uri: str) -> str:
    if is_url(uri):
        return uri.rstrip("/").rsplit("/", 1)[0]
    return str(local_path(uri).parent)


def probe_writable(folder: str, create: bool) -> str | None:
    """None when a new object can be created (and is then deleted) in `folder`, else the reason.

    Local paths: with `create`, the folder is made as the job would make it; without, nothing is left
    behind: the probe goes into the nearest folder that exists (the output writer makes the rest)."""
    try:
        if is_url(folder):
            from ffray.media.io import split_uri

            fs, path = split_uri(folder)
            probe = f"{path.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
            fs.pipe_file(probe, b"ffray write probe\n")
            fs.rm_file(probe)
            return None
        path = local_path(folder)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        else:
            while not path.exists() and path != path.parent:
                path = path.parent
        if not path.is_dir():
            return f"{path} is not a directory"
        fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=path)
        try:
            os.write(fd, b"ffray write probe\n")
        finally:
            os.close(fd)
            os.unlink(name)
        return None
    except Exception as exc:  # OSError, or an object store's own errors (credentials, endpoint, ...)
        return failure_reason(exc)
