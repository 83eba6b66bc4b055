"""Synthetic-media labels (ffray/label.py, `ffray label`): container tags in every output container,
the JSON sidecar, C2PA signing with a real private CA, tamper detection, and packets left untouched.
Everything is made here: clips with PyAV, certificates with `cryptography`, manifests with c2pa."""

from __future__ import annotations

import datetime
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import fsspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from media_clips import make_clip
from pipeline_helpers import ffray_cmd, run_env

from ffray import __version__
from ffray.errors import EXIT_BAD_INPUT, EXIT_LABEL, InputError
from ffray.label import (
    C2PA_ASSERTION,
    DIGITAL_SOURCE_TYPE,
    apply_labels,
    check_signing_credentials,
    label_metadata,
    read_container_label,
    read_sidecar,
    sidecar_uri,
    sign_c2pa,
    verify_label,
    write_sidecar,
)

MODELS = {"inswapper_128": "a1" * 32, "yoloface_8n": "sha256:" + "b2" * 32}
# name -> (FFmpeg muxer, suffix, video encoder, audio encoder)
CONTAINERS = {
    "mp4": ("mp4", ".mp4", "libx264", "aac"),
    "mov": ("mov", ".mov", "libx264", "aac"),
    "mkv": ("matroska", ".mkv", "libx264", "aac"),
    "webm": ("webm", ".webm", "libvpx-vp9", "libopus"),
    "avi": ("avi", ".avi", "mpeg4", "libmp3lame"),
}


# ---------------------------------------------------------------- helpers

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ffray tests")])


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(folder: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign=False, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{name.replace(' ', '_')}.pem"
    path.write_bytes(_pem(cert))
    return path, cert, key


def make_signer(folder: Path, ca_cert, ca_key, name: str, eku) -> tuple[Path, Path]:
    """An ES256 end-entity certificate issued by the CA: (chain PEM: leaf then CA, SEC1 key PEM)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign=True, ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain, key_path = folder / f"{name.replace(' ', '_')}.chain.pem", folder / f"{name.replace(' ', '_')}.key"
    chain.write_bytes(_pem(cert) + _pem(ca_cert))
    # SEC1 ("EC PRIVATE KEY"), as openssl ecparam writes it: ffray converts it to the PKCS#8 c2pa reads
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return chain, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca_path, ca_cert, ca_key = make_ca(folder, "ffray test CA")
    # emailProtection: the EKU c2pa accepts for signing by default (not documentSigning, not claimSigning)
    chain, key = make_signer(folder, ca_cert, ca_key, "ffray test signer", ExtendedKeyUsageOID.EMAIL_PROTECTION)
    other_ca, _, _ = make_ca(folder, "some other CA")
    return {"ca": ca_path, "chain": chain, "key": key, "other_ca": other_ca, "folder": folder,
            "ca_cert": ca_cert, "ca_key": ca_key}


def clip(folder: Path, container: str, name: str = "target", audio: bool = True) -> Path:
    muxer, suffix, video, audio_codec = CONTAINERS[container]
    return make_clip(Path(folder) / f"{name}{suffix}", frames=12, width=64, height=48, codec=video, bframes=0,
                     time_base=Fraction(1, 25) if muxer == "avi" else Fraction(1, 12800),
                     audio=audio_codec if audio else None, container_format=muxer,
                     options={"deadline": "realtime", "cpu-used": "8"} if video == "libvpx-vp9" else None)


def copy_with_tags(source: Path, dest: Path, muxer: str, tags: dict[str, str]) -> Path:
    """Stream-copy every packet into `dest` with `tags` on the container, as remux writes outputs
    (bitexact, tags put on output.metadata before the header)."""
    with av.open(str(source)) as src, av.open(str(dest), "w", format=muxer) as out:
        out.flags |= av.container.Flags.bitexact.value
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        out.metadata.update(tags)
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream_index]
            out.mux(packet)
    return dest


def labelled(folder: Path, container: str, name: str = "out") -> tuple[Path, Path]:
    """(a target clip, an output carrying the label tags) in `container`."""
    target = clip(folder, container)
    muxer, suffix, _, _ = CONTAINERS[container]
    return target, copy_with_tags(target, Path(folder) / f"{name}{suffix}", muxer, label_metadata(__version__, MODELS))


def packets(path: Path) -> list[tuple]:
    with av.open(str(path)) as container:
        return [(p.stream_index, p.pts, p.dts, p.is_keyframe, bytes(p)) for p in container.demux() if p.size]


def job_info(target: Path) -> dict:
    return {"job_id": "job-42", "target": str(target), "target_sha256": "c3" * 32,
            "sources": ["s3://user:secret@bucket/face.jpg"], "source_sha256": ["d4" * 32],
            "models": MODELS, "options": {"face_selector_mode": "reference", "output_video_quality": 80}}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ffray_cmd("label", *args), env=run_env(), capture_output=True, text=True, timeout=120)


def flip_video_byte(path: Path) -> None:
    """Change one byte in the middle of a video packet (not a header: the demuxer still reads it)."""
    with av.open(str(path)) as container:
        packet = [p for p in container.demux(video=0) if p.size > 64][3]
        offset = packet.pos + packet.size // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- container tags

def test_label_metadata_is_deterministic_and_says_synthetic():
    tags = label_metadata("1.2.3", MODELS)
    assert tags == label_metadata("1.2.3", dict(reversed(MODELS.items())))  # no time, order-free
    assert tags["comment"] == (f"synthetic: face swapped by ffray 1.2.3; models: inswapper_128=sha256:{'a1' * 32}, "
                               f"yoloface_8n=sha256:{'b2' * 32}")
    assert tags["synthetic_media"] == DIGITAL_SOURCE_TYPE
    assert label_metadata("1.2.3")["comment"] == "synthetic: face swapped by ffray 1.2.3"
    with pytest.raises(ValueError, match="model name"):
        label_metadata("1.2.3", {"bad, name": "00"})


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_container_tags_survive_each_muxer(tmp_path, container):
    _, output = labelled(tmp_path, container)
    label = read_container_label(output)
    assert label is not None, f"{container}: label tags lost"
    assert label["synthetic"] is True
    assert (label["tool"], label["version"]) == ("ffray", __version__)
    # every muxer keeps `comment`, which carries the models too
    assert label["models"] == {"inswapper_128": "a1" * 32, "yoloface_8n": "b2" * 32}
    assert label["digital_source_type"] == DIGITAL_SOURCE_TYPE
    if container in ("mkv", "webm"):  # Matroska keeps any key
        assert {"synthetic_media", "ffray_models", "description"} <= set(label["tags"])


def test_unlabelled_clip_has_no_container_label(tmp_path):
    assert read_container_label(clip(tmp_path, "mp4")) is None


# ---------------------------------------------------------------- sidecar

def test_sidecar_contents(tmp_path):
    target, output = labelled(tmp_path, "mkv")
    uri = write_sidecar(output, job_info(target))
    assert uri == sidecar_uri(output) == str(output) + ".ffray.json"
    data = json.loads(Path(uri).read_text())
    assert data["schema"] == "ffray.label/1" and data["synthetic"] is True
    assert data["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert (data["tool"], data["version"], data["job_id"]) == ("ffray", __version__, "job-42")
    assert data["target_sha256"] == "c3" * 32 and data["source_sha256"] == ["d4" * 32]
    assert data["models"]["inswapper_128"] == "a1" * 32
    assert data["options"]["output_video_quality"] == 80
    assert data["sources"] == ["s3://***@bucket/face.jpg"]  # credentials never written
    stamp = datetime.datetime.fromisoformat(data["written_utc"].replace("Z", "+00:00"))
    assert abs(datetime.datetime.now(datetime.timezone.utc) - stamp) < datetime.timedelta(minutes=5)
    from ffray.media.io import sha256_and_size
    assert data["output"] == {"name": "out.mkv", "sha256": sha256_and_size(output)[0], "size": output.stat().st_size}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv", "out.mkv.ffray.json", "target.mkv"]  # no temp


def test_labels_on_fsspec(tmp_path, pki):
    target, output = labelled(tmp_path, "mp4")
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/labels/out.mp4", output.read_bytes())
    fs.pipe_file("/labels/target.mp4", target.read_bytes())
    try:
        result = apply_labels("memory://labels/out.mp4", job_info={"job_id": "mem"}, sidecar=True,
                              sign_cert=str(pki["chain"]), sign_key=str(pki["key"]),
                              target_path="memory://labels/target.mp4")
        assert result["sidecar"] == "memory://labels/out.mp4.ffray.json"
        assert read_sidecar("memory://labels/out.mp4")["job_id"] == "mem"
        report = verify_label("memory://labels/out.mp4")
        assert report.ok and report.sidecar_matches and report.c2pa.valid
        assert report.c2pa.ingredients == ["target.mp4"]
    finally:
        fs.rm("/labels", recursive=True)


# ---------------------------------------------------------------- C2PA

@pytest.mark.parametrize("container", ["mp4", "mov", "avi"])
def test_sign_and_verify(tmp_path, pki, container):
    target, output = labelled(tmp_path, container)
    result = apply_labels(output, job_info=job_info(target), sidecar=True, sign_cert=str(pki["chain"]),
                          sign_key=str(pki["key"]), target_path=str(target))
    assert result["c2pa"]["signer"] == "ffray test signer" and result["c2pa"]["alg"] == "ES256"
    report = verify_label(output)
    assert report.ok, report.problems
    status = report.c2pa
    assert status.valid and status.trusted is None  # no anchors given: trust not checked
    assert status.signer == "ffray test signer" and status.issuer == "ffray tests"
    assert status.actions == ["c2pa.opened", "c2pa.edited"]
    assert status.digital_source_type == DIGITAL_SOURCE_TYPE
    assert status.ingredients == [target.name]
    assert status.assertion["job_id"] == "job-42" and status.assertion["target_sha256"] == "c3" * 32
    assert report.models == {"inswapper_128": "a1" * 32, "yoloface_8n": "b2" * 32}
    # the sidecar was written after signing, so it describes the signed file
    assert report.sidecar_matches and report.sidecar["output"]["sha256"] == result["sha256"]
    assert report.sidecar["c2pa"]["signer"] == "ffray test signer"
    # the container tags are still there after signing
    assert report.container["version"] == __version__

    trusted = verify_label(output, trust_anchors_pem=pki["ca"].read_text())
    assert trusted.ok and trusted.c2pa.state == "Trusted" and trusted.c2pa.trusted is True
    stranger = verify_label(output, trust_anchors_pem=pki["other_ca"].read_text())
    assert not stranger.ok and stranger.c2pa.trusted is False
    assert "not trusted" in stranger.problems[0]


@pytest.mark.parametrize("container", ["mp4", "mov", "avi"])
def test_signing_leaves_every_packet_untouched(tmp_path, pki, container):
    target, output = labelled(tmp_path, container)
    before = packets(output)
    assert {p[0] for p in before} == {0, 1}  # video and audio
    sign_c2pa(output, pki["chain"].read_bytes(), pki["key"].read_bytes(), target, job_info=job_info(target))
    assert packets(output) == before
    # signing again replaces the manifest; still the same packets
    sign_c2pa(output, pki["chain"].read_bytes(), pki["key"].read_bytes(), target, job_info=job_info(target))
    assert packets(output) == before and verify_label(output).ok


def test_tampered_video_fails_verification(tmp_path, pki):
    target, output = labelled(tmp_path, "mp4")
    apply_labels(output, job_info=job_info(target), sidecar=True, sign_cert=str(pki["chain"]),
                 sign_key=str(pki["key"]), target_path=str(target))
    before = packets(output)
    flip_video_byte(output)
    changed = [a for a, b in zip(before, packets(output), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0] == 0  # one video packet differs, by one byte
    report = verify_label(output)
    assert not report.ok and not report.c2pa.valid
    assert any("changed after it was signed" in p for p in report.problems), report.problems
    assert report.sidecar_matches is False


def test_target_in_a_container_c2pa_cannot_read_is_described(tmp_path, pki):
    target = clip(tmp_path, "mkv", audio=False)
    _, output = labelled(tmp_path, "mp4")
    sign_c2pa(output, pki["chain"].read_bytes(), pki["key"].read_bytes(), target)
    report = verify_label(output)
    assert report.ok and report.c2pa.ingredients == ["target.mkv"]


def test_unsupported_container_skips_c2pa_but_keeps_other_labels(tmp_path, pki):
    target, output = labelled(tmp_path, "webm")
    result = apply_labels(output, job_info=job_info(target), sidecar=True, sign_cert=str(pki["chain"]),
                          sign_key=str(pki["key"]), target_path=str(target))
    assert "skipped" in result["c2pa"]
    report = verify_label(output)
    assert report.ok and report.c2pa is None and "only" in report.c2pa_note
    with pytest.raises(InputError, match="C2PA signing needs"):
        sign_c2pa(output, pki["chain"].read_bytes(), pki["key"].read_bytes(), target)


def test_credentials_checked_before_the_job(tmp_path, pki):
    assert check_signing_credentials(str(pki["chain"]), str(pki["key"])) == "ffray test signer"
    # a leaf without an EKU c2pa accepts is refused before the job, naming the option
    chain, key = make_signer(tmp_path, pki["ca_cert"], pki["ca_key"], "code signer", ExtendedKeyUsageOID.CODE_SIGNING)
    with pytest.raises(InputError, match="--sign-cert .*emailProtection"):
        check_signing_credentials(str(chain), str(key))
    # a lone self-signed certificate is refused, with what c2pa needs instead
    now = datetime.datetime.now(datetime.timezone.utc)
    own = ec.generate_private_key(ec.SECP256R1())
    selfsigned = (x509.CertificateBuilder().subject_name(_name("me")).issuer_name(_name("me"))
                  .public_key(own.public_key()).serial_number(7)
                  .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                  .add_extension(_usage(sign=True, ca=False), critical=True)
                  .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                  .sign(own, hashes.SHA256()))
    (tmp_path / "self.pem").write_bytes(_pem(selfsigned))
    (tmp_path / "self.key").write_bytes(own.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    with pytest.raises(InputError, match="issued by a CA"):
        check_signing_credentials(str(tmp_path / "self.pem"), str(tmp_path / "self.key"))
    with pytest.raises(InputError, match="does not belong"):
        check_signing_credentials(str(pki["chain"]), str(tmp_path / "self.key"))
    with pytest.raises(InputError, match="go together"):
        apply_labels(tmp_path / "x.mp4", job_info={}, sidecar=False, sign_cert=str(pki["chain"]), sign_key=None,
                     target_path="t.mp4")


# ---------------------------------------------------------------- `ffray label`

def test_cli_reports_a_signed_file(tmp_path, pki):
    target, output = labelled(tmp_path, "mp4")
    apply_labels(output, job_info=job_info(target), sidecar=True, sign_cert=str(pki["chain"]),
                 sign_key=str(pki["key"]), target_path=str(target))
    done = run_cli(str(output), "--trust", str(pki["ca"]))
    assert done.returncode == 0, done.stderr
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()[1:]}
    assert lines["synthetic"] == "yes"
    assert lines["tool"] == f"ffray {__version__}"
    assert lines["models"] == f"inswapper_128 sha256:{'a1' * 32}"
    assert "matches this file" in lines["sidecar"] and "job job-42" in lines["sidecar"]
    assert lines["c2pa"].startswith("valid signature by 'ffray test signer'") and "signer trusted" in lines["c2pa"]
    assert lines["result"] == "OK" and done.stderr == ""

    data = json.loads(run_cli(str(output), "--json").stdout)
    assert data["ok"] and data["synthetic"] and data["c2pa"]["valid"] and data["c2pa"]["trusted"] is None
    assert data["c2pa"]["assertion"]["models"]["yoloface_8n"] == "b2" * 32
    assert data["sidecar"]["job_id"] == "job-42"
    assert C2PA_ASSERTION == "org.ffray.synthetic"

    flip_video_byte(output)
    bad = run_cli(str(output))
    assert bad.returncode == EXIT_LABEL
    assert "INVALID" in bad.stdout and "FAILED" in bad.stdout
    assert f"ffray: error: {output}: C2PA manifest invalid: the file was changed after it was signed" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_errors_and_exit_codes(tmp_path):
    missing = run_cli(str(tmp_path / "nope.mp4"))
    assert missing.returncode == EXIT_BAD_INPUT
    assert missing.stderr.strip() == f"ffray: error: {tmp_path / 'nope.mp4'}: file not found"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all " * 50)
    bad = run_cli(str(junk))
    assert bad.returncode == EXIT_BAD_INPUT
    assert bad.stderr.startswith(f"ffray: error: {junk}: not a readable media file") and bad.stderr.count("\n") == 1
    plain = run_cli(str(clip(tmp_path, "mp4")))
    assert plain.returncode == EXIT_LABEL and "no label found" in plain.stdout
    assert "no synthetic-media label" in plain.stderr and "Traceback" not in plain.stderr
    wrong_trust = run_cli(str(junk), "--trust", str(junk))
    assert wrong_trust.returncode == EXIT_BAD_INPUT and "--trust" in wrong_trust.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_swap_job_signs_tags_and_describes_its_output(tmp_path, pki):
    """`ffray swap --sign-cert --sign-key --sidecar`: the output carries the tags, a valid C2PA manifest
    and a sidecar that `ffray label` accepts; a certificate c2pa refuses stops the job before any work."""
    from conftest import asset
    from pipeline_helpers import astronaut_clip

    target = astronaut_clip(tmp_path / "target.mp4", 6)
    output = tmp_path / "out.mp4"
    common = ["swap", "--source", str(asset("media/meds-aa-S001-01.jpg")), "--target", str(target),
              "--pack", "builtin", "--face-selector-mode", "one", "--providers", "cpu", "--num-gpus", "0",
              "--work-dir", str(tmp_path / "work"), "--quiet"]
    self_signed, _, _ = make_ca(pki["folder"], "self-signed signer")
    refused = subprocess.run(ffray_cmd(*common, "--output", str(output), "--sign-cert", str(self_signed),
                                       "--sign-key", str(pki["key"])), env=run_env(), capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == EXIT_BAD_INPUT, refused.stderr
    assert "--sign-cert" in refused.stderr and "Traceback" not in refused.stderr
    assert not output.exists() and not (tmp_path / "work" / "videos").exists()  # refused before any work

    done = subprocess.run(ffray_cmd(*common, "--output", str(output), "--sign-cert", str(pki["chain"]),
                                    "--sign-key", str(pki["key"]), "--sidecar"), env=run_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    label = read_container_label(output)
    assert label and label["synthetic"]
    checked = run_cli(str(output), "--trust", str(pki["ca"]), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["c2pa"]["valid"] and report["c2pa"]["trusted"]
    sidecar = json.loads((tmp_path / "out.mp4.ffray.json").read_text())
    assert sidecar["target"] == str(target) and sidecar["output"]["sha256"]
