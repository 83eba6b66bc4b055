"""`ffray swap-image` and `ffray.faces.image`: reading, atomic writing, selection, the CLI contract."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pytest

from ffray.errors import InputError, MediaError
from ffray.faces.builtin import BuiltinAnalyser, dlib_distance, model_paths
from ffray.faces.image import read_image, swap_image, write_image
from ffray.faces.options import FaceOptions
from ffray.faces.select import largest_face
from tests.conftest import REPO, asset


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffray", "swap-image", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def analyser() -> BuiltinAnalyser:
    return BuiltinAnalyser(FaceOptions())


def face_of(analyser, image):
    return largest_face(analyser.analyse([image], embed=True)[0])


def test_done_when_command_swaps_visibly(tmp_path, analyser):
    source, target = asset("media/meds-aa-S001-01.jpg"), asset("media/meds-aa-S029-01.jpg")
    output = tmp_path / "out.png"
    result = run_cli("--source", str(source), "--target", str(target), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary left beside it
    swapped, original = read_image(output), read_image(target)
    assert swapped.shape == original.shape
    source_face = face_of(analyser, read_image(source))
    before = dlib_distance(face_of(analyser, original), source_face)
    after = dlib_distance(face_of(analyser, swapped), source_face)
    assert after < before - 0.15, (before, after)


def test_exif_rotated_target_is_swapped_upright(tmp_path):
    output = tmp_path / "out.jpg"
    result = run_cli("--source", str(asset("media/meds-aa-S029-01.jpg")),
                     "--target", str(asset("media/meds-aa-S001-01-exif-rotation.jpg")), "--output", str(output))
    assert result.returncode == 0, result.stderr
    image = read_image(output)
    assert image.shape == read_image(asset("media/meds-aa-S001-01.jpg")).shape  # upright 480x600, not 600x480


def _no_face_image(path: Path) -> Path:
    cv2.imwrite(str(path), np.full((160, 200, 3), 127, np.uint8))
    return path


@pytest.mark.parametrize("case", ["missing", "no_face", "unreadable", "empty"])
def test_bad_source_exits_2_naming_the_file_and_writes_nothing(tmp_path, case):
    bad = {
        "missing": lambda: tmp_path / "absent.jpg",
        "no_face": lambda: _no_face_image(tmp_path / "grey.png"),
        "unreadable": lambda: (tmp_path / "notes.jpg").write_text("not an image") and tmp_path / "notes.jpg",
        "empty": lambda: (tmp_path / "empty.jpg").write_bytes(b"") or tmp_path / "empty.jpg",
    }[case]()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_cli("--source", str(bad), "--target", str(asset("media/meds-aa-S029-01.jpg")),
                     "--output", str(out_dir / "out.png"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffray: error: ") and str(bad) in lines[0]
    assert os.listdir(out_dir) == []


def test_bad_target_and_bad_output_extension(tmp_path):
    source = str(asset("media/meds-aa-S001-01.jpg"))
    result = run_cli("--source", source, "--target", str(_no_face_image(tmp_path / "grey.png")),
                     "--output", str(tmp_path / "o.png"))
    assert result.returncode == 2 and "grey.png: no face found" in result.stderr
    result = run_cli("--source", source, "--target", source, "--output", str(tmp_path / "o.xyz"))
    assert result.returncode == 2 and "o.xyz" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png"]


def test_read_image_from_fsspec_url_respects_exif():
    data = Path(asset("media/meds-aa-S001-01-exif-rotation.jpg")).read_bytes()
    with fsspec.open("memory://ffray-test/rotated.jpg", "wb") as handle:
        handle.write(data)
    image = read_image("memory://ffray-test/rotated.jpg")
    np.testing.assert_array_equal(image, read_image(asset("media/meds-aa-S001-01-exif-rotation.jpg")))
    assert image.shape == (600, 480, 3)
    with pytest.raises(MediaError, match="memory://ffray-test/absent.png"):
        read_image("memory://ffray-test/absent.png")


def test_write_image_by_extension_local_and_object_store(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)  # PNG is lossless
    write_image(tmp_path / "sub" / "b.jpg", image)
    assert (tmp_path / "sub" / "b.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    write_image("memory://ffray-test/out/c.webp", image)
    assert fsspec.filesystem("memory").cat("/ffray-test/out/c.webp")[8:12] == b"WEBP"
    with pytest.raises(MediaError, match="unsupported image extension"):
        write_image(tmp_path / "d.gif", image)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.jpg", "sub"]


def test_write_failure_leaves_nothing_at_the_destination(tmp_path, monkeypatch):
    image = np.zeros((8, 8, 3), np.uint8)
    (tmp_path / "keep.png").write_bytes(b"old")

    class HalfWritten:
        """A file that takes a few bytes, then fails like a full disk."""

        def __init__(self, path, mode):
            self.handle = builtins.open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:10])
            raise OSError("disk full")

    monkeypatch.setattr("ffray.faces.image.open", HalfWritten, raising=False)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "keep.png", image)
    assert (tmp_path / "keep.png").read_bytes() == b"old"  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    pad = [np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0)), constant_values=128) for im in (left, right)]
    return np.hstack(pad)


def test_reference_selection_swaps_only_the_matching_face(tmp_path, analyser):
    person_a = read_image(asset("media/meds-aa-S001-01.jpg"))
    person_b = read_image(asset("media/meds-aa-S029-01.jpg"))
    target = tmp_path / "two.png"
    write_image(target, _side_by_side(person_a, person_b))
    source = asset("media/meds-af-S419-01.jpg")
    # person A, from another photo, is the reference: only the left half may change
    options = FaceOptions(face_selector_mode="reference",
                          reference_face_image=str(asset("media/meds-aa-S001-02.jpg")))
    summary = swap_image([source], target, tmp_path / "ref.png", options)
    assert summary["target_faces"] == 2 and summary["swapped_faces"] == 1
    before, after = read_image(target), read_image(tmp_path / "ref.png")
    width_a = person_a.shape[1]
    assert np.any(after[:, :width_a] != before[:, :width_a])
    np.testing.assert_array_equal(after[:, width_a:], before[:, width_a:])

    summary = swap_image([source], target, tmp_path / "many.png", FaceOptions(face_selector_mode="many"))
    assert summary["swapped_faces"] == 2
    many = read_image(tmp_path / "many.png")
    assert np.any(many[:, width_a:] != before[:, width_a:])
    assert set(summary["model_hashes"]) == set(model_paths())  # dlib's two, and YuNet's where yuface is


def test_reference_from_the_target_itself_and_no_match(tmp_path):
    target = asset("media/meds-aa-S029-01.jpg")
    source = asset("media/meds-aa-S001-01.jpg")
    summary = swap_image([source], target, tmp_path / "self.png", FaceOptions())  # reference mode, position 0
    assert summary["swapped_faces"] == 1
    options = FaceOptions(reference_face_image=str(asset("media/meds-af-S419-01.jpg")))
    summary = swap_image([source], target, tmp_path / "none.png", options)
    assert summary["swapped_faces"] == 0
    np.testing.assert_array_equal(read_image(tmp_path / "none.png"), read_image(target).copy())


def test_swap_image_with_enhancer_and_missing_source_list(tmp_path):
    target = asset("media/meds-aa-S029-01.jpg")
    summary = swap_image([asset("media/meds-aa-S001-01.jpg")], target, tmp_path / "e.png",
                         FaceOptions(face_enhancer_model="builtin"))
    assert summary["swapped_faces"] == 1 and (tmp_path / "e.png").exists()
    with pytest.raises(InputError):
        swap_image([], target, tmp_path / "x.png", FaceOptions())


def test_upsample_option_finds_small_faces(tmp_path):
    small = cv2.resize(read_image(asset("media/meds-aa-S029-01.jpg")), None, fx=0.2, fy=0.2,
                       interpolation=cv2.INTER_AREA)  # the face is now ~45 px: below HOG's reach at 0
    target = tmp_path / "small.png"
    write_image(target, small)
    source = str(asset("media/meds-aa-S001-01.jpg"))
    with pytest.raises(InputError, match="small.png: no face found"):
        swap_image([source], target, tmp_path / "o0.png",
                   FaceOptions(face_detector_model="hog", face_detector_upsample=0))
    result = run_cli("--source", source, "--target", str(target), "--output", str(tmp_path / "o1.png"),
                     "--face-detector-model", "hog", "--face-detector-upsample", "1")
    assert result.returncode == 0, result.stderr
    assert np.any(read_image(tmp_path / "o1.png") != small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o1.png", "small.png"]


def test_facefusion_pack_through_the_same_command(tmp_path):
    """The ONNX pack behind the same CLI: real YuNet, contract ArcFace and inswapper, models given as files."""
    from tests.contract_models import build

    target = asset("media/meds-aa-S029-01.jpg")
    output = tmp_path / "out" / "ff.png"
    result = run_cli("--pack", "facefusion", "--model-cache", str(tmp_path / "cache"),
                     "--face-detector-model", f"yunet={asset('models/yunet_s_640_640.onnx')}",
                     "--face-landmarker-score", "0",
                     "--face-recognizer-model", build("arcface_w600k_r50", tmp_path),
                     "--swapper", build("inswapper_128", tmp_path), "--face-selector-mode", "one",
                     "--source", str(asset("media/meds-aa-S001-01.jpg")), "--target", str(target),
                     "--output", str(output), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["swapped_faces"] == 1
    assert set(summary["model_hashes"]) == {"yunet", "arcface_w600k_r50", "inswapper_128"}
    before, after = read_image(target), read_image(output)
    changed = np.any(before != after, axis=2)
    assert changed.any()
    assert not changed[:40].any() and not changed[-60:].any()  # background above the head, shirt below
