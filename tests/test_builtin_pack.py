"""The builtin pack on real faces: dlib detection and identity, the classical swap and enhancer."""

from __future__ import annotations

import hashlib

import av
import cv2
import numpy as np
import pytest
import skimage.data

from ffray.faces import packs
from ffray.faces.builtin import (
    BuiltinAnalyser,
    BuiltinEnhancer,
    BuiltinSwapper,
    dlib_distance,
    facefusion_points,
    model_paths,
)
from ffray.faces.image import read_image
from ffray.faces.options import FaceOptions
from ffray.faces.select import largest_face
from tests.conftest import asset

MEDS = "media/meds-{}.jpg"


@pytest.fixture(scope="module")
def analyser() -> BuiltinAnalyser:
    return BuiltinAnalyser(FaceOptions())


@pytest.fixture(scope="module")
def swapper() -> BuiltinSwapper:
    return BuiltinSwapper(FaceOptions())


def meds(name: str) -> np.ndarray:
    return read_image(asset(MEDS.format(name)))


def one_face(analyser, image):
    faces = analyser.analyse([image], embed=True)[0]
    assert faces, "no face found"
    return largest_face(faces)


def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def test_packs_load_the_builtin_components():
    options = FaceOptions(pack="builtin", face_enhancer_model="gfpgan_1.4")
    assert isinstance(packs.load_analyser(options), BuiltinAnalyser)
    assert isinstance(packs.load_swapper(options), BuiltinSwapper)
    assert isinstance(packs.load_enhancer(options), BuiltinEnhancer)
    assert packs.load_enhancer(FaceOptions(pack="builtin")) is None


def test_model_hashes_are_the_sha256_of_the_dlib_files(analyser):
    paths = model_paths()
    assert set(analyser.model_hashes) == set(paths)
    for name, path in paths.items():
        assert analyser.model_hashes[name] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert "68" not in path.name  # the 68-point model's licence forbids commercial use


def test_landmarks_are_in_facefusion_order():
    image = meds("aa-S001-01")
    face = one_face(BuiltinAnalyser(FaceOptions(face_detector_model="hog")), image)  # dlib's points derived
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmark_5_68
    assert left_eye[0] < nose[0] < right_eye[0]
    assert left_mouth[0] < nose[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    np.testing.assert_array_equal(face.landmark_5, face.landmark_5_68)
    # the eye centres are the means of dlib's eye corners, which stay in extra for the embedding
    shape = face.extra["dlib_shape_5"]
    np.testing.assert_allclose(left_eye, (shape[2] + shape[3]) / 2, atol=1e-4)
    np.testing.assert_allclose(right_eye, (shape[0] + shape[1]) / 2, atol=1e-4)
    x1, y1, x2, y2 = face.box
    assert all(x1 <= p[0] <= x2 and y1 <= p[1] <= y2 for p in face.landmark_5_68)
    assert face.embedding.shape == (128,)
    assert np.linalg.norm(face.embedding_norm) == pytest.approx(1, abs=1e-5)


def test_derived_points_follow_rotation():
    shape = np.array([[70, 50], [60, 50], [30, 50], [40, 50], [50, 70]], np.float64)
    points = facefusion_points(shape)
    rotation = cv2.getRotationMatrix2D((50, 50), 33, 1.0)
    rotated_shape = cv2.transform(shape.reshape(-1, 1, 2), rotation).reshape(5, 2)
    expected = cv2.transform(points.reshape(-1, 1, 2).astype(np.float64), rotation).reshape(5, 2)
    np.testing.assert_allclose(facefusion_points(rotated_shape), expected, atol=1e-3)


def test_face_distance_separates_people_at_the_default_threshold(analyser):
    a1, a2, a3 = (one_face(analyser, meds(n)) for n in ("aa-S001-01", "aa-S001-02", "aa-S001-03"))
    others = [one_face(analyser, meds(n)) for n in ("aa-S029-01", "af-S419-01")]
    threshold = FaceOptions().reference_distance  # the builtin pack's default
    for a, b in ((a1, a2), (a1, a3), (a2, a3)):
        assert analyser.face_distance(a, b) < threshold
        assert analyser.face_distance(a, b) == pytest.approx(dlib_distance(a, b) / 2)
        assert dlib_distance(a, b) < 0.6  # dlib's own tolerance
    for same in (a1, a2, a3):
        for other in others:
            assert analyser.face_distance(same, other) > threshold


def test_exif_orientation_gives_the_same_face(analyser):
    upright = meds("aa-S001-01")
    rotated = read_image(asset("media/meds-aa-S001-01-exif-rotation.jpg"))
    assert rotated.shape == upright.shape
    assert np.abs(rotated.astype(int) - upright).mean() < 1.0  # same pixels up to JPEG re-encoding
    face_a, face_b = one_face(analyser, upright), one_face(analyser, rotated)
    np.testing.assert_allclose(face_a.box, face_b.box, atol=2)
    np.testing.assert_allclose(face_a.landmark_5_68, face_b.landmark_5_68, atol=2)
    assert dlib_distance(face_a, face_b) < 0.1


def test_detector_angles_find_a_rotated_face():
    upright = meds("aa-S001-01")
    sideways = cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE)
    hog = FaceOptions(face_detector_model="hog")
    assert BuiltinAnalyser(hog).analyse([sideways])[0] == []  # HOG sees upright faces only
    turned = BuiltinAnalyser(FaceOptions(face_detector_model="hog", face_detector_angles=(0, 90, 270)))
    found = turned.analyse([sideways], embed=True)[0]
    assert len(found) == 1
    # the landmarks come back in the sideways frame's coordinates: rotate them upright and compare
    h = upright.shape[0]
    back = np.stack([found[0].landmark_5_68[:, 1], h - found[0].landmark_5_68[:, 0]], axis=1)
    reference = BuiltinAnalyser(hog).analyse([upright], embed=True)[0][0]
    # the points are rotated too: eye order follows the sideways image's left/right
    assert np.abs(np.sort(back, axis=0) - np.sort(reference.landmark_5_68, axis=0)).max() < 6
    assert dlib_distance(found[0], reference) < 0.15


def test_no_face_and_blank_frames(analyser):
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert analyser.analyse([blank, np.zeros_like(blank)]) == [[], []]


SWAP_PAIRS = [
    ("aa-S001-01", "aa-S029-01"),
    ("aa-S029-01", "aa-S001-01"),
    ("af-S419-01", "aa-S029-01"),
    ("aa-S001-02", "af-S419-01"),
    ("af-S419-01", "aa-S001-03"),
]


@pytest.mark.parametrize(("source_name", "target_name"), SWAP_PAIRS)
def test_swap_moves_the_target_face_to_the_source_identity(analyser, swapper, source_name, target_name):
    source, target = meds(source_name), meds(target_name)
    source_face, target_face = one_face(analyser, source), one_face(analyser, target)
    target_before = target.copy()
    identity = swapper.prepare_source([source], [source_face])
    swapped = swapper.swap([target], [[target_face]], identity)[0]
    np.testing.assert_array_equal(target, target_before)  # input untouched
    swapped_face = one_face(analyser, swapped)
    before = dlib_distance(target_face, source_face)
    after = dlib_distance(swapped_face, source_face)
    assert after < before - 0.05, (before, after)


def test_pixels_outside_the_paste_mask_are_bit_identical(analyser, swapper):
    source, target = meds("aa-S001-01"), meds("aa-S029-01")
    target_face = one_face(analyser, target)
    identity = swapper.prepare_source([source], [one_face(analyser, source)])
    swapped = swapper.swap([target], [[target_face]], identity)[0]
    # deterministic: a re-run after a crash must give the same pixels
    np.testing.assert_array_equal(swapper.swap([target], [[target_face]], identity)[0], swapped)
    changed = np.any(swapped != target, axis=2)
    mask = swapper.paste_mask(target.shape, target_face)
    assert changed.sum() > 0.5 * (mask > 0.5).sum()  # the face really changed
    assert not np.any(changed & (mask == 0))
    # and independently of the mask helper: nothing changes far from the face
    x1, y1, x2, y2 = target_face.box
    w, h = x2 - x1, y2 - y1
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x1 - 0.25 * w and xs.max() <= x2 + 0.25 * w
    assert ys.min() >= y1 - 0.4 * h and ys.max() <= y2 + 0.25 * h


def test_several_sources_average_the_identity(analyser, swapper):
    images = [meds("aa-S001-01"), meds("aa-S001-02")]
    faces = [one_face(analyser, image) for image in images]
    identity = swapper.prepare_source(images, faces)
    np.testing.assert_allclose(identity.embedding, (faces[0].embedding + faces[1].embedding) / 2, rtol=1e-6)
    assert identity.crop.dtype == np.uint8 and identity.crop.ndim == 3


def test_astronaut_swaps_both_ways(analyser, swapper):
    """The public-domain demo face: found, usable as source and as target."""
    image = astronaut()
    faces = analyser.analyse([image], embed=True)[0]
    face = largest_face(faces)
    x1, y1, x2, y2 = face.box
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200  # her face, not the mission patch
    other = meds("af-S419-01")
    other_face = one_face(analyser, other)

    into_astronaut = swapper.swap([image], [[face]], swapper.prepare_source([other], [other_face]))[0]
    swapped = [f for f in analyser.analyse([into_astronaut], embed=True)[0]
               if abs(f.box[0] - x1) < 20 and abs(f.box[1] - y1) < 20]
    assert swapped and dlib_distance(swapped[0], other_face) < dlib_distance(face, other_face) - 0.05

    from_astronaut = swapper.swap([other], [[other_face]], swapper.prepare_source([image], [face]))[0]
    assert dlib_distance(one_face(analyser, from_astronaut), face) < dlib_distance(other_face, face)


def _video_frames(indices: set[int]) -> list[np.ndarray]:
    frames = []
    with av.open(str(asset("media/video_01.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                frames.append(frame.to_ndarray(format="bgr24"))
            if i >= max(indices):
                break
    return frames


def test_video_frames_small_faces_need_upsampling(swapper):
    frames = _video_frames({0, 45})
    options = FaceOptions(face_selector_mode="many", face_detector_model="hog")
    found = {up: BuiltinAnalyser(options, upsample=up).analyse(frames) for up in (0, 2)}
    counts = {up: [len(f) for f in faces] for up, faces in found.items()}
    assert all(n >= 2 for n in counts[2]), counts  # about 5 faces per frame; HOG sees the frontal ones
    assert sum(counts[2]) > sum(counts[0]), counts
    faces = found[2]
    assert min(f.box[2] - f.box[0] for fs in faces for f in fs) < 40  # faces under 40 px are found

    identity = swapper.prepare_source([astronaut()], BuiltinAnalyser(options).analyse([astronaut()])[0][:1])
    swapped = swapper.swap(frames, faces, identity)
    for frame, out, frame_faces in zip(frames, swapped, faces, strict=True):
        assert out.shape == frame.shape and out.dtype == np.uint8
        changed = np.any(out != frame, axis=2)
        allowed = np.zeros(frame.shape[:2], bool)
        for face in frame_faces:
            allowed |= swapper.paste_mask(frame.shape, face) > 0
        assert changed.any() and not np.any(changed & ~allowed)


def test_enhancer_sharpens_only_inside_the_face(analyser):
    image = meds("aa-S029-01")
    face = one_face(analyser, image)
    original = image.copy()
    enhanced = BuiltinEnhancer(FaceOptions(face_enhancer_model="builtin", face_enhancer_blend=100)) \
        .enhance([image], [[face]])[0]
    np.testing.assert_array_equal(image, original)
    changed = np.any(enhanced != image, axis=2)
    x1, y1, x2, y2 = (int(v) for v in face.box)
    assert changed.any()
    outside = np.ones_like(changed)
    w, h = x2 - x1, y2 - y1
    outside[max(0, int(y1 - 0.4 * h)):int(y2 + 0.25 * h), max(0, int(x1 - 0.25 * w)):int(x2 + 0.25 * w)] = False
    assert not np.any(changed & outside)

    def gradients(img):
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)[y1:y2, x1:x2]
        return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))

    before, after = gradients(image), gradients(enhanced)
    edges, flat = before > np.percentile(before, 90), before < np.percentile(before, 50)
    assert after[edges].mean() > 1.05 * before[edges].mean()  # edges sharpened
    assert after[flat].mean() < before[flat].mean()  # flat skin denoised, not sharpened
    unblended = BuiltinEnhancer(FaceOptions(face_enhancer_model="builtin", face_enhancer_blend=0)) \
        .enhance([image], [[face]])[0]
    np.testing.assert_array_equal(unblended, image)


def test_detector_score_maps_onto_the_hog_margin():
    image = astronaut()
    default = BuiltinAnalyser(FaceOptions(face_detector_model="hog")).analyse([image])[0]
    strict = BuiltinAnalyser(FaceOptions(face_detector_model="hog", face_detector_score=0.9)).analyse([image])[0]
    assert all(f.score >= 0.5 for f in default) and all(f.score >= 0.9 for f in strict)
    assert 1 <= len(strict) < len(default)  # the mission patch (a weak HOG hit) goes, her face stays
    assert largest_face(strict).box.tolist() == largest_face(default).box.tolist()


def test_degenerate_landmarks_leave_the_frame_alone(analyser, swapper):
    image = meds("aa-S029-01")
    face = one_face(analyser, image)
    face.landmark_5_68 = np.full((5, 2), 10, np.float32)
    identity = swapper.prepare_source([image], [one_face(analyser, image)])
    np.testing.assert_array_equal(swapper.swap([image], [[face]], identity)[0], image)
    enhancer = BuiltinEnhancer(FaceOptions(face_enhancer_model="builtin"))
    np.testing.assert_array_equal(enhancer.enhance([image], [[face]])[0], image)
