"""I/O contract check: does a model file take and give what its registry type promises?

Run when a custom model (`name=PATH`) is loaded, so a wrong file fails at start-up with a message naming
the file, the tensor and expected vs found, instead of deep inside a batch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ffray.errors import ModelError
from ffray.models.spec import ModelSpec, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

# ORT type strings -> the dtype names TensorSpec uses
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


def _dims(shape) -> str:
    if len(shape) == 0:
        return "scalar"
    return "x".join("?" if d is None or isinstance(d, str) else str(d) for d in shape)


def tensor_problems(role: str, expected: TensorSpec, found_name: str, found_shape, found_type: str) -> list[str]:
    """Differences between one expected tensor and one found in the file; empty when it fits."""
    problems = []
    label = f"{role} {found_name!r}"
    if expected.name and found_name != expected.name:
        problems.append(f"{role} name is {found_name!r}, expected {expected.name!r}")
    found_dtype = ORT_DTYPES.get(found_type, found_type)
    if found_dtype != expected.dtype:
        problems.append(f"{label} dtype is {found_dtype}, expected {expected.dtype}")
    found_shape = list(found_shape or [])
    if len(found_shape) != len(expected.shape):
        problems.append(f"{label} has shape {_dims(found_shape)} (rank {len(found_shape)}), "
                        f"expected {_dims(expected.shape)} (rank {len(expected.shape)})")
        return problems
    for axis, (want, got) in enumerate(zip(expected.shape, found_shape, strict=True)):
        # a dynamic dimension in the file accepts our fixed size; a fixed one must equal it
        if isinstance(want, int) and isinstance(got, int) and want != got:
            problems.append(f"{label} has shape {_dims(found_shape)}, expected {_dims(expected.shape)} "
                            f"(axis {axis}: {got} != {want})")
            break
    return problems


def contract_problems(spec: ModelSpec, session: onnxruntime.InferenceSession,
                      path: str | os.PathLike | None = None) -> list[str]:
    problems: list[str] = []
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != len(spec.inputs):
        problems.append(f"has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}), expected "
                        f"{len(spec.inputs)} ({', '.join(t.name for t in spec.inputs)})")
    else:
        # ORT feeds by name, so inputs pair up by name; the leftovers pair in order to report a rename
        expected_names = {t.name for t in spec.inputs}
        leftover = iter([i for i in inputs if i.name not in expected_names])
        by_name = {i.name: i for i in inputs}
        for expected in spec.inputs:
            found = by_name.get(expected.name) or next(leftover)
            problems += tensor_problems("input", expected, found.name, found.shape, found.type)
    if spec.outputs:
        if len(outputs) < len(spec.outputs):
            problems.append(f"has {len(outputs)} outputs, expected at least {len(spec.outputs)}")
        else:
            for expected, found in zip(spec.outputs, outputs, strict=False):
                problems += tensor_problems("output", expected, found.name, found.shape, found.type)
    if spec.last_initializer_shape is not None and path is not None:
        problems += _last_initializer_problems(spec, path)
    return problems


def _last_initializer_problems(spec: ModelSpec, path: str | os.PathLike) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if not graph.initializer:
        return [f"has no initializers, expected the last one to be {_dims(spec.last_initializer_shape)} (emap)"]
    last = graph.initializer[-1]
    if tuple(last.dims) != tuple(spec.last_initializer_shape):
        return [f"last initializer {last.name!r} is {_dims(last.dims)}, expected "
                f"{_dims(spec.last_initializer_shape)} (the emap {spec.name} reads)"]
    return []


def check_contract(spec: ModelSpec, session: onnxruntime.InferenceSession,
                   path: str | os.PathLike | None = None) -> None:
    """ModelError naming the file, the tensor and expected vs found, if the model breaks the contract."""
    problems = contract_problems(spec, session, path)
    if problems:
        where = str(path) if path is not None else "model"
        raise ModelError(f"{where}: does not follow the {spec.name} contract: {'; '.join(problems)}")
