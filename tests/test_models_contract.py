"""I/O contract check on custom models (`name=PATH`), with tiny ONNX graphs built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import asset
from onnx import TensorProto, helper, numpy_helper

from ffray.errors import ModelError
from ffray.models.registry import get_spec
from ffray.models.sessions import create_session
from ffray.models.store import ModelStore

FLOAT, HALF, DOUBLE = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE


def save(path: Path, nodes, inputs, outputs, initializers) -> Path:
    graph = helper.make_graph(nodes, "contract", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def inswapper_like(path: Path, size: int = 128, source_name: str = "source", source_type=FLOAT,
                   emap_last: bool = True, extra_input: bool = False) -> Path:
    """target + mean(source @ emap): inswapper's names, shapes, dtypes, and the emap initializer."""
    emap = numpy_helper.from_array(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), "emap")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    source_in = source_name
    nodes = []
    if source_type != FLOAT:
        nodes.append(helper.make_node("Cast", [source_name], ["source_f"], to=FLOAT))
        source_in = "source_f"
    nodes += [
        helper.make_node("MatMul", [source_in, "emap"], ["latent"]),
        helper.make_node("ReduceMean", ["latent"], ["level"], keepdims=0),
        helper.make_node("Add", ["level", "zero"], ["shift"]),
        helper.make_node("Add", ["target", "shift"], ["output"]),
    ]
    inputs = [helper.make_tensor_value_info("target", FLOAT, ["N", 3, size, size]),
              helper.make_tensor_value_info(source_name, source_type, ["N", 512])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("extra", FLOAT, [1]))
    outputs = [helper.make_tensor_value_info("output", FLOAT, ["N", 3, size, size])]
    return save(path, nodes, inputs, outputs, [zero, emap] if emap_last else [emap, zero])


def load_custom(tmp_path: Path, name: str, path: Path):
    resolved = ModelStore(cache_dir=tmp_path / "cache").resolve(f"{name}={path}")
    return create_session(resolved)


def test_inswapper_contract_model_loads_and_runs(tmp_path):
    path = inswapper_like(tmp_path / "ours.onnx")
    session = load_custom(tmp_path, "inswapper_128", path)
    emap = numpy_helper.to_array(onnx.load(str(path)).graph.initializer[-1])
    source = np.random.default_rng(1).standard_normal((2, 512)).astype(np.float32)
    target = np.zeros((2, 3, 128, 128), np.float32)
    out = session.run(None, {"target": target, "source": source})[0]
    np.testing.assert_allclose(out[0, 0, 0, 0], (source @ emap).mean(), rtol=1e-4)


def test_emap_must_be_the_last_initializer(tmp_path):
    path = inswapper_like(tmp_path / "ours.onnx", emap_last=False)
    with pytest.raises(ModelError, match=r"ours\.onnx: does not follow the inswapper_128 contract: "
                                         r"last initializer 'zero' is scalar, expected 512x512"):
        load_custom(tmp_path, "inswapper_128", path)


def test_wrong_crop_size(tmp_path):
    path = inswapper_like(tmp_path / "big.onnx", size=256)
    with pytest.raises(ModelError) as info:
        load_custom(tmp_path, "inswapper_128", path)
    message = str(info.value)
    assert message.startswith(f"{path}: does not follow the inswapper_128 contract")
    assert "input 'target' has shape ?x3x256x256, expected ?x3x128x128 (axis 2: 256 != 128)" in message
    assert "output 'output' has shape ?x3x256x256" in message


def test_renamed_input(tmp_path):
    path = inswapper_like(tmp_path / "renamed.onnx", source_name="latent_in")
    with pytest.raises(ModelError, match="input name is 'latent_in', expected 'source'"):
        load_custom(tmp_path, "inswapper_128", path)


def test_wrong_dtype(tmp_path):
    path = inswapper_like(tmp_path / "half.onnx", source_type=HALF)
    with pytest.raises(ModelError, match="input 'source' dtype is float16, expected float32"):
        load_custom(tmp_path, "inswapper_128_fp16", path)


def test_wrong_input_count(tmp_path):
    path = inswapper_like(tmp_path / "three.onnx", extra_input=True)
    with pytest.raises(ModelError, match=r"has 3 inputs \(target, source, extra\), expected 2 \(source, target\)"):
        load_custom(tmp_path, "inswapper_128", path)


def enhancer_like(path: Path, size: int = 512, weight_type=DOUBLE) -> Path:
    scale = numpy_helper.from_array(np.ones((), np.float32), "one")
    nodes = [helper.make_node("Cast", ["weight"], ["w"], to=FLOAT),
             helper.make_node("Mul", ["w", "one"], ["w1"]),
             helper.make_node("Mul", ["input", "w1"], ["output"])]
    inputs = [helper.make_tensor_value_info("input", FLOAT, [1, 3, size, size]),
              helper.make_tensor_value_info("weight", weight_type, [1])]
    outputs = [helper.make_tensor_value_info("output", FLOAT, [1, 3, size, size])]
    return save(path, nodes, inputs, outputs, [scale])


def test_codeformer_weight_input_is_float64(tmp_path):
    session = load_custom(tmp_path, "codeformer", enhancer_like(tmp_path / "cf.onnx"))
    out = session.run(None, {"input": np.ones((1, 3, 512, 512), np.float32), "weight": np.array([0.5])})[0]
    assert out[0, 0, 0, 0] == pytest.approx(0.5)
    with pytest.raises(ModelError, match="input 'weight' dtype is float32, expected float64"):
        load_custom(tmp_path, "codeformer", enhancer_like(tmp_path / "cf32.onnx", weight_type=FLOAT))
    with pytest.raises(ModelError, match=r"has 2 inputs \(input, weight\), expected 1 \(input\)"):
        load_custom(tmp_path, "gfpgan_1.4", enhancer_like(tmp_path / "cf.onnx"))


def test_hyperswap_output_is_read_by_name(tmp_path):
    inputs = [helper.make_tensor_value_info("source", FLOAT, [1, 512]),
              helper.make_tensor_value_info("target", FLOAT, [1, 3, 256, 256])]

    def model(path, first_output):
        nodes = [helper.make_node("Identity", ["target"], [first_output]),
                 helper.make_node("ReduceMean", ["source"], ["unused"], keepdims=0),
                 helper.make_node("ReduceMean", ["target"], ["mask"], axes=[1], keepdims=1)]
        return save(path, nodes, inputs, [helper.make_tensor_value_info(first_output, FLOAT, [1, 3, 256, 256]),
                                          helper.make_tensor_value_info("mask", FLOAT, [1, 1, 256, 256])], [])

    with pytest.raises(ModelError, match="output name is 'swapped', expected 'output'"):
        load_custom(tmp_path, "hyperswap_1a_256", model(tmp_path / "hs.onnx", "swapped"))
    outputs = load_custom(tmp_path, "hyperswap_1a_256", model(tmp_path / "hs2.onnx", "output")).run(
        None, {"source": np.zeros((1, 512), np.float32), "target": np.ones((1, 3, 256, 256), np.float32)})
    assert outputs[0].shape == (1, 3, 256, 256) and outputs[1].shape == (1, 1, 256, 256)


def test_output_rank_mismatch(tmp_path):
    nodes = [helper.make_node("Flatten", ["input"], ["embedding"], axis=1)]
    path = save(tmp_path / "arc.onnx", nodes, [helper.make_tensor_value_info("input", FLOAT, [1, 3, 112, 112])],
                [helper.make_tensor_value_info("embedding", FLOAT, [1, 37632])], [])
    with pytest.raises(ModelError, match=r"output 'embedding' has shape 1x37632, expected \?x512"):
        load_custom(tmp_path, "arcface_w600k_r50", path)


def test_real_yunet_follows_the_registry_contract(tmp_path):
    resolved = ModelStore(cache_dir=tmp_path).resolve(f"yunet={asset('models/yunet_s_640_640.onnx')}")
    session = create_session(resolved, check_contract=True)
    assert [o.name for o in session.get_outputs()] == [o.name for o in get_spec("yunet").outputs]


def test_insightface_scrfd_export_is_told_apart_from_facefusions(tmp_path):
    # FaceFusion feeds its detectors by the input name "input"; InsightFace's own export calls it "input.1"
    path = asset("models/scrfd_2.5g.onnx")
    with pytest.raises(ModelError, match=rf"{path}: .*scrfd contract: input name is 'input.1', expected 'input'"):
        load_custom(tmp_path, "scrfd", path)
