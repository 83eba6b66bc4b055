"""`ffray preview`: one frame swapped with a job's options, without Ray, bit for bit the frame the job's
stage functions hand to the encoder; and its errors (one line, exit 2, nothing written)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from conftest import asset
from contract_models import build
from pipeline_helpers import YUNET, astronaut_clip, small_config

from ffray.cli import main
from ffray.faces.image import read_image
from ffray.faces.options import FaceOptions

VIDEO = "media/video_01.mp4"  # 90 frames, 640x480, five people
SOURCE = "media/meds-aa-S001-01.jpg"


def job_frame(tmp_path: Path, target: Path, sources: list[Path], options: FaceOptions, number: int,
              chunk_frames: int, monkeypatch) -> np.ndarray:
    """Frame `number` of `target` as a job makes it: the driver's source faces and reference face, then
    the chunk that holds the frame through the detector, swapper and (optional) enhancer stage functions
    and the segment writer, caught where the writer hands its frames to the encoder; turned upright."""
    import ffray.media.encode
    from ffray.faces.packs import load_analyser, load_enhancer, load_swapper
    from ffray.media import plan_chunks, probe
    from ffray.pipeline.datasource import ChunkTask, chunk_row
    from ffray.pipeline.driver import _Analysis
    from ffray.pipeline.stages import (
        JobTable,
        SourceCache,
        SourceSet,
        VideoJob,
        detect_rows,
        enhance_rows,
        swap_rows,
        to_display,
        write_rows,
    )

    config = small_config(tmp_path / "work", chunk_frames=chunk_frames)
    info = probe(str(target))
    analysis = _Analysis(options, config)
    source_faces = analysis.source_faces([str(s) for s in sources])
    reference = None
    if options.face_selector_mode == "reference":
        reference = analysis.reference_face(str(target), info, chunk_frames, source_faces)
    video = VideoJob("v", str(target), info.rotation, "s", reference=reference, info=info,
                     segment_dir=str(tmp_path / "segments"))
    table = JobTable(job_id="j", face_options=options.to_dict(), videos={"v": video},
                     sources={"s": SourceSet(tuple(str(s) for s in sources), source_faces)},
                     model_batch={"detector": 8, "swapper": 8, "enhancer": 8})
    chunk = next(c for c in plan_chunks(info, chunk_frames) if c.start <= number < c.end)
    batch = chunk_row(ChunkTask("v", str(target), chunk, 0))
    batch = detect_rows(batch, load_analyser(table.options, table.execution_options("detector"), table.store()),
                        table)
    swapper = load_swapper(table.options, table.execution_options("swapper"), table.store())
    batch = swap_rows(batch, swapper, SourceCache(swapper, table, read_image), table)
    enhancer = load_enhancer(table.options, table.execution_options("enhancer"), table.store())
    if enhancer is not None:
        batch = enhance_rows(batch, enhancer, table)
    assert str(batch["error"][0]) == ""

    caught: list[np.ndarray] = []

    class SegmentWriter:  # the encoder's input, and a stand-in segment
        def __init__(self, dest, info, encode=None, **kwargs):
            self.dest, self.result = Path(dest), None

        def __enter__(self):
            return self

        def write(self, frame, pts):
            caught.append(np.array(frame, copy=True))

        def __exit__(self, *exc):
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.dest.write_bytes(b"segment")
            self.result = types.SimpleNamespace(frames=len(caught), sha256="0" * 64)

    # the BGR path (`--convert-whole-frames`): frames leave the stages as the BGR images the face
    # functions made (with source_yuv only their changed pixels are converted into the decoded YUV)
    assert not video.source_yuv
    monkeypatch.setattr(ffray.media.encode, "SegmentWriter", SegmentWriter)
    out = write_rows(batch, table)
    assert str(out["error"][0]) == "", out["error"][0]
    assert len(caught) == chunk.end - chunk.start
    return to_display(caught[number - chunk.start], info.rotation)


def preview(tmp_path: Path, *args: str) -> np.ndarray:
    out = tmp_path / "preview.png"
    assert main(["preview", "--output", str(out), "--overwrite", "--quiet", *args]) == 0
    return read_image(out)


def original_frame(target: Path, number: int) -> np.ndarray:
    from ffray.media import probe
    from ffray.pipeline.one_frame import decode_frame

    info = probe(str(target))
    return decode_frame(str(target), info, number, 48)


def test_builtin_reference_mode_equals_the_job(tmp_path, monkeypatch):
    # the pack's default distance, the reference face from another frame than the one previewed
    target, source = asset(VIDEO), asset(SOURCE)
    options = FaceOptions(reference_frame_number=10)
    expected = job_frame(tmp_path, target, [source], options, 45, 8, monkeypatch)
    got = preview(tmp_path, "--source", str(source), "--target", str(target), "--frame", "45",
                  "--reference-frame-number", "10", "--chunk-frames", "8")
    assert got.shape == expected.shape == (480, 640, 3)
    np.testing.assert_array_equal(got, expected)
    changed = np.any(got != original_frame(target, 45), axis=2)
    assert 100 < changed.sum() < 0.05 * changed.size  # one face of the two swapped: the reference person


def test_facefusion_pack_with_enhancer_and_config_file_equals_the_job(tmp_path, monkeypatch):
    target, source = asset(VIDEO), asset(SOURCE)
    models = tmp_path / "models"
    options = FaceOptions(
        pack="facefusion", face_detector_model=f"yunet={asset(YUNET)}", face_landmarker_score=0.0,
        face_recognizer_model=build("arcface_w600k_r50", models), face_swapper_model=build("inswapper_128", models),
        face_enhancer_model=build("gfpgan_1.4", models), face_selector_mode="many", face_swapper_weight=0.7)
    expected = job_frame(tmp_path, target, [source], options, 20, 16, monkeypatch)
    config = tmp_path / "job.toml"  # the job's face options come from its config file, as for `ffray swap`
    config.write_text(f'[pipeline]\nchunk_frames = 16\n[face]\npack = "facefusion"\n'
                      f'face_detector_model = "{options.face_detector_model}"\nface_landmarker_score = 0.0\n'
                      f'face_recognizer_model = "{options.face_recognizer_model}"\n'
                      f'face_swapper_model = "{options.face_swapper_model}"\nface_selector_mode = "many"\n')
    got = preview(tmp_path, "--source", str(source), "--target", str(target), "--frame", "20",
                  "--config", str(config), "--face-enhancer-model", options.face_enhancer_model,
                  "--face-swapper-weight", "0.7")
    np.testing.assert_array_equal(got, expected)
    assert np.any(got != original_frame(target, 20))


def test_rotated_video_is_previewed_upright_and_equals_the_job(tmp_path, monkeypatch):
    clip = astronaut_clip(tmp_path / "turned.mp4", 12, turned=True)  # coded 256x320, shown 320x256
    source = asset(SOURCE)
    options = FaceOptions(face_selector_mode="many")
    expected = job_frame(tmp_path, clip, [source], options, 7, 8, monkeypatch)
    got = preview(tmp_path, "--source", str(source), "--target", str(clip), "--frame", "7",
                  "--face-selector-mode", "many", "--chunk-frames", "8")
    assert got.shape == (256, 320, 3)
    np.testing.assert_array_equal(got, expected)
    assert np.any(got != original_frame(clip, 7))


def test_image_target_is_what_swap_image_writes(tmp_path):
    source, target = asset(SOURCE), asset("media/meds-aa-S029-01.jpg")
    swapped = tmp_path / "swap-image.png"
    assert main(["swap-image", "--source", str(source), "--target", str(target), "--output", str(swapped)]) == 0
    got = preview(tmp_path, "--source", str(source), "--target", str(target), "--face-selector-mode", "many")
    np.testing.assert_array_equal(got, read_image(swapped))


def test_time_picks_the_frame_shown_then(tmp_path, capsys):
    from fractions import Fraction

    from ffray.media import probe
    from ffray.pipeline.one_frame import frame_at_time

    info = probe(str(asset(VIDEO)))  # 30000/1001 fps: frame 45 starts at 1.5015 s
    assert frame_at_time(info, Fraction("1.5015")) == 45
    assert frame_at_time(info, Fraction("1.5")) == 44
    assert frame_at_time(info, 0) == 0
    assert frame_at_time(info, Fraction("2.99")) == 89
    out = tmp_path / "t.png"
    assert main(["preview", "-s", str(asset(SOURCE)), "-t", str(asset(VIDEO)), "--time", "1.5", "-o", str(out),
                 "--json", "--quiet"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["frame"] == 44 and summary["time"] == pytest.approx(44 * 1001 / 30000)
    from importlib.util import find_spec

    assert summary["faces"] == (5 if find_spec("yuface") else 2) and summary["swapped_faces"] == 1


ERRORS = {
    # case: (arguments after --source/--target/--output, what the one error line names, its words)
    "frame past the end": (["--frame", "90"], "--frame 90", "has frames 0-89"),
    "negative frame": (["--frame", "-1"], "--frame -1", "has frames 0-89"),
    "time past the end": (["--time", "3.5"], "--time 3.5", "3.003 s long"),
    "missing source": (["SOURCE=absent.jpg"], "absent.jpg", "not found"),
    "missing target": (["TARGET=absent.mp4"], "absent.mp4", "not found"),
    "source without a face": (["SOURCE=grey.png"], "grey.png", "no face found in the source image"),
    "image with a frame number": (["TARGET=image", "--frame", "3"], "--frame 3", "is an image"),
    "output exists": (["OUTPUT=exists"], "out.png", "exists"),
    "output is the source": (["OUTPUT=source"], "meds-aa-S001-01.jpg", "source image"),
    "bad output extension": (["OUTPUT=out.xyz"], "out.xyz", "unsupported image extension"),
    "unknown model": (["--pack", "facefusion", "--face-swapper-model", "nosuch"], "--face-swapper-model nosuch",
                      ""),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case):
    import cv2

    extra, names, words = ERRORS[case]
    source, target, output = str(asset(SOURCE)), str(asset(VIDEO)), str(tmp_path / "out.png")
    args = []
    for item in extra:
        key, _, value = item.partition("=")
        if key == "SOURCE":
            source = str(tmp_path / value)
            if value == "grey.png":
                cv2.imwrite(source, np.full((120, 160, 3), 127, np.uint8))
        elif key == "TARGET":
            target = str(asset("media/meds-aa-S029-01.jpg")) if value == "image" else str(tmp_path / value)
        elif key == "OUTPUT":
            output = {"exists": output, "source": source}.get(value, str(tmp_path / value))
            if value == "exists":
                Path(output).write_bytes(b"earlier")
        else:
            args.append(item)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = main(["preview", "--source", source, "--target", target, "--output", output, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffray: error: "), err
    assert names in lines[0] and words in lines[0], lines[0]
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_cli_error_has_no_traceback(tmp_path):
    import subprocess

    from pipeline_helpers import ffray_cmd, run_env

    done = subprocess.run(ffray_cmd("preview", "-s", str(asset(SOURCE)), "-t", str(asset(VIDEO)), "--frame", "500",
                                    "-o", str(tmp_path / "o.png")),
                          capture_output=True, text=True, env=run_env(), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"ffray: error: --frame 500: {asset(VIDEO)} has frames 0-89"
    assert not (tmp_path / "o.png").exists()
