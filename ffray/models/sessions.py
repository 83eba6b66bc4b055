"""One factory for ONNX Runtime sessions: TensorRT -> CUDA -> CPU as requested and available.

No process-global state: every option lives in an `ExecutionOptions` value, so one process (a Ray actor)
can hold sessions with different settings. `provider_chain` is a pure function so the GPU option
building is testable on a CPU-only machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ffray.errors import ModelError

if TYPE_CHECKING:
    import onnxruntime

    from ffray.models.store import ResolvedModel

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CUDNN_CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ARENA_EXTEND_STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")


@dataclass(frozen=True)
class ExecutionOptions:
    providers: tuple[str, ...] = ("cpu",)  # requested order among "tensorrt", "cuda", "cpu"
    device_id: int = 0  # inside a Ray actor always 0: CUDA_VISIBLE_DEVICES remaps the actor's GPU
    gpu_share: float | None = None  # the actor's GPU fraction -> CUDA gpu_mem_limit
    gpu_memory_bytes: int | None = None  # total device memory if known (else detected, else no limit)
    trt_fp16: bool = False
    trt_cache_dir: str | None = None  # engine + timing cache; None = ~/.cache/ffray/tensorrt (FFRAY_TRT_CACHE)
    trt_workspace_bytes: int | None = None
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    arena_extend_strategy: str = "kSameAsRequested"
    intra_op_threads: int = 0  # CPU threads; 0 = ORT default

    def __post_init__(self) -> None:
        # configs arrive as JSON/Ray kwargs: accept a list, or one provider as a string
        providers = (self.providers,) if isinstance(self.providers, str) else tuple(self.providers)
        object.__setattr__(self, "providers", providers)
        unknown = [p for p in self.providers if p not in PROVIDER_NAMES]
        if unknown or not self.providers:
            raise ValueError(f"execution providers must be among {', '.join(PROVIDER_NAMES)}; got {self.providers}")
        if self.cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCHES:
            raise ValueError(f"cudnn_conv_algo_search must be one of {CUDNN_CONV_ALGO_SEARCHES}")
        if self.arena_extend_strategy not in ARENA_EXTEND_STRATEGIES:
            raise ValueError(f"arena_extend_strategy must be one of {ARENA_EXTEND_STRATEGIES}")
        if self.gpu_share is not None and not 0 < self.gpu_share <= 1:
            raise ValueError(f"gpu_share must be in (0, 1]; got {self.gpu_share}")

    @property
    def wants_gpu(self) -> bool:
        return any(p != "cpu" for p in self.providers)


def default_trt_cache_dir() -> str:
    base = os.environ.get("FFRAY_TRT_CACHE") or os.path.join(Path.home(), ".cache", "ffray", "tensorrt")
    return base


def trt_cache_path(execution: ExecutionOptions, ort_version: str) -> str:
    # Engines are only valid for the ORT/TensorRT build that made them (FaceFusion keys by ORT version too).
    return os.path.join(execution.trt_cache_dir or default_trt_cache_dir(), ort_version)


def provider_chain(
    execution: ExecutionOptions, available: list[str] | tuple[str, ...], ort_version: str = "unknown"
) -> list[tuple[str, dict]]:
    """The (provider, options) list to give ONNX Runtime, in the requested order.

    A requested provider missing from `available` is dropped with a WARNING naming it. CPU always
    closes the chain, since ORT runs on CPU whatever a GPU provider cannot take.
    """
    chain: list[tuple[str, dict]] = []
    for short in execution.providers:
        name = PROVIDER_NAMES[short]
        if name not in available:
            log.warning(
                "execution provider %r (%s) was requested but this onnxruntime build does not have it "
                "(available: %s); falling back to the next provider",
                short, name, ", ".join(available) or "none",
            )
            continue
        if short == "tensorrt":
            cache = trt_cache_path(execution, ort_version)
            options: dict = {
                "device_id": execution.device_id,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
                "trt_fp16_enable": execution.trt_fp16,
            }
            if execution.trt_workspace_bytes:
                options["trt_max_workspace_size"] = int(execution.trt_workspace_bytes)
        elif short == "cuda":
            options = {
                "device_id": execution.device_id,
                "cudnn_conv_algo_search": execution.cudnn_conv_algo_search,
                "arena_extend_strategy": execution.arena_extend_strategy,
            }
            if execution.gpu_share is not None and execution.gpu_memory_bytes:
                options["gpu_mem_limit"] = int(execution.gpu_share * execution.gpu_memory_bytes)
            elif execution.gpu_share is not None:
                log.warning(
                    "GPU share %.2f requested but the device memory is unknown; CUDA runs without gpu_mem_limit",
                    execution.gpu_share,
                )
        else:
            options = {}
        if name not in [n for n, _ in chain]:
            chain.append((name, options))
    names = [n for n, _ in chain]
    if (PROVIDER_NAMES["tensorrt"] in names and PROVIDER_NAMES["cuda"] not in names
            and PROVIDER_NAMES["cuda"] in available):
        log.warning("TensorRT requested without CUDA: nodes TensorRT cannot take will run on the CPU; "
                    "request providers tensorrt, cuda, cpu")
    if PROVIDER_NAMES["cpu"] not in names:
        chain.append((PROVIDER_NAMES["cpu"], {}))
    return chain


def detect_gpu_memory_bytes(device_id: int = 0) -> int | None:
    """Total memory of a CUDA device, from NVML or nvidia-smi; None if neither answers."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(device_id)).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    # nvidia-smi sees physical ids; inside an actor CUDA_VISIBLE_DEVICES maps our device 0 to one of them
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    physical = ids[device_id] if device_id < len(ids) else str(device_id)
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", physical],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return int(float(out.splitlines()[0])) * 1024 * 1024
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def session_options(execution: ExecutionOptions):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if execution.intra_op_threads:
        options.intra_op_num_threads = int(execution.intra_op_threads)
    options.log_severity_level = 3  # ORT's own warnings are noisy; we log the outcome ourselves
    return options


def create_session(
    model: ResolvedModel | str | os.PathLike,
    execution: ExecutionOptions | None = None,
    check_contract: bool | None = None,
) -> onnxruntime.InferenceSession:
    """An InferenceSession on the best requested provider that is available, with full graph optimisation.

    `check_contract`: check the model's inputs/outputs against its registry type; default = only for a
    custom model (`name=PATH`), whose file we did not verify by hash.
    """
    import onnxruntime

    from ffray.models.store import ResolvedModel

    execution = execution or ExecutionOptions()
    resolved = model if isinstance(model, ResolvedModel) else None
    path = str(resolved.path if resolved else model)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: model file not found")
    available = onnxruntime.get_available_providers()
    if (execution.gpu_share is not None and execution.gpu_memory_bytes is None
            and PROVIDER_NAMES["cuda"] in available and "cuda" in execution.providers):
        execution = replace(execution, gpu_memory_bytes=detect_gpu_memory_bytes(execution.device_id))
    chain = provider_chain(execution, available, onnxruntime.get_version_string())
    if any(name == PROVIDER_NAMES["tensorrt"] for name, _ in chain):
        os.makedirs(trt_cache_path(execution, onnxruntime.get_version_string()), exist_ok=True)
    try:
        session = onnxruntime.InferenceSession(
            path,
            sess_options=session_options(execution),
            providers=[name for name, _ in chain],
            provider_options=[options for _, options in chain],
        )
    except Exception as exc:  # ORT raises several private exception types for unreadable models
        raise ModelError(f"{path}: ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc
    used = session.get_providers()
    for name, _ in chain:
        if name not in used:
            log.warning("%s: execution provider %s could not be initialised; running on %s",
                        path, name, ", ".join(used))
    used_options = session.get_provider_options()
    summary = "; ".join(f"{name} {_brief_options(used_options.get(name, {}))}" for name in used)
    log.info("%s: session on %s (graph optimisation all, intra-op threads %s)",
             os.path.basename(path), summary, execution.intra_op_threads or "default")
    if resolved is not None and (check_contract if check_contract is not None else resolved.custom):
        from ffray.models.contract import check_contract as check

        check(resolved.spec, session, resolved.path)
    session.run = _timed(session.run)
    return session


_model_seconds = 0.0


def model_seconds() -> float:
    """Seconds this process has spent in ONNX Runtime `run` calls so far: a stage's model time is the
    difference across its work (the rest of its busy time is pre/post-processing, decode, encode)."""
    return _model_seconds


def _timed(run):
    def timed_run(*args, **kwargs):
        global _model_seconds
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            _model_seconds += time.perf_counter() - started

    return timed_run


_LOGGED_OPTIONS = (
    "device_id", "gpu_mem_limit", "cudnn_conv_algo_search", "arena_extend_strategy", "trt_fp16_enable",
    "trt_engine_cache_path", "trt_max_workspace_size",
)


def _brief_options(options: dict) -> str:
    picked = {k: v for k, v in options.items() if k in _LOGGED_OPTIONS}
    return "{" + ", ".join(f"{k}={v}" for k, v in picked.items()) + "}" if picked else "{}"
