"""Pipeline pieces that need no Ray cluster: configuration, ledger, progress, orientation, stage plumbing,
manifests."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from ffray.errors import InputError
from ffray.pipeline.config import PipelineConfig, StageConfig, add_pipeline_arguments, load_config_file
from ffray.pipeline.ledger import ChunkRecord, VideoLedger
from ffray.pipeline.progress import Progress
from ffray.pipeline.stages import column, run_stage, segment_path, to_coded, to_display


def _parse(argv):
    from ffray.faces.options import add_face_arguments

    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    add_face_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_config_file_then_flags(tmp_path, suffix):
    from ffray.cli.swap import resolve_options

    data = {"pipeline": {"chunk_frames": 24, "swapper": {"max_actors": 3, "num_gpus": 0.5}},
            "face": {"face_selector_mode": "many", "face_detector_score": 0.7}}
    path = tmp_path / f"cfg{suffix}"
    if suffix == ".toml":
        path.write_text('[pipeline]\nchunk_frames = 24\n[pipeline.swapper]\nmax_actors = 3\nnum_gpus = 0.5\n'
                        '[face]\nface_selector_mode = "many"\nface_detector_score = 0.7\n')
    elif suffix == ".yaml":
        import yaml

        path.write_text(yaml.safe_dump(data))
    else:
        path.write_text(json.dumps(data))
    args = _parse(["--config", str(path), "--swapper-actors", "2-4", "--face-detector-score", "0.6"])
    options, config = resolve_options(args)
    assert config.chunk_frames == 24  # from the file
    assert config.swapper == StageConfig(min_actors=2, max_actors=4, num_gpus=0.5)  # flag wins on the pool
    assert options.face_selector_mode == "many"  # from the file
    assert options.face_detector_score == 0.6  # the flag wins


def test_config_rejects_unknown_and_bad_values(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline]\nchunk_frame = 3\n")
    with pytest.raises(InputError, match="chunk_frame"):
        PipelineConfig.from_dict(load_config_file(bad)["pipeline"])
    with pytest.raises(InputError, match="swapper-actors"):
        PipelineConfig(swapper=StageConfig(min_actors=3, max_actors=2)).validate()
    with pytest.raises(InputError, match="cfg.txt"):
        load_config_file(tmp_path / "cfg.txt")


def test_auto_gpu_shares_follow_the_cluster():
    cfg = PipelineConfig()
    on_gpus = cfg.resolved(cluster_gpus=4)
    assert (on_gpus.detector.num_gpus, on_gpus.swapper.num_gpus, on_gpus.enhancer.num_gpus) == (0.25, 0.5, 0.25)
    assert on_gpus.writer.num_gpus == 0
    on_cpus = cfg.resolved(cluster_gpus=0)
    assert all(on_cpus.stage(s).num_gpus == 0 for s in ("detector", "swapper", "enhancer", "writer"))
    assert on_gpus.providers_for(on_gpus.swapper) == ("cuda", "cpu")
    # auto pool maximum: 8 GPUs hold 8 sets of 0.25 + 0.5 + 0.25; 32 CPUs hold 6 sets of 1+1+1+1+1 CPUs
    big = cfg.resolved(cluster_gpus=8, cluster_cpus=32)
    assert (big.detector.max_actors, big.swapper.max_actors, big.enhancer.max_actors) == (8, 8, 8)
    assert big.writer.max_actors == 6
    # without the enhancer the set is 0.75 GPU: 10 of them fit in 8 GPUs
    lean = cfg.resolved(cluster_gpus=8, cluster_cpus=32, stages=("detector", "swapper", "writer"))
    assert lean.swapper.max_actors == 10
    assert cfg.resolved(cluster_gpus=0, cluster_cpus=2).writer.max_actors == 1  # never below min_actors
    fixed = PipelineConfig(swapper=StageConfig(min_actors=2, max_actors=3)).resolved(cluster_gpus=8, cluster_cpus=32)
    assert fixed.swapper.max_actors == 3  # an explicit size is kept
    assert on_cpus.providers_for(on_cpus.swapper) == ("cpu",)


def _record(ledger, i, data: bytes):
    segment = ledger.segment_uri(i, f"c{i}", ".mp4")
    Path(segment).parent.mkdir(parents=True, exist_ok=True)
    Path(segment).write_bytes(data)
    return ChunkRecord(video_key="k", chunk_id=f"c{i}", chunk_index=i, start=i * 10, end=i * 10 + 10,
                       segment=segment, sha256=hashlib.sha256(data).hexdigest(), size=len(data), frames=10,
                       faces=2, seconds=0.5)


def test_ledger_keeps_one_record_per_chunk_and_verifies_segments(tmp_path):
    video_dir = tmp_path / "work" / "videos" / "k"
    ledger = VideoLedger(str(video_dir))
    assert ledger.records == {}
    records = [_record(ledger, i, f"segment {i}".encode()) for i in range(3)]
    for rec in records:
        ledger.append(rec)
    (video_dir / "done" / "000009-c9.json").write_text('{"video_key": "k", "chunk_id": "c9", "chu')  # not a record
    again = VideoLedger(str(video_dir))
    assert sorted(again.records) == ["c0", "c1", "c2"]
    assert again.verified("c0") == records[0]
    assert again.verified("c9") is None
    Path(records[1].segment).unlink()
    assert again.verified("c1") is None  # segment gone
    Path(records[2].segment).write_bytes(b"segment 2, changed")
    assert again.verified("c2") is None  # content no longer matches
    # records name their segment relative to the video folder: a moved work dir still resumes
    moved = tmp_path / "moved"
    (tmp_path / "work").rename(moved)
    assert VideoLedger(str(moved / "videos" / "k")).verified("c0").segment == str(moved / "videos/k/segments/000000-c0.mp4")


def test_storage_helpers(tmp_path, monkeypatch):
    from ffray.pipeline.storage import join, work_root, write_json_atomic

    assert work_root("s3://bucket/work/") == "s3://bucket/work"
    assert work_root("rel") == str(tmp_path.cwd() / "rel")
    assert work_root("file:///srv/work") == "/srv/work"
    assert join("s3://b/w/", "videos", "k") == "s3://b/w/videos/k"
    write_json_atomic(tmp_path / "a" / "r.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]  # no temporary left behind


def test_rotation_round_trip_and_direction():
    coded = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    coded[0, 0] = 255  # top-left of the coded frame
    for rotation in (0, 90, 180, 270):
        shown = to_display(coded, rotation)
        assert np.array_equal(to_coded(shown, rotation), coded)
    # 90 clockwise: the coded top-left lands at the top-right of the upright picture
    shown = to_display(coded, 90)
    assert shown.shape == (3, 2, 3) and (shown[0, -1] == 255).all()


def test_run_stage_turns_a_failing_chunk_into_an_error_row():
    batch = {"video_id": np.array(["a", "b"], dtype=object), "chunk_id": np.array(["c1", "c2"], dtype=object),
             "error": np.array(["", ""], dtype=object), "frames": np.zeros((2, 3, 4, 4, 3), np.uint8)}

    def per_row(i):
        if i == 1:
            raise ValueError("broken chunk")
        return {"frames": np.ones((3, 4, 4, 3), np.uint8)}

    out = run_stage("swapper", batch, per_row, {"m": "abc"})
    assert out["error"][0] == "" and out["error"][1].startswith("internal error ValueError: broken chunk at ")
    assert list(out["error_kind"]) == ["", "processing"]
    assert out["frames"][0].max() == 1 and out["frames"][1].max() == 0  # the failed row passes through
    assert list(out["swapper_in"]) == [int(sum(np.asarray(v[i]).nbytes for v in batch.values())) for i in range(2)]
    assert out["swapper_calls"].sum() == pytest.approx(1.0)
    assert json.loads(out["swapper_models"][0]) == {"m": "abc"}


def test_chunk_errors_name_the_file_first_without_class_names():
    from ffray.errors import MediaError, ModelError
    from ffray.pipeline.driver import chunk_failure

    batch = {"chunk_id": np.array(["c1", "c2", "c3"], dtype=object), "error": np.array(["", "", ""], dtype=object),
             "error_kind": np.array(["", "", ""], dtype=object)}
    failures = {0: MediaError("/v/a.mp4", "corrupt video data"), 1: ModelError("swapper.onnx: not an ONNX model")}

    def per_row(i):
        if i in failures:
            raise failures[i]
        return {}

    out = run_stage("detector", batch, per_row, {})
    assert list(out["error_kind"]) == ["input", "model", ""]
    row = {"error": out["error"][0], "chunk_index": 3, "start": 24, "end": 31}
    assert chunk_failure("/v/a.mp4", row) == "/v/a.mp4: chunk 3 (frames 24-30): corrupt video data"
    row["error"] = out["error"][1]
    assert chunk_failure("/v/a.mp4", row) == "/v/a.mp4: chunk 3 (frames 24-30): swapper.onnx: not an ONNX model"


def test_ragged_columns_and_segment_names():
    ragged = column([np.zeros((2, 4)), np.zeros((0, 4))])
    assert ragged.dtype == object and ragged[1].shape == (0, 4)
    assert column([np.zeros(3), np.ones(3)]).shape == (2, 3)
    assert segment_path("/w/seg/", 7, "ab:cd", ".mp4") == "/w/seg/000007-ab_cd.mp4"


def test_progress_lines_in_a_log():
    out = io.StringIO()
    progress = Progress(stream=out, interval=0)
    progress.add("v1", "one.mp4", 100, resumed=20)
    progress.add("v2", "two.mp4", 50)
    progress.advance("v1", 30)
    progress.set_state("v1", "done", "/out/one.mp4")
    text = out.getvalue()
    assert "[50/150 frames" in text and "one.mp4: done /out/one.mp4" in text
    quiet = io.StringIO()
    q = Progress(stream=quiet, quiet=True)
    q.add("v", "x", 10)
    q.advance("v", 5)
    q.set_state("v", "failed", "why")
    assert quiet.getvalue() == ""


def test_manifest_csv_and_jsonl(tmp_path):
    from ffray.cli.swap import _row_options, read_manifest
    from ffray.faces.options import FaceOptions

    (tmp_path / "m.csv").write_text("source,target,output,face_selector_mode,face_mask_padding\n"
                                    "a.jpg;b.jpg,in.mp4,out.mp4,many,1 2 3 4\n"
                                    ",in2.mp4,out2.mp4,,\n")
    rows = read_manifest(str(tmp_path / "m.csv"))
    req, extra, err = rows[0]
    assert err is None and req.sources == (str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))
    opts = _row_options(FaceOptions(), extra, "row")
    assert opts.face_selector_mode == "many" and opts.face_mask_padding == (1, 2, 3, 4)
    assert rows[1][0] is None and "needs source" in rows[1][2]
    (tmp_path / "m.jsonl").write_text(json.dumps({"source": ["/abs/a.jpg"], "target": "s3://b/in.mp4",
                                                  "output": "o.mp4", "options": {"face_selector_mode": "one"}}) + "\n")
    (req, extra, err), = read_manifest(str(tmp_path / "m.jsonl"))
    assert req.target == "s3://b/in.mp4" and req.sources == ("/abs/a.jpg",) and extra == {"face_selector_mode": "one"}
    with pytest.raises(InputError, match="unknown face option"):
        _row_options(FaceOptions(), {"face_selector_mood": "x"}, "row 1")
    (tmp_path / "bad.csv").write_text("src,target\n")
    with pytest.raises(InputError, match="lacks column"):
        read_manifest(str(tmp_path / "bad.csv"))


def test_gpu_stage_on_a_cluster_without_gpus_fails_fast():
    from ffray.pipeline.driver import check_placeable

    cpu_node, gpu_node = {"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}
    config = PipelineConfig(swapper=StageConfig(num_gpus=0.5)).resolved(cluster_gpus=0)
    with pytest.raises(InputError, match="--swapper-gpus 0.5: the Ray cluster has 0 GPUs"):
        check_placeable(config, [cpu_node], with_enhancer=False)
    check_placeable(PipelineConfig().resolved(cluster_gpus=0), [cpu_node], with_enhancer=True)  # auto -> CPU: fine
    check_placeable(PipelineConfig().resolved(cluster_gpus=1), [gpu_node], with_enhancer=True)


def test_an_actor_no_single_node_can_hold_fails_fast():
    """Pools start at once without waiting for each other, so an actor that fits no node is refused
    before the job starts, not waited for: two half-GPU nodes cannot hold a whole-GPU swapper, and a
    6-CPU enhancer needs a node with 6 CPUs, wherever the GPUs are."""
    from ffray.pipeline.driver import check_placeable

    halves = [{"CPU": 8.0, "GPU": 0.5}, {"CPU": 8.0, "GPU": 0.5}]
    config = PipelineConfig(swapper=StageConfig(num_gpus=1.0, num_cpus=1.0)).resolved(cluster_gpus=1)
    with pytest.raises(InputError, match=r"^--swapper-cpus 1: no node of the Ray cluster can hold a swapper actor "
                                         r"\(1 CPUs and a 1 GPU share\); the largest has 8 CPUs and 0.5 GPUs$"):
        check_placeable(config, halves, with_enhancer=False)
    config = PipelineConfig(enhancer=StageConfig(num_cpus=6.0, num_gpus=0.0)).resolved(cluster_gpus=1)
    with pytest.raises(InputError, match="--enhancer-cpus 6: .* the largest has 4 CPUs$"):
        check_placeable(config, [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0}], with_enhancer=True)
    check_placeable(config, [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 6.0}], with_enhancer=True)


def test_demo_refuses_an_object_store_work_dir_for_its_local_files(capsys):
    from ffray.cli import main

    assert main(["demo", "--work-dir", "s3://bucket/work", "--quiet"]) == 2
    assert "give a local --work-dir" in capsys.readouterr().err
