"""Swapper and enhancer numerics through contract models: latent formula, per-type normalisation,
pixel boost, batching, masks, the onnx pack end to end."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from contract_models import BUILDERS, build, build_converter, build_inswapper, build_xseg
from onnx import numpy_helper

from ffray.faces.align import warp_face
from ffray.faces.enhance import (
    Enhancer,
    EnhancerConfig,
    blend_factor,
    normalise_enhancer_output,
    prepare_enhancer_crop,
)
from ffray.faces.masks import MaskModels, MaskOptions, Occluder, create_box_mask
from ffray.faces.paste import paste_back
from ffray.faces.swap import (
    Swapper,
    SwapperConfig,
    balance_embedding,
    balance_weight,
    explode_pixel_boost,
    implode_pixel_boost,
    inswapper_latent,
    normalise_output,
    prepare_crop,
    read_emap,
)
from ffray.faces.types import Face

RNG = np.random.default_rng(42)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def face_at(cx, cy, w, embedding_seed=0) -> Face:
    l5 = np.array([[cx - 0.2 * w, cy - 0.1 * w], [cx + 0.2 * w, cy - 0.1 * w], [cx, cy + 0.05 * w],
                   [cx - 0.15 * w, cy + 0.25 * w], [cx + 0.15 * w, cy + 0.25 * w]], np.float32)
    e = np.random.default_rng(embedding_seed).standard_normal(512).astype(np.float32) * 20
    return Face(box=np.array([cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2], np.float32), score=0.9,
                landmark_5=l5, landmark_5_68=l5, embedding=e, embedding_norm=e / np.linalg.norm(e))


def frame(seed=0, shape=(240, 320)) -> np.ndarray:
    smooth = cv2.GaussianBlur(np.random.default_rng(seed).uniform(0, 255, (*shape, 3)), (0, 0), 3)
    return smooth.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("total, size", [(1, 128), (2, 128), (3, 128), (4, 64)])
def test_pixel_boost_is_the_polyphase_interleave_and_round_trips(total, size):
    crop = RNG.integers(0, 255, (size * total, size * total, 3), dtype=np.uint8)
    tiles = implode_pixel_boost(crop, total, size)
    assert tiles.shape == (total * total, size, size, 3)
    for i in range(total):
        for j in range(total):
            np.testing.assert_array_equal(tiles[i * total + j], crop[i::total, j::total])
    np.testing.assert_array_equal(explode_pixel_boost(list(tiles), total, size), crop)


def test_inswapper_latent_is_embedding_norm_times_emap_without_renormalising(tmp_path):
    path = build_inswapper(tmp_path / "inswapper.onnx")
    emap = read_emap(path)
    last = numpy_helper.to_array(onnx.load(str(path)).graph.initializer[-1])
    assert emap.shape == (512, 512)
    np.testing.assert_array_equal(emap, last)
    embedding = RNG.standard_normal(512).astype(np.float32) * 7
    latent = inswapper_latent(embedding, emap)
    np.testing.assert_allclose(latent[0], (embedding / np.linalg.norm(embedding)) @ emap, rtol=1e-4, atol=1e-6)
    assert abs(np.linalg.norm(latent) - 1) > 1e-3  # InsightFace would re-normalise; FaceFusion does not


@pytest.mark.parametrize("mean, std", [((0, 0, 0), (1, 1, 1)), ((0.5,) * 3, (0.5,) * 3),
                                       ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_lookup_table_preprocessing_is_bit_identical_to_facefusions_float64_formula(mean, std):
    crop = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)  # every value per channel
    crop = np.concatenate([crop, RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)])
    x = crop[:, :, ::-1] / 255.0
    x = (x - np.array(mean)) / np.array(std)
    expected = np.expand_dims(x.transpose(2, 0, 1), axis=0).astype(np.float32)
    np.testing.assert_array_equal(prepare_crop(crop, mean, std), expected)
    np.testing.assert_array_equal(prepare_crop(crop.astype(np.float64), mean, std), expected)


def test_prepare_and_normalise_per_type():
    crop = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = prepare_crop(crop, *imagenet)
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], (crop[:, :, 2] / 255 - 0.485) / 0.229, rtol=1e-6)  # RGB first
    output = RNG.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    half = ((0.5,) * 3, (0.5,) * 3)
    for kind in ("ghost", "hififace", "hyperswap", "uniface"):  # [-1, 1] -> de-normalised
        np.testing.assert_allclose(normalise_output(output, kind, *half)[:, :, 0], (output[2] * 0.5 + 0.5) * 255,
                                   rtol=1e-6)
    for kind in ("inswapper", "simswap", "blendswap"):  # taken as [0, 1], even with ImageNet input stats
        np.testing.assert_allclose(normalise_output(output, kind, *imagenet)[:, :, 2], output[0].clip(0, 1) * 255,
                                   rtol=1e-6)
    assert normalise_output(output, "inswapper", (0,) * 3, (1,) * 3).dtype == np.float32  # not rounded


def test_weight_balancing():
    assert balance_weight(0.5) == 0 and balance_weight(1.0) == pytest.approx(-0.35)
    assert balance_weight(0.0) == pytest.approx(0.35)
    src = RNG.standard_normal((1, 512)).astype(np.float32)
    tgt = RNG.standard_normal(512).astype(np.float32) * 10
    np.testing.assert_array_equal(balance_embedding(src, None, "hyperswap", 0.5), src)
    np.testing.assert_allclose(balance_embedding(src, tgt, "hyperswap", 0.0),
                               src * 0.65 + tgt / np.linalg.norm(tgt) * 0.35, rtol=1e-5)
    np.testing.assert_allclose(balance_embedding(src, tgt, "ghost", 1.0), src * 1.35 - tgt * 0.35, rtol=1e-5)
    with pytest.raises(ValueError):
        balance_embedding(src, None, "hyperswap", 0.2)


def make_swapper(tmp_path, name, **config) -> Swapper:
    from ffray.models.registry import get_spec

    spec = get_spec(name)
    path = BUILDERS[name](tmp_path / f"{name}.onnx")
    converter = session(build_converter(tmp_path / "converter.onnx")) if spec.converter else None
    emap = read_emap(path) if spec.type == "inswapper" else None
    cfg = SwapperConfig(type=spec.type, template=spec.template, size=spec.size[0], mean=spec.mean, std=spec.std,
                        **config)
    return Swapper(session(path), cfg, converter, emap)


SWAPPERS = ["inswapper_128", "hyperswap_1a_256", "simswap_256", "simswap_unofficial_512", "ghost_1_256",
            "hififace_unofficial_256", "blendswap_256", "uniface_256"]


@pytest.mark.parametrize("name", SWAPPERS)
def test_every_swapper_type_swaps_end_to_end_and_only_inside_the_mask(tmp_path, name):
    swapper = make_swapper(tmp_path, name)
    source_image = frame(1, (300, 300))
    source = swapper.prepare_source([source_image], [face_at(150, 150, 120, embedding_seed=1)])
    target = frame(2)
    original = target.copy()
    face = face_at(160, 120, 90, embedding_seed=2)
    out = swapper.swap([target], [[face]], source)[0]
    np.testing.assert_array_equal(target, original)  # input untouched
    changed = np.any(out != original, axis=2)
    assert changed.sum() > 500
    ys, xs = np.nonzero(changed)
    assert xs.min() >= face.box[0] - 60 and xs.max() <= face.box[2] + 60  # only around the face
    assert ys.min() >= face.box[1] - 60 and ys.max() <= face.box[3] + 60
    # another identity gives another result
    other = swapper.prepare_source([frame(5, (300, 300))], [face_at(150, 150, 120, embedding_seed=9)])
    assert np.any(swapper.swap([target], [[face]], other)[0] != out)


def test_inswapper_model_sees_the_latent_and_the_crop(tmp_path):
    swapper = make_swapper(tmp_path, "inswapper_128")
    source_face = face_at(150, 150, 120, embedding_seed=3)
    source = swapper.prepare_source([frame(1)], [source_face])
    np.testing.assert_allclose(source.embedding, inswapper_latent(source_face.embedding, swapper.emap), rtol=1e-6)
    crop = frame(4, (128, 128))
    swapped = swapper.swap_crops([crop], [swapper.source_input(source, face_at(0, 0, 10))])[0]
    # the contract model computes sigmoid(target * gain + latent @ W); recompute it from the graph
    model = onnx.load(str(tmp_path / "inswapper_128.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    target = prepare_crop(crop, (0, 0, 0), (1, 1, 1))[0]
    identity = (source.embedding.astype(np.float32) @ weights["id_w"]).reshape(3, 1, 1)
    expected = 1 / (1 + np.exp(-(target * weights["gain"] + identity)))
    np.testing.assert_allclose(swapped, expected.transpose(1, 2, 0)[:, :, ::-1] * 255, atol=1e-3)


@pytest.mark.parametrize("name, boost", [("inswapper_128", 256), ("hyperswap_1a_256", 512)])
def test_batches_and_pixel_boost_equal_batch_one(tmp_path, name, boost):
    frames = [frame(10 + k) for k in range(3)]
    faces = [[face_at(90, 110, 80, 1), face_at(230, 120, 70, 2)], [], [face_at(160, 120, 100, 3)]]
    batched = make_swapper(tmp_path, name, pixel_boost=boost, batch_size=16)
    single = make_swapper(tmp_path, name, pixel_boost=boost, batch_size=1)
    source = batched.prepare_source([frame(1)], [face_at(150, 150, 120, embedding_seed=5)])
    out_batched = batched.swap(frames, faces, source)
    out_single = [single.swap([f], [fs], source)[0] for f, fs in zip(frames, faces, strict=True)]
    for a, b in zip(out_batched, out_single, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out_batched[1], frames[1])  # no faces: unchanged


def test_pixel_boost_crop_is_warped_at_boost_size_with_its_box_mask(tmp_path, monkeypatch):
    import ffray.faces.swap as swap_module

    swapper = make_swapper(tmp_path, "inswapper_128", pixel_boost=384)
    source = swapper.prepare_source([frame(1)], [face_at(150, 150, 120, 5)])
    calls, mask_inputs = [], []
    original_run, original_masks = swapper.run_model, swap_module.crop_masks_before
    swapper.run_model = lambda s, t: calls.append(len(t)) or original_run(s, t)

    def record_masks(crops, options, models):
        masks = original_masks(crops, options, models)
        mask_inputs.append((crops[0].shape, masks[0][0]))
        return masks

    monkeypatch.setattr(swap_module, "crop_masks_before", record_masks)
    swapper.swap([frame(3)], [[face_at(160, 120, 90)]], source)
    assert calls == [9]  # 3x3 sub-images of one face in one call
    shape, box = mask_inputs[0]
    assert shape == (384, 384, 3)  # the crop is warped directly at the boost size
    np.testing.assert_array_equal(box, create_box_mask((384, 384), 0.3))  # blur amount 57, sigma 14.25


def test_occlusion_mask_limits_the_swap(tmp_path):
    occluder = Occluder(session(build_xseg(tmp_path / "xseg.onnx")))
    plain = make_swapper(tmp_path, "inswapper_128")
    masked = make_swapper(tmp_path, "inswapper_128", masks=MaskOptions(types=("box", "occlusion")))
    masked.mask_models = MaskModels(occluder=occluder)
    target = frame(2)
    target[100:140, 140:180] = 0  # a dark occluder on the face: xseg contract says "not face"
    face = face_at(160, 120, 90)
    source = plain.prepare_source([frame(1)], [face_at(150, 150, 120, 5)])
    a, b = plain.swap([target], [[face]], source)[0], masked.swap([target], [[face]], source)[0]
    assert np.any(a[110:130, 150:170] != target[110:130, 150:170])
    np.testing.assert_array_equal(b[115:125, 155:165], target[115:125, 155:165])


def test_enhancer_numbers_weight_and_blend(tmp_path):
    crop = RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    x = prepare_enhancer_crop(crop)
    np.testing.assert_allclose(x[0, 0], (crop[:, :, 2] / 255 - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_array_equal(normalise_enhancer_output(x[0]), crop)  # exact inverse with rounding
    assert blend_factor(80) == pytest.approx(0.8)
    path = BUILDERS["codeformer"](tmp_path / "codeformer.onnx")
    faces = [[face_at(160, 120, 90)]]
    results = []
    for weight in (0.2, 0.9):
        enhancer = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512, weight=weight))
        results.append(enhancer.enhance([frame(2)], faces)[0])
    assert np.any(results[0] != results[1])  # the weight input reaches the model
    full = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512, blend=100)).enhance([frame(2)], faces)[0]
    none = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512, blend=0)).enhance([frame(2)], faces)[0]
    np.testing.assert_array_equal(none, frame(2))
    assert np.any(full != frame(2))


def test_enhancer_batch_equals_batch_one(tmp_path):
    path = BUILDERS["gfpgan_1.4"](tmp_path / "gfpgan.onnx")
    frames = [frame(k) for k in range(3)]
    faces = [[face_at(100, 120, 80), face_at(220, 120, 80)], [face_at(160, 120, 90)], []]
    batched = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512, batch_size=8))
    single = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512, batch_size=1))
    for a, b in zip(batched.enhance(frames, faces),
                    [single.enhance([f], [fs])[0] for f, fs in zip(frames, faces, strict=True)], strict=True):
        np.testing.assert_array_equal(a, b)


def test_onnx_pack_swaps_and_enhances_with_model_refs(tmp_path):
    from ffray.faces.onnx_pack import OnnxFaceEnhancer, OnnxFaceSwapper
    from ffray.faces.options import FaceOptions
    from ffray.models.store import ModelStore

    store = ModelStore(cache_dir=tmp_path / "cache")
    refs = {n: build(n, tmp_path) for n in ("hyperswap_1a_256", "gpen_bfr_256", "arcface_w600k_r50")}
    options = FaceOptions(pack="facefusion", face_swapper_model=refs["hyperswap_1a_256"],
                          face_enhancer_model=refs["gpen_bfr_256"], face_recognizer_model=refs["arcface_w600k_r50"],
                          face_swapper_weight=0.8)
    swapper = OnnxFaceSwapper(options, store=store)
    assert set(swapper.model_hashes) == {"hyperswap_1a_256"}
    source = swapper.prepare_source([frame(1)], [[face_at(150, 150, 120, 5), face_at(50, 50, 30, 6)]])
    face = replace(face_at(160, 120, 90), embedding=None, embedding_norm=None)  # as unpacked between stages
    out = swapper.swap([frame(2)], [[face]], source)[0]  # weight != 0.5 computes the target's embedding
    assert "arcface_w600k_r50" in swapper.model_hashes and np.any(out != frame(2))
    enhancer = OnnxFaceEnhancer(options, store=store)
    assert np.any(enhancer.enhance([out], [[face]])[0] != out)


# --- per-type source preparation, balancing, masks, paste-back and the enhancer, number by number -----

def _converter_weights(tmp_path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load(str(tmp_path / "converter.onnx")).graph.initializer[0])


@pytest.mark.parametrize("name", ["hyperswap_1a_256", "inswapper_128", "ghost_1_256", "simswap_256",
                                  "hififace_unofficial_256"])
def test_source_embedding_per_type(tmp_path, name):
    swapper = make_swapper(tmp_path, name)
    a, b = face_at(150, 150, 120, embedding_seed=11), face_at(100, 100, 80, embedding_seed=12)
    source = swapper.prepare_source([frame(1, (300, 300)), frame(2, (300, 300))], [a, b])
    raw = np.mean([a.embedding, b.embedding], axis=0)  # average of two source images
    norm = np.mean([a.embedding_norm, b.embedding_norm], axis=0)  # mean of unit vectors, not re-normalised
    assert source.embedding.shape == (1, 512)
    if name.startswith("hyperswap"):
        np.testing.assert_array_equal(source.embedding[0], norm)
        assert abs(np.linalg.norm(source.embedding) - 1) > 1e-3
    elif name.startswith("inswapper"):
        np.testing.assert_array_equal(source.embedding, np.dot(raw.reshape(1, -1), swapper.emap) / np.linalg.norm(raw))
    else:
        converted = raw.reshape(1, 512).astype(np.float64) @ _converter_weights(tmp_path)
        if name.startswith("ghost"):  # ghost takes the converter output as it is
            np.testing.assert_allclose(source.embedding, converted, rtol=1e-5, atol=1e-4)
            assert abs(np.linalg.norm(source.embedding) - 1) > 1e-2
        else:  # simswap and hififace normalise it
            np.testing.assert_allclose(source.embedding, converted / np.linalg.norm(converted), atol=1e-6)


@pytest.mark.parametrize("name, template, size", [("blendswap_256", "arcface_112_v2", 112),
                                                  ("uniface_256", "ffhq_512", 256)])
def test_image_sources_are_crops_of_the_first_source_image(tmp_path, name, template, size):
    swapper = make_swapper(tmp_path, name, weight=0.0)
    images = [frame(1, (300, 300)), frame(2, (300, 300))]
    first, second = face_at(150, 150, 120, 1), face_at(140, 160, 100, 2)
    source = swapper.prepare_source(images, [first, second])
    crop, _ = warp_face(images[0], first.landmark_5_68, template, (size, size))
    expected = np.expand_dims((crop[:, :, ::-1] / 255.0).transpose(2, 0, 1), axis=0).astype(np.float32)
    np.testing.assert_array_equal(source.frame, expected)
    assert source.embedding is None
    # the target's identity never enters an image-source model, whatever the weight
    np.testing.assert_array_equal(swapper.source_input(source, face_at(160, 120, 90, embedding_seed=3)), expected)


@pytest.mark.parametrize("kind", ["hififace", "hyperswap", "inswapper", "simswap", "ghost"])
def test_weight_balancing_normalises_the_target_per_type(kind):
    src = RNG.standard_normal((1, 512)).astype(np.float32)
    tgt = (RNG.standard_normal(512) * 10).astype(np.float32)
    w = np.float32(np.interp(0.8, [0, 1], [0.35, -0.35]))
    target = tgt / np.linalg.norm(tgt) if kind != "ghost" else tgt
    expected = src * (1 - w) + target.reshape(1, -1) * w
    np.testing.assert_array_equal(balance_embedding(src, tgt, kind, 0.8), expected)
    assert balance_embedding(src, tgt, kind, 0.8).dtype == np.float32


def test_occlusion_mask_input_is_nhwc_bgr_and_its_soften_math(tmp_path):
    from contract_models import XSEG_CHANNEL_WEIGHTS

    from ffray.faces.masks import soften_mask

    occluder = Occluder(session(build_xseg(tmp_path / "xseg.onnx")))
    crop = frame(7, (384, 384))
    crop[:, :, 2] = 255  # strong red: only a BGR reading keeps its weight small
    x = cv2.resize(crop, (256, 256)).astype(np.float32) / 255.0  # NHWC, channels as given (BGR)
    raw = 1 / (1 + np.exp(-(12 * (x @ np.array(XSEG_CHANNEL_WEIGHTS, np.float32)) - 3)))
    expected = soften_mask(cv2.resize(raw.clip(0, 1).astype(np.float32), (384, 384)))
    mask = occluder.masks([crop])[0]
    assert mask.shape == (384, 384) and mask.dtype == np.float32
    np.testing.assert_allclose(mask, expected, atol=1e-4)
    # soften = sigma-5 blur, keep the upper half, stretch to 0..1
    hard = np.zeros((64, 64), np.float32)
    hard[16:48, 16:48] = 1
    np.testing.assert_array_equal(soften_mask(hard), (cv2.GaussianBlur(hard, (0, 0), 5).clip(0.5, 1) - 0.5) * 2)


def test_region_mask_is_bisenet_rgb_imagenet_argmax(tmp_path):
    from contract_models import build_bisenet

    from ffray.faces.masks import FaceParser, soften_mask

    path = build_bisenet(tmp_path / "bisenet.onnx")
    parser = FaceParser(session(path))
    crop = frame(8, (256, 256)).astype(np.float64) * 0.9 + 10  # a float crop, as the swapper's output
    x = cv2.resize(crop, (512, 512))[:, :, ::-1].astype(np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    weights = numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])[:, :, 0, 0]
    classes = np.einsum("kc,hwc->khw", weights, x).argmax(0)
    regions = ("skin", "nose", "mouth")
    expected = soften_mask(cv2.resize(np.isin(classes, [1, 10, 11]).astype(np.float32), (256, 256)))
    mask = parser.masks([crop], regions)[0]
    assert np.abs(mask - expected).mean() < 2e-3  # argmax ties in float32 may flip a few pixels
    assert 0.05 < expected.mean() < 0.95  # the mask is not trivial


def test_box_and_occlusion_masks_use_the_crop_before_the_swap_area_and_region_after(tmp_path):
    from contract_models import build_bisenet

    from ffray.faces.masks import FaceParser

    calls = {}

    class Recording:  # records what the real mask models are given
        def __init__(self, model, name):
            self.model, self.name = model, name

        def masks(self, crops, *args):
            calls[self.name] = [np.array(c) for c in crops]
            return self.model.masks(crops, *args)

    swapper = make_swapper(tmp_path, "inswapper_128", masks=MaskOptions(types=("box", "occlusion", "region")))
    swapper.mask_models = MaskModels(occluder=Recording(Occluder(session(build_xseg(tmp_path / "x.onnx"))), "occ"),
                                     parser=Recording(FaceParser(session(build_bisenet(tmp_path / "b.onnx"))), "reg"))
    source = swapper.prepare_source([frame(1)], [face_at(150, 150, 120, 5)])
    target, face = frame(2), face_at(160, 120, 90)
    swapper.swap([target], [[face]], source)
    crop, _ = warp_face(target, face.landmark_5_68, "arcface_128", 128)
    np.testing.assert_array_equal(calls["occ"][0], crop)
    swapped = swapper.swap_crops([crop], [swapper.source_input(source, face)])[0]
    np.testing.assert_array_equal(calls["reg"][0], swapped)
    assert calls["reg"][0].dtype != np.uint8  # the swapped crop is float, never rounded


def test_paste_back_blends_in_float_and_truncates():
    frame_ = np.full((80, 80, 3), 51, np.uint8)
    matrix = np.array([[1.0, 0, -20], [0, 1, -20]])  # integer shift: the warps move values exactly
    crop = np.full((32, 32, 3), 100.7)
    out = paste_back(frame_, crop, np.ones((32, 32), np.float32), matrix)
    assert (out[20:52, 20:52] == 100).all()  # 100.7 -> 100, not 101
    assert (out[:20] == 51).all() and (out[52:] == 51).all()
    half = paste_back(frame_, np.full((32, 32, 3), 100.0), np.full((32, 32), 0.5, np.float32), matrix)
    assert (half[20:52, 20:52] == 75).all()  # 51 * 0.5 + 100 * 0.5 = 75.5 -> 75


def test_enhancer_ignores_mask_padding_and_blends_the_whole_frame(tmp_path):
    path = BUILDERS["gfpgan_1.4"](tmp_path / "gfpgan.onnx")
    target, face = frame(3), face_at(160, 120, 90)
    plain = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512))
    padded = Enhancer(session(path), EnhancerConfig(template="ffhq_512", size=512,
                                                    masks=MaskOptions(padding=(40, 40, 40, 40))))
    out = plain.enhance([target], [[face]])[0]
    np.testing.assert_array_equal(padded.enhance([target], [[face]])[0], out)  # padding is ignored
    crop, matrix = warp_face(target, face.landmark_5_68, "ffhq_512", 512)
    enhanced = plain.enhance_crops([crop])[0]
    assert enhanced.dtype == np.uint8  # rounded before the paste
    pasted = paste_back(target, enhanced, create_box_mask((512, 512), 0.3, (0, 0, 0, 0)), matrix)
    np.testing.assert_array_equal(out, cv2.addWeighted(target, 1 - 0.8, pasted, 0.8, 0))


def test_codeformer_weight_is_a_float64_array_of_shape_one(tmp_path):
    model = session(BUILDERS["codeformer"](tmp_path / "codeformer.onnx"))
    weight = {i.name: i for i in model.get_inputs()}["weight"]
    assert weight.type == "tensor(double)" and weight.shape == [1]  # ORT refuses any other dtype
    enhancer = Enhancer(model, EnhancerConfig(template="ffhq_512", size=512, weight=0.7, batch_size=4))
    crops = [frame(k, (512, 512)) for k in range(3)]
    x = np.concatenate([prepare_enhancer_crop(c) for c in crops])
    expected = model.run(None, {"input": x, "weight": np.array([0.7]).astype(np.double)})[0]
    for got, want in zip(enhancer.enhance_crops(crops), expected, strict=True):
        np.testing.assert_array_equal(got, normalise_enhancer_output(want))


def test_pixel_boost_must_be_a_listed_multiple_of_the_model_size(tmp_path):
    from ffray.errors import InputError
    from ffray.faces.onnx_pack import OnnxFaceSwapper
    from ffray.faces.options import FaceOptions
    from ffray.models.store import ModelStore

    store = ModelStore(cache_dir=tmp_path / "cache")
    ref = build("blendswap_256", tmp_path)
    # FaceFusion lists 384 for blendswap_256, then fails reshaping a 384 crop into 256 sub-images
    with pytest.raises(InputError, match="384: blendswap_256 allows 256, 512, 768, 1024"):
        OnnxFaceSwapper(FaceOptions(pack="facefusion", face_swapper_model=ref, face_swapper_pixel_boost=384),
                        store=store)
    with pytest.raises(InputError, match="300"):
        OnnxFaceSwapper(FaceOptions(pack="facefusion", face_swapper_model=ref, face_swapper_pixel_boost=300),
                        store=store)
    boosted = OnnxFaceSwapper(FaceOptions(pack="facefusion", face_swapper_model=ref, face_swapper_pixel_boost=512),
                              store=store)
    assert boosted.swapper.config.boost_size == 512


@pytest.mark.parametrize("name, mean, std, denormalised", [
    ("simswap_256", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),  # ImageNet in, [0, 1] out as is
    ("simswap_unofficial_512", (0, 0, 0), (1, 1, 1), False),
    ("hyperswap_1a_256", (0.5,) * 3, (0.5,) * 3, True),
    ("ghost_1_256", (0.5,) * 3, (0.5,) * 3, True),
    ("hififace_unofficial_256", (0.5,) * 3, (0.5,) * 3, True),
    ("uniface_256", (0.5,) * 3, (0.5,) * 3, True),
    ("blendswap_256", (0, 0, 0), (1, 1, 1), False),
])
def test_each_type_is_fed_and_read_back_with_its_own_numbers(tmp_path, name, mean, std, denormalised):
    swapper = make_swapper(tmp_path, name)
    assert swapper.config.mean == pytest.approx(mean) and swapper.config.std == pytest.approx(std)
    source = swapper.prepare_source([frame(1, (300, 300))], [face_at(150, 150, 120, embedding_seed=3)])
    size = swapper.config.size
    crop = frame(4, (size, size))
    source_input = swapper.source_input(source, face_at(0, 0, 10))
    swapped = swapper.swap_crops([crop], [source_input])[0]
    # the contract computes act(target * gain + identity): recompute it from the graph in numpy
    model = onnx.load(str(tmp_path / f"{name}.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    target = ((crop[:, :, ::-1] / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1).astype(np.float32)
    if "id_w" in weights:
        identity = (source_input @ weights["id_w"]).reshape(3, 1, 1)
    else:
        identity = source_input[0].mean(axis=(1, 2)).reshape(3, 1, 1)
    z = target * weights["gain"] + identity
    raw = np.tanh(z) if denormalised else 1 / (1 + np.exp(-z))
    image = raw.transpose(1, 2, 0) * np.array(std) + np.array(mean) if denormalised else raw.transpose(1, 2, 0)
    np.testing.assert_allclose(swapped, image.clip(0, 1)[:, :, ::-1] * 255, atol=2e-3)
