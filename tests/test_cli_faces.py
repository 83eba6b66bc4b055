"""`ffray faces`: the faces of one frame numbered as the swap counts them, the contact sheet, and the
pack-aware reference distance (each pack's default, explicit values unchanged)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import asset
from contract_models import build
from pipeline_helpers import YUNET, astronaut_clip, contract_face_options, small_config

from ffray.cli import main
from ffray.faces.options import REFERENCE_DISTANCES, FaceOptions

VIDEO = "media/video_01.mp4"  # 90 frames, 640x480, five people
FIELDS = {"position", "box", "score", "age", "gender", "race", "distance", "selected", "reference"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def yunet_args(models: Path, *more: str) -> list[str]:
    """The facefusion pack with the real YuNet and contract ArcFace, inswapper and FairFace models."""
    options = contract_face_options(models, asset(YUNET), enhancer=False)
    return ["--pack", "facefusion", "--face-detector-model", options.face_detector_model,
            "--face-landmarker-score", "0", "--face-recognizer-model", options.face_recognizer_model,
            "--face-swapper-model", options.face_swapper_model,
            "--face-classifier-model", build("fairface", models), *more]


def faces_json(capsys, *args: str) -> list[dict]:
    assert main(["faces", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def frame_0_faces(options: FaceOptions):
    """Frame 0 of video_01 analysed directly (no CLI), as a job's detector stage would."""
    from ffray.faces.packs import load_analyser
    from ffray.media import probe
    from ffray.pipeline.one_frame import decode_frame

    target = str(asset(VIDEO))
    image = decode_frame(target, probe(target), 0, 48)
    return load_analyser(options).analyse([image])[0]


def test_video_01_frame_0_lists_five_faces_in_the_swap_order(models, capsys):
    from ffray.faces.select import sort_faces

    rows = faces_json(capsys, str(asset(VIDEO)), *yunet_args(models, "--face-selector-mode", "many"))
    assert len(rows) == 5
    assert all(set(row) == FIELDS for row in rows)
    assert [row["position"] for row in rows] == [0, 1, 2, 3, 4]
    expected = sort_faces(frame_0_faces(contract_face_options(models, asset(YUNET), enhancer=False)),
                          "large-small")
    np.testing.assert_allclose([row["box"] for row in rows], [f.box for f in expected], atol=0.05)
    areas = [(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]) for r in rows]
    assert areas == sorted(areas, reverse=True)  # the default order: large-small
    assert all(row["selected"] for row in rows)  # many: all of them
    for row in rows:  # the facefusion pack classifies (here a contract FairFace: the fields, not the truth)
        assert row["gender"] in ("female", "male") and row["race"] and len(row["age"]) == 2
        assert row["distance"] is None and row["reference"] is False and 0 < row["score"] <= 1
    rows = faces_json(capsys, str(asset(VIDEO)), "--no-classify", *yunet_args(models, "--face-selector-mode", "many"))
    assert all(row["age"] is None and row["gender"] is None and row["race"] is None for row in rows)


@pytest.mark.parametrize("order", ["left-right", "top-bottom", "best-worst"])
def test_positions_are_what_the_job_counts(models, capsys, tmp_path, order):
    """The face at POS k is the reference face the driver picks with --reference-face-position k, and the
    face 'one' mode swaps is POS 0."""
    from ffray.pipeline.driver import _Analysis

    rows = faces_json(capsys, str(asset(VIDEO)), *yunet_args(models, "--face-selector-order", order,
                                                             "--face-selector-mode", "one"))
    assert [row["selected"] for row in rows] == [True, False, False, False, False]
    from ffray.media import probe

    info = probe(str(asset(VIDEO)))
    for row in rows:
        options = contract_face_options(models, asset(YUNET), enhancer=False, face_selector_order=order,
                                        face_selector_mode="reference",
                                        reference_face_position=row["position"])
        reference = _Analysis(options, small_config(tmp_path)).reference_face(str(asset(VIDEO)), info, 48)
        np.testing.assert_allclose(reference.box, row["box"], atol=0.05)
    # and the listing in reference mode marks that face and measures the others against it
    rows = faces_json(capsys, str(asset(VIDEO)), *yunet_args(models, "--face-selector-order", order,
                                                             "--reference-face-position", "2"))
    assert [row["reference"] for row in rows] == [False, False, True, False, False]
    assert rows[2]["distance"] == 0 and rows[2]["selected"]
    assert all(row["selected"] == (row["distance"] < 0.3) for row in rows)


def test_filtered_faces_have_no_position(models, capsys):
    everyone = faces_json(capsys, str(asset(VIDEO)), *yunet_args(models, "--face-selector-mode", "many"))
    genders = [row["gender"] for row in everyone]
    gender = min(set(genders), key=genders.count)
    assert 0 < genders.count(gender) < 5  # the contract FairFace is deterministic: both genders occur
    rows = faces_json(capsys, str(asset(VIDEO)), *yunet_args(models, "--face-selector-mode", "many",
                                                             "--face-selector-gender", gender))
    kept = [row for row in rows if row["gender"] == gender]
    assert [row["position"] for row in kept] == list(range(len(kept)))
    assert all(row["selected"] for row in kept)
    assert all(row["position"] is None and not row["selected"] for row in rows if row["gender"] != gender)


def test_contact_sheet_and_table(models, capsys, tmp_path):
    from ffray.cli.faces import LABEL, THUMB, sheet_shape

    sheet = tmp_path / "sheet.png"
    assert main(["faces", str(asset(VIDEO)), "--frame", "0", "--output", str(sheet),
                 *yunet_args(models, "--face-selector-mode", "many")]) == 0
    captured = capsys.readouterr()
    image = cv2.imread(str(sheet))
    assert image is not None
    assert sheet_shape((480, 640), 5) == (480 + THUMB + LABEL, 640)  # five crops fit one row
    assert image.shape == (480 + THUMB + LABEL, 640, 3)
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{asset(VIDEO)}: frame 0 (0.000 s), 640x480: 5 faces")
    assert lines[1].split()[:4] == ["POS", "BOX", "x1,y1,x2,y2", "SIZE"]
    assert [line.split()[0] for line in lines[2:]] == ["0", "1", "2", "3", "4"]
    assert "DISTANCE" not in lines[1]  # not reference mode
    # the sheet is not written over without --overwrite
    assert main(["faces", str(asset(VIDEO)), "--output", str(sheet), *yunet_args(models)]) == 2
    assert "exists" in capsys.readouterr().err


def test_builtin_pack_reference_distance_and_no_classifier(capsys):
    # frame 45 against the reference face of frame 0 (the woman on the left): same person, other person
    rows = faces_json(capsys, str(asset(VIDEO)), "--frame", "45", "--face-detector-model", "hog")
    assert len(rows) == 2  # HOG finds the two largest faces
    woman, man = sorted(rows, key=lambda r: r["box"][0])
    assert woman["distance"] < REFERENCE_DISTANCES["builtin"].default < man["distance"]
    assert woman["selected"] and not man["selected"]
    assert all(r["age"] is None and r["gender"] is None and r["race"] is None for r in rows)
    # an explicit distance keeps its meaning: below the woman's own distance, nobody is swapped
    rows = faces_json(capsys, str(asset(VIDEO)), "--frame", "45", "--face-detector-model", "hog",
                      "--reference-face-distance", str(woman["distance"] * 0.9))
    assert not any(r["selected"] for r in rows)


def test_rotated_video_is_listed_upright(tmp_path, capsys):
    from ffray.cli.faces import sheet_shape
    from ffray.media import decode_all

    clip = astronaut_clip(tmp_path / "turned.mp4", 4, turned=True)  # coded 256x320, shown 320x256
    sheet = tmp_path / "sheet.png"
    rows = faces_json(capsys, str(clip), "--output", str(sheet), "--face-selector-mode", "many")
    assert len(rows) == 1
    x1, y1, x2, y2 = rows[0]["box"]
    assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 256  # upright coordinates
    image = cv2.imread(str(sheet))
    assert image.shape[:2] == sheet_shape((256, 320), 1)
    coded = next(iter(decode_all(clip)))[1]  # (pts, BGR image as stored)
    upright = np.rot90(coded, -1)  # a quarter turn clockwise, as a player shows it
    away = np.ones((256, 320), bool)  # the frame part of the sheet, away from the drawn box and label
    away[max(0, int(y1) - 40):int(y2) + 40, max(0, int(x1) - 40):int(x2) + 40] = False
    np.testing.assert_array_equal(image[:256, :320][away], upright[away])


def test_time_and_image_targets(capsys):
    from importlib.util import find_spec

    rows = faces_json(capsys, str(asset(VIDEO)), "--time", "1.52")  # frame 45 starts at 1.5015 s
    assert len(rows) == (5 if find_spec("yuface") else 2)  # the builtin pack's YuNet, else its HOG fallback
    rows = faces_json(capsys, str(asset("media/meds-aa-S029-01.jpg")))
    assert len(rows) == 1 and rows[0]["reference"] and rows[0]["selected"]


@pytest.mark.parametrize("args, names, words", [
    (["absent.mp4"], "absent.mp4", "not found"),
    ([VIDEO, "--frame", "90"], "--frame 90", "has frames 0-89"),
    ([VIDEO, "--time", "-1"], "--time -1", "3.003 s long"),
    (["media/meds-aa-S029-01.jpg", "--time", "2"], "--time 2", "is an image"),
    ([VIDEO, "--reference-frame-number", "99"], "--reference-frame-number 99", "has frames 0-89"),
])
def test_errors_are_one_line_exit_2(capsys, args, names, words):
    target = str(asset(args[0])) if args[0] != "absent.mp4" else "absent.mp4"
    assert main(["faces", target, *args[1:]]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffray: error: ") and names in lines[0] and words in lines[0]


# --- the reference distance follows the pack ---------------------------------------------------------


def test_reference_distance_defaults_follow_the_pack():
    assert FaceOptions().reference_face_distance is None  # "the pack's"
    assert FaceOptions(pack="facefusion").reference_distance == 0.3  # FaceFusion's own default
    assert FaceOptions(pack="builtin").reference_distance == REFERENCE_DISTANCES["builtin"].default == 0.3
    for pack in REFERENCE_DISTANCES:  # an explicit value means what it meant, on every pack
        assert FaceOptions(pack=pack, reference_face_distance=0.25).reference_distance == 0.25
        assert FaceOptions(pack=pack, reference_face_distance="0.45").reference_distance == 0.45  # a manifest cell
    # what the job's tables carry to the detector stage (JobTable.options) resolves the same way
    assert FaceOptions.from_dict(FaceOptions(pack="facefusion").to_dict()).reference_distance == 0.3
    from ffray.faces.builtin import BuiltinAnalyser
    from ffray.faces.onnx_pack import OnnxFaceAnalyser

    assert BuiltinAnalyser.distance_scale is REFERENCE_DISTANCES["builtin"]
    assert OnnxFaceAnalyser.distance_scale is REFERENCE_DISTANCES["facefusion"]


def test_config_file_and_flags_still_decide_the_distance(tmp_path):
    import argparse

    from ffray.cli.swap import resolve_options
    from ffray.faces.options import add_face_arguments
    from ffray.pipeline.config import add_pipeline_arguments

    def options(*argv: str) -> FaceOptions:
        parser = argparse.ArgumentParser()
        add_pipeline_arguments(parser)
        add_face_arguments(parser)
        return resolve_options(parser.parse_args(list(argv)))[0]

    file = tmp_path / "job.toml"
    file.write_text('[face]\npack = "facefusion"\n')
    assert options("--config", str(file)).reference_distance == 0.3
    file.write_text('[face]\nreference_face_distance = 0.42\n')
    assert options("--config", str(file)).reference_distance == 0.42
    assert options("--config", str(file), "--reference-face-distance", "0.2").reference_distance == 0.2
    assert options().reference_face_distance is None


def test_help_shows_each_packs_distance(capsys):
    with pytest.raises(SystemExit):
        main(["swap", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the pack's: facefusion 0.3, builtin 0.3)" in text
    assert "half dlib's Euclidean distance" in text and "(1 - cosine similarity" in text


def test_builtin_default_sits_between_same_and_other_people():
    """The measurement behind the builtin default: the same person (three photos; one person across
    frames of video_01) against other people, in dlib units (the builtin scale is half of it)."""
    from ffray.faces.builtin import BuiltinAnalyser, dlib_distance
    from ffray.faces.image import read_image
    from ffray.faces.select import largest_face
    from ffray.media import probe
    from ffray.pipeline.one_frame import decode_frame

    analyser = BuiltinAnalyser(FaceOptions(face_detector_model="hog"))  # the two faces HOG finds in video_01

    def photo(name: str):
        return largest_face(analyser.analyse([read_image(asset(f"media/meds-{name}.jpg"))], embed=True)[0])

    same_person = [photo(n) for n in ("aa-S001-01", "aa-S001-02", "aa-S001-03")]
    others = [photo("aa-S029-01"), photo("af-S419-01")]
    same = [dlib_distance(a, b) for i, a in enumerate(same_person) for b in same_person[i + 1:]]
    other = [dlib_distance(a, b) for a in same_person for b in others] + [dlib_distance(*others)]
    target = str(asset(VIDEO))
    info = probe(target)
    frames = [sorted(analyser.analyse([decode_frame(target, info, n, 48)], embed=True)[0],
                     key=lambda f: float(f.box[0])) for n in (0, 45, 89)]
    for i, a in enumerate(frames[0]):  # left: the woman, right: the man, in each frame
        for later in frames[1:]:
            for k, b in enumerate(later):
                (same if k == i else other).append(dlib_distance(a, b))
    assert len(same) == 3 + 4 and len(other) == 7 + 4
    dlib_default = REFERENCE_DISTANCES["builtin"].default * 2  # the builtin scale is half dlib's
    # measured: same 0.27-0.44, other people 0.75-0.92
    assert max(same) < 0.5 < dlib_default < 0.7 < min(other)
    # the default is about midway between the two groups
    assert abs(dlib_default - (max(same) + min(other)) / 2) < 0.05
