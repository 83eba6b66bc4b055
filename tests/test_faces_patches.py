"""Face patches (what the pipeline moves instead of frames) give bit for bit the frames the face functions
give on whole frames: real YuNet detections on video_01, faces cut by the frame edge, quarter turns,
pixel boost, identity balancing (the swapper embeds targets), occlusion and area masks, the builtin pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import asset
from contract_models import build
from pipeline_helpers import VIDEO, YUNET, contract_face_options

from ffray.faces.image import read_image
from ffray.faces.options import FaceOptions
from ffray.faces.packs import face_warps, load_analyser, load_enhancer, load_swapper
from ffray.faces.patches import Canvas, Patches, apply_patches, cut_patches, patch_boxes, patches_of_images
from ffray.media import decode_all
from ffray.pipeline.stages import coded_box, to_coded, to_display


@pytest.fixture(scope="module")
def frames():
    images = [image for _, image in decode_all(str(asset(VIDEO)))]
    picked = images[0:90:15]
    # faces cut by the frame edges: the footprint clips where the whole-frame warps replicate the border
    picked += [np.ascontiguousarray(images[30][40:, 150:]), np.ascontiguousarray(images[60][:300, :560])]
    return picked


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def _options(models: Path, case: str) -> FaceOptions:
    yunet = asset(YUNET)
    if case == "builtin":
        return FaceOptions(pack="builtin", face_selector_mode="many", face_enhancer_model="builtin")
    extra = {
        "default": {},
        "boost_weight": {"face_swapper_pixel_boost": 256, "face_swapper_weight": 0.8},
        "masks": {"face_mask_types": ("box", "occlusion", "area"), "face_occluder_model": build("xseg_1", models),
                  "face_landmarker_model": build("2dfan4", models), "face_landmarker_score": 0.2,
                  "face_enhancer_model": build("codeformer", models)},
    }[case]
    return contract_face_options(models, yunet, enhancer=True, **extra)


def _whole_frames(frames, faces, swapper, enhancer, source):
    out = swapper.swap(frames, faces, source)
    return enhancer.enhance(out, faces) if enhancer else out


def _through_patches(frames, faces, swapper, enhancer, source, options, batch: int = 3):
    """The pipeline's path: cut patches, swap and enhance them on canvases (model batches of `batch`
    frames, one canvas reused), paste them onto the untouched frames."""
    warps = face_warps(options)
    patches = cut_patches(frames, [patch_boxes(f.shape, fs, warps) for f, fs in zip(frames, faces, strict=True)])
    canvas = Canvas()
    for apply in (lambda b, f: swapper.swap(b, f, source, inplace=True),
                  lambda b, f: enhancer.enhance(b, f, inplace=True)):
        if apply is None:
            continue
        pixels = np.empty_like(patches.pixels)
        with_faces = [j for j, f in enumerate(faces) if f]
        for start in range(0, len(with_faces), batch):
            picked = with_faces[start:start + batch]
            # frames differ in size here (edge crops): one canvas shape per frame
            for j in picked:
                buffers = canvas.load(frames[j].shape[:2], patches, [j])
                apply(buffers, [faces[j]])
                canvas.store(buffers, patches, [j], pixels)
        patches = patches.with_pixels(pixels)
    out = [f.copy() for f in frames]
    for j, frame in enumerate(out):
        apply_patches(frame, patches, j, lambda image, box: (image, box))
    return out, patches


@pytest.mark.parametrize("case", ["default", "boost_weight", "masks", "builtin"])
def test_patch_space_equals_whole_frames_bit_for_bit(frames, models, case):
    options = _options(models, case)
    if case == "masks":  # area masks need 68 points: the contract fan_68_5 stands in for the registry's
        from ffray.faces.onnx_pack import OnnxFaceAnalyser

        analyser = OnnxFaceAnalyser(options, fan_68_5=build("fan_68_5", models))
    else:
        analyser = load_analyser(options)
    swapper, enhancer = load_swapper(options), load_enhancer(options)
    faces = analyser.analyse(frames)
    assert sum(len(f) for f in faces) >= 2 * len(frames) - 4, "real detections on every frame"
    image = read_image(asset("media/meds-aa-S001-01.jpg"))
    source = swapper.prepare_source([image], [max(analyser.analyse([image], embed=True)[0], key=lambda f: f.area)])

    expected = _whole_frames(frames, faces, swapper, enhancer, source)
    got, patches = _through_patches(frames, faces, swapper, enhancer, source, options)
    for j, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert np.array_equal(e, g), f"frame {j}: {int((e != g).any(axis=2).sum())} pixels differ"
        assert not np.array_equal(e, frames[j]), "the faces really changed"
    # patches hold far less than the frames they come from
    assert patches.pixels.nbytes < 0.6 * sum(f.nbytes for f in frames)


def test_patches_of_quarter_turned_frames_land_in_the_coded_frame(frames, models):
    options = _options(models, "default")
    analyser = load_analyser(options)
    coded = np.ascontiguousarray(np.rot90(frames[0], 1))  # a video coded a quarter turn off
    upright = to_display(coded, 90)
    assert np.array_equal(upright, frames[0])
    faces = analyser.analyse([upright])
    patches = cut_patches([upright], [patch_boxes(upright.shape, faces[0], face_warps(options))])
    assert len(patches) == len(faces[0]) >= 3
    marked = Patches(patches.frame, patches.box, np.full_like(patches.pixels, 7))
    out = coded.copy()
    apply_patches(out, marked, 0, lambda image, box: (to_coded(image, 90), coded_box(box, 90, coded.shape[:2])))
    expected = frames[0].copy()
    apply_patches(expected, marked, 0, lambda image, box: (image, box))
    assert np.array_equal(to_display(out, 90), expected)


def test_canvas_forgets_earlier_chunks(frames, models):
    """A canvas reused for another chunk gives the same bytes as a fresh one (retries are identical)."""
    options = _options(models, "default")
    analyser, swapper = load_analyser(options), load_swapper(options)
    image = read_image(asset("media/meds-aa-S001-01.jpg"))
    source = swapper.prepare_source([image], [analyser.analyse([image], embed=True)[0][0]])
    faces = analyser.analyse(frames[:2])
    warps = face_warps(options)
    patches = [cut_patches([f], [patch_boxes(f.shape, fs, warps)]) for f, fs in zip(frames[:2], faces, strict=True)]
    shape = frames[0].shape[:2]

    def swapped(canvas, k):
        pixels = np.empty_like(patches[k].pixels)
        buffers = canvas.load(shape, patches[k], [0])
        swapper.swap(buffers, [faces[k]], source, inplace=True)
        canvas.store(buffers, patches[k], [0], pixels)
        return pixels

    used = Canvas()
    swapped(used, 0)
    assert np.array_equal(swapped(used, 1), swapped(Canvas(), 1))
    assert not np.any(used._buffers[shape][0])  # every written box zeroed again


@pytest.mark.parametrize("turned", [False, True])
def test_patches_of_faces_chosen_before_decoding_equal_whole_frame_patches(tmp_path, turned):
    """The detector stage with the faces already chosen (the driver's tracked selection, or a cached
    template analysis) converts only the patch boxes to BGR: its patches are the bytes the whole-frame
    path cuts, upright and quarter-turned; a chunk with no chosen face is not decoded at all."""
    from pipeline_helpers import astronaut_clip

    from ffray.media import plan_chunks, probe
    from ffray.pipeline.analysis_cache import FaceStore
    from ffray.pipeline.datasource import ChunkTask, chunk_row
    from ffray.pipeline.stages import JobTable, VideoJob, detect_rows, faces_of

    clip = astronaut_clip(tmp_path / "clip.mp4", 6, turned=turned)
    info = probe(str(clip))
    options = FaceOptions(pack="builtin", face_selector_mode="one", face_enhancer_model="builtin")
    table = JobTable(job_id="j", face_options=options.to_dict(),
                     videos={"v": VideoJob("v", str(clip), info.rotation, "s", info=info)}, sources={},
                     model_batch={"detector": 4})
    (chunk,) = plan_chunks(info, 6)
    batch = chunk_row(ChunkTask("v", str(clip), chunk, 0))
    analyser = load_analyser(table.options, table.execution_options("detector"), table.store())
    whole = detect_rows(batch, analyser, table)
    assert str(whole["error"][0]) == "" and int(whole["faces"][0]) == 6

    store = FaceStore(str(tmp_path / "selection"))
    store.store("", chunk.id, faces_of(whole, 0, 6))
    table.selections["v"] = store.folder
    chosen = detect_rows(batch, analyser, table)
    assert str(chosen["error"][0]) == "" and int(chosen["detector_cache_hits"][0]) == 1
    for name in (*Patches.COLUMNS, "face_frame", "face_landmark_5_68"):
        assert np.array_equal(np.asarray(chosen[name][0]), np.asarray(whole[name][0])), name

    store.store("", chunk.id, [[] for _ in range(6)])  # nobody to swap in this chunk
    none = detect_rows(batch, analyser, table)
    assert int(none["faces"][0]) == 0 and len(np.asarray(none["patch_frame"][0])) == 0
    assert float(none["detector_decode_s"][0]) == 0.0


def test_changed_flags_name_exactly_the_pixels_a_stage_changed():
    """Patches of odd sizes (bit runs that start mid-byte): each patch's mask is its own pixels' flags,
    and flags add up over stages."""
    rng = np.random.default_rng(3)
    boxes = [[(0, 0, 3, 5), (10, 4, 17, 7)], [(2, 2, 13, 11)]]
    images = [[rng.integers(0, 255, (y2 - y1, x2 - x1, 3), dtype=np.uint8) for x1, y1, x2, y2 in fb] for fb in boxes]
    patches = patches_of_images(images, boxes)
    truth = [np.zeros(im.shape[:2], bool) for fb in images for im in fb]
    for stage in range(2):
        pixels = patches.pixels.copy()
        offsets = patches.offsets()
        for k, mask in enumerate(truth):
            hit = rng.random(mask.shape) < 0.2
            hit[0, 0] = hit[-1, -1] = stage == 0  # first and last pixel of every patch, where runs start and end
            channel = rng.integers(0, 3)
            view = pixels[offsets[k]:offsets[k + 1]].reshape(*mask.shape, 3)
            view[..., channel][hit] ^= 1  # one channel changed is a changed pixel
            mask |= hit
        patches = patches.with_pixels(pixels)
        for k, mask in enumerate(truth):
            assert np.array_equal(patches.changed_mask(k), mask), (stage, k)
