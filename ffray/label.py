"""Synthetic-media labels on ffray outputs: machine-readable marking (EU AI Act art. 50).

Three layers, each readable without the others:

- container tags (`label_metadata`), written by remux together with the rest of the container
  metadata. Every output muxer keeps `comment`, so it carries the whole label (tool, version,
  models); mp4 also keeps `description`; mkv and webm (and mp4/mov muxed with
  `movflags=use_metadata_tags`) also keep the structured `synthetic_media` and `ffray_models` keys.
- a JSON sidecar `<output>.ffray.json` (`write_sidecar`): job, inputs, models, options, time, and
  the output's sha256 so a reader can tell whether the sidecar belongs to the file it sits next to.
- a C2PA manifest embedded in MP4/MOV/AVI (`sign_c2pa`), signed with the operator's certificate and
  hash-bound to the file, so any later change to the file is detected (`verify_label`).

No layer touches an audio or video packet: tags live in the container header, and C2PA adds one box
and moves chunk offsets. Determinism and resume rely on the packets staying byte-identical.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ffray import __version__
from ffray.errors import InputError, ProcessingError
from ffray.media.io import (
    check_readable,
    local_path,
    open_input,
    open_output_atomic,
    sha256_and_size,
    split_uri,
)
from ffray.redact import redact, redact_data

log = logging.getLogger(__name__)

TOOL = "ffray"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
SIDECAR_SUFFIX = ".ffray.json"
SIDECAR_SCHEMA = "ffray.label/1"
C2PA_ASSERTION = "org.ffray.synthetic"  # our own assertion in the manifest: models, inputs' hashes, job
# output suffix -> MIME type c2pa embeds a manifest in (it cannot write Matroska/WebM)
C2PA_FORMATS = {".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".avi": "video/x-msvideo"}
# c2pa validation codes that mean the signer's certificate is not on the trust list, not that the
# signature or the hash binding is broken
_UNTRUSTED_CODES = {"signingCredential.untrusted"}
_COMMENT = re.compile(r"^synthetic: face swapped by (?P<tool>\S+) (?P<version>[^;\s]+)(?:; models: (?P<models>.*))?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


# ---------------------------------------------------------------- container tags

def _bare_sha256(value: str) -> str:
    return value.removeprefix("sha256:").lower()


def _models_text(models: dict[str, str]) -> str:
    for name in models:
        if not _MODEL_NAME.match(name):  # ',', '=' and ';' separate the fields of the tag
            raise ValueError(f"model name {name!r}: only letters, digits and _ . + - can go in a label tag")
    return ", ".join(f"{name}=sha256:{_bare_sha256(sha)}" for name, sha in sorted(models.items()))


def _parse_models(text: str) -> dict[str, str]:
    models = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, sha = item.partition("=")
        models[name] = _bare_sha256(sha)
    return models


def label_metadata(tool_version: str = __version__, models: dict[str, str] | None = None) -> dict[str, str]:
    """Container tags that mark a file as synthetic. Deterministic (no time, no job id), so remux still
    writes the same bytes for the same inputs. `models`: name -> sha256 (with or without `sha256:`)."""
    models_text = _models_text(models or {})
    comment = f"synthetic: face swapped by {TOOL} {tool_version}"
    if models_text:
        comment += f"; models: {models_text}"
    tags = {
        "comment": comment,
        "description": f"Synthetic media: faces in this video were replaced with a trained face-swap model by "
                       f"{TOOL} {tool_version}; it does not show the people as recorded.",
        "synthetic_media": DIGITAL_SOURCE_TYPE,
    }
    if models_text:
        tags["ffray_models"] = models_text
    return tags


def read_container_label(path: str | os.PathLike) -> dict | None:
    """The label in a file's container tags, or None when there is none. MediaError when the file is
    missing or not media. Keys: synthetic, tool, version, models, digital_source_type, tags."""
    with open_input(path) as container:
        tags = {key.lower(): value for key, value in container.metadata.items()}  # Matroska upper-cases keys
    match = _COMMENT.match(tags.get("comment", "").strip())
    source_type = tags.get("synthetic_media")
    if not match and not source_type:
        return None
    models = _parse_models(tags.get("ffray_models") or (match and match["models"]) or "")
    return {
        "synthetic": True,
        "tool": match["tool"] if match else None,
        "version": match["version"] if match else None,
        "models": models,
        "digital_source_type": source_type or DIGITAL_SOURCE_TYPE,
        "tags": {key: tags[key] for key in ("comment", "description", "synthetic_media", "ffray_models")
                 if key in tags},
    }


# ---------------------------------------------------------------- sidecar

def sidecar_uri(output_path: str | os.PathLike) -> str:
    return os.fspath(output_path) + SIDECAR_SUFFIX


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_sidecar(output_path: str | os.PathLike, info: dict) -> str:
    """Write `<output>.ffray.json` (atomically: temp file, then rename or one put) and return its URI.
    `info`: job_id, target, target_sha256, sources, source_sha256, models {name: sha256}, options, ...;
    the output's name, sha256 and size are added unless `info["output"]` has them already. URL
    credentials in any string are masked."""
    output_path = os.fspath(output_path)
    output = dict(info.get("output") or {})
    if "sha256" not in output:
        output["sha256"], output["size"] = sha256_and_size(output_path)
    output.setdefault("name", Path(split_uri(output_path)[1]).name)
    payload = {
        "schema": SIDECAR_SCHEMA,
        "synthetic": True,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "tool": TOOL,
        "version": __version__,
        "written_utc": _utc_now(),
        **{key: value for key, value in info.items() if key != "output"},
        "output": output,
    }
    text = json.dumps(redact_data(payload), indent=2, sort_keys=True, default=str) + "\n"
    uri = sidecar_uri(output_path)
    with open_output_atomic(uri, suffix=".json") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return uri


def read_sidecar(output_path: str | os.PathLike) -> dict | None:
    """The sidecar next to `output_path`, or None when there is none; InputError when it is not JSON."""
    uri = sidecar_uri(output_path)
    fs, path = split_uri(uri)
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{uri}: unreadable label sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{uri}: label sidecar is not a JSON object")
    return data


# ---------------------------------------------------------------- C2PA signing

def read_bytes(uri: str | os.PathLike, what: str) -> bytes:
    """The whole file at a path or fsspec URL; InputError naming `what` (an option) when unreadable."""
    try:
        fs, path = split_uri(uri)
        with fs.open(path, "rb") as handle:
            return handle.read()
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {uri}: cannot read ({exc})") from exc


def read_trust_anchors(uri: str | os.PathLike) -> str:
    """PEM text of the CA certificates in `uri` (for `verify_label`); InputError when it holds none."""
    from cryptography import x509

    data = read_bytes(uri, "--trust")
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InputError(f"--trust {uri}: not a PEM file of CA certificates ({exc})") from exc
    return data.decode("ascii", "replace")


def _signing_material(cert_chain_pem: bytes | str, key_pem: bytes | str):
    """(c2pa algorithm name, cert chain PEM, PKCS#8 key PEM, signer common name); InputError naming
    the option when the PEMs cannot be used."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    cert_chain_pem = cert_chain_pem.encode() if isinstance(cert_chain_pem, str) else cert_chain_pem
    key_pem = key_pem.encode() if isinstance(key_pem, str) else key_pem
    try:
        chain = x509.load_pem_x509_certificates(cert_chain_pem)
    except ValueError as exc:
        raise InputError(f"--sign-cert: not a PEM certificate chain ({exc})") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--sign-key: not an unencrypted PEM private key ({exc})") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(key.curve.name)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "ps256"
    else:
        alg = None
    if alg is None:
        raise InputError("--sign-key: C2PA signs with EC P-256/P-384/P-521, Ed25519 or RSA (PSS) keys only")
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise InputError("--sign-key does not belong to the first certificate of --sign-cert")
    names = chain[0].subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else chain[0].subject.rfc4514_string()
    # c2pa reads only PKCS#8 ("BEGIN PRIVATE KEY"); accept SEC1/PKCS#1 files too
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return alg, cert_chain_pem, pkcs8, common_name


_CERT_HINT = ("C2PA needs an end-entity certificate issued by a CA (not self-signed, not a CA itself), valid now, "
              "with the digitalSignature key usage and the emailProtection extended key usage (c2pa-python "
              "0.38 refuses documentSigning and c2pa-kp-claimSigning by default), followed by its issuing CA "
              "certificates in the same PEM file")


def _signer(alg: str, chain: bytes, key: bytes):
    import c2pa

    try:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, None))
    except c2pa.C2paError as exc:
        raise InputError(f"--sign-cert/--sign-key: c2pa refused them ({exc}); {_CERT_HINT}") from exc


def _c2pa_context(settings: dict):
    import c2pa

    return c2pa.Context(settings=c2pa.Settings.from_dict(settings))


_BUILD_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}  # never embed a frame of the video


def _tiny_png() -> bytes:
    """A valid 1x1 grey PNG, to test-sign with (c2pa checks the certificate profile only when signing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + \
        chunk(b"IEND", b"")


def check_signing_credentials(sign_cert: str, sign_key: str) -> str:
    """Preflight: load the certificate chain and key (paths or fsspec URLs) and sign a tiny image in
    memory with them, so a certificate c2pa refuses fails before the first frame, not after the job.
    Returns the signer's common name; InputError naming the option otherwise."""
    import c2pa

    alg, chain, key, common_name = _signing_material(read_bytes(sign_cert, "--sign-cert"),
                                                     read_bytes(sign_key, "--sign-key"))
    builder = c2pa.Builder({"claim_generator_info": [{"name": TOOL, "version": __version__}]},
                           _c2pa_context(_BUILD_SETTINGS))
    builder.add_action({"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE})
    try:
        builder.sign(_signer(alg, chain, key), "image/png", io.BytesIO(_tiny_png()), io.BytesIO())
    except c2pa.C2paError as exc:
        raise InputError(f"--sign-cert {sign_cert}: c2pa cannot sign with it ({exc}); {_CERT_HINT}") from exc
    return common_name


@contextlib.contextmanager
def _local_copy(uri: str) -> Iterator[str]:
    """A local path with the bytes of `uri`: the path itself when local, else a temporary download."""
    path = local_path(uri)
    if path is not None:
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix="ffray-", suffix=Path(split_uri(uri)[1]).suffix)
    os.close(fd)
    try:
        fs, remote = split_uri(uri)
        fs.get_file(remote, tmp)
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


def _manifest_assertion(job_info: dict, models: dict[str, str], tool_version: str) -> dict:
    """Our assertion: hashes and ids only. Paths and options stay in the sidecar: the manifest travels
    with the file to whoever receives it."""
    data = {"synthetic": True, "digital_source_type": DIGITAL_SOURCE_TYPE, "tool": TOOL,
            "version": tool_version, "models": {name: _bare_sha256(sha) for name, sha in sorted(models.items())}}
    for key in ("job_id", "target_sha256", "source_sha256"):
        if job_info.get(key):
            data[key] = job_info[key]
    return data


def sign_c2pa(path: str | os.PathLike, cert_chain_pem: bytes | str, key_pem: bytes | str,
              target_path: str | os.PathLike | None = None, *, job_info: dict | None = None,
              models: dict[str, str] | None = None, tool_version: str = __version__) -> dict:
    """Embed a signed C2PA manifest in the MP4/MOV/AVI at `path` (local or fsspec URL), in place and
    atomically: the target video as parent ingredient (its own C2PA provenance, if any, is kept),
    `c2pa.opened` then `c2pa.edited` with the IPTC digital source type
    compositeWithTrainedAlgorithmicMedia, and an `org.ffray.synthetic` assertion (models, hashes, job id).
    Signing an already signed file replaces its manifest. Returns {signer, alg, format}.
    InputError for a container C2PA cannot hold or credentials c2pa refuses."""
    import c2pa

    path = os.fspath(path)
    check_readable(path)
    job_info = job_info or {}
    models = models if models is not None else dict(job_info.get("models") or {})
    suffix = Path(split_uri(path)[1]).suffix.lower()
    mime = C2PA_FORMATS.get(suffix)
    if mime is None:
        raise InputError(f"{path}: C2PA signing needs an {'/'.join(C2PA_FORMATS)} output; "
                         f"{suffix or '(no extension)'} files carry the container tags and sidecar only")
    alg, chain, key, common_name = _signing_material(cert_chain_pem, key_pem)
    manifest = {
        "claim_generator_info": [{"name": TOOL, "version": tool_version}],
        "title": Path(split_uri(path)[1]).name,
        "assertions": [{"label": C2PA_ASSERTION, "data": _manifest_assertion(job_info, models, tool_version)}],
    }
    builder = _builder_with_target(manifest, target_path)
    agent = {"name": TOOL, "version": tool_version}
    if target_path is not None:  # an edit of the target: c2pa wants `opened` (the parent) first
        builder.add_action({"action": "c2pa.opened", "softwareAgent": agent,
                            "parameters": {"ingredientIds": ["target"]}})
    builder.add_action({"action": "c2pa.edited" if target_path is not None else "c2pa.created",
                        "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent,
                        "description": "faces replaced with a trained face-swap model"})
    signer = _signer(alg, chain, key)
    with _local_copy(path) as source, open_output_atomic(path, suffix=suffix) as tmp:
        try:
            with open(source, "rb") as src, open(tmp, "w+b") as dst:
                builder.sign(signer, mime, src, dst)
        except c2pa.C2paError as exc:
            # c2pa refuses a certificate either up front (Signature) or in its check after signing
            if isinstance(exc, c2pa.C2paError.Signature) or "signingCredential" in str(exc):
                raise InputError(f"--sign-cert: c2pa cannot sign with it ({exc}); {_CERT_HINT}") from exc
            raise ProcessingError(f"{redact(path)}: C2PA signing failed ({exc})") from exc
    return {"signer": common_name, "alg": alg.upper(), "format": mime}


def _builder_with_target(manifest: dict, target_path) -> object:
    """A c2pa Builder with the target as `parentOf` ingredient: read by c2pa when it knows the format
    (so a target with C2PA provenance, e.g. from a camera, keeps its chain), else described by name."""
    import c2pa

    if target_path is None:
        return c2pa.Builder(manifest, _c2pa_context(_BUILD_SETTINGS))
    target_path = os.fspath(target_path)
    name = Path(split_uri(target_path)[1]).name
    ingredient = {"title": name, "relationship": "parentOf", "label": "target"}
    suffix = Path(name).suffix.lower()
    mime = C2PA_FORMATS.get(suffix)
    if mime is not None:
        builder = c2pa.Builder(manifest, _c2pa_context(_BUILD_SETTINGS))
        fs, remote = split_uri(target_path)
        try:
            with fs.open(remote, "rb") as handle:
                builder.add_ingredient(ingredient, mime, handle)
            return builder
        except c2pa.C2paError:
            builder.close()  # c2pa cannot parse it; it is still the parent, so describe it instead
    described = {**ingredient, "format": mime or _OTHER_VIDEO_MIME.get(suffix, "application/octet-stream")}
    return c2pa.Builder({**manifest, "ingredients": [described]}, _c2pa_context(_BUILD_SETTINGS))


_OTHER_VIDEO_MIME = {".mkv": "video/x-matroska", ".webm": "video/webm", ".ogg": "video/ogg", ".ogv": "video/ogg",
                     ".ts": "video/mp2t", ".flv": "video/x-flv", ".wmv": "video/x-ms-wmv"}


def c2pa_supported(output_path: str | os.PathLike) -> bool:
    """Whether C2PA can be embedded in this output (by its extension); others get tags and sidecar only."""
    return Path(split_uri(os.fspath(output_path))[1]).suffix.lower() in C2PA_FORMATS


# ---------------------------------------------------------------- the swap job's hook

def apply_labels(output_path: str | os.PathLike, *, job_info: dict, sidecar: bool, sign_cert: str | None,
                 sign_key: str | None, target_path: str) -> dict:
    """Label a finished output (remux already wrote `label_metadata`'s tags): sign it with C2PA when
    `sign_cert`/`sign_key` (paths or fsspec URLs) are given and the container can hold a manifest, then
    write the sidecar when `sidecar`; the sidecar comes last so it records the final sha256.
    `job_info`: job_id, target, target_sha256, sources, source_sha256, models {name: sha256}, options.
    Returns {sha256, size, sidecar: URI or None, c2pa: {signer, alg, format} | {skipped: why} | None};
    the sha256 is the file's final one, the one to record for "already done" checks."""
    output_path = os.fspath(output_path)
    if bool(sign_cert) != bool(sign_key):
        raise InputError("--sign-cert and --sign-key go together: give both or neither")
    c2pa_info = None
    if sign_cert:
        if c2pa_supported(output_path):
            c2pa_info = sign_c2pa(output_path, read_bytes(sign_cert, "--sign-cert"),
                                  read_bytes(sign_key, "--sign-key"), target_path, job_info=job_info)
        else:
            reason = (f"C2PA cannot be embedded in {Path(split_uri(output_path)[1]).suffix or 'this'} files "
                      f"(only {'/'.join(C2PA_FORMATS)}); labelled with container tags and sidecar only")
            log.warning("%s: %s", redact(output_path), reason)
            c2pa_info = {"skipped": reason}
    sha256, size = sha256_and_size(output_path)
    written = None
    if sidecar:
        written = write_sidecar(output_path, {**job_info, "c2pa": c2pa_info,
                                              "output": {"sha256": sha256, "size": size}})
    return {"sha256": sha256, "size": size, "sidecar": written, "c2pa": c2pa_info}


# ---------------------------------------------------------------- reading and verifying

# c2pa failure codes -> what they mean for someone checking a file
_FAILURE_MEANING = {
    "assertion.bmffHash.mismatch": "the file was changed after it was signed (hash binding broken)",
    "assertion.dataHash.mismatch": "the file was changed after it was signed (hash binding broken)",
    "assertion.boxesHash.mismatch": "the file was changed after it was signed (hash binding broken)",
    "claimSignature.mismatch": "the signature does not match the manifest (manifest altered or forged)",
    "claimSignature.outsideValidity": "the signing certificate was not valid when the file was signed",
    "signingCredential.expired": "the signing certificate has expired",
    "signingCredential.revoked": "the signing certificate was revoked",
    "signingCredential.invalid": "the signing certificate is not usable for C2PA",
}


@dataclass
class C2paStatus:
    state: str  # c2pa's validation_state: Invalid, Valid (signature and hash binding hold) or Trusted
    valid: bool  # signature and hash binding hold
    trusted: bool | None  # signer chains to a given trust anchor; None when no anchors were given
    signer: str | None = None
    issuer: str | None = None
    alg: str | None = None
    signed_at: str | None = None  # only with a timestamp authority
    digital_source_type: str | None = None
    actions: list[str] = field(default_factory=list)
    ingredients: list[str] = field(default_factory=list)
    assertion: dict | None = None  # the org.ffray.synthetic data
    failures: list[str] = field(default_factory=list)  # "code: explanation", trust aside
    error: str | None = None  # the manifest could not be read at all

    @property
    def synthetic(self) -> bool:
        return bool(self.digital_source_type and "TrainedAlgorithmicMedia" in self.digital_source_type) or \
            bool(self.assertion and self.assertion.get("synthetic"))


@dataclass
class LabelReport:
    path: str
    container: dict | None = None  # read_container_label
    sidecar: dict | None = None
    sidecar_uri: str | None = None
    sidecar_matches: bool | None = None  # its output sha256 is this file's; None without a sidecar
    c2pa: C2paStatus | None = None
    c2pa_note: str | None = None  # why there is no C2PA status
    problems: list[str] = field(default_factory=list)  # each one fails the check

    @property
    def synthetic(self) -> bool:
        return bool((self.container and self.container.get("synthetic"))
                    or (self.sidecar and self.sidecar.get("synthetic"))
                    or (self.c2pa and self.c2pa.valid and self.c2pa.synthetic))

    @property
    def ok(self) -> bool:
        return self.synthetic and not self.problems

    def _first(self, key: str):
        """A field from the strongest layer that has it: valid C2PA, then sidecar, then container tags."""
        layers = [self.c2pa.assertion if self.c2pa and self.c2pa.valid and self.c2pa.assertion else None,
                  self.sidecar, self.container]
        return next((layer[key] for layer in layers if layer and layer.get(key)), None)

    @property
    def tool(self) -> str | None:
        return self._first("tool")

    @property
    def version(self) -> str | None:
        return self._first("version")

    @property
    def models(self) -> dict[str, str]:
        return {name: _bare_sha256(sha) for name, sha in (self._first("models") or {}).items()}

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(ok=self.ok, synthetic=self.synthetic, tool=self.tool, version=self.version, models=self.models)
        return data


def _read_c2pa(path: str, mime: str, trust_anchors_pem: str | None) -> C2paStatus | None:
    import c2pa

    settings = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}  # offline, always
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    fs, remote = split_uri(path)
    try:
        with fs.open(remote, "rb") as handle, c2pa.Reader(mime, handle, context=_c2pa_context(settings)) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return None
    except c2pa.C2paError as exc:
        return C2paStatus(state="Invalid", valid=False, trusted=None, error=f"unreadable C2PA manifest ({exc})")
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = results.get("failure") or []
    untrusted = any(f.get("code") in _UNTRUSTED_CODES for f in failures)
    other = [f"{f.get('code')}: {f.get('explanation', '')}" for f in failures if f.get("code") not in _UNTRUSTED_CODES]
    state = store.get("validation_state") or ("Invalid" if other else "Valid")
    signature = manifest.get("signature_info") or {}
    status = C2paStatus(
        state=state, valid=state != "Invalid" and not other,
        trusted=(state == "Trusted" and not untrusted) if trust_anchors_pem else None,
        signer=signature.get("common_name"), issuer=signature.get("issuer"), alg=signature.get("alg"),
        signed_at=signature.get("time"), failures=other,
        ingredients=[i.get("title", "?") for i in manifest.get("ingredients") or []])
    for assertion in manifest.get("assertions") or []:
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                status.actions.append(action.get("action", "?"))
                status.digital_source_type = action.get("digitalSourceType") or status.digital_source_type
        elif assertion.get("label") == C2PA_ASSERTION:
            status.assertion = assertion.get("data")
    return status


def _failure_reason(failure: str) -> str:
    code = failure.split(":", 1)[0]
    return _FAILURE_MEANING.get(code, failure)


def verify_label(path: str | os.PathLike, *, trust_anchors_pem: str | bytes | None = None) -> LabelReport:
    """Read every label layer of `path` (local or fsspec URL) and check what can be checked: the C2PA
    signature and hash binding (and trust, when `trust_anchors_pem` holds CA certificates), and that
    the sidecar describes this very file. MediaError when the file is missing or not media."""
    path = os.fspath(path)
    check_readable(path)
    report = LabelReport(path=path, container=read_container_label(path))
    if isinstance(trust_anchors_pem, bytes):
        trust_anchors_pem = trust_anchors_pem.decode("ascii", "replace")

    report.sidecar_uri = sidecar_uri(path)
    report.sidecar = read_sidecar(path)
    if report.sidecar is None:
        report.sidecar_uri = None
    else:
        recorded = (report.sidecar.get("output") or {}).get("sha256")
        report.sidecar_matches = recorded == sha256_and_size(path)[0]
        if not report.sidecar_matches:
            report.problems.append(f"sidecar {report.sidecar_uri} does not describe this file (its sha256 "
                                   "differs: the file changed after labelling, or the sidecar belongs to another)")

    mime = C2PA_FORMATS.get(Path(split_uri(path)[1]).suffix.lower())
    if mime is None:
        report.c2pa_note = f"not looked for: C2PA is embedded only in {'/'.join(C2PA_FORMATS)} files"
    else:
        report.c2pa = _read_c2pa(path, mime, trust_anchors_pem)
        if report.c2pa is None:
            report.c2pa_note = "no C2PA manifest"
    status = report.c2pa
    if status is not None:
        if status.error:
            report.problems.append(f"C2PA: {status.error}")
        elif not status.valid:
            reasons = list(dict.fromkeys(_failure_reason(f) for f in status.failures)) or [status.state]
            report.problems.append("C2PA manifest invalid: " + "; ".join(reasons))
        elif status.trusted is False:
            report.problems.append(f"C2PA signer {status.signer!r} (issuer {status.issuer!r}) is not trusted by "
                                   "the given trust anchors")
    if not report.synthetic and not report.problems:
        report.problems.append("no synthetic-media label: no ffray container tags, sidecar or C2PA manifest")
    return report
