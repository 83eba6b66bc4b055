"""Checks before the first frame (ffray.pipeline.preflight), batch isolation and the run report.

Bad inputs are refused by `ffray swap` in the driver, in one line, before Ray starts (fast); one Ray
test runs a batch with one bad row and a rerun whose report cannot be written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import asset
from contract_models import build
from onnx import TensorProto, helper
from pipeline_helpers import YUNET, ffray_cmd, run_env

from ffray.errors import InputError
from ffray.faces.options import FaceOptions
from ffray.pipeline import preflight

SOURCE = "media/meds-aa-S001-01.jpg"


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("ffray: error: "), lines[0]
    return lines[0]


def _wrong_contract_swapper(path: Path) -> Path:
    """A valid ONNX graph with inswapper_128's tensor names but 64x64 images and no emap."""
    nodes = [helper.make_node("Identity", ["target"], ["output"])]
    graph = helper.make_graph(
        nodes, "wrong", [helper.make_tensor_value_info("target", TensorProto.FLOAT, ["b", 3, 64, 64]),
                         helper.make_tensor_value_info("source", TensorProto.FLOAT, ["b", 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _facefusion_args(tmp: Path, swapper: str) -> list[str]:
    return ["--pack", "facefusion", "--face-detector-model", f"yunet={asset(YUNET)}",
            "--face-landmarker-score", "0", "--face-selector-mode", "many",
            "--face-recognizer-model", build("arcface_w600k_r50", tmp / "models"),
            "--face-swapper-model", swapper]


def _case(name: str, tmp: Path) -> tuple[list[str], int, str, str]:
    """(extra `ffray swap` arguments, exit code, text the error line names, the problem)"""
    if name == "non-onnx swapper":
        bad = tmp / "swapper.onnx"
        bad.write_text("not a model\n")
        return _facefusion_args(tmp, f"inswapper_128={bad}"), 3, str(bad), "ONNX Runtime cannot load the model"
    if name == "contract-mismatch swapper":
        bad = _wrong_contract_swapper(tmp / "wrong.onnx")
        return _facefusion_args(tmp, f"inswapper_128={bad}"), 3, str(bad), "does not follow the inswapper_128 contract"
    if name == "registry model failing its hash":
        mirror = tmp / "mirror"
        mirror.mkdir()
        (mirror / "yunet_2023_mar.onnx").write_bytes(b"not yunet")  # yunet's sha256 is pinned in the registry
        args = _facefusion_args(tmp, build("inswapper_128", tmp / "models"))
        args[args.index("--face-detector-model") + 1] = "yunet"
        return [*args, "--model-cache", str(tmp / "cache"), "--model-source", str(mirror)], 3, \
            "yunet_2023_mar.onnx", "downloaded file rejected: sha256 is"
    if name == "unknown provider in config":
        cfg = tmp / "cfg.toml"
        cfg.write_text('[pipeline]\nproviders = ["rocm", "cpu"]\n')
        return ["--config", str(cfg)], 2, str(cfg), "unknown execution provider 'rocm'"
    if name == "work dir under a file":
        # root ignores chmod, not ENOTDIR: a path below a regular file cannot be created by anyone
        (tmp / "plain-file").write_text("x")
        return ["--work-dir", str(tmp / "plain-file" / "work")], 2, str(tmp / "plain-file" / "work"), \
            "work dir is not writable"
    if name == "unknown builtin model":
        return ["--pack", "builtin", "--face-swapper-model", "nosuch"], 2, "--face-swapper-model nosuch", \
            "not a known swapper model"
    if name == "missing source image":
        return ["--source", str(tmp / "nosuch.jpg")], 2, str(tmp / "nosuch.jpg"), "source image not found"
    raise AssertionError(name)


CASES = ["non-onnx swapper", "contract-mismatch swapper", "registry model failing its hash",
         "unknown provider in config", "work dir under a file",
         "unknown builtin model", "missing source image"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_in_one_line_before_ray(tmp_path, case):
    extra, code, names, problem = _case(case, tmp_path)
    args = ["swap", "--source", str(asset(SOURCE)), "--target", str(asset("media/h264_aac.mp4")),
            "--output", str(tmp_path / "out.mp4"), "--work-dir", str(tmp_path / "work"), "--quiet", *extra]
    env = {**run_env(), "RAY_TMPDIR": str(tmp_path / "ray")}  # a Ray started here would make this folder
    done = subprocess.run(ffray_cmd(*args), env=env, capture_output=True, text=True, timeout=300)
    line = _one_line_error(done.stderr)
    assert done.returncode == code, done.stderr
    assert line.startswith(f"ffray: error: {names}: ") and problem in line, line
    assert not (tmp_path / "ray").exists()
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "work" / "videos").exists()
    if code == 3:  # a job that failed before it started still has its report
        (report,) = (tmp_path / "work").glob("jobs/*/runs/*/report.json")
        data = json.loads(report.read_text())
        assert data["status"] == "failed" and problem in data["error"]
        assert data["videos"][0]["status"] == "failed" and problem in data["videos"][0]["error"]


def test_batch_with_an_unwritable_work_dir_stops_whole_in_one_line(tmp_path):
    (tmp_path / "plain-file").write_text("x")
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"source,target,output\n{asset(SOURCE)},{asset('media/h264_aac.mp4')},out.mp4\n")
    done = subprocess.run(ffray_cmd("batch", str(manifest), "--work-dir", str(tmp_path / "plain-file" / "w")),
                          env=run_env(), capture_output=True, text=True, timeout=300)
    line = _one_line_error(done.stderr)
    assert done.returncode == 2 and "work dir is not writable" in line


def test_builtin_pack_accepts_builtin_and_facefusion_names_only():
    preflight.check_model_names(FaceOptions(face_enhancer_model="builtin", face_swapper_model="inswapper_128",
                                            face_detector_model="many"))
    preflight.check_model_names(FaceOptions(face_swapper_model="inswapper_128=/any/path.onnx"))
    with pytest.raises(InputError, match=r"--face-enhancer-model gfpgan14: not a known enhancer model "
                                         r"\(did you mean gfpgan_1.4"):
        preflight.check_model_names(FaceOptions(face_enhancer_model="gfpgan14"))
    with pytest.raises(InputError, match="--face-occluder-model bisenet_resnet_34: .* not an occluder"):
        preflight.check_model_names(FaceOptions(face_occluder_model="bisenet_resnet_34"))
    with pytest.raises(InputError, match="--face-swapper-model builtin: not a known swapper"):
        preflight.check_model_names(FaceOptions(pack="facefusion", face_swapper_model="builtin"))


def test_config_providers_are_checked_where_they_are_read(tmp_path):
    from ffray.pipeline.config import PipelineConfig

    assert PipelineConfig.from_dict({"providers": "cuda"}).providers == ("cuda",)  # not ('c', 'u', ...)
    with pytest.raises(InputError, match=r"^cfg.yaml: providers: unknown execution provider 'rocm'"):
        PipelineConfig.from_dict({"providers": ["rocm"]}, where="cfg.yaml")
    with pytest.raises(InputError, match="--providers: unknown execution provider 'gpu'"):
        PipelineConfig(providers=("gpu",)).validate()


def test_write_probe_leaves_nothing_and_finds_what_cannot_be_written(tmp_path):
    (tmp_path / "plain-file").write_text("x")
    assert preflight.probe_writable(str(tmp_path / "new" / "work"), create=True) is None
    assert (tmp_path / "new" / "work").is_dir() and not list((tmp_path / "new" / "work").iterdir())
    assert preflight.probe_writable(str(tmp_path / "absent" / "deeper"), create=False) is None
    assert not (tmp_path / "absent").exists()  # an output folder is made by the writer, not by the probe
    assert "not a directory" in preflight.probe_writable(str(tmp_path / "plain-file" / "out"), create=False)
    assert preflight.probe_writable(str(tmp_path / "plain-file" / "work"), create=True)
    assert preflight.probe_writable("memory://preflight/bucket", create=True) is None
    import fsspec

    assert fsspec.filesystem("memory").find("/preflight") == []  # the probe object is gone


def test_an_unwritable_output_folder_fails_its_request_only(tmp_path):
    from ffray.pipeline.config import PipelineConfig
    from ffray.pipeline.driver import VideoRequest, prepare_job

    (tmp_path / "plain-file").write_text("x")
    source, video = str(asset(SOURCE)), str(asset("media/h264_aac.mp4"))
    requests = [VideoRequest(video, str(tmp_path / "out" / "ok.mp4"), (source,)),
                VideoRequest(video, str(tmp_path / "plain-file" / "bad.mp4"), (source,))]
    job = prepare_job(requests, FaceOptions(face_selector_mode="many"), PipelineConfig(work_dir=str(tmp_path / "w")))
    ok, bad = job.results
    assert ok.status == "pending" and ok.video_key and job.tasks
    assert bad.status == "failed" and bad.error_kind == "input"
    assert bad.error.startswith(f"{tmp_path / 'plain-file' / 'bad.mp4'}: cannot write to the output folder")


def test_report_that_cannot_be_written_is_one_warning(tmp_path, capsys):
    from ffray.pipeline.report import new_run_id, write_reports

    (tmp_path / "plain-file").write_text("x")
    run_id = new_run_id()
    path = write_reports(str(tmp_path / "job"), run_id, {"a": 1}, str(tmp_path / "plain-file" / "r.json"))
    assert path == str(tmp_path / "job" / "runs" / run_id / "report.json")
    assert json.loads(Path(path).read_text()) == json.loads((tmp_path / "job" / "report.json").read_text())
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ffray: warning: {tmp_path / 'plain-file' / 'r.json'}: cannot write the run report")
    assert write_reports(str(tmp_path / "plain-file" / "job"), run_id, {}, None, warn=False) == ""
    assert capsys.readouterr().err == ""
    assert new_run_id() != run_id  # two runs in the same second keep their own folder


def test_model_refs_are_what_the_onnx_pack_loads(tmp_path):
    """Preflight checks exactly the files the stages open (ffray.faces.packs.model_refs)."""
    from ffray.faces.onnx_pack import OnnxFaceAnalyser, OnnxFaceEnhancer, OnnxFaceSwapper
    from ffray.faces.packs import model_refs
    from ffray.models.store import ModelStore, parse_model_ref

    refs = {name: build(name, tmp_path) for name in ("arcface_w600k_r50", "2dfan4", "fairface", "inswapper_128",
                                                     "gfpgan_1.4", "xseg_1", "bisenet_resnet_34", "fan_68_5")}
    options = FaceOptions(
        pack="facefusion", face_detector_model=f"yunet={asset(YUNET)}", face_landmarker_model=refs["2dfan4"],
        face_recognizer_model=refs["arcface_w600k_r50"], face_classifier_model=refs["fairface"],
        face_selector_gender="female", face_swapper_model=refs["inswapper_128"],
        face_enhancer_model=refs["gfpgan_1.4"], face_mask_types=("box", "occlusion", "region"),
        face_occluder_model=refs["xseg_1"], face_parser_model=refs["bisenet_resnet_34"])
    store = ModelStore(cache_dir=tmp_path / "cache")
    analyser = OnnxFaceAnalyser(options, store=store, fan_68_5=refs["fan_68_5"])
    analyser.recognizer  # noqa: B018 -- loaded on first use: source faces always use it
    loaded = set(analyser.model_hashes)
    for component in (OnnxFaceSwapper(options, store=store), OnnxFaceEnhancer(options, store=store)):
        loaded |= set(component.model_hashes)
    assert {parse_model_ref(ref)[0] for _, ref, _ in model_refs(options)} == loaded
    assert model_refs(FaceOptions(pack="builtin")) == []


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_batch_row_with_a_bad_model_fails_alone_and_reports_survive_a_bad_report_path(tmp_path):
    from pipeline_helpers import astronaut_clip, video_frames

    clip = astronaut_clip(tmp_path / "clip.mp4", frames=16)
    bad = tmp_path / "bad-swapper.onnx"
    bad.write_text("not a model\n")
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(
        json.dumps({"source": str(asset(SOURCE)), "target": str(clip), "output": "out/good.mp4"}) + "\n"
        + json.dumps({"source": str(asset(SOURCE)), "target": str(clip), "output": "out/bad.mp4",
                      "options": {"face_swapper_model": f"inswapper_128={bad}"}}) + "\n")
    common = [*_facefusion_args(tmp_path, build("inswapper_128", tmp_path / "models")),
              "--work-dir", str(tmp_path / "work"), "--chunk-frames", "16", "--providers", "cpu",
              "--intra-op-threads", "1", "--read-cpus", "0.5", "--detector-cpus", "0.25", "--swapper-cpus", "0.25",
              "--writer-cpus", "0.5", "--num-gpus", "0", "--quiet"]
    done = subprocess.run(ffray_cmd("batch", str(manifest), *common), env=run_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    good = tmp_path / "out" / "good.mp4"
    assert len(video_frames(good)[0]) == 16  # complete
    assert not (tmp_path / "out" / "bad.mp4").exists()
    (failed,) = [line for line in done.stderr.splitlines() if line.startswith("FAILED")]
    assert re.match(r"FAILED (row|line) 2\b", failed) and f"{bad}: ONNX Runtime cannot load the model" in failed
    summary = next(line for line in done.stderr.splitlines() if line.startswith("ffray batch:"))
    assert summary.startswith("ffray batch: 1 of 2 succeeded; report(s): ")
    listed = summary.split("report(s): ", 1)[1].split(", ")
    assert len(listed) == 2 and all("/runs/" in p for p in listed)  # each group's own per-run report
    reports = [json.loads(Path(p).read_text()) for p in listed]
    by_output = {v["output"]: v for r in reports for v in r["videos"]}
    assert by_output[str(good)]["status"] == "done" and by_output[str(good)]["frames"] == 16
    assert by_output[str(tmp_path / "out" / "bad.mp4")]["status"] == "failed"
    assert "ONNX Runtime cannot load the model" in by_output[str(tmp_path / "out" / "bad.mp4")]["error"]
    assert sorted(r["status"] for r in reports) == ["done", "failed"]

    # the same video again, to another output: every chunk is there, so no Ray; the report cannot be
    # written where --report points, and the output still counts: exit 0 and one warning
    (tmp_path / "plain-file").write_text("x")
    again = tmp_path / "out" / "again.mp4"
    rerun = subprocess.run(ffray_cmd("swap", "--source", str(asset(SOURCE)), "--target", str(clip), "--output",
                                     str(again), "--report", str(tmp_path / "plain-file" / "report.json"), *common),
                           env=run_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (warning,) = [line for line in rerun.stderr.splitlines() if line.strip()]
    assert warning.startswith(f"ffray: warning: {tmp_path / 'plain-file' / 'report.json'}: cannot write")
    assert video_frames(again)[0][5].shape == video_frames(good)[0][5].shape
    assert np.array_equal(video_frames(again)[0][5], video_frames(good)[0][5])
    runs = list((tmp_path / "work").glob("jobs/*/runs/*/report.json"))
    assert len(runs) == 3  # good group, failed group, rerun: none overwrote another
