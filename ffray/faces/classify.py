"""FairFace age/gender/race classification as FaceFusion's `face_classifier`: arcface_112_v2 crop at
224x224 from '5/68', RGB, /255, ImageNet mean/std, NCHW; outputs (race_id, gender_id, age_id). Batched.

Results go on `Face.extra` as 'gender' ('female'/'male'), 'race' and 'age', a half-open (lo, hi) range
as FaceFusion's Python `range(lo, hi)` (so bucket 0 is ages 0-1: FaceFusion's own numbers, kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ffray.faces.align import warp_face
from ffray.faces.detect import run_batched

FAIRFACE_TEMPLATE = "arcface_112_v2"
FAIRFACE_SIZE = 224
FAIRFACE_MEAN = (0.485, 0.456, 0.406)
FAIRFACE_STD = (0.229, 0.224, 0.225)

GENDERS = ("female", "male")
RACES = ("white", "black", "latino", "asian", "indian", "arabic")
# FaceFusion's categorize_age: age_id -> range(lo, hi); any other id -> range(70, 100)
AGE_BUCKETS = ((0, 2), (3, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69))
AGE_OLDEST = (70, 100)
_RACE_IDS = {1: "black", 2: "latino", 3: "asian", 4: "asian", 5: "indian", 6: "arabic"}


def categorize_gender(gender_id: int) -> str:
    return "female" if gender_id == 1 else "male"


def categorize_age(age_id: int) -> tuple[int, int]:
    return AGE_BUCKETS[age_id] if 0 <= age_id < len(AGE_BUCKETS) else AGE_OLDEST


def categorize_race(race_id: int) -> str:
    return _RACE_IDS.get(race_id, "white")


def prepare_fairface_crop(frame: np.ndarray, landmark_5: np.ndarray, mean=FAIRFACE_MEAN,
                          std=FAIRFACE_STD) -> np.ndarray:
    """[1,3,224,224] float32, with FaceFusion's operations and dtypes (float32 crop, float64 mean/std
    applied in place) so the numbers match bit for bit."""
    crop, _ = warp_face(frame, landmark_5, FAIRFACE_TEMPLATE, (FAIRFACE_SIZE, FAIRFACE_SIZE))
    crop = crop.astype(np.float32)[:, :, ::-1] / 255.0
    crop -= np.asarray(mean, dtype=np.float64)
    crop /= np.asarray(std, dtype=np.float64)
    return np.expand_dims(crop.transpose(2, 0, 1), axis=0)


class FairFace:
    def __init__(self, session, batch_size: int = 32, mean=FAIRFACE_MEAN, std=FAIRFACE_STD):
        self.session = session
        self.batch_size = max(1, int(batch_size))
        self.input_name = session.get_inputs()[0].name
        self.mean, self.std = tuple(mean), tuple(std)

    def classify(self, frames: Sequence[np.ndarray],
                 landmarks_5: Sequence[np.ndarray]) -> list[dict[str, object]]:
        """{'gender', 'age', 'race'} per face; `frames[i]` holds face i (use `landmark_5_68`)."""
        feeds = [{self.input_name: prepare_fairface_crop(f, l5, self.mean, self.std)}
                 for f, l5 in zip(frames, landmarks_5, strict=True)]
        out = []
        for race_id, gender_id, age_id in run_batched(self.session, feeds, self.batch_size):
            out.append({
                "gender": categorize_gender(int(np.ravel(gender_id)[0])),
                "age": categorize_age(int(np.ravel(age_id)[0])),
                "race": categorize_race(int(np.ravel(race_id)[0])),
            })
        return out
