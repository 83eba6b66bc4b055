"""Registry facts the face code and users rely on (FaceFusion 3.8.1 names, files, pre/post, licences)."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from conftest import asset

from ffray.errors import ModelError
from ffray.models.registry import MODELS, get_spec, models_of_kind, required_models

ISSUE_MODELS = {
    "detector": ["yolo_face", "scrfd", "retinaface", "yunet"],
    "landmarker": ["2dfan4", "fan_68_5", "peppa_wutz"],
    "recognizer": ["arcface_w600k_r50"],
    "swapper": ["inswapper_128", "inswapper_128_fp16", "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256",
                "simswap_256", "simswap_unofficial_512", "ghost_1_256", "ghost_2_256", "ghost_3_256",
                "blendswap_256", "uniface_256"],
    "converter": ["crossface_ghost", "crossface_simswap", "crossface_hififace"],
    "enhancer": ["gfpgan_1.2", "gfpgan_1.3", "gfpgan_1.4", "codeformer", "gpen_bfr_256", "gpen_bfr_512",
                 "restoreformer_plus_plus"],
    "occluder": ["xseg_1"],
    "parser": ["bisenet_resnet_34"],
}


def test_every_model_of_the_issue_is_registered_with_its_kind():
    for kind, names in ISSUE_MODELS.items():
        for name in names:
            assert get_spec(name).kind == kind, name
            assert get_spec(name).name == name


def test_detector_files_and_releases():
    files = {n: (get_spec(n).file_name, get_spec(n).release) for n in ISSUE_MODELS["detector"]}
    assert files == {"yolo_face": ("yoloface_8n.onnx", "models-3.0.0"), "scrfd": ("scrfd_2.5g.onnx", "models-3.0.0"),
                     "retinaface": ("retinaface_10g.onnx", "models-3.0.0"),
                     "yunet": ("yunet_2023_mar.onnx", "models-3.4.0")}
    assert get_spec("hyperswap_1b_256").release == "models-3.3.0"
    assert get_spec("xseg_1").release == "models-3.1.0"
    assert get_spec("crossface_simswap").release == "models-3.4.0"


def test_urls_are_facefusion_release_then_hugging_face():
    for spec in MODELS.values():
        assert spec.urls[0] == (f"https://github.com/facefusion/facefusion-assets/releases/download/"
                                f"{spec.release}/{spec.file_name}")
        assert spec.urls[1] == f"https://huggingface.co/facefusion/{spec.release}/resolve/main/{spec.file_name}"
        assert spec.hash_file_name == spec.file_name.removesuffix(".onnx") + ".hash"


def test_only_hashes_checked_on_real_files_are_pinned():
    data = asset("models/yunet_s_640_640.onnx").read_bytes()
    yunet = get_spec("yunet")
    assert yunet.sha256 == hashlib.sha256(data).hexdigest()
    assert yunet.crc32 == format(zlib.crc32(data) & 0xFFFFFFFF, "08x")
    assert [s.name for s in MODELS.values() if s.sha256 or s.crc32] == ["yunet"]


def test_colour_layout_and_normalisation_facts():
    for name in ("yolo_face", "scrfd", "retinaface", "yunet", "2dfan4", "peppa_wutz", "xseg_1"):
        assert get_spec(name).color == "BGR", name
    for spec in models_of_kind("swapper") + models_of_kind("enhancer") + [get_spec("arcface_w600k_r50"),
                                                                            get_spec("bisenet_resnet_34")]:
        assert spec.color == "RGB", spec.name
    assert get_spec("xseg_1").layout == "NHWC" and get_spec("xseg_1").inputs[0].shape == (None, 256, 256, 3)
    assert get_spec("scrfd").mean == (127.5,) * 3 and get_spec("scrfd").std == (128.0,) * 3
    assert get_spec("yolo_face").std == (255.0,) * 3
    assert get_spec("yunet").mean == (0.0,) * 3 and get_spec("yunet").std == (1.0,) * 3  # raw 0..255
    assert get_spec("simswap_256").mean == (0.485, 0.456, 0.406)
    assert get_spec("simswap_unofficial_512").mean == (0.0,) * 3
    for name in ("hyperswap_1a_256", "ghost_1_256", "uniface_256"):
        assert get_spec(name).mean == (0.5,) * 3 and get_spec(name).std == (0.5,) * 3
    for name in ("inswapper_128", "blendswap_256"):
        assert get_spec(name).mean == (0.0,) * 3 and get_spec(name).std == (1.0,) * 3


def test_swapper_templates_sizes_inputs_and_pixel_boost():
    from ffray.faces.align import WARP_TEMPLATES

    expected = {"inswapper_128": ("arcface_128", 128), "hyperswap_1a_256": ("arcface_128", 256),
                "simswap_256": ("arcface_112_v1", 256), "simswap_unofficial_512": ("arcface_112_v1", 512),
                "ghost_2_256": ("arcface_112_v1", 256), "blendswap_256": ("ffhq_512", 256),
                "uniface_256": ("ffhq_512", 256), "hififace_unofficial_256": ("mtcnn_512", 256)}
    for name, (template, size) in expected.items():
        spec = get_spec(name)
        assert (spec.template, spec.size) == (template, (size, size)), name
        assert spec.pixel_boost[0] == size  # FaceFusion's default boost is the native size
        inputs = {t.name: t.shape for t in spec.inputs}
        assert inputs["target"] == (None, 3, size, size)
    assert {t.name: t.shape for t in get_spec("blendswap_256").inputs}["source"] == (None, 3, 112, 112)
    assert {t.name: t.shape for t in get_spec("uniface_256").inputs}["source"] == (None, 3, 256, 256)
    assert {t.name: t.shape for t in get_spec("inswapper_128").inputs}["source"] == (None, 512)
    assert get_spec("inswapper_128").last_initializer_shape == (512, 512)
    assert get_spec("inswapper_128_fp16").last_initializer_shape == (512, 512)
    assert get_spec("inswapper_128").pixel_boost == (128, 256, 384, 512, 768, 1024)
    assert [o.name for o in get_spec("hyperswap_1c_256").outputs] == ["output"]
    for spec in MODELS.values():
        if spec.template is not None:
            assert spec.template in WARP_TEMPLATES, spec.name


def test_enhancers():
    assert get_spec("gpen_bfr_256").template == "arcface_128" and get_spec("gpen_bfr_256").size == (256, 256)
    assert get_spec("gfpgan_1.4").template == "ffhq_512" and get_spec("gfpgan_1.4").size == (512, 512)
    assert [(t.name, t.dtype) for t in get_spec("codeformer").inputs] == [("input", "float32"), ("weight", "float64")]
    assert [t.name for t in get_spec("gfpgan_1.4").inputs] == ["input"]


def test_converters_resolve():
    for spec in models_of_kind("swapper"):
        if spec.type in ("ghost", "simswap", "hififace"):
            assert get_spec(spec.converter).kind == "converter", spec.name
        else:
            assert spec.converter is None, spec.name
    assert required_models("ghost_1_256") == ["ghost_1_256", "crossface_ghost"]
    assert required_models("inswapper_128") == ["inswapper_128"]


def test_licences_and_commercial_flags():
    commercial = {n for n, s in MODELS.items() if s.commercial}
    assert {"yunet", "yolo_face", "2dfan4", "gfpgan_1.4", "restoreformer_plus_plus", "ghost_1_256", "xseg_1",
            "bisenet_resnet_34"} <= commercial
    for name in ("inswapper_128", "scrfd", "retinaface", "arcface_w600k_r50", "simswap_256", "codeformer",
                 "gpen_bfr_512", "blendswap_256", "hyperswap_1a_256", "uniface_256"):
        assert name not in commercial, name
    for spec in MODELS.values():
        assert spec.license, spec.name


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ModelError, match=r"gfpgan_14: not a known model \(did you mean gfpgan_1.4"):
        get_spec("gfpgan_14")
