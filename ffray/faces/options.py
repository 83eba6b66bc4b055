"""Face processing options, one dataclass, with FaceFusion's defaults and CLI flag names.

Model options take a FaceFusion model name (`inswapper_128`) or `name=PATH_OR_URL` for a private
model that follows that name's I/O contract (`inswapper_128=/models/ours.onnx`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

from ffray.errors import InputError

PACKS = ("builtin", "facefusion")
SELECTOR_MODES = ("many", "one", "reference")
SELECTOR_GENDERS = ("auto", "female", "male")
SELECTOR_RACES = ("auto", "white", "black", "latino", "asian", "indian", "arabic")
SELECTOR_ORDERS = (
    "left-right", "right-left", "top-bottom", "bottom-top", "small-large", "large-small", "best-worst", "worst-best",
)
MASK_TYPES = ("box", "occlusion", "area", "region")
MASK_AREAS = ("upper-face", "lower-face", "mouth")
MASK_REGIONS = (
    "skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses", "nose", "mouth", "upper-lip",
    "lower-lip",
)


@dataclass(frozen=True)
class DistanceScale:
    """What a pack's identity distance (`FaceAnalyser.face_distance`) measures, and the
    `reference_face_distance` it matches below when the option is not given."""

    default: float
    meaning: str


# Each pack's recognizer and its distance. builtin: dlib's same-person tolerance is 0.6 in its own
# units (0.3 here); measured on the shared test assets (tests/test_cli_faces.py), the same person
# is 0.27-0.44 in dlib units (three photos, and one person across frames of video_01.mp4), other
# people 0.75-0.92, so 0.6 sits midway between the two.
REFERENCE_DISTANCES = {
    "facefusion": DistanceScale(0.3, "FaceFusion's (1 - cosine similarity of the recognizer's embeddings) / 2, "
                                     "0..1"),
    "builtin": DistanceScale(0.3, "half dlib's Euclidean distance between 128-D descriptors (dlib's usual "
                                  "same-person tolerance 0.6 is 0.3 here)"),
}


@dataclass(frozen=True)
class FaceOptions:
    # "builtin": dlib + classical swap/enhance, no download, CPU; "facefusion": FaceFusion's ONNX models
    pack: str = "builtin"
    face_detector_model: str = "yolo_face"
    face_detector_size: int = 640
    face_detector_score: float = 0.5
    face_detector_angles: tuple[int, ...] = (0,)
    face_detector_margin: tuple[int, int, int, int] = (0, 0, 0, 0)  # % per side: top right bottom left
    face_detector_upsample: int = 1  # builtin pack only: HOG upsampling steps (each halves the smallest face)
    face_landmarker_model: str = "2dfan4"
    face_landmarker_score: float = 0.5  # 0 disables the 68-point landmarker
    face_recognizer_model: str = "arcface_w600k_r50"
    face_selector_mode: str = "reference"
    face_selector_order: str = "large-small"
    # FairFace filters (None = off); 'auto' copies the largest source face's gender/race
    face_selector_age_start: int | None = None
    face_selector_age_end: int | None = None
    face_selector_gender: str | None = None
    face_selector_race: str | None = None
    face_classifier_model: str = "fairface"
    reference_face_position: int = 0
    reference_face_distance: float | None = None  # None: the pack's default (REFERENCE_DISTANCES)
    reference_frame_number: int = 0
    reference_face_image: str | None = None  # ffray: pick the reference face from an image instead of a frame
    face_tracking: str = "on"  # ffray, videos: follow faces across frames (ffray.faces.track); off = per frame
    face_track_gap: int = 3  # frames a followed face may be missed and still be swapped (interpolated)
    face_track_smoothing: int = 0  # landmark smoothing half-window in frames along a track; 0 = none
    face_swapper_model: str = "hyperswap_1a_256"
    face_swapper_pixel_boost: int | None = None  # None = the model's native size
    face_swapper_weight: float = 0.5
    face_enhancer_model: str | None = None  # e.g. "gfpgan_1.4"; None = no enhancer stage
    face_enhancer_blend: int = 80
    face_enhancer_weight: float = 0.5
    face_mask_types: tuple[str, ...] = ("box",)
    face_mask_blur: float = 0.3
    face_mask_padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    face_mask_areas: tuple[str, ...] = MASK_AREAS
    face_mask_regions: tuple[str, ...] = MASK_REGIONS
    face_occluder_model: str = "xseg_1"
    face_parser_model: str = "bisenet_resnet_34"

    def __post_init__(self) -> None:
        if isinstance(self.reference_face_distance, str):  # a manifest cell or a config string
            try:
                object.__setattr__(self, "reference_face_distance", float(self.reference_face_distance))
            except ValueError:
                raise InputError(f"--reference-face-distance {self.reference_face_distance}: not a number") from None
        if self.face_tracking not in ("on", "off"):
            raise InputError(f"--face-tracking {self.face_tracking}: choose on or off")
        for flag, value in (("--face-track-gap", self.face_track_gap), ("--face-track-smoothing",
                                                                          self.face_track_smoothing)):
            if isinstance(value, str):  # a manifest cell
                try:
                    value = int(value)
                except ValueError:
                    raise InputError(f"{flag} {value}: not a whole number") from None
                object.__setattr__(self, flag[2:].replace("-", "_"), value)
            if value < 0:
                raise InputError(f"{flag} {value}: must be 0 or more")
        if self.face_selector_gender not in (None, *SELECTOR_GENDERS):
            raise InputError(f"--face-selector-gender {self.face_selector_gender}: choose from "
                             f"{', '.join(SELECTOR_GENDERS)}")
        if self.face_selector_race not in (None, *SELECTOR_RACES):
            raise InputError(f"--face-selector-race {self.face_selector_race}: choose from "
                             f"{', '.join(SELECTOR_RACES)}")
        for flag, age in (("--face-selector-age-start", self.face_selector_age_start),
                          ("--face-selector-age-end", self.face_selector_age_end)):
            if age is not None and not 0 <= age <= 100:
                raise InputError(f"{flag} {age}: must be 0..100")

    @property
    def reference_distance(self) -> float:
        """The reference-mode threshold: the option when given, else the pack's default (the value keeps
        the meaning of the pack's distance, see REFERENCE_DISTANCES)."""
        if self.reference_face_distance is not None:
            return self.reference_face_distance
        if self.pack not in REFERENCE_DISTANCES:
            raise InputError(f"--pack {self.pack}: choose from {', '.join(PACKS)}")
        return REFERENCE_DISTANCES[self.pack].default

    def check_pack_supports_filters(self) -> None:
        """Checked when the analyser loads, not at construction: a config file may set the pack after
        the flags were parsed."""
        if self.pack == "builtin" and self.selector_filter_flags():
            raise InputError(f"{self.selector_filter_flags()[0]}: the builtin pack has no age/gender/race "
                             "classifier; use --pack facefusion")

    def selector_filter_flags(self) -> list[str]:
        """The FairFace filter flags that are set (they need the classifier)."""
        values = {"--face-selector-age-start": self.face_selector_age_start,
                  "--face-selector-age-end": self.face_selector_age_end,
                  "--face-selector-gender": self.face_selector_gender,
                  "--face-selector-race": self.face_selector_race}
        return [flag for flag, value in values.items() if value is not None]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FaceOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown face options: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _padding(values: list[int]) -> tuple[int, int, int, int]:
    # FaceFusion: 1-4 values, CSS order top right bottom left
    v = list(values)
    if len(v) == 1:
        v = v * 4
    elif len(v) == 2:
        v = [v[0], v[1], v[0], v[1]]
    elif len(v) == 3:
        v = [v[0], v[1], v[2], v[1]]
    return tuple(int(x) for x in v[:4])  # type: ignore[return-value]


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    """FaceFusion's face flags, each with a one-line help that shows its default (`%(default)s`)."""
    d = FaceOptions()
    model = "NAME[=PATH]"
    g = parser.add_argument_group("face options (FaceFusion names and defaults; a model is a FaceFusion name, or "
                                  "NAME=PATH for a private model with that name's inputs and outputs)")
    g.add_argument("--pack", choices=PACKS, default=d.pack,
                   help="builtin: dlib + classical swap, no download; facefusion: FaceFusion's ONNX models "
                        "(default: %(default)s)")
    g.add_argument("--face-detector-model", default=d.face_detector_model, metavar=model,
                   help="face detector: yolo_face, retinaface, scrfd, yunet or many; builtin pack: hog for dlib's "
                        "HOG, any other name for its YuNet (libfacedetection) (default: %(default)s)")
    g.add_argument("--face-detector-size", type=int, default=d.face_detector_size, metavar="PX",
                   help="square input size the detector sees the frame at (default: %(default)s)")
    g.add_argument("--face-detector-score", type=float, default=d.face_detector_score, metavar="0..1",
                   help="minimum detection confidence (default: %(default)s)")
    g.add_argument("--face-detector-angles", type=int, nargs="+", default=list(d.face_detector_angles),
                   choices=[0, 90, 180, 270], metavar="DEG",
                   help="also detect in the frame turned by these angles: 0 90 180 270 (default: %(default)s)")
    g.add_argument("--face-detector-margin", type=int, nargs="+", default=list(d.face_detector_margin),
                   metavar="PERCENT", help="zero padding before detection, 1-4 values, top right bottom left "
                                           "(default: %(default)s)")
    g.add_argument("--face-detector-upsample", type=int, default=d.face_detector_upsample, metavar="N",
                   help="builtin pack, hog detector: upsampling steps; each halves the smallest face found (~80 px at 0) "
                        "and costs ~4x the time (default: %(default)s)")
    g.add_argument("--face-landmarker-model", default=d.face_landmarker_model, metavar=model,
                   help="68-point landmarker: 2dfan4, peppa_wutz or many (default: %(default)s)")
    g.add_argument("--face-landmarker-score", type=float, default=d.face_landmarker_score, metavar="0..1",
                   help="use the 68 points only above this score, else the detector's 5; 0 turns the landmarker "
                        "off (default: %(default)s)")
    g.add_argument("--face-recognizer-model", default=d.face_recognizer_model, metavar=model,
                   help="identity embedding for reference matching and the swap (default: %(default)s)")
    g.add_argument("--face-selector-mode", choices=SELECTOR_MODES, default=d.face_selector_mode,
                   help="which faces to swap: many: all; one: the first in --face-selector-order; reference: "
                        "the faces that match the reference face (default: %(default)s)")
    g.add_argument("--face-selector-order", choices=SELECTOR_ORDERS, default=d.face_selector_order,
                   help="order of the faces in a frame, for 'one' and for --reference-face-position "
                        "(default: %(default)s)")
    g.add_argument("--face-selector-age-start", type=int, default=None, choices=range(101), metavar="0..100",
                   help="keep faces FairFace puts at this age or older (facefusion pack) (default: off)")
    g.add_argument("--face-selector-age-end", type=int, default=None, choices=range(101), metavar="0..100",
                   help="keep faces FairFace puts at this age or younger (facefusion pack) (default: off)")
    g.add_argument("--face-selector-gender", choices=SELECTOR_GENDERS, default=None,
                   help="keep faces FairFace classifies so; auto: the largest source face's gender (default: off)")
    g.add_argument("--face-selector-race", choices=SELECTOR_RACES, default=None,
                   help="keep faces FairFace classifies so; auto: the largest source face's race (default: off)")
    g.add_argument("--face-classifier-model", default=d.face_classifier_model, metavar=model,
                   help="age/gender/race classifier for the selector filters (default: %(default)s)")
    g.add_argument("--reference-face-position", type=int, default=d.reference_face_position, metavar="N",
                   help="reference mode: the reference face is the N-th face (from 0) of the reference frame or "
                        "--reference-face-image, counted in --face-selector-order among the faces the "
                        "age/gender/race filters keep (the numbers `ffray faces` shows); past the last face "
                        "means the last (default: %(default)s)")
    distances = ", ".join(f"{pack} {scale.default:g}" for pack, scale in REFERENCE_DISTANCES.items())
    meanings = "; ".join(f"{pack}: {scale.meaning}" for pack, scale in REFERENCE_DISTANCES.items())
    g.add_argument("--reference-face-distance", type=float, default=None, metavar="DISTANCE",
                   help="reference mode: a face is swapped when its identity distance to the reference face is "
                        f"below this (`ffray faces` shows each face's). The scale is the pack's: {meanings} "
                        f"(default: the pack's: {distances})")
    g.add_argument("--reference-frame-number", type=int, default=d.reference_frame_number, metavar="N",
                   help="reference mode: the video frame (from 0, in presentation order, as `ffray faces --frame` "
                        "counts) the reference face is taken from; unused with --reference-face-image and for "
                        "image targets, whose own faces are the reference faces (default: %(default)s)")
    g.add_argument("--reference-face-image", default=None, metavar="IMG",
                   help="reference mode: take the reference face from this image instead of a frame, the face at "
                        "--reference-face-position (default position 0 in order large-small: its largest) "
                        "(default: off)")
    g.add_argument("--face-tracking", choices=("on", "off"), default=d.face_tracking,
                   help="videos: follow each face from frame to frame and decide per track, so a chosen face stays "
                        "swapped through blur and missed detections; off: FaceFusion's per-frame selection "
                        "exactly (default: %(default)s)")
    g.add_argument("--face-track-gap", type=int, default=d.face_track_gap, metavar="N",
                   help="frames a tracked face may go undetected and still be swapped, its box and landmarks "
                        "interpolated (default: %(default)s)")
    g.add_argument("--face-track-smoothing", type=int, default=d.face_track_smoothing, metavar="N",
                   help="average a tracked face's landmarks over +-N frames against detector jitter; 0: none "
                        "(default: %(default)s)")
    g.add_argument("--face-swapper-model", "--swapper", dest="face_swapper_model", default=d.face_swapper_model,
                   metavar=model, help="face swapper (default: %(default)s)")
    g.add_argument("--face-swapper-pixel-boost", type=int, default=None, metavar="PX",
                   help="swap at this crop size, a whole multiple of the model's own, tiled through the model "
                        "(default: the model's size)")
    g.add_argument("--face-swapper-weight", type=float, default=d.face_swapper_weight, metavar="0..1",
                   help="how much of the source identity goes in, for the swappers that take a weight "
                        "(default: %(default)s)")
    g.add_argument("--face-enhancer-model", "--enhancer", dest="face_enhancer_model", default=None,
                   metavar=model, help="enable the face enhancer with this model, e.g. gfpgan_1.4 (default: off)")
    g.add_argument("--face-enhancer-blend", type=int, default=d.face_enhancer_blend, metavar="0..100",
                   help="percent of the enhanced face blended over the swapped one (default: %(default)s)")
    g.add_argument("--face-enhancer-weight", type=float, default=d.face_enhancer_weight, metavar="0..1",
                   help="fidelity weight for the enhancers that take one, e.g. codeformer (default: %(default)s)")
    g.add_argument("--face-mask-types", nargs="+", choices=MASK_TYPES, default=list(d.face_mask_types),
                   metavar="TYPE", help="masks combined (by minimum) for the paste-back: box, occlusion, area, "
                                        "region (default: %(default)s)")
    g.add_argument("--face-mask-blur", type=float, default=d.face_mask_blur, metavar="0..1",
                   help="box mask edge blur, as a share of the crop (default: %(default)s)")
    g.add_argument("--face-mask-padding", type=int, nargs="+", default=list(d.face_mask_padding),
                   metavar="PERCENT", help="box mask padding, 1-4 values, top right bottom left "
                                           "(default: %(default)s)")
    g.add_argument("--face-mask-areas", nargs="+", choices=MASK_AREAS, default=list(d.face_mask_areas),
                   metavar="AREA", help="area mask: upper-face, lower-face, mouth (default: all)")
    g.add_argument("--face-mask-regions", nargs="+", choices=MASK_REGIONS, default=list(d.face_mask_regions),
                   metavar="REGION", help=f"region mask (face parser): {', '.join(MASK_REGIONS)} (default: all)")
    g.add_argument("--face-occluder-model", default=d.face_occluder_model, metavar=model,
                   help="occlusion mask model (default: %(default)s)")
    g.add_argument("--face-parser-model", default=d.face_parser_model, metavar=model,
                   help="region mask model (default: %(default)s)")


def face_options_from_args(args: argparse.Namespace) -> FaceOptions:
    values = {}
    for f in fields(FaceOptions):
        if not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        if f.name in ("face_mask_padding", "face_detector_margin"):
            v = _padding(v)
        elif isinstance(v, list):
            v = tuple(v)
        values[f.name] = v
    return FaceOptions(**values)
