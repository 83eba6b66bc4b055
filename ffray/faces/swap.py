"""Face swapping exactly as FaceFusion's `face_swapper` for every swapper type, batched.

Per target face: warp with '5/68' at the pixel-boost size, box/occlusion masks on that crop, pixel
boost implode (polyphase), per-type normalisation, model, de-normalisation, explode, area/region masks
on the swapped crop, minimum, paste-back. Batching never changes results: faces are processed in
"waves" (the k-th face of every frame in one batch), so each face is cropped from the frame that
already holds the faces before it, exactly as FaceFusion's sequential loop does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ffray.faces.align import transform_points, warp_face
from ffray.faces.detect import has_dynamic_batch
from ffray.faces.masks import MaskModels, MaskOptions, crop_masks_after, crop_masks_before
from ffray.faces.paste import paste_into
from ffray.faces.select import average_identity, largest_face
from ffray.faces.types import Face

SWAPPER_TYPES = ("blendswap", "ghost", "hififace", "hyperswap", "inswapper", "simswap", "uniface")
DENORMALISED_TYPES = ("ghost", "hififace", "hyperswap", "uniface")  # outputs in [-1, 1]
EMBEDDING_TYPES = ("ghost", "hififace", "hyperswap", "inswapper", "simswap")
CONVERTER_TYPES = ("ghost", "hififace", "simswap")
NORMALISED_TARGET_TYPES = ("hififace", "hyperswap", "inswapper", "simswap")  # balance with a unit target


def implode_pixel_boost(crop: np.ndarray, total: int, model_size: int) -> np.ndarray:
    """(T*m, T*m, 3) -> (T*T, m, m, 3); sub-image i*T + j is crop[i::T, j::T] (not spatial tiles)."""
    tiles = crop.reshape(model_size, total, model_size, total, 3)
    return tiles.transpose(1, 3, 0, 2, 4).reshape(total ** 2, model_size, model_size, 3)


def explode_pixel_boost(tiles: Sequence[np.ndarray], total: int, model_size: int) -> np.ndarray:
    crop = np.stack(tiles).reshape(total, total, model_size, model_size, 3)
    return crop.transpose(2, 0, 3, 1, 4).reshape(model_size * total, model_size * total, 3)


def channel_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32: `float32((v / 255 - mean[c]) / std[c])` evaluated in float64 for every uint8 v,
    so a table lookup gives bit-for-bit FaceFusion's float64-then-float32 preprocessing, much faster."""
    values = np.arange(256) / 255.0
    return ((values[None, :] - np.asarray(mean, np.float64)[:, None]) / np.asarray(std, np.float64)[:, None]).astype(
        np.float32)


def prepare_crop(crop: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 lut: np.ndarray | None = None) -> np.ndarray:
    """BGR crop -> 1x3xHxW float32 RGB, `(x/255 - mean) / std` (computed in float64 as FaceFusion)."""
    if crop.dtype == np.uint8:
        lut = channel_lut(mean, std) if lut is None else lut
        out = np.empty((1, 3, *crop.shape[:2]), dtype=np.float32)
        for c in range(3):
            out[0, c] = lut[c][crop[:, :, 2 - c]]
        return out
    x = crop[:, :, ::-1] / 255.0
    x = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
    return np.expand_dims(x.transpose(2, 0, 1), axis=0).astype(np.float32)


def normalise_output(output: np.ndarray, swapper_type: str, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """3xHxW model output -> HxWx3 BGR float in [0, 255] (not rounded). Only ghost, hififace, hyperswap
    and uniface are de-normalised; inswapper, simswap (both) and blendswap outputs are taken as [0, 1]."""
    x = output.transpose(1, 2, 0)
    if swapper_type in DENORMALISED_TYPES:
        x = x * np.asarray(std, dtype=np.float64) + np.asarray(mean, dtype=np.float64)
    x = x.clip(0, 1)
    return x[:, :, ::-1] * 255


def read_emap(path) -> np.ndarray:
    """inswapper's emap: the LAST graph initializer of the file actually loaded (512x512)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return numpy_helper.to_array(model.graph.initializer[-1])


def inswapper_latent(embedding: np.ndarray, emap: np.ndarray) -> np.ndarray:
    """`dot(embedding, emap) / ||embedding||` = embedding_norm @ emap, NOT re-normalised afterwards."""
    embedding = embedding.reshape((1, -1))
    return np.dot(embedding, emap) / np.linalg.norm(embedding)


def balance_weight(face_swapper_weight: float) -> np.float32:
    """0.5 (the default) -> 0: no identity mixing; 1 -> -0.35; 0 -> 0.35."""
    return np.interp(face_swapper_weight, [0, 1], [0.35, -0.35]).astype(np.float32)


def needs_target_embeddings(swapper_type: str, face_swapper_weight: float) -> bool:
    """Identity balancing (weight != 0.5) mixes in the target's embedding; image-source types have none."""
    return face_swapper_weight != 0.5 and swapper_type not in ("blendswap", "uniface")


def balance_embedding(source: np.ndarray, target_embedding: np.ndarray | None, swapper_type: str,
                      face_swapper_weight: float) -> np.ndarray:
    w = balance_weight(face_swapper_weight)
    if w == 0:  # src * 1 + tgt * 0 is src exactly; no target embedding needed
        return source.reshape(1, -1)
    if target_embedding is None:
        raise ValueError("face_swapper_weight != 0.5 needs the target faces' embeddings")
    if swapper_type in NORMALISED_TARGET_TYPES:
        target_embedding = target_embedding / np.linalg.norm(target_embedding)
    return source.reshape(1, -1) * (1 - w) + target_embedding.reshape(1, -1) * w


@dataclass
class SwapperConfig:
    type: str
    template: str
    size: int  # model input size
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pixel_boost: int | None = None  # None = the model size
    weight: float = 0.5
    batch_size: int = 16
    masks: MaskOptions = field(default_factory=MaskOptions)

    def __post_init__(self) -> None:
        if self.type not in SWAPPER_TYPES:
            raise ValueError(f"unknown swapper type {self.type!r}; choose from {', '.join(SWAPPER_TYPES)}")
        boost = self.boost_size
        if boost % self.size:
            raise ValueError(f"pixel boost {boost} is not a multiple of the model size {self.size}")

    @property
    def boost_size(self) -> int:
        return int(self.pixel_boost or self.size)


@dataclass
class SourceIdentity:
    face: Face  # averaged identity (geometry of the first source face)
    embedding: np.ndarray | None  # prepared model input before balancing, (1, D); None for image sources
    frame: np.ndarray | None  # prepared source image (1x3xSxS float32) for blendswap / uniface


class Swapper:
    """One swapper model. `session` is the swapper, `converter` the embedding converter (ghost,
    simswap, hififace), `emap` inswapper's matrix (read with `read_emap` from the file loaded)."""

    def __init__(self, session, config: SwapperConfig, converter=None, emap: np.ndarray | None = None,
                 mask_models: MaskModels | None = None):
        self.session = session
        self.config = config
        self.converter = converter
        self.emap = emap
        self.mask_models = mask_models or MaskModels()
        if config.type in CONVERTER_TYPES and converter is None:
            raise ValueError(f"{config.type} swappers need their embedding converter session")
        if config.type == "inswapper" and emap is None:
            raise ValueError("inswapper needs its emap (the last initializer of the model file)")
        self.input_names = [i.name for i in session.get_inputs()]
        self.dynamic_batch = has_dynamic_batch(session)

    # --- source ---------------------------------------------------------------------------------

    def convert_embedding(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Converter output (raw, L2-normalised)."""
        name = self.converter.get_inputs()[0].name
        converted = self.converter.run(None, {name: embedding.reshape(-1, 512)})[0].ravel()
        return converted, converted / np.linalg.norm(converted)

    def prepare_source(self, images: Sequence[np.ndarray], faces: Sequence[Face | Sequence[Face]]) -> SourceIdentity:
        """FaceFusion's `extract_source_face` (largest face per image) + `average_face_identity` + the
        per-type source preparation. `faces[i]` is the face (or all faces) of `images[i]`."""
        chosen = [f if isinstance(f, Face) else largest_face(f) for f in faces]
        chosen = [f for f in chosen if f is not None]
        face = average_identity(chosen)
        if face is None:
            raise ValueError("no source face")
        kind = self.config.type
        if kind in ("blendswap", "uniface"):
            template, size = ("arcface_112_v2", 112) if kind == "blendswap" else ("ffhq_512", 256)
            crop, _ = warp_face(images[0], face.landmark_5_68, template, (size, size))
            frame = np.expand_dims((crop[:, :, ::-1] / 255.0).transpose(2, 0, 1), axis=0).astype(np.float32)
            return SourceIdentity(face, None, frame)
        if face.embedding is None:
            raise ValueError("source faces need embeddings (analyse the source images with embed=True)")
        if kind == "hyperswap":
            embedding = face.embedding_norm.reshape((1, -1))
        elif kind == "inswapper":
            embedding = inswapper_latent(face.embedding, self.emap)
        elif kind == "ghost":
            embedding = self.convert_embedding(face.embedding)[0].reshape(1, -1)
        else:  # simswap, hififace
            embedding = self.convert_embedding(face.embedding)[1].reshape(1, -1)
        return SourceIdentity(face, embedding, None)

    def source_input(self, source: SourceIdentity, target: Face) -> np.ndarray:
        if source.frame is not None:
            return source.frame
        balanced = balance_embedding(source.embedding, target.embedding, self.config.type, self.config.weight)
        return balanced.astype(np.float32)

    # --- swap -----------------------------------------------------------------------------------

    def run_model(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> list[np.ndarray]:
        """One output (3xHxW) per (source, target) pair; one ONNX call per chunk if the batch is dynamic."""
        outputs: list[np.ndarray] = []
        step = self.config.batch_size if self.dynamic_batch else 1
        for start in range(0, len(targets), max(1, step)):
            feed = {}
            for name in self.input_names:
                if name == "source":
                    feed[name] = np.concatenate(sources[start:start + step])
                elif name == "target":
                    feed[name] = np.concatenate(targets[start:start + step])
            result = self.session.run(None, feed)[0]
            outputs.extend(result[k] for k in range(result.shape[0]))
        return outputs

    def swap_crops(self, crops: Sequence[np.ndarray], source_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Swapped crops (HxWx3 BGR float 0..255) for crops at the boost size; all pixel-boost
        sub-images of all crops run as one batch."""
        cfg = self.config
        total = cfg.boost_size // cfg.size
        lut = channel_lut(cfg.mean, cfg.std)
        sources, targets = [], []
        for crop, source in zip(crops, source_inputs, strict=True):
            for tile in implode_pixel_boost(crop, total, cfg.size):
                targets.append(prepare_crop(tile, cfg.mean, cfg.std, lut))
                sources.append(source)
        outputs = self.run_model(sources, targets)
        swapped = []
        per = total * total
        for k in range(len(crops)):
            tiles = [normalise_output(o, cfg.type, cfg.mean, cfg.std) for o in outputs[k * per:(k + 1) * per]]
            swapped.append(explode_pixel_boost(tiles, total, cfg.size))
        return swapped

    def swap(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]],
             source: SourceIdentity, inplace: bool = False) -> list[np.ndarray]:
        """Frames with every given face swapped, faces in the given order: new frames, or (`inplace`)
        the given ones, changed only inside each face's paste area."""
        cfg = self.config
        out = list(frames) if inplace else [frame.copy() for frame in frames]
        waves = max((len(f) for f in faces), default=0)
        for wave in range(waves):
            members = [i for i, f in enumerate(faces) if len(f) > wave]
            targets = [faces[i][wave] for i in members]
            warped = [warp_face(out[i], t.landmark_5_68, cfg.template, cfg.boost_size)
                      for i, t in zip(members, targets, strict=True)]
            crops = [w[0] for w in warped]
            before = crop_masks_before(crops, cfg.masks, self.mask_models)
            swapped = self.swap_crops(crops, [self.source_input(source, t) for t in targets])
            landmarks = [None if t.landmark_68 is None else transform_points(t.landmark_68, w[1])
                         for t, w in zip(targets, warped, strict=True)]
            masks = crop_masks_after(swapped, landmarks, before, cfg.masks, self.mask_models)
            for i, crop, mask, (_, matrix) in zip(members, swapped, masks, warped, strict=True):
                paste_into(out[i], crop, mask, matrix)
        return out
