"""NVENC encoders: accepted where the build has them, refused in one line where the writer pool has no GPU,
and a clear reason when the writer's machine has no NVENC (this CPU box, or an A100/H100)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ffray.errors import InputError, MediaError
from ffray.media.encode import EncodeOptions, SegmentWriter
from ffray.pipeline.config import PipelineConfig


def test_nvenc_needs_a_gpu_share_for_the_writer():
    with pytest.raises(InputError, match=r"--encoder h264_nvenc: NVENC runs on the GPU; .*--writer-gpus"):
        PipelineConfig(encoder="h264_nvenc").validate()
    config = PipelineConfig(encoder="hevc_nvenc")
    replace(config, writer=replace(config.writer, num_gpus=0.1)).validate()
    options = EncodeOptions.for_output("out.mp4", encoder="h264_nvenc", quality=80, preset="veryfast")
    assert options.encoder == "h264_nvenc" and options.codec_options() == {"preset": "p2", "rc": "vbr", "cq": "10",
                                                                           "b": "0"}
    assert EncodeOptions.for_output("out.webm", encoder="h264_nvenc").encoder == "libvpx-vp9"


def test_a_writer_without_nvenc_says_why(tmp_path):
    import av
    from media_clips import make_clip

    from ffray.media import probe

    clip = make_clip(tmp_path / "in.mp4", frames=4, width=64, height=48)
    info = probe(str(clip))
    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    try:
        with SegmentWriter(tmp_path / "seg.mp4", info, EncodeOptions(encoder="h264_nvenc")) as writer:
            writer.write(np.zeros((info.coded_height, info.coded_width, 3), np.uint8), info.frame_pts[0])
    except MediaError as exc:
        assert "needs an NVIDIA GPU with NVENC" in str(exc) and "libx264" in str(exc)
        assert not (tmp_path / "seg.mp4").exists()
    else:
        pytest.skip("this machine has a GPU with NVENC: the encoder opened")
