"""Resolves a model name (or `name=PATH_OR_URL`) to a verified local file.

Cache layout is FaceFusion's `.assets/models` layout: `<cache>/<file>.onnx` beside its crc32
`<cache>/<file>.hash`, so a FaceFusion models folder can be copied in as it is. Beside them we keep
`<file>.onnx.verified` (JSON: sha256, crc32, size, mtime) written only after a full hash check.

Downloads go to `<file>.part` (resumed with HTTP Range / seek after an interruption), are verified,
and only then renamed to the final name, under a per-file lock so several actors on one node can
resolve the same model at once. Sources: FaceFusion's release URLs (default), or one configured
source: an http(s) base URL, an fsspec URL such as `s3://bucket/prefix`, or a local folder; a file is
looked up there as `<source>/<file>` and `<source>/<release>/<file>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ffray import __version__
from ffray.errors import ModelError
from ffray.models.registry import get_spec
from ffray.models.spec import ModelSpec

log = logging.getLogger(__name__)

CACHE_ENV = "FFRAY_MODEL_CACHE"
SOURCE_ENV = "FFRAY_MODEL_SOURCE"
S3_ENDPOINT_ENV = "FFRAY_S3_ENDPOINT_URL"
CHUNK = 1 << 20
HTTP_TIMEOUT_S = 20  # socket timeout: connect, and any stall while reading
VERIFIED_SUFFIX = ".verified"
PART_SUFFIX = ".part"

SUPPLY_HINT = (
    "supply it by copying the file (and its .hash) into {cache}, or point --model-source / "
    f"{SOURCE_ENV} at a folder, an http(s) mirror or an s3:// bucket that holds it"
)


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    path: Path
    sha256: str
    custom: bool = False  # given as name=PATH_OR_URL: not hash-verified, contract-checked at load
    origin: str | None = None  # where the file came from (URL or user path), for the run report


def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """`"inswapper_128"` -> ("inswapper_128", None); `"inswapper_128=/m/x.onnx"` -> ("inswapper_128", "/m/x.onnx")."""
    name, sep, location = ref.partition("=")
    name, location = name.strip(), location.strip()
    if not name or (sep and not location):
        raise ModelError(f"{ref}: a model is NAME or NAME=PATH_OR_URL")
    return name, (location if sep else None)


def file_digests(path: str | os.PathLike) -> tuple[str, str]:
    """(sha256 hex, crc32 as FaceFusion writes it: 8 lowercase hex) in one pass over the file."""
    sha = hashlib.sha256()
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            crc = zlib.crc32(chunk, crc)
    return sha.hexdigest(), format(crc & 0xFFFFFFFF, "08x")


def _is_url(location: str) -> bool:
    scheme = urlparse(location).scheme
    return len(scheme) > 1  # a Windows drive letter is not a scheme


def _join(base: str, *parts: str) -> str:
    if _is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


class _NotFound(Exception):
    pass


class CorruptModelError(ModelError):
    """A cached file whose bytes do not match the expected hash."""


@dataclass
class _Expected:
    sha256: str | None = None
    crc32: str | None = None
    against: str = ""  # what the expectation came from, for messages

    def describe(self) -> str:
        parts = [f"sha256 {self.sha256}" if self.sha256 else "", f"crc32 {self.crc32}" if self.crc32 else ""]
        return " / ".join(p for p in parts if p) or "no known hash"

    def mismatch(self, sha256: str, crc32: str) -> str | None:
        if self.sha256 and sha256 != self.sha256:
            return f"sha256 is {sha256}, expected {self.sha256} ({self.against})"
        if not self.sha256 and self.crc32 and crc32 != self.crc32:
            return f"crc32 is {crc32}, expected {self.crc32} ({self.against})"
        return None


class ModelStore:
    def __init__(self, cache_dir: str | os.PathLike | None = None, source: str | None = None,
                 commercial_only: bool = False, storage_options: dict | None = None):
        cache = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ffray" / "models"
        self.cache_dir = Path(cache).expanduser()
        self.source = source or os.environ.get(SOURCE_ENV) or None
        self.commercial_only = commercial_only
        self.storage_options = dict(storage_options or {})
        endpoint = os.environ.get(S3_ENDPOINT_ENV)
        if endpoint and "endpoint_url" not in self.storage_options:
            self.storage_options["endpoint_url"] = endpoint
        self._custom_digests: dict[tuple[str, int, int], str] = {}
        self._unreachable: set[str] = set()  # hosts that refused or timed out: not retried per model

    # ---- public API -------------------------------------------------------------------------------

    def resolve(self, ref: str, download: bool = True) -> ResolvedModel:
        """A verified local file for a model name, or for `name=PATH_OR_URL` (a custom model)."""
        name, location = parse_model_ref(ref)
        spec = get_spec(name)
        if location is not None:
            return self._resolve_custom(spec, location, download)
        self.check_licence(spec)
        return self._resolve_registry(spec, download=download, force=False)

    def pull(self, ref: str, force: bool = False) -> ResolvedModel:
        """Like resolve(download=True); a corrupt cached file is fetched again, `force` re-fetches anyway."""
        name, location = parse_model_ref(ref)
        spec = get_spec(name)
        if location is not None:
            return self._resolve_custom(spec, location, download=True)
        self.check_licence(spec)
        return self._resolve_registry(spec, download=True, force=force)

    def verify(self, ref: str) -> ResolvedModel:
        """Full re-hash of a cached model against its pinned hash or its `.hash` file; never downloads."""
        name, location = parse_model_ref(ref)
        spec = get_spec(name)
        if location is not None:
            return self._resolve_custom(spec, location, download=False)
        path = self.path_for(spec)
        if not path.is_file():
            raise ModelError(f"{path}: {spec.name} is not in the cache; run `ffray models pull {spec.name}`")
        with self._lock(spec):
            return self._verify_cached(spec, path, allow_fetch_hash=False)

    def status(self, name: str) -> str:
        """Cheap cache state, no hashing: verified | unverified | changed | partial | missing."""
        spec = get_spec(name)
        path = self.path_for(spec)
        if not path.is_file():
            return "partial" if self._part_path(path).is_file() else "missing"
        record = self._read_record(path)
        if record is None:
            return "unverified"
        return "verified" if self._record_matches(path, record) else "changed"

    def recorded_sha256(self, name: str) -> str | None:
        """The sha256 recorded when the cached file was last verified, if it is still that file."""
        path = self.path_for(name)
        record = self._read_record(path) if path.is_file() else None
        return record.get("sha256") if record is not None and self._record_matches(path, record) else None

    def path_for(self, spec: ModelSpec | str) -> Path:
        spec = get_spec(spec) if isinstance(spec, str) else spec
        return self.cache_dir / spec.file_name

    def check_licence(self, spec: ModelSpec) -> None:
        if self.commercial_only and not spec.commercial:
            raise ModelError(
                f"{spec.name}: its licence ({spec.license}) does not allow commercial use; refused by "
                "--commercial-only"
            )

    def candidates(self, spec: ModelSpec) -> list[tuple[str, str]]:
        """(model URL or path, its .hash URL or path) to try in order."""
        if self.source is None:
            return [(url, url.rsplit("/", 1)[0] + "/" + spec.hash_file_name) for url in spec.urls]
        return [
            (_join(self.source, *prefix, spec.file_name), _join(self.source, *prefix, spec.hash_file_name))
            for prefix in ((), (spec.release,))
        ]

    # ---- registry models ----------------------------------------------------------------------------

    def _resolve_registry(self, spec: ModelSpec, download: bool, force: bool) -> ResolvedModel:
        path = self.path_for(spec)
        with self._lock(spec):
            if path.is_file() and not force:
                record = self._read_record(path)
                # a record made before the registry pinned (or re-pinned) a hash is not trusted
                if (record is not None and self._record_matches(path, record)
                        and (spec.sha256 is None or record.get("sha256") == spec.sha256)
                        and (spec.crc32 is None or record.get("crc32") == spec.crc32)):
                    return ResolvedModel(spec, path, record["sha256"], origin=record.get("origin"))
                try:
                    return self._verify_cached(spec, path, allow_fetch_hash=download)
                except CorruptModelError as exc:
                    if not download:
                        raise
                    corrupt = path.with_name(path.name + ".corrupt")
                    os.replace(path, corrupt)  # out of the way, kept for inspection, never loaded
                    log.warning("%s; moved to %s and fetching it again", exc, corrupt.name)
            if not download:
                raise ModelError(
                    f"{path.name}: {spec.name} is not in the cache {self.cache_dir} and downloads are off "
                    f"(expected {self._expected_text(spec)}); " + SUPPLY_HINT.format(cache=self.cache_dir)
                )
            return self._download(spec, path)

    def _pinned(self, spec: ModelSpec) -> _Expected:
        return _Expected(spec.sha256, spec.crc32, "pinned in the registry")

    def _expected_text(self, spec: ModelSpec) -> str:
        if spec.sha256 or spec.crc32:
            return self._pinned(spec).describe()
        return f"the crc32 in FaceFusion's {spec.hash_file_name}"

    def _verify_cached(self, spec: ModelSpec, path: Path, allow_fetch_hash: bool) -> ResolvedModel:
        expected = self._pinned(spec)
        hash_path = self.cache_dir / spec.hash_file_name
        if not expected.sha256 and not expected.crc32:
            if hash_path.is_file():
                expected = _Expected(crc32=_read_crc32(hash_path.read_text(), str(hash_path)), against=str(hash_path))
            elif allow_fetch_hash:
                expected = self._fetch_expected(spec)
            else:
                raise ModelError(
                    f"{path}: cannot verify {spec.name}: no pinned hash and no {spec.hash_file_name} beside it; "
                    f"copy FaceFusion's {spec.hash_file_name} into {self.cache_dir} or run `ffray models pull {spec.name}`"
                )
        sha256, crc32 = file_digests(path)
        problem = expected.mismatch(sha256, crc32)
        if problem:
            raise CorruptModelError(f"{path}: corrupt or wrong file for {spec.name}: {problem}")
        self._write_record(path, sha256, crc32, expected.against, origin=None)
        return ResolvedModel(spec, path, sha256)

    def _fetch_expected(self, spec: ModelSpec) -> _Expected:
        reasons = []
        for _, hash_url in self.candidates(spec):
            try:
                return _Expected(crc32=_read_crc32(self._read_small(hash_url), hash_url), against=hash_url)
            except (_NotFound, OSError, ModelError) as exc:
                reasons.append(f"{hash_url}: {exc}")
        raise ModelError(
            f"{spec.hash_file_name}: cannot get the hash to verify {spec.name} ({'; '.join(reasons)}); "
            + SUPPLY_HINT.format(cache=self.cache_dir)
        )

    def _download(self, spec: ModelSpec, path: Path) -> ResolvedModel:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        part = self._part_path(path)
        reasons = []
        for url, hash_url in self.candidates(spec):
            expected = self._pinned(spec)
            hash_text = None
            try:
                if not expected.sha256 and not expected.crc32:
                    hash_text = self._read_small(hash_url)
                    expected = _Expected(crc32=_read_crc32(hash_text, hash_url), against=hash_url)
                log.info("fetching %s from %s", spec.file_name, url)
                self._fetch(url, part)
            except (_NotFound, OSError, ModelError) as exc:
                reasons.append(f"{url}: {exc}")
                continue
            sha256, crc32 = file_digests(part)
            problem = expected.mismatch(sha256, crc32)
            if problem:
                part.unlink(missing_ok=True)  # never resume onto bad bytes
                reasons.append(f"{url}: downloaded file rejected: {problem}")
                continue
            if hash_text is not None:
                _atomic_write_text(self.cache_dir / spec.hash_file_name, hash_text)
            os.replace(part, path)
            self._write_record(path, sha256, crc32, expected.against, origin=url)
            log.info("%s verified (%s), sha256 %s", path, expected.against, sha256)
            return ResolvedModel(spec, path, sha256, origin=url)
        raise ModelError(
            f"{spec.file_name}: {spec.name} is not in the cache {self.cache_dir} and could not be fetched "
            f"(expected {self._expected_text(spec)}; "
            f"{'; '.join(reasons)}); " + SUPPLY_HINT.format(cache=self.cache_dir)
        )

    # ---- custom models (name=PATH_OR_URL) -----------------------------------------------------------

    def _resolve_custom(self, spec: ModelSpec, location: str, download: bool) -> ResolvedModel:
        if not _is_url(location) or location.startswith("file://"):
            path = Path(location.removeprefix("file://")).expanduser().resolve()
            if not path.is_file():
                raise ModelError(f"{path}: custom model file for {spec.name} not found")
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key not in self._custom_digests:
                self._custom_digests[key] = file_digests(path)[0]
            return ResolvedModel(spec, path, self._custom_digests[key], custom=True, origin=str(path))
        folder = self.cache_dir / "custom" / hashlib.sha256(location.encode()).hexdigest()[:16]
        name = os.path.basename(urlparse(location).path) or spec.file_name
        path = folder / name
        with self._lock_path(path):
            record = self._read_record(path) if path.is_file() else None
            if record is not None and self._record_matches(path, record):
                return ResolvedModel(spec, path, record["sha256"], custom=True, origin=location)
            if not download:
                raise ModelError(f"{location}: custom model for {spec.name} is not in the cache and downloads are off")
            folder.mkdir(parents=True, exist_ok=True)
            part = self._part_path(path)
            try:
                self._fetch(location, part)
            except (_NotFound, OSError) as exc:
                raise ModelError(f"{location}: cannot fetch custom model for {spec.name}: {exc}") from exc
            sha256, crc32 = file_digests(part)
            os.replace(part, path)
            self._write_record(path, sha256, crc32, "custom model, not verified", origin=location)
            return ResolvedModel(spec, path, sha256, custom=True, origin=location)

    # ---- transport ------------------------------------------------------------------------------------

    def _check_host(self, url: str) -> None:
        if urlparse(url).netloc in self._unreachable:
            raise OSError("host unreachable earlier in this run")

    def _mark_unreachable(self, url: str, exc: urllib.error.URLError) -> OSError:
        self._unreachable.add(urlparse(url).netloc)
        return OSError(f"unreachable ({exc.reason})")

    def _read_small(self, location: str) -> str:
        if location.startswith(("http://", "https://")):
            self._check_host(location)
            try:
                with urllib.request.urlopen(_request(location), timeout=HTTP_TIMEOUT_S) as response:
                    return response.read(4096).decode("ascii", "replace")
            except urllib.error.HTTPError as exc:
                raise (_NotFound if exc.code == 404 else OSError)(f"HTTP {exc.code}") from None
            except urllib.error.URLError as exc:
                raise self._mark_unreachable(location, exc) from None
        with self._open(location) as f:
            return f.read(4096).decode("ascii", "replace")

    def _fetch(self, location: str, part: Path) -> None:
        """Copy `location` into `part`, continuing from the bytes already in `part`."""
        offset = part.stat().st_size if part.is_file() else 0
        if location.startswith(("http://", "https://")):
            self._fetch_http(location, part, offset)
            return
        with self._open(location) as src:
            size = getattr(src, "size", None)
            if offset and size is not None and offset > size:
                offset = 0  # a stale .part from another file: start over
            src.seek(offset)
            with open(part, "ab" if offset else "wb") as dst:
                if offset:
                    log.info("resuming %s at byte %d", part.name, offset)
                while chunk := src.read(CHUNK):
                    dst.write(chunk)

    def _fetch_http(self, url: str, part: Path, offset: int) -> None:
        self._check_host(url)
        request = _request(url)
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the .part is already whole (or longer): verify or restart
                part.unlink()
                self._fetch_http(url, part, 0)
                return
            raise (_NotFound if exc.code == 404 else OSError)(f"HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise self._mark_unreachable(url, exc) from None
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                log.info("%s: server ignored the range request; downloading from the start", url)
            elif resumed:
                log.info("resuming %s at byte %d", part.name, offset)
            with open(part, "ab" if resumed else "wb") as dst:
                try:
                    while chunk := response.read(CHUNK):
                        dst.write(chunk)
                except (http.client.HTTPException, OSError) as exc:
                    if isinstance(exc, http.client.IncompleteRead):
                        dst.write(exc.partial)
                    raise OSError(f"download interrupted after {dst.tell()} bytes ({type(exc).__name__}); "
                                  "rerun to resume") from None
            expected_length = response.headers.get("Content-Length")
        if expected_length is not None:
            got = part.stat().st_size - (offset if resumed else 0)
            if got < int(expected_length):
                raise OSError(f"download interrupted: got {got} of {expected_length} bytes; rerun to resume")

    @contextlib.contextmanager
    def _open(self, location: str):
        if not _is_url(location) or location.startswith("file://"):
            path = location.removeprefix("file://")
            if not os.path.isfile(path):
                raise _NotFound("no such file")
            with open(path, "rb") as f:
                f.size = os.path.getsize(path)  # type: ignore[attr-defined]
                yield f
            return
        import fsspec

        protocol = urlparse(location).scheme
        fs = fsspec.filesystem(protocol, **self.storage_options)
        try:
            f = fs.open(location, "rb")
        except FileNotFoundError:
            raise _NotFound("no such object") from None
        with f:
            yield f

    # ---- records and locks ---------------------------------------------------------------------------

    @staticmethod
    def _part_path(path: Path) -> Path:
        return path.with_name(path.name + PART_SUFFIX)

    @staticmethod
    def _record_path(path: Path) -> Path:
        return path.with_name(path.name + VERIFIED_SUFFIX)

    def _read_record(self, path: Path) -> dict | None:
        try:
            return json.loads(self._record_path(path).read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _record_matches(path: Path, record: dict) -> bool:
        stat = path.stat()
        return record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns

    def _write_record(self, path: Path, sha256: str, crc32: str, against: str, origin: str | None) -> None:
        stat = path.stat()
        record = {"sha256": sha256, "crc32": crc32, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                  "verified_against": against, "origin": origin}
        try:
            _atomic_write_text(self._record_path(path), json.dumps(record, indent=1))
        except OSError as exc:  # a read-only cache still works, it just re-hashes next time
            log.debug("cannot write %s: %s", self._record_path(path), exc)

    def _lock(self, spec: ModelSpec):
        return self._lock_path(self.path_for(spec))

    @contextlib.contextmanager
    def _lock_path(self, path: Path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "a")
        except OSError:  # read-only cache: nobody can write there, so there is nothing to race with
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": f"ffray/{__version__}"})


def _read_crc32(text: str, where: str) -> str:
    value = text.strip().lower()
    if len(value) != 8 or any(c not in "0123456789abcdef" for c in value):
        raise ModelError(f"{where}: not a FaceFusion .hash file (expected 8 hex digits of crc32)")
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
