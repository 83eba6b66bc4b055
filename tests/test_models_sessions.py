"""Session factory: provider chain and options (pure), real ORT sessions on CPU, fallbacks logged."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime
import pytest
from conftest import asset

from ffray.errors import ModelError
from ffray.models.sessions import ExecutionOptions, create_session, provider_chain, session_options
from ffray.models.store import ModelStore

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
GIB = 1 << 30


def test_full_gpu_chain_options(tmp_path):
    execution = ExecutionOptions(
        providers=("tensorrt", "cuda", "cpu"), gpu_share=0.25, gpu_memory_bytes=80 * GIB, trt_fp16=True,
        trt_cache_dir=str(tmp_path / "trt"), trt_workspace_bytes=4 * GIB, cudnn_conv_algo_search="HEURISTIC",
        arena_extend_strategy="kNextPowerOfTwo",
    )
    chain = provider_chain(execution, ALL, ort_version="1.31.1")
    assert [name for name, _ in chain] == ALL
    trt, cuda, cpu = (options for _, options in chain)
    assert trt == {
        "device_id": 0,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path / "trt" / "1.31.1"),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(tmp_path / "trt" / "1.31.1"),
        "trt_fp16_enable": True, "trt_max_workspace_size": 4 * GIB,
    }
    assert cuda == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC",
                    "arena_extend_strategy": "kNextPowerOfTwo", "gpu_mem_limit": 20 * GIB}
    assert cpu == {}


def test_cuda_defaults_without_share():
    chain = provider_chain(ExecutionOptions(providers=("cuda",)), ALL)
    assert chain == [
        ("CUDAExecutionProvider",
         {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE", "arena_extend_strategy": "kSameAsRequested"}),
        ("CPUExecutionProvider", {}),  # CPU always closes the chain
    ]


def test_requested_order_is_kept():
    chain = provider_chain(ExecutionOptions(providers=("cuda", "tensorrt")), ALL)
    assert [name for name, _ in chain] == ["CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"]


def test_missing_providers_fall_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ffray.models.sessions"):
        chain = provider_chain(ExecutionOptions(providers=("tensorrt", "cuda", "cpu")),
                               ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [name for name, _ in chain] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'tensorrt'" in warnings[0] and "TensorrtExecutionProvider" in warnings[0]


def test_gpu_share_without_known_memory_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="ffray.models.sessions"):
        chain = provider_chain(ExecutionOptions(providers=("cuda",), gpu_share=0.5), ALL)
    assert "gpu_mem_limit" not in chain[0][1]
    assert any("gpu_mem_limit" in r.getMessage() for r in caplog.records)


def test_bad_options_are_rejected():
    for kwargs in ({"providers": ("rocm",)}, {"providers": ()}, {"gpu_share": 0.0}, {"gpu_share": 1.5},
                   {"cudnn_conv_algo_search": "FAST"}, {"arena_extend_strategy": "grow"}):
        with pytest.raises(ValueError):
            ExecutionOptions(**kwargs)


def test_session_options_full_optimisation_and_threads():
    options = session_options(ExecutionOptions(intra_op_threads=3))
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 3
    assert session_options(ExecutionOptions()).intra_op_num_threads == 0


def test_real_session_on_cpu_logs_what_it_used(tmp_path, caplog):
    store = ModelStore(cache_dir=tmp_path / "cache")
    resolved = store.resolve(f"yunet={asset('models/yunet_s_640_640.onnx')}")
    with caplog.at_level(logging.INFO, logger="ffray.models.sessions"):
        session = create_session(resolved, ExecutionOptions(providers=("cuda", "cpu"), intra_op_threads=1))
    assert session.get_providers() == ["CPUExecutionProvider"]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert any(level == logging.WARNING and "'cuda'" in m for level, m in messages)
    info = [m for level, m in messages if level == logging.INFO]
    assert len(info) == 1 and "CPUExecutionProvider" in info[0] and "yunet_s_640_640.onnx" in info[0]
    # the session really runs: 12 YuNet heads for one 640x640 image
    outputs = session.run(None, {"input": np.zeros((1, 3, 640, 640), np.float32)})
    assert len(outputs) == 12 and outputs[0].shape == (1, 6400, 1)


def test_session_from_plain_path():
    session = create_session(asset("models/yunet_n_dynamic.onnx"))
    batch = session.run(None, {"input": np.zeros((2, 3, 160, 160), np.float32)})
    assert batch[0].shape[0] == 2


def test_unloadable_file_is_a_model_error(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match=r"broken\.onnx: ONNX Runtime cannot load the model"):
        create_session(bad)
    with pytest.raises(ModelError, match=r"absent\.onnx: model file not found"):
        create_session(tmp_path / "absent.onnx")


def test_options_from_json_kwargs():
    assert ExecutionOptions(providers=["cuda", "cpu"]).providers == ("cuda", "cpu")
    assert ExecutionOptions(providers="cuda").providers == ("cuda",)
    assert ExecutionOptions(providers=["cuda"]) == ExecutionOptions(providers=("cuda",))


def test_tensorrt_without_cuda_is_kept_but_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="ffray.models.sessions"):
        chain = provider_chain(ExecutionOptions(providers=("tensorrt",)), ALL)
    assert [name for name, _ in chain] == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert any("TensorRT requested without CUDA" in r.getMessage() for r in caplog.records)
