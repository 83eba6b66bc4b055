"""A real S3 round trip (moto's S3 server on 127.0.0.1, s3fs): probe, decode a chunk, put a segment."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from media_clips import make_case

from ffray.media import decode_all, decode_chunk, encode_segment, plan_chunks, probe


@pytest.fixture
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    # how s3:// URLs opened anywhere in ffray find the local server (fsspec's per-protocol defaults)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("media")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_s3_probe_decode_and_atomic_segment_put(s3, tmp_path):
    local = make_case("bframes", tmp_path, audio="aac")
    s3.put_file(str(local), "media/in/bframes.mp4")
    url = "s3://media/in/bframes.mp4"
    info = probe(url)
    assert info.content_hash == probe(local).content_hash and info.frames == 40
    chunk = plan_chunks(info, 15)[1]
    frames = list(decode_chunk(url, chunk))
    reference = list(decode_all(local))[chunk.start:chunk.end]
    assert [f.pts for f in frames] == [pts for pts, _ in reference]
    assert all(np.array_equal(f.image, image) for f, (_, image) in zip(frames, reference, strict=True))

    dest = "s3://media/segments/seg-0001.mp4"
    with pytest.raises(RuntimeError):
        encode_segment(_then_fail(frames), dest, info)
    assert not s3.exists(dest)  # a worker that dies mid-segment leaves nothing behind
    segment = encode_segment(frames, dest, info)
    assert s3.exists(dest) and s3.size(dest) > 0
    back = probe(dest)
    assert back.frames == len(frames) and segment.sha256 and segment.first_pts == chunk.start_pts
    assert [p * back.time_base for p in back.frame_pts] == [p * info.time_base for p in chunk.frame_pts]
    assert s3.ls("media/segments") == ["media/segments/seg-0001.mp4"]


def _then_fail(frames):
    yield from frames[:3]
    raise RuntimeError("worker lost")
