"""The ONNX analyser end to end: real YuNet + contract fan_68_5 / 2dfan4 / ArcFace; the 5/68 rule,
embedding policy, batching, reference selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import asset
from contract_models import build

from ffray.faces.align import landmark_5_from_68
from ffray.faces.onnx_pack import OnnxFaceAnalyser
from ffray.faces.options import FaceOptions
from ffray.faces.select import choose_reference_face, select_faces


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    return {n: build(n, folder) for n in ("fan_68_5", "2dfan4", "arcface_w600k_r50")}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from ffray.models.store import ModelStore

    return ModelStore(cache_dir=tmp_path_factory.mktemp("cache"))


def analyser(refs, store, model="yunet_s_640_640.onnx", **options):
    defaults = dict(pack="facefusion", face_detector_model=f"yunet={asset('models/' + model)}",
                    face_landmarker_model=refs["2dfan4"], face_recognizer_model=refs["arcface_w600k_r50"])
    return OnnxFaceAnalyser(FaceOptions(**{**defaults, **options}), store=store, fan_68_5=refs["fan_68_5"])


def image(name):
    return cv2.imread(str(asset(f"media/{name}")))


def test_five_from_sixty_eight_when_the_landmarker_is_confident(refs, store):
    faces = analyser(refs, store).analyse([image("meds-aa-S001-01.jpg")])[0]
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarker_score > 0.5 and face.landmark_68.shape == (68, 2)
    np.testing.assert_allclose(face.landmark_5_68, landmark_5_from_68(face.landmark_68), atol=1e-4)
    assert not np.allclose(face.landmark_5_68, face.landmark_5)
    x1, y1, x2, y2 = face.box
    assert ((face.landmark_68 > [x1 - 40, y1 - 40]) & (face.landmark_68 < [x2 + 40, y2 + 40])).all()
    assert face.extra["angle"] == 0


def test_below_the_landmarker_threshold_the_detector_points_are_used(refs, store):
    face = analyser(refs, store, face_landmarker_score=0.99).analyse([image("meds-aa-S001-01.jpg")])[0][0]
    assert 0 < face.landmarker_score < 0.99
    np.testing.assert_array_equal(face.landmark_5_68, face.landmark_5)
    assert face.landmark_68 is not None  # '68' still holds the 2dfan4 output


def test_landmarker_off_loads_no_68_point_models(refs, store):
    a = analyser(refs, store, face_landmarker_score=0)
    assert a.landmarkers == [] and a.fan_68_5 is None
    face = a.analyse([image("meds-aa-S029-01.jpg")])[0][0]
    np.testing.assert_array_equal(face.landmark_5_68, face.landmark_5)
    assert face.landmark_68 is None
    with_area = analyser(refs, store, face_landmarker_score=0, face_mask_types=("box", "area"))
    face = with_area.analyse([image("meds-aa-S029-01.jpg")])[0][0]
    # the contract fan_68_5 reproduces the 5 points at the eyes, nose tip and mouth corners
    np.testing.assert_allclose(landmark_5_from_68(face.landmark_68), face.landmark_5, atol=1e-2)


def test_embeddings_only_where_needed_and_distance(refs, store):
    many = analyser(refs, store, face_selector_mode="many")
    images = [image("meds-aa-S001-01.jpg"), image("meds-af-S419-01.jpg")]
    assert all(f.embedding is None for fs in many.analyse(images) for f in fs)
    assert "arcface_w600k_r50" not in many.model_hashes
    faces = many.analyse(images, embed=True)
    a, b = faces[0][0], faces[1][0]
    assert a.embedding.shape == (512,) and np.linalg.norm(a.embedding_norm) == pytest.approx(1, abs=1e-5)
    assert "arcface_w600k_r50" in many.model_hashes
    assert many.face_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert 0 < many.face_distance(a, b) <= 1
    reference_mode = analyser(refs, store, face_selector_mode="reference")
    assert reference_mode.analyse(images[:1])[0][0].embedding is not None


def test_batched_analysis_equals_one_frame_at_a_time(refs, store):
    batched = analyser(refs, store, model="yunet_n_dynamic.onnx", face_selector_mode="reference")
    images = [image("meds-aa-S001-02.jpg"), image("meds-aa-S029-01.jpg"), np.zeros((64, 64, 3), np.uint8),
              image("meds-af-S419-01_40deg.jpg")]
    together = batched.analyse(images)
    one_by_one = [batched.analyse([im])[0] for im in images]
    assert [len(f) for f in together] == [1, 1, 0, 2]
    for fs, gs in zip(together, one_by_one, strict=True):
        for f, g in zip(fs, gs, strict=True):
            np.testing.assert_allclose(f.box, g.box, atol=1e-3)
            np.testing.assert_allclose(f.landmark_5_68, g.landmark_5_68, atol=1e-3)
            np.testing.assert_allclose(f.embedding_norm, g.embedding_norm, atol=1e-4)


def test_reference_selection_picks_the_same_face(refs, store):
    a = analyser(refs, store, face_selector_mode="reference")
    pair = a.analyse([image("meds-af-S419-01_40deg.jpg")])[0]
    assert len(pair) == 2
    options = FaceOptions(face_selector_mode="reference", face_selector_order="left-right")
    reference = choose_reference_face(pair, options)
    assert reference.box[0] < 640
    chosen = select_faces(pair, options, reference=reference, distance=a.face_distance)
    assert reference in chosen


def test_arcface_input_is_facefusions_formula():
    from ffray.faces.align import warp_face
    from ffray.faces.embed import prepare_arcface_crop

    frame = np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    points = np.array([[80, 90], [120, 90], [100, 110], [85, 130], [115, 130]], np.float32)
    crop, _ = warp_face(frame, points, "arcface_112_v2", (112, 112))
    expected = np.expand_dims((crop / 127.5 - 1)[:, :, ::-1].transpose(2, 0, 1), axis=0).astype(np.float32)
    np.testing.assert_array_equal(prepare_arcface_crop(frame, points), expected)


def test_peppa_wutz_landmarker(refs, store, tmp_path):
    peppa = build("peppa_wutz", tmp_path)
    face = analyser(refs, store, face_landmarker_model=peppa).analyse([image("meds-aa-S029-01.jpg")])[0][0]
    # contract confidence 0.9 -> interp(0.9, [0, 0.95], [0, 1])
    assert face.landmarker_score == pytest.approx(0.9 / 0.95, abs=1e-4)
    np.testing.assert_allclose(face.landmark_5_68, landmark_5_from_68(face.landmark_68), atol=1e-4)


def test_2dfan4_input_passes_the_lossy_lab_round_trip_and_its_score_mapping(refs):
    import onnxruntime as ort

    from ffray.faces.align import rotation_matrix_and_size
    from ffray.faces.landmark import Landmarker68, prepare_landmark_crop

    frame = cv2.GaussianBlur(np.random.default_rng(6).uniform(0, 255, (300, 400, 3)), (0, 0), 2).astype(np.uint8)
    box = np.array([120.4, 60.2, 260.9, 220.7])
    for angle in (0, 90):
        tensor, matrix, rotation = prepare_landmark_crop(frame, box, angle)
        # FaceFusion: scale 195 / longest side, centred translation, bilinear, then the rotation
        scale = 195 / max(box[2] - box[0], box[3] - box[1])
        translation = (256 - (box[:2] + box[2:]) * scale) * 0.5
        np.testing.assert_allclose(matrix, [[scale, 0, translation[0]], [0, scale, translation[1]]])
        crop = cv2.warpAffine(frame, matrix, (256, 256))
        expected_rotation, size = rotation_matrix_and_size(angle, (256, 256))
        crop = cv2.warpAffine(crop, expected_rotation, size)
        round_trip = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_RGB2Lab), cv2.COLOR_Lab2RGB)  # BGR data, no CLAHE
        assert np.mean(cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)[:, :, 0]) >= 30
        assert np.any(round_trip != crop)  # lossy even without CLAHE, and FaceFusion feeds the lossy one
        np.testing.assert_array_equal(tensor, round_trip.transpose(2, 0, 1).astype(np.float32) / 255.0)
        np.testing.assert_array_equal(rotation, expected_rotation)
    landmarker = Landmarker68(ort.InferenceSession(refs["2dfan4"].split("=", 1)[1],
                                                   providers=["CPUExecutionProvider"]), "2dfan4")
    (points, score), = landmarker.landmarks([frame], [box], [0])
    tensor, matrix, _ = prepare_landmark_crop(frame, box, 0)
    translation = matrix[:, 2]
    # the contract's heatmaps are 0.1 * (4x4-pooled channel mean) + 0.75; score = interp(mean of maxima, [0, 0.9])
    peak = tensor.reshape(3, 64, 4, 64, 4).mean(axis=(2, 4)).mean(axis=0).max() * 0.1 + 0.75
    assert score == pytest.approx(float(np.interp(peak, [0, 0.9], [0, 1])), abs=1e-6)
    assert peak < 0.9 and score < 1
    # landmarks: 64-px heatmap space -> x 256 / 64 -> back through the inverse crop matrix
    from contract_models import _face_68_in_64

    in_crop = (_face_68_in_64() + tensor.mean() * 0.5) / 64 * 256
    np.testing.assert_allclose(points, (in_crop - translation) / scale, atol=1e-3)


def test_fan_68_5_sees_the_points_in_unit_ffhq_space():
    from ffray.faces.align import WARP_TEMPLATES, estimate_matrix
    from ffray.faces.landmark import prepare_68_5_input

    angle = np.radians(12)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmark_5 = WARP_TEMPLATES["ffhq_512"] @ rotation.T * 230 + [310.5, 95.25]  # a similarity of the template
    points, matrix = prepare_68_5_input(landmark_5)
    assert points.shape == (1, 5, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points[0], WARP_TEMPLATES["ffhq_512"], atol=1e-5)  # crop size (1, 1), not 512
    np.testing.assert_array_equal(matrix, estimate_matrix(landmark_5, "ffhq_512", (1, 1)))


def test_five_from_sixty_eight_needs_a_score_strictly_above_the_threshold(refs, store):
    score = analyser(refs, store).analyse([image("meds-aa-S001-01.jpg")])[0][0].landmarker_score
    at = analyser(refs, store, face_landmarker_score=score).analyse([image("meds-aa-S001-01.jpg")])[0][0]
    assert at.landmarker_score == score
    np.testing.assert_array_equal(at.landmark_5_68, at.landmark_5)  # score == threshold: detector points
    below = analyser(refs, store, face_landmarker_score=np.nextafter(score, 0)).analyse(
        [image("meds-aa-S001-01.jpg")])[0][0]
    np.testing.assert_allclose(below.landmark_5_68, landmark_5_from_68(below.landmark_68), atol=1e-4)
