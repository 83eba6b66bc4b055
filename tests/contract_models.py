"""Tiny ONNX models with the production I/O contract of every FaceFusion model family.

Each builder writes a small deterministic graph (names, shapes, dtypes, value ranges and a dynamic
batch dimension as the real model) whose outputs depend on its inputs, and returns the path. Tests,
pipeline tests and benchmarks use them through refs such as `inswapper_128=/tmp/x.onnx`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
B = "batch"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save(path, nodes, inputs, outputs, initializers, name) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _init(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), name)


def _identity_projection(name: str, source: str, out: str, width: int, channels: int, scale: float,
                         seed: int) -> tuple[list, list]:
    """source [N, width] -> [N, channels, 1, 1] through a fixed random matrix (identity signal)."""
    weights = _rng(seed).standard_normal((width, channels)).astype(np.float32) * scale
    nodes = [
        helper.make_node("MatMul", [source, f"{name}_w"], [f"{name}_p"]),
        helper.make_node("Unsqueeze", [f"{name}_p", f"{name}_axes"], [out]),
    ]
    return nodes, [_init(f"{name}_w", weights), _init(f"{name}_axes", [2, 3], np.int64)]


def _image_swapper(path, size: int, out_range: str, source_kind: str, source_size: int = 0,
                   mask_output: bool = False, emap: bool = False, name: str = "swapper") -> Path:
    """target [N,3,S,S] + source -> output [N,3,S,S]: a per-channel affine of the target plus an identity
    term from the source, squashed to [0,1] (Sigmoid) or [-1,1] (Tanh)."""
    nodes, inits = [], []
    if source_kind == "embedding":
        source_vi = _vi("source", [B, 512])
        n, i = _identity_projection("id", "source", "id4", 512, 3, 0.05, seed=7)
    else:  # an image (blendswap, uniface): its channel means
        source_vi = _vi("source", [B, 3, source_size, source_size])
        n = [helper.make_node("ReduceMean", ["source"], ["id4"], axes=[2, 3], keepdims=1)]
        i = []
    nodes += n
    inits += i
    nodes += [
        helper.make_node("Mul", ["target", "gain"], ["t1"]),
        helper.make_node("Add", ["t1", "id4"], ["t2"]),
        helper.make_node("Sigmoid" if out_range == "01" else "Tanh", ["t2"], ["output"]),
    ]
    inits.append(_init("gain", [[[1.5]], [[1.2]], [[0.9]]]))
    outputs = [_vi("output", [B, 3, size, size])]
    if mask_output:
        nodes.append(helper.make_node("ReduceMean", ["output"], ["mask"], axes=[1], keepdims=1))
        outputs.append(_vi("mask", [B, 1, size, size]))
    if emap:  # inswapper: the 512x512 emap is the LAST initializer of the file
        inits.append(_init("emap", _rng(11).standard_normal((512, 512)) / np.sqrt(512)))
    inputs = [_vi("target", [B, 3, size, size]), source_vi]
    return _save(path, nodes, inputs, outputs, inits, name)


# --- swappers ---------------------------------------------------------------------------------------

def build_inswapper(path) -> Path:
    return _image_swapper(path, 128, "01", "embedding", emap=True, name="inswapper")


def build_hyperswap(path) -> Path:
    return _image_swapper(path, 256, "11", "embedding", mask_output=True, name="hyperswap")


def build_simswap(path, size: int = 256) -> Path:
    return _image_swapper(path, size, "01", "embedding", name="simswap")


def build_ghost(path) -> Path:
    return _image_swapper(path, 256, "11", "embedding", name="ghost")


def build_hififace(path) -> Path:
    return _image_swapper(path, 256, "11", "embedding", name="hififace")


def build_blendswap(path) -> Path:
    return _image_swapper(path, 256, "01", "image", source_size=112, name="blendswap")


def build_uniface(path) -> Path:
    return _image_swapper(path, 256, "11", "image", source_size=256, name="uniface")


def build_converter(path, seed: int = 5) -> Path:
    """crossface_*: input [N,512] -> output [N,512] (a fixed linear map)."""
    weights = _rng(seed).standard_normal((512, 512)).astype(np.float32) / np.sqrt(512)
    nodes = [helper.make_node("MatMul", ["input", "w"], ["output"])]
    return _save(path, nodes, [_vi("input", [B, 512])], [_vi("output", [B, 512])], [_init("w", weights)],
                 "crossface")


# --- analysis ---------------------------------------------------------------------------------------

def build_arcface(path) -> Path:
    """input [N,3,112,112] in [-1,1] -> [N,512]: 8x8 average pool, then a fixed random projection."""
    weights = _rng(3).standard_normal((3 * 14 * 14, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["output"]),
    ]
    return _save(path, nodes, [_vi("input", [B, 3, 112, 112])], [_vi("output", [B, 512])],
                 [_init("w", weights)], "arcface")


def build_fairface(path) -> Path:
    """input [N,3,224,224] (RGB, ImageNet-normalised) -> race_id, gender_id, age_id, each [N] int64 as the
    real model's argmax outputs. The graph undoes the normalisation and reads the crop's mean colour in
    [0,1]: race_id = floor(R * 6.999) (0..6), gender_id = G > 0.5 (1 = female), age_id = floor(B * 8.999)
    (0..8), so a uniform frame of a chosen colour selects every id (and a wrong channel order or
    normalisation shows)."""
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["pooled", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["rgb"]),
        helper.make_node("Split", ["rgb", "split"], ["r", "g", "b"], axis=1),
        helper.make_node("Mul", ["r", "race_scale"], ["r7"]),
        helper.make_node("Floor", ["r7"], ["r_floor"]),
        helper.make_node("Cast", ["r_floor"], ["race_2d"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["race_2d", "axis1"], ["race_id"]),
        helper.make_node("Greater", ["g", "half"], ["g_bool"]),
        helper.make_node("Cast", ["g_bool"], ["gender_2d"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["gender_2d", "axis1"], ["gender_id"]),
        helper.make_node("Mul", ["b", "age_scale"], ["b9"]),
        helper.make_node("Floor", ["b9"], ["b_floor"]),
        helper.make_node("Cast", ["b_floor"], ["age_2d"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["age_2d", "axis1"], ["age_id"]),
    ]
    inits = [_init("mean", mean), _init("std", std), _init("split", [1, 1, 1], np.int64),
             _init("race_scale", [6.999]), _init("half", [0.5]), _init("age_scale", [8.999]),
             _init("axis1", [1], np.int64)]
    outputs = [_vi(n, [B], TensorProto.INT64) for n in ("race_id", "gender_id", "age_id")]
    return _save(path, nodes, [_vi("input", [B, 3, 224, 224])], outputs, inits, "fairface")


def _face_68_in_64() -> np.ndarray:
    """A plausible 68-point layout in 2dfan4's 64x64 heatmap space (jaw 0 left of jaw 16: angle 0)."""
    points = np.zeros((68, 2), dtype=np.float32)
    t = np.linspace(np.pi, 0, 17)
    points[0:17] = np.stack([32 + 22 * np.cos(t), 30 + 24 * np.sin(t)], axis=1)  # jaw, left to right
    points[17:27] = np.stack([np.linspace(14, 50, 10), np.full(10, 20)], axis=1)  # brows
    points[27:36] = np.stack([np.full(9, 32), np.linspace(24, 40, 9)], axis=1)  # nose
    eye = np.stack([np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)) * 4,
                    np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False)) * 2], axis=1)
    points[36:42] = eye + [22, 27]
    points[42:48] = eye + [42, 27]
    mouth = np.stack([np.cos(np.linspace(np.pi, 3 * np.pi, 20, endpoint=False)) * 9,
                      np.sin(np.linspace(np.pi, 3 * np.pi, 20, endpoint=False)) * 3], axis=1)
    points[48:68] = mouth + [32, 46]
    return points


def build_2dfan4(path) -> Path:
    """input [N,3,256,256] (BGR /255) -> landmarks [N,68,3] (64-px coords + conf), heatmaps [N,68,64,64].

    Landmarks are a fixed face layout shifted by the input's mean brightness; heatmaps peak near 0.8."""
    base = np.concatenate([_face_68_in_64(), np.ones((68, 1), np.float32)], axis=1)[None]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0),  # [N]
        helper.make_node("Unsqueeze", ["m", "ax12"], ["m3"]),  # [N,1,1]
        helper.make_node("Mul", ["m3", "shift"], ["s"]),
        helper.make_node("Add", ["s", "base"], ["landmarks"]),
        helper.make_node("AveragePool", ["input"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),  # [N,3,64,64]
        helper.make_node("ReduceMean", ["p"], ["p1"], axes=[1], keepdims=1),  # [N,1,64,64]
        helper.make_node("Mul", ["p1", "hgain"], ["h1"]),
        helper.make_node("Add", ["h1", "hbias"], ["heatmaps"]),  # broadcast to [N,68,64,64]
    ]
    inits = [_init("ax12", [1, 2], np.int64), _init("shift", [[[0.5, 0.5, 0.0]]]), _init("base", base),
             _init("hgain", np.full((1, 1, 1, 1), 0.1)), _init("hbias", np.full((1, 68, 1, 1), 0.75))]
    return _save(path, nodes, [_vi("input", [B, 3, 256, 256])],
                 [_vi("landmarks", [B, 68, 3]), _vi("heatmaps", [B, 68, 64, 64])], inits, "2dfan4")


def build_peppa_wutz(path) -> Path:
    """input [N,3,256,256] -> [N,68,3] (64-px coords + confidence ~0.9)."""
    base = np.concatenate([_face_68_in_64(), np.full((68, 1), 0.9, np.float32)], axis=1)[None]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "ax12"], ["m3"]),
        helper.make_node("Mul", ["m3", "shift"], ["s"]),
        helper.make_node("Add", ["s", "base"], ["output"]),
    ]
    inits = [_init("ax12", [1, 2], np.int64), _init("shift", [[[0.5, 0.5, 0.0]]]), _init("base", base)]
    return _save(path, nodes, [_vi("input", [B, 3, 256, 256])], [_vi("output", [B, 68, 3])], inits, "peppa")


def fan_68_5_weights() -> np.ndarray:
    """(68, 5): each of the 68 points as a combination of the 5; the eyes, nose tip and mouth corners
    reproduce the 5 input points exactly, jaw 0/16 sit at the eyes (so the face angle is the eye line)."""
    w = np.full((68, 5), 0.2, dtype=np.float32)
    for rows, col in (((0, *range(36, 42)), 0), ((16, *range(42, 48)), 1), ((30,), 2), ((48,), 3), ((54,), 4)):
        for r in rows:
            w[r] = 0
            w[r, col] = 1
    return w


def build_fan_68_5(path) -> Path:
    """input [N,5,2] (unit ffhq space) -> output [N,68,2] = W @ input."""
    nodes = [helper.make_node("MatMul", ["w", "input"], ["output"])]
    return _save(path, nodes, [_vi("input", [B, 5, 2])], [_vi("output", [B, 68, 2])],
                 [_init("w", fan_68_5_weights())], "fan_68_5")


def _detector_maps(size: int, anchors: int) -> list[int]:
    return [(size // s) ** 2 * anchors for s in (8, 16, 32)]


def build_retinaface(path, size: int = 640, face=(0.5, 0.5, 0.3), dynamic_batch: bool = False) -> Path:
    """input [1,3,S,S] ((x-127.5)/128) -> 9 rank-2 outputs [score8,16,32, bbox.., kps..] of [K, C], as
    InsightFace's exports (batch 1, no batch axis). `dynamic_batch`: the input's batch dimension is
    left open while the outputs still have no batch axis, as some exports declare it.

    One confident face at stride 16 whose anchor lies at `face` (cx, cy as fractions of S, half-size as
    a fraction); its score moves slightly with the input's mean."""
    counts = _detector_maps(size, 2)
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0)]
    inits = [_init("score_gain", [0.01])]
    outputs = []
    cx, cy, half = face
    for kind, channels in (("score", 1), ("bbox", 4), ("kps", 10)):
        for k, stride in enumerate((8, 16, 32)):
            cells = size // stride
            data = np.full((counts[k], channels), 0.01 if kind == "score" else 0.0, np.float32)
            if stride == 16:
                col, row = int(cx * cells), int(cy * cells)
                index = (row * cells + col) * 2
                d = half * size / stride
                data[index] = {"score": [0.88], "bbox": [d, d, d, d],
                               "kps": (np.array([[-0.35, -0.2], [0.35, -0.2], [0, 0.1], [-0.3, 0.45],
                                                 [0.3, 0.45]]).ravel() * d)}[kind]
            name = f"{kind}_{stride}"
            inits.append(_init(f"{name}_base", data))
            if kind == "score":
                nodes += [helper.make_node("Mul", ["m", "score_gain"], [f"{name}_d"]),
                          helper.make_node("Add", [f"{name}_base", f"{name}_d"], [name])]
            else:
                nodes.append(helper.make_node("Identity", [f"{name}_base"], [name]))
            outputs.append(_vi(name, [counts[k], channels]))
    batch = B if dynamic_batch else 1
    return _save(path, nodes, [_vi("input", [batch, 3, size, size])], outputs, inits, "retinaface")


def build_yolo_face(path, size: int = 640, face=(0.5, 0.5, 0.3)) -> Path:
    """input [N,3,640,640] (/255) -> output [N,20,8400]: one face (cx, cy, half-size as fractions of S)."""
    cx, cy, half = (v * size for v in face)
    base = np.zeros((1, 20, 8400), np.float32)
    column = 4321
    base[0, :5, column] = [cx, cy, 2 * half, 2 * half, 0.9]
    points = np.array([[-0.35, -0.2], [0.35, -0.2], [0, 0.1], [-0.3, 0.45], [0.3, 0.45]]) * half + [cx, cy]
    base[0, 5:, column] = np.concatenate([points, np.ones((5, 1))], axis=1).ravel()
    base[0, 4, column + 1] = 0.5  # exactly at the default threshold: yolo_face keeps only `> 0.5`
    base[0, :4, column + 1] = [cx + 3 * half, cy, 2 * half, 2 * half]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=1),  # [N,1,1,1]
        helper.make_node("Squeeze", ["m", "ax3"], ["m3"]),  # [N,1,1]
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["base", "z"], ["output"]),
    ]
    inits = [_init("base", base), _init("ax3", [3], np.int64), _init("zero", np.zeros((1, 1, 1)))]
    return _save(path, nodes, [_vi("input", [B, 3, size, size])], [_vi("output", [B, 20, 8400])], inits,
                 "yolo_face")


# --- enhancers and masks ----------------------------------------------------------------------------

def build_gfpgan(path, size: int = 512, weight_input: bool = False) -> Path:
    """input [N,3,S,S] in [-1,1] -> output [N,3,S,S] in [-1,1]; with `weight` (CodeFormer, double [1])
    the output shifts with the weight."""
    nodes = [helper.make_node("Mul", ["input", "gain"], ["a"])]
    inits = [_init("gain", [[[1.3]], [[1.1]], [[0.8]]])]
    inputs = [_vi("input", [B, 3, size, size])]
    last = "a"
    if weight_input:
        inputs.append(_vi("weight", [1], TensorProto.DOUBLE))
        nodes += [helper.make_node("Cast", ["weight"], ["wf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["wf", "wgain"], ["ws"]),
                  helper.make_node("Add", ["a", "ws"], ["b"])]
        inits.append(_init("wgain", [0.4]))
        last = "b"
    nodes.append(helper.make_node("Tanh", [last], ["output"]))
    return _save(path, nodes, inputs, [_vi("output", [B, 3, size, size])], inits, "enhancer")


def build_codeformer(path) -> Path:
    return build_gfpgan(path, 512, weight_input=True)


def build_gpen(path, size: int = 256) -> Path:
    return build_gfpgan(path, size)


XSEG_CHANNEL_WEIGHTS = (0.6, 0.3, 0.1)  # B, G, R: unequal, so a channel swap changes the mask


def build_xseg(path) -> Path:
    """input [N,256,256,3] NHWC BGR /255 -> output [N,256,256,1] = sigmoid(12 * (x @ w) - 3) with `w` the
    XSEG_CHANNEL_WEIGHTS: occluded where the crop is dark."""
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["m"]),
        helper.make_node("Mul", ["m", "gain"], ["g"]),
        helper.make_node("Add", ["g", "bias"], ["gb"]),
        helper.make_node("Sigmoid", ["gb"], ["output"]),
    ]
    inits = [_init("w", np.reshape(XSEG_CHANNEL_WEIGHTS, (3, 1))), _init("gain", [12.0]), _init("bias", [-3.0])]
    return _save(path, nodes, [_vi("input", [B, 256, 256, 3])], [_vi("output", [B, 256, 256, 1])], inits, "xseg")


def build_bisenet(path) -> Path:
    """input [N,3,512,512] (RGB, ImageNet-normalised) -> output [N,19,512,512]: 1x1 conv class scores."""
    weights = _rng(9).standard_normal((19, 3, 1, 1)).astype(np.float32)
    weights[1] = [[[2.0]], [[2.0]], [[2.0]]]  # skin wins on bright pixels
    nodes = [helper.make_node("Conv", ["input", "w"], ["output"])]
    return _save(path, nodes, [_vi("input", [B, 3, 512, 512])], [_vi("output", [B, 19, 512, 512])],
                 [_init("w", weights)], "bisenet")


BUILDERS = {
    "inswapper_128": build_inswapper,
    "inswapper_128_fp16": build_inswapper,
    "hyperswap_1a_256": build_hyperswap,
    "hyperswap_1b_256": build_hyperswap,
    "hyperswap_1c_256": build_hyperswap,
    "simswap_256": build_simswap,
    "simswap_unofficial_512": lambda p: build_simswap(p, 512),
    "ghost_1_256": build_ghost,
    "ghost_2_256": build_ghost,
    "ghost_3_256": build_ghost,
    "hififace_unofficial_256": build_hififace,
    "blendswap_256": build_blendswap,
    "uniface_256": build_uniface,
    "crossface_ghost": build_converter,
    "crossface_simswap": build_converter,
    "crossface_hififace": build_converter,
    "arcface_w600k_r50": build_arcface,
    "2dfan4": build_2dfan4,
    "peppa_wutz": build_peppa_wutz,
    "fan_68_5": build_fan_68_5,
    "retinaface": build_retinaface,
    "scrfd": build_retinaface,
    "yolo_face": build_yolo_face,
    "gfpgan_1.4": build_gfpgan,
    "gfpgan_1.3": build_gfpgan,
    "gfpgan_1.2": build_gfpgan,
    "restoreformer_plus_plus": build_gfpgan,
    "codeformer": build_codeformer,
    "gpen_bfr_256": build_gpen,
    "gpen_bfr_512": lambda p: build_gpen(p, 512),
    "xseg_1": build_xseg,
    "fairface": build_fairface,
    "bisenet_resnet_34": build_bisenet,
}


def build(name: str, folder) -> str:
    """Build the contract model for a FaceFusion model name in `folder`; returns `name=path` (a ref)."""
    path = BUILDERS[name](Path(folder) / f"{name}.onnx")
    return f"{name}={path}"
