"""Model store: sources (folder, http with Range, s3), verification, resume, offline errors, custom refs."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import zlib
from pathlib import Path

import pytest
from conftest import asset

from ffray.errors import ModelError
from ffray.models.registry import get_spec
from ffray.models.store import ModelStore, file_digests, parse_model_ref

YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def crc32_hex(path: Path) -> str:
    return format(zlib.crc32(path.read_bytes()) & 0xFFFFFFFF, "08x")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A FaceFusion-style mirror folder: yunet (hash pinned in the registry), scrfd with its .hash file."""
    folder = tmp_path / "source"
    folder.mkdir()
    shutil.copy(asset("models/yunet_s_640_640.onnx"), folder / "yunet_2023_mar.onnx")
    shutil.copy(asset("models/scrfd_2.5g.onnx"), folder / "scrfd_2.5g.onnx")
    (folder / "scrfd_2.5g.hash").write_text(crc32_hex(folder / "scrfd_2.5g.onnx"))
    return folder


def final_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ---- http server with Range support and a switch to cut a download short -------------------------

class RangeHandler(http.server.BaseHTTPRequestHandler):
    root: Path
    cut_after: dict  # file name -> bytes to send before dropping the connection (once)
    honour_range = True
    log: list

    def do_GET(self):  # noqa: N802 (http.server API)
        path = self.root / self.path.lstrip("/")
        self.log.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        range_header = self.headers.get("Range")
        if range_header and self.honour_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = self.cut_after.pop(path.name, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_source(source: Path):
    handler = type("Handler", (RangeHandler,), {"root": source, "cut_after": {}, "log": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


# ---- tests ---------------------------------------------------------------------------------------

def test_parse_model_ref():
    assert parse_model_ref("inswapper_128") == ("inswapper_128", None)
    assert parse_model_ref("inswapper_128=/models/ours.onnx") == ("inswapper_128", "/models/ours.onnx")
    assert parse_model_ref("yunet=s3://b/p/x.onnx") == ("yunet", "s3://b/p/x.onnx")
    for bad in ("", "=x.onnx", "inswapper_128="):
        with pytest.raises(ModelError):
            parse_model_ref(bad)


def test_folder_source_pinned_hash_and_record(tmp_path, source):
    store = ModelStore(cache_dir=tmp_path / "cache", source=str(source))
    assert store.status("yunet") == "missing"
    resolved = store.resolve("yunet")
    assert resolved.path == tmp_path / "cache" / "yunet_2023_mar.onnx"
    assert resolved.sha256 == YUNET_SHA256 and not resolved.custom
    assert file_digests(resolved.path)[0] == YUNET_SHA256
    assert store.status("yunet") == "verified"
    assert not any(name.endswith(".part") for name in final_files(tmp_path / "cache"))
    # a second store on the same cache trusts the record without a source
    again = ModelStore(cache_dir=tmp_path / "cache", source=str(tmp_path / "nowhere")).resolve("yunet", download=False)
    assert again.sha256 == YUNET_SHA256


def test_crc32_hash_file_scheme_and_release_layout(tmp_path, source):
    # FaceFusion release layout: <source>/<release>/<file> + <file>.hash
    mirror = tmp_path / "mirror" / "models-3.0.0"
    mirror.mkdir(parents=True)
    for name in ("scrfd_2.5g.onnx", "scrfd_2.5g.hash"):
        shutil.copy(source / name, mirror / name)
    store = ModelStore(cache_dir=tmp_path / "cache", source=str(tmp_path / "mirror"))
    resolved = store.resolve("scrfd")
    assert resolved.sha256 == hashlib.sha256((source / "scrfd_2.5g.onnx").read_bytes()).hexdigest()
    # the .hash is kept beside the model (FaceFusion's layout) so the cache verifies offline later
    assert (tmp_path / "cache" / "scrfd_2.5g.hash").read_text() == (source / "scrfd_2.5g.hash").read_text()


def test_wrong_hash_file_is_rejected_and_nothing_left(tmp_path, source):
    (source / "scrfd_2.5g.hash").write_text("deadbeef")
    store = ModelStore(cache_dir=tmp_path / "cache", source=str(source))
    with pytest.raises(ModelError, match=r"scrfd_2\.5g\.onnx.*crc32 is [0-9a-f]{8}, expected deadbeef"):
        store.resolve("scrfd")
    assert final_files(tmp_path / "cache") == ["scrfd_2.5g.onnx.lock"]


def test_corrupt_cached_file_errors_then_pull_refetches(tmp_path, source):
    cache = tmp_path / "cache"
    store = ModelStore(cache_dir=cache, source=str(source))
    path = store.resolve("yunet").path
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size; a bit flip
    path.write_bytes(bytes(data))
    assert store.status("yunet") == "changed"
    with pytest.raises(ModelError, match=rf"yunet_2023_mar\.onnx: corrupt .*expected {YUNET_SHA256}"):
        store.resolve("yunet", download=False)
    with pytest.raises(ModelError, match="corrupt"):
        store.verify("yunet")
    resolved = store.pull("yunet")
    assert resolved.sha256 == YUNET_SHA256 and file_digests(path)[0] == YUNET_SHA256
    assert (cache / "yunet_2023_mar.onnx.corrupt").is_file()  # moved aside, never loaded
    assert store.verify("yunet").sha256 == YUNET_SHA256


def test_files_copied_into_cache_by_hand_verify_offline(tmp_path, source):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("scrfd_2.5g.onnx", "scrfd_2.5g.hash", "yunet_2023_mar.onnx"):
        shutil.copy(source / name, cache / name)
    store = ModelStore(cache_dir=cache, source="http://127.0.0.1:9/unreachable")
    assert store.status("scrfd") == "unverified"
    assert store.resolve("scrfd", download=False).path == cache / "scrfd_2.5g.onnx"
    assert store.resolve("yunet", download=False).sha256 == YUNET_SHA256
    assert store.status("scrfd") == "verified"


def test_cached_file_without_any_hash_is_not_loaded(tmp_path, source):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(source / "scrfd_2.5g.onnx", cache / "scrfd_2.5g.onnx")
    store = ModelStore(cache_dir=cache, source=str(tmp_path / "empty"))
    with pytest.raises(ModelError, match=r"cannot verify scrfd.*scrfd_2\.5g\.hash"):
        store.resolve("scrfd", download=False)


def test_offline_error_names_file_hash_and_remedies(tmp_path):
    # a port nobody listens on: the connection is refused at once
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = ModelStore(cache_dir=tmp_path / "cache", source=f"http://127.0.0.1:{port}/models")
    with pytest.raises(ModelError) as info:
        store.resolve("yunet")
    message = str(info.value)
    assert message.startswith("yunet_2023_mar.onnx: ")
    assert YUNET_SHA256 in message and "bfdf4e40" in message
    assert str(tmp_path / "cache") in message and "FFRAY_MODEL_SOURCE" in message and "--model-source" in message
    assert "\n" not in message
    with pytest.raises(ModelError, match=r"yunet_2023_mar\.onnx: .*downloads are off.*FFRAY_MODEL_SOURCE"):
        store.resolve("yunet", download=False)
    # the dead host is not tried again for the next model of the same run
    with pytest.raises(ModelError, match=r"scrfd_2\.5g\.hash.*host unreachable earlier in this run"):
        store.resolve("scrfd")


def test_http_download_resumes_after_interruption(tmp_path, http_source):
    url, handler = http_source
    handler.cut_after["scrfd_2.5g.onnx"] = 1_000_000
    cache = tmp_path / "cache"
    store = ModelStore(cache_dir=cache, source=url)
    with pytest.raises(ModelError, match="interrupted"):
        store.resolve("scrfd")
    part = cache / "scrfd_2.5g.onnx.part"
    assert part.is_file() and 0 < part.stat().st_size < (tmp_path / "source" / "scrfd_2.5g.onnx").stat().st_size
    assert not (cache / "scrfd_2.5g.onnx").exists()  # never a partial file under the final name
    assert store.status("scrfd") == "partial"
    done = part.stat().st_size
    handler.log.clear()
    resolved = store.resolve("scrfd")
    assert ("/scrfd_2.5g.onnx", f"bytes={done}-") in handler.log
    assert resolved.path.read_bytes() == (tmp_path / "source" / "scrfd_2.5g.onnx").read_bytes()
    assert not part.exists()


def test_http_server_without_range_restarts_cleanly(tmp_path, http_source):
    url, handler = http_source
    handler.honour_range = False
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "scrfd_2.5g.onnx.part").write_bytes(b"stale bytes from an older attempt")
    resolved = ModelStore(cache_dir=cache, source=url).resolve("scrfd")
    assert resolved.path.read_bytes() == (tmp_path / "source" / "scrfd_2.5g.onnx").read_bytes()


def test_http_custom_model_url_records_sha256(tmp_path, http_source):
    url, _ = http_source
    store = ModelStore(cache_dir=tmp_path / "cache")
    resolved = store.resolve(f"scrfd={url}/scrfd_2.5g.onnx")
    assert resolved.custom and resolved.origin == f"{url}/scrfd_2.5g.onnx"
    assert resolved.sha256 == hashlib.sha256((tmp_path / "source" / "scrfd_2.5g.onnx").read_bytes()).hexdigest()
    assert resolved.path.is_relative_to(tmp_path / "cache" / "custom")
    assert store.resolve(f"scrfd={url}/scrfd_2.5g.onnx", download=False).path == resolved.path
    with pytest.raises(ModelError, match="missing.onnx: cannot fetch custom model for scrfd: HTTP 404"):
        store.resolve(f"scrfd={url}/missing.onnx")


def test_custom_local_path(tmp_path, source):
    store = ModelStore(cache_dir=tmp_path / "cache")
    resolved = store.resolve(f"yunet={source / 'yunet_2023_mar.onnx'}")
    assert resolved.custom and resolved.path == source / "yunet_2023_mar.onnx" and resolved.sha256 == YUNET_SHA256
    assert final_files(tmp_path / "cache") == []  # a user's file is used where it is, not copied
    with pytest.raises(ModelError, match=r"nope\.onnx: custom model file for inswapper_128 not found"):
        store.resolve(f"inswapper_128={tmp_path / 'nope.onnx'}")


def test_commercial_only_refuses_and_names_licence(tmp_path, source):
    store = ModelStore(cache_dir=tmp_path / "cache", source=str(source), commercial_only=True)
    with pytest.raises(ModelError, match=r"inswapper_128: its licence \(InsightFace, non-commercial"):
        store.resolve("inswapper_128")
    with pytest.raises(ModelError, match=r"scrfd: .*licence.*non-commercial.*--commercial-only"):
        store.resolve("scrfd")
    assert store.resolve("yunet").sha256 == YUNET_SHA256  # MIT


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelError, match=r"inswaper_128: not a known model \(did you mean inswapper_128"):
        ModelStore(cache_dir=tmp_path).resolve("inswaper_128")


def test_concurrent_resolves_share_one_download(tmp_path, http_source):
    url, handler = http_source
    store = ModelStore(cache_dir=tmp_path / "cache", source=url)
    results, errors = [], []

    def work():
        try:
            results.append(ModelStore(cache_dir=tmp_path / "cache", source=url).resolve("scrfd").sha256)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert sum(1 for path, _ in handler.log if path == "/scrfd_2.5g.onnx") == 1
    assert store.status("scrfd") == "verified"


# ---- s3 through a real S3-compatible server on localhost -------------------------------------------

@pytest.fixture
def s3_source(source, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="models")
    for name in ("scrfd_2.5g.onnx", "scrfd_2.5g.hash"):
        client.upload_file(str(source / name), "models", f"mirror/models-3.0.0/{name}")
    yield endpoint
    server.stop()


def test_s3_source_with_endpoint_env_and_resume(tmp_path, source, s3_source, monkeypatch):
    monkeypatch.setenv("FFRAY_S3_ENDPOINT_URL", s3_source)
    cache = tmp_path / "cache"
    cache.mkdir()
    data = (source / "scrfd_2.5g.onnx").read_bytes()
    (cache / "scrfd_2.5g.onnx.part").write_bytes(data[:123_457])  # left by an interrupted pull
    store = ModelStore(cache_dir=cache, source="s3://models/mirror")
    resolved = store.resolve("scrfd")
    assert resolved.path.read_bytes() == data
    assert resolved.sha256 == hashlib.sha256(data).hexdigest()
    assert not (cache / "scrfd_2.5g.onnx.part").exists()


def test_s3_missing_object_is_a_model_error(tmp_path, s3_source):
    store = ModelStore(cache_dir=tmp_path / "cache", source="s3://models/mirror",
                       storage_options={"endpoint_url": s3_source})
    with pytest.raises(ModelError, match=r"yunet_2023_mar\.onnx: yunet is not in the cache.*s3://models/mirror"):
        store.resolve("yunet")


def test_env_defaults(tmp_path, monkeypatch, source):
    monkeypatch.setenv("FFRAY_MODEL_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setenv("FFRAY_MODEL_SOURCE", str(source))
    store = ModelStore()
    assert store.cache_dir == tmp_path / "envcache" and store.source == str(source)
    assert store.resolve("yunet").path.parent == tmp_path / "envcache"
    monkeypatch.delenv("FFRAY_MODEL_SOURCE")
    default = ModelStore(cache_dir=tmp_path / "c")
    spec = get_spec("inswapper_128")
    assert default.candidates(spec)[0] == (
        "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/inswapper_128.onnx",
        "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/inswapper_128.hash",
    )
    assert default.candidates(spec)[1][0] == (
        "https://huggingface.co/facefusion/models-3.0.0/resolve/main/inswapper_128.onnx"
    )
    monkeypatch.delenv("FFRAY_MODEL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ModelStore().cache_dir == tmp_path / "home" / ".cache" / "ffray" / "models"


def test_record_that_disagrees_with_the_pinned_hash_is_not_trusted(tmp_path, source):
    cache = tmp_path / "cache"
    store = ModelStore(cache_dir=cache, source=str(source))
    path = store.resolve("yunet").path
    record_path = cache / "yunet_2023_mar.onnx.verified"
    record = json.loads(record_path.read_text())
    path.write_bytes(path.read_bytes()[:-1] + b"\0")  # swapped file...
    stat = path.stat()
    record.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256="0" * 64)  # ...with a forged record
    record_path.write_text(json.dumps(record))
    with pytest.raises(ModelError, match="corrupt"):
        store.resolve("yunet", download=False)
