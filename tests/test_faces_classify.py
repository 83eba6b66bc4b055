"""FairFace classification (contract model) and FaceFusion's age/gender/race selector filters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import asset
from contract_models import build, build_fairface

from ffray.errors import InputError
from ffray.faces.align import estimate_matrix, template_points, transform_points, warp_face
from ffray.faces.classify import (
    FairFace,
    categorize_age,
    categorize_gender,
    categorize_race,
    prepare_fairface_crop,
)
from ffray.faces.options import FaceOptions, add_face_arguments, face_options_from_args
from ffray.faces.select import choose_reference_face, resolve_gender_race, select_faces
from ffray.faces.types import Face

REPO = Path(__file__).resolve().parents[1]
LANDMARKS = np.array([[120, 130], [180, 130], [150, 165], [125, 195], [175, 195]], np.float32)


@pytest.fixture(scope="module")
def fairface_path(tmp_path_factory) -> Path:
    return build_fairface(tmp_path_factory.mktemp("fairface") / "fairface.onnx")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def uniform(b: int, g: int, r: int) -> np.ndarray:
    frame = np.zeros((300, 300, 3), np.uint8)
    frame[:] = (b, g, r)
    return frame


def face(x1: float, size: float, gender=None, race=None, age=None, score=0.9) -> Face:
    extra = {k: v for k, v in (("gender", gender), ("race", race), ("age", age)) if v is not None}
    points = np.zeros((5, 2), np.float32)
    return Face(box=np.array([x1, 0, x1 + size, size], np.float32), score=score, landmark_5=points,
                landmark_5_68=points, extra=extra)


def options(**kw) -> FaceOptions:
    return FaceOptions(**{"pack": "facefusion", "face_selector_mode": "many", **kw})


# --- classifier --------------------------------------------------------------------------------------

def test_preprocessing_is_arcface_template_at_224_rgb_imagenet():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    x = prepare_fairface_crop(frame, LANDMARKS)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    # the crop maps the face points onto arcface_112_v2 scaled to 224
    points = template_points("arcface_112_v2", 224) * 0.7 + 30
    matrix = estimate_matrix(points, "arcface_112_v2", (224, 224))
    np.testing.assert_allclose(transform_points(points, matrix), template_points("arcface_112_v2", 224),
                               atol=1e-3)
    crop, _ = warp_face(frame, LANDMARKS, "arcface_112_v2", (224, 224))
    rgb = crop[:, :, ::-1].astype(np.float64) / 255
    expected = (rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0], expected.transpose(2, 0, 1), atol=2e-6)
    # a pure red pixel: channel 0 is R
    red = prepare_fairface_crop(uniform(0, 0, 255), LANDMARKS)[0, :, 100, 100]
    np.testing.assert_allclose(red, [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)


def test_id_to_label_mapping_as_facefusion():
    assert categorize_gender(1) == "female" and categorize_gender(0) == "male"
    assert [categorize_age(i) for i in range(10)] == [(0, 2), (3, 9), (10, 19), (20, 29), (30, 39), (40, 49),
                                                      (50, 59), (60, 69), (70, 100), (70, 100)]
    assert [categorize_race(i) for i in range(8)] == ["white", "black", "latino", "asian", "asian", "indian",
                                                      "arabic", "white"]


@pytest.mark.parametrize("race_id, race", [(0, "white"), (1, "black"), (2, "latino"), (3, "asian"), (4, "asian"),
                                           (5, "indian"), (6, "arabic")])
def test_classifier_outputs_reach_the_face_labels(fairface_path, race_id, race):
    # the contract model reads the crop's mean colour: race from R, gender from G > 0.5, age from B
    r = int((race_id + 0.5) / 6.999 * 255)
    age_id = race_id + 1
    b = int((age_id + 0.5) / 8.999 * 255)
    result = FairFace(session(fairface_path)).classify([uniform(b, 200, r), uniform(b, 60, r)], [LANDMARKS] * 2)
    assert result[0] == {"gender": "female", "race": race, "age": categorize_age(age_id)}
    assert result[1]["gender"] == "male"


def test_batch_equals_batch_one(fairface_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (300, 300, 3), dtype=np.uint8) for _ in range(5)]
    frames += [uniform(*rng.integers(0, 256, 3)) for _ in range(5)]
    points = [LANDMARKS + rng.uniform(-5, 5, (5, 2)).astype(np.float32) for _ in frames]
    s = session(fairface_path)
    assert FairFace(s, batch_size=4).classify(frames, points) == FairFace(s, batch_size=1).classify(frames, points)


# --- filters -----------------------------------------------------------------------------------------

def test_gender_and_race_filters_after_sorting():
    faces = [face(0, 10, "male", "white"), face(20, 30, "female", "asian"), face(60, 20, "female", "white")]
    picked = select_faces(faces, options(face_selector_gender="female"))
    assert picked == [faces[1], faces[2]]  # large-small, then filtered
    assert select_faces(faces, options(face_selector_race="white")) == [faces[2], faces[0]]
    assert select_faces(faces, options(face_selector_gender="female", face_selector_race="white")) == [faces[2]]
    assert select_faces(faces, options(face_selector_gender="male", face_selector_mode="one")) == [faces[0]]
    assert select_faces(faces, options(face_selector_race="black")) == []


def test_age_filter_is_half_open_range_overlap_as_facefusion():
    kid, teen, old = face(0, 10, age=(0, 2)), face(20, 20, age=(10, 19)), face(50, 30, age=(70, 100))
    faces = [kid, teen, old]
    assert select_faces(faces, options(face_selector_age_start=15, face_selector_age_end=30)) == [teen]
    # range(18, 19) & range(10, 19) = {18}; range(19, 30) starts at the bucket's exclusive end
    assert select_faces(faces, options(face_selector_age_start=18, face_selector_age_end=19)) == [teen]
    assert select_faces(faces, options(face_selector_age_start=19, face_selector_age_end=30)) == []
    # FaceFusion's bucket 0 is range(0, 2): age 2 belongs to no bucket
    assert select_faces(faces, options(face_selector_age_start=2, face_selector_age_end=3)) == []
    assert select_faces(faces, options(face_selector_age_end=5)) == [kid]  # missing start reads as 0
    assert select_faces(faces, options(face_selector_age_start=60)) == [old]  # missing end reads as 100
    # 0..0 is falsy in FaceFusion's `if start or end`: no filter
    assert len(select_faces(faces, options(face_selector_age_start=0, face_selector_age_end=0))) == 3


def test_auto_copies_the_largest_source_face():
    faces = [face(0, 10, "male", "black"), face(20, 30, "female", "white")]
    sources = [face(0, 5, "female", "white"), face(0, 50, "male", "black")]
    opts = options(face_selector_gender="auto", face_selector_race="auto")
    assert resolve_gender_race(opts, sources) == ("male", "black")
    assert select_faces(faces, opts, source_faces=sources) == [faces[0]]
    assert select_faces(faces, options(face_selector_gender="auto"), source_faces=sources[:1]) == [faces[1]]


def test_auto_without_source_faces_is_no_filter_despite_the_precedence_quirk():
    # `if source_faces and gender == 'auto' or race == 'auto'`: race 'auto' enters the block with no
    # source faces, finds no source face and leaves 'auto', which filters nothing
    faces = [face(0, 10, "male", "black"), face(20, 30, "female", "white")]
    for kw in ({"face_selector_race": "auto"}, {"face_selector_gender": "auto"},
               {"face_selector_gender": "auto", "face_selector_race": "auto"}):
        for sources in (None, []):
            assert resolve_gender_race(options(**kw), sources) == (kw.get("face_selector_gender"),
                                                                     kw.get("face_selector_race"))
            assert select_faces(faces, options(**kw), source_faces=sources) == [faces[1], faces[0]]
    # with race 'auto' the block runs and resolves gender 'auto' too (both readings agree)
    sources = [face(0, 50, "female", "black")]
    assert resolve_gender_race(options(face_selector_gender="auto", face_selector_race="auto"), sources) == \
        ("female", "black")
    assert resolve_gender_race(options(face_selector_gender="male", face_selector_race="auto"), sources) == \
        ("male", "black")


def test_reference_mode_filters_the_reference_faces_not_the_targets():
    a, b = face(0, 30, "male"), face(40, 10, "female")
    opts = options(face_selector_mode="reference", face_selector_gender="female")
    assert choose_reference_face([a, b], opts) is b
    targets = [face(0, 30, "male"), face(40, 10, "female")]
    picked = select_faces(targets, opts, reference=b, distance=lambda f, r: 0.0)
    assert picked == targets  # FaceFusion matches the unfiltered target faces


# --- options and packs -------------------------------------------------------------------------------

def test_cli_flags_and_validation():
    import argparse

    parser = argparse.ArgumentParser()
    add_face_arguments(parser)
    args = parser.parse_args(["--pack", "facefusion", "--face-selector-gender", "female", "--face-selector-race",
                              "asian", "--face-selector-age-start", "20", "--face-selector-age-end", "40"])
    opts = face_options_from_args(args)
    assert (opts.face_selector_gender, opts.face_selector_race, opts.face_selector_age_start,
            opts.face_selector_age_end, opts.face_classifier_model) == ("female", "asian", 20, 40, "fairface")
    assert face_options_from_args(parser.parse_args([])).selector_filter_flags() == []
    with pytest.raises(SystemExit):
        parser.parse_args(["--face-selector-age-end", "101"])
    with pytest.raises(InputError, match="--face-selector-race"):
        FaceOptions(face_selector_race="green")
    assert FaceOptions.from_dict(opts.to_dict()) == opts


def test_builtin_pack_refuses_filters_naming_the_flag():
    from ffray.faces.packs import load_analyser

    with pytest.raises(InputError, match="^--face-selector-gender: the builtin pack") as info:
        load_analyser(FaceOptions(pack="builtin", face_selector_gender="male"))
    assert "\n" not in str(info.value)


# --- the analyser and the command --------------------------------------------------------------------

def _analyser_options(tmp_path, **kw) -> FaceOptions:
    return FaceOptions(**{"pack": "facefusion", "face_detector_model": f"yunet={asset('models/yunet_s_640_640.onnx')}",
                          "face_landmarker_score": 0, "face_selector_mode": "one", **kw})


def test_analyser_classifies_only_when_a_filter_is_set(tmp_path):
    from ffray.faces.onnx_pack import OnnxFaceAnalyser
    from ffray.models.store import ModelStore

    store = ModelStore(cache_dir=tmp_path / "cache")
    image = cv2.imread(str(asset("media/meds-aa-S029-01.jpg")))
    plain = OnnxFaceAnalyser(_analyser_options(tmp_path), store=store)
    assert plain.classifier is None
    assert not {"gender", "race", "age"} & set(plain.analyse([image])[0][0].extra)
    ref = build("fairface", tmp_path)
    filtered = OnnxFaceAnalyser(_analyser_options(tmp_path, face_selector_race="auto", face_classifier_model=ref),
                                store=store, batch_size=2)
    faces = filtered.analyse([image, image, image])
    assert "fairface" in filtered.model_hashes
    extra = faces[0][0].extra
    crop_expected = FairFace(session(ref.split("=", 1)[1])).classify([image], [faces[0][0].landmark_5_68])[0]
    assert {k: extra[k] for k in ("gender", "race", "age")} == crop_expected
    assert all(f[0].extra == extra for f in faces)


def test_swap_image_gender_filter_keeps_or_drops_the_face(tmp_path):
    from ffray.faces.image import read_image
    from ffray.faces.onnx_pack import OnnxFaceAnalyser
    from ffray.models.store import ModelStore

    target = asset("media/meds-aa-S029-01.jpg")
    classifier = build("fairface", tmp_path)
    store = ModelStore(cache_dir=tmp_path / "cache")
    analysed = OnnxFaceAnalyser(_analyser_options(tmp_path, face_selector_gender="male",
                                                  face_classifier_model=classifier), store=store)
    gender = analysed.analyse([read_image(target)])[0][0].extra["gender"]
    other = "female" if gender == "male" else "male"
    common = ["--pack", "facefusion", "--model-cache", str(tmp_path / "cache"),
              "--face-detector-model", f"yunet={asset('models/yunet_s_640_640.onnx')}",
              "--face-landmarker-score", "0", "--face-recognizer-model", build("arcface_w600k_r50", tmp_path),
              "--swapper", build("inswapper_128", tmp_path), "--face-selector-mode", "one",
              "--face-classifier-model", classifier, "--source", str(asset("media/meds-aa-S001-01.jpg")),
              "--target", str(target), "--json"]
    for wanted, swapped in ((gender, 1), (other, 0)):
        output = tmp_path / f"{wanted}.png"
        result = subprocess.run([sys.executable, "-m", "ffray", "swap-image", *common, "--output", str(output),
                                 "--face-selector-gender", wanted], capture_output=True, text=True, cwd=REPO,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["target_faces"] == 1 and summary["swapped_faces"] == swapped
        assert "fairface" in summary["model_hashes"]
        changed = np.any(read_image(target) != read_image(output))
        assert changed == bool(swapped)


def test_detector_stage_resolves_auto_from_the_job_source_faces(tmp_path):
    from ffray.faces.image import read_image
    from ffray.faces.onnx_pack import OnnxFaceAnalyser
    from ffray.models.store import ModelStore
    from ffray.pipeline.stages import JobTable, SourceSet, VideoJob, detect_rows

    opts = _analyser_options(tmp_path, face_selector_mode="many", face_selector_gender="auto",
                             face_classifier_model=build("fairface", tmp_path))
    analyser = OnnxFaceAnalyser(opts, store=ModelStore(cache_dir=tmp_path / "cache"))
    import av

    from ffray.media import plan_chunks, probe
    from ffray.pipeline.datasource import ChunkTask, chunk_row

    image = read_image(asset("media/meds-aa-S029-01.jpg"))[:512, :512]
    clip = tmp_path / "two.mp4"  # the detector stage decodes its chunk itself
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for _ in range(2):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    info = probe(clip)
    gender = analyser.analyse([image])[0][0].extra["gender"]
    other = "female" if gender == "male" else "male"
    batch = chunk_row(ChunkTask("v", str(clip), plan_chunks(info, 16)[0], 0))
    for source_gender, kept in ((gender, 1), (other, 0)):
        video = VideoJob("v", str(clip), 0, "s", info=info)
        table = JobTable(job_id="j", face_options=opts.to_dict(), videos={"v": video},
                         sources={"s": SourceSet(("s.jpg",), (face(0, 50, source_gender),))})
        out = detect_rows(dict(batch), analyser, table)
        assert str(out["error"][0]) == ""
        assert int(out["faces"][0]) == 2 * kept
