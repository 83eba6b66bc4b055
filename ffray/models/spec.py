"""One registry entry: everything needed to fetch, verify, load and feed a FaceFusion model."""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int | str | None, ...]  # str / None = dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Shape
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # FaceFusion's name, e.g. "inswapper_128"
    # detector | landmarker | recognizer | swapper | enhancer | occluder | parser | converter
    kind: str
    # decode / pre-post family: detectors yolo_face|scrfd|retinaface|yunet; landmarkers 2dfan4|peppa_wutz|
    # fan_68_5; recognizer arcface; swappers inswapper|hyperswap|simswap|ghost|blendswap|uniface|hififace;
    # enhancers gfpgan|codeformer|gpen|restoreformer; masks xseg|bisenet; converters crossface
    type: str
    file_name: str  # "inswapper_128.onnx"
    release: str  # FaceFusion assets release tag, "models-3.0.0"
    urls: tuple[str, ...] = ()  # FaceFusion's release and mirror locations of the .onnx
    crc32: str | None = None  # FaceFusion's `.hash` content (8 lowercase hex) where known
    sha256: str | None = None  # pinned by us where known; None = verified by crc32 `.hash` only
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    template: str | None = None  # warp template name (ffray.faces.align.WARP_TEMPLATES)
    size: tuple[int, int] | None = None  # model input / crop size (width, height)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    color: str = "RGB"  # channel order the model takes: "RGB" or "BGR"
    layout: str = "NCHW"  # "NCHW" or "NHWC"
    license: str = ""
    commercial: bool = False  # does the licence allow commercial use
    converter: str | None = None  # embedding converter model name (ghost, simswap, hififace)
    pixel_boost: tuple[int, ...] = ()  # allowed pixel-boost sizes (swappers)
    precision: str = "fp32"
    # shape the graph's last initializer must have (inswapper: the 512x512 emap FaceFusion reads)
    last_initializer_shape: tuple[int, ...] | None = None

    @property
    def hash_file_name(self) -> str:
        return self.file_name.rsplit(".", 1)[0] + ".hash"
