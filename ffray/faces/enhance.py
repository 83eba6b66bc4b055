"""Face enhancement exactly as FaceFusion's `face_enhancer` (gfpgan, codeformer, gpen, restoreformer),
batched in waves like the swapper (the k-th face of every frame in one ONNX call).

Crop with '5/68' at the model size; box mask with the blur and NO padding (+ occlusion if selected;
area/region are ignored); input RGB (x/255 - 0.5)/0.5; CodeFormer's `weight` input is a float64 (1,)
array; output clip(-1,1) -> 0..255 rounded uint8 BGR; paste-back; then per face a whole-frame
`addWeighted(frame, 1 - b, pasted, b)` with b = blend/100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ffray.faces.align import warp_face
from ffray.faces.detect import has_dynamic_batch
from ffray.faces.masks import MaskModels, MaskOptions, combine_masks, create_box_mask
from ffray.faces.paste import blend_frames, paste_area, paste_into
from ffray.faces.swap import prepare_crop
from ffray.faces.types import Face

ENHANCER_TYPES = ("gfpgan", "codeformer", "gpen", "restoreformer")


def prepare_enhancer_crop(crop: np.ndarray) -> np.ndarray:
    """RGB, (x/255 - 0.5)/0.5, NCHW float32 (bit-identical table lookup for uint8 crops)."""
    return prepare_crop(crop, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def normalise_enhancer_output(output: np.ndarray) -> np.ndarray:
    x = np.clip(output, -1, 1)
    x = (x + 1) / 2
    x = x.transpose(1, 2, 0)
    x = (x * 255.0).round()
    return x.astype(np.uint8)[:, :, ::-1]


def blend_factor(face_enhancer_blend: float) -> float:
    # FaceFusion computes 1 - (1 - blend / 100); kept verbatim for identical float rounding
    return 1 - (1 - (face_enhancer_blend / 100))


@dataclass
class EnhancerConfig:
    template: str
    size: int
    blend: float = 80
    weight: float = 0.5
    batch_size: int = 8
    masks: MaskOptions = field(default_factory=MaskOptions)


class Enhancer:
    def __init__(self, session, config: EnhancerConfig, mask_models: MaskModels | None = None):
        self.session = session
        self.config = config
        self.mask_models = mask_models or MaskModels()
        self.input_names = [i.name for i in session.get_inputs()]
        self.dynamic_batch = has_dynamic_batch(session)

    def run_model(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = []
        step = self.config.batch_size if self.dynamic_batch else 1
        weight = np.array([self.config.weight]).astype(np.double)
        for start in range(0, len(inputs), max(1, step)):
            feed = {}
            for name in self.input_names:
                if name == "input":
                    feed[name] = np.concatenate(inputs[start:start + step])
                elif name == "weight":  # CodeFormer: one fidelity weight for the whole batch
                    feed[name] = weight
            result = self.session.run(None, feed)[0]
            outputs.extend(result[k] for k in range(result.shape[0]))
        return outputs

    def enhance_crops(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Enhanced uint8 BGR crops (model size)."""
        outputs = self.run_model([prepare_enhancer_crop(c) for c in crops])
        return [normalise_enhancer_output(o) for o in outputs]

    def enhance(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]],
                inplace: bool = False) -> list[np.ndarray]:
        cfg = self.config
        out = list(frames) if inplace else [frame.copy() for frame in frames]
        for wave in range(max((len(f) for f in faces), default=0)):
            members = [i for i, f in enumerate(faces) if len(f) > wave]
            warped = [warp_face(out[i], faces[i][wave].landmark_5_68, cfg.template, cfg.size) for i in members]
            crops = [w[0] for w in warped]
            masks = [[create_box_mask(c.shape[:2][::-1], cfg.masks.blur, (0, 0, 0, 0))] for c in crops]
            if "occlusion" in cfg.masks.types:
                if self.mask_models.occluder is None:
                    raise ValueError("the occlusion mask needs an occluder model (xseg)")
                for k, mask in enumerate(self.mask_models.occluder.masks(crops)):
                    masks[k].append(mask)
            enhanced = self.enhance_crops(crops)
            factor = blend_factor(cfg.blend)
            for i, crop, mask_list, (_, matrix) in zip(members, enhanced, masks, warped, strict=True):
                # FaceFusion blends whole frames; outside the paste area both are equal and
                # addWeighted(x, 1 - f, x, f) rounds back to x, so blending the area alone is the same
                (x1, y1, x2, y2), _ = paste_area(out[i].shape, crop.shape, matrix)
                before = out[i][y1:y2, x1:x2].copy()
                if paste_into(out[i], crop, combine_masks(mask_list), matrix) is not None:
                    out[i][y1:y2, x1:x2] = blend_frames(before, out[i][y1:y2, x1:x2], factor)
        return out
