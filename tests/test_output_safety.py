"""Outputs never harm an input or a file that is not ours (ffray.pipeline.outputs), and a manifest with
bad rows or bad bytes is handled row by row (ffray.cli.swap.manifest_rows).

Fast tests (no Ray) check the policy functions, the manifest parser and every refusal of `ffray swap` /
`ffray swap-image`, which must come before any Ray start. One module-scoped Ray run (a batch) backs the
end-to-end checks: rows fail alone, and a rerun of a finished swap is "already done".
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import asset
from pipeline_helpers import ffray_cmd, job_report, run_env

from ffray.errors import InputError
from ffray.pipeline import outputs

SOURCE = "media/meds-aa-S001-01.jpg"
TARGET_IMAGE = "media/meds-aa-S029-01.jpg"


# --- same file --------------------------------------------------------------------------------------


def _same_file_cases(tmp: Path) -> list[tuple[str, str, str, bool]]:
    (tmp / "sub").mkdir()
    (tmp / "a.mp4").write_bytes(b"a")
    (tmp / "b.mp4").write_bytes(b"b")
    os.symlink(tmp / "a.mp4", tmp / "link.mp4")
    os.link(tmp / "a.mp4", tmp / "hard.mp4")
    os.symlink(tmp / "sub", tmp / "sublink")
    a = str(tmp / "a.mp4")
    return [
        ("identical path", a, a, True),
        ("through . and ..", f"{tmp}/sub/.././a.mp4", a, True),
        ("symlink", str(tmp / "link.mp4"), a, True),
        ("hard link", str(tmp / "hard.mp4"), a, True),
        ("file:// URL", f"file://{a}", a, True),
        ("other file", str(tmp / "b.mp4"), a, False),
        ("not there yet, through ..", str(tmp / "sub" / ".." / "new.mp4"), str(tmp / "new.mp4"), True),
        ("not there yet, through a symlinked folder", str(tmp / "sublink" / "new.mp4"),
         str(tmp / "sub" / "new.mp4"), True),
        ("not there yet, other name", str(tmp / "new.mp4"), str(tmp / "new2.mp4"), False),
        ("URL, normalised", "s3://Bucket/in/../clips//x.mp4", "s3://bucket/clips/x.mp4", True),
        ("URL, other key", "s3://bucket/clips/x.mp4", "s3://bucket/clips/y.mp4", False),
        ("URL and local path", "s3://bucket/x.mp4", a, False),
    ]


def test_same_file_through_dots_links_and_urls(tmp_path):
    for name, a, b, expected in _same_file_cases(tmp_path):
        assert outputs.same_file(a, b) is expected, name
        assert outputs.same_file(b, a) is expected, name


def test_check_destination_names_the_output_and_what_it_collides_with(tmp_path):
    target, source = tmp_path / "t.mp4", tmp_path / "s.jpg"
    target.write_bytes(b"t")
    source.write_bytes(b"s")
    os.link(source, tmp_path / "s-hard.jpg")
    (tmp_path / "folder.mp4").mkdir()
    inputs = outputs.request_inputs(str(target), [str(source)], reference=str(tmp_path / "r.jpg"))
    for output, expected in [
        (str(tmp_path / "x" / ".." / "t.mp4"), "is the same file as the target"),
        (str(tmp_path / "s-hard.jpg"), "is the same file as the source image"),
        (str(tmp_path / "r.jpg"), "is the same file as the reference face image"),
        (str(tmp_path / "folder.mp4"), "is a directory"),
    ]:
        with pytest.raises(InputError, match=expected) as caught:
            outputs.check_destination(output, inputs)
        assert str(caught.value).startswith(f"{output}: ")
    outputs.check_destination(str(tmp_path / "out.mp4"), inputs)  # a new file: fine


# --- output root -----------------------------------------------------------------------------------


def test_inside_root_resolves_dots_and_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "deep" / "er").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "escape")
    os.symlink(root / "deep", root / "inside-link")
    cases = [
        (str(root / "out.mp4"), str(root), True),
        (str(root / "deep" / "er" / ".." / "out.mp4"), str(root), True),
        (str(root / "inside-link" / "out.mp4"), str(root), True),
        (str(root / "deep" / ".." / ".." / "out.mp4"), str(root), False),
        (str(root / "deep" / "er" / ".." / ".." / ".." / "x.mp4"), str(root), False),
        (str(tmp_path / "elsewhere" / "out.mp4"), str(root), False),
        (str(root / "escape" / "out.mp4"), str(root), False),  # a symlink that leads out
        (str(root), str(root), False),  # the root itself is not a file in it
        ("s3://bucket/outputs/x.mp4", "s3://bucket/outputs", True),
        ("s3://bucket/outputs/../private/x.mp4", "s3://bucket/outputs/", False),
        ("s3://bucket/outputs-2/x.mp4", "s3://bucket/outputs", False),  # a prefix of the name is not a folder
        ("s3://bucket/outputs/x.mp4", str(root), False),  # URLs only below a URL root
        (str(root / "out.mp4"), "s3://bucket/outputs", False),
    ]
    for output, base, inside in cases:
        if inside:
            outputs.check_inside_root(output, base)
        else:
            with pytest.raises(InputError, match="outside --output-root .*; widen --output-root to allow it"):
                outputs.check_inside_root(output, base)


# --- existing outputs -------------------------------------------------------------------------------


def test_existing_output_policy(tmp_path):
    video_dir = str(tmp_path / "work" / "videos" / "k1")
    output = tmp_path / "out.mp4"
    assert outputs.existing_output(str(output), video_dir) is None  # nothing there: go
    output.write_bytes(b"ours")
    with pytest.raises(InputError, match="exists; pass --overwrite to replace it"):
        outputs.existing_output(str(output), video_dir)  # no record: someone else's file
    assert outputs.existing_output(str(output), video_dir, overwrite=True) is None
    import hashlib

    outputs.write_record(video_dir, str(output), {"sha256": hashlib.sha256(b"ours").hexdigest(), "size": 4,
                                                  "frames": 7})
    # the record is found through another spelling of the same path, and only under its own key
    again = outputs.existing_output(str(tmp_path / "x" / ".." / "out.mp4"), video_dir)
    assert again["already_done"] is True and again["frames"] == 7
    with pytest.raises(InputError, match="exists"):
        outputs.existing_output(str(output), str(tmp_path / "work" / "videos" / "k2"))
    output.write_bytes(b"ourz")  # changed since (same size, other bytes)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        outputs.existing_output(str(output), video_dir)
    assert outputs.existing_output(str(output), video_dir, overwrite=True) is None
    output.unlink()
    output.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        outputs.existing_output(str(output), video_dir, overwrite=True)


def test_overwrite_flag_is_not_part_of_the_video_key(tmp_path):
    from dataclasses import replace

    from ffray.faces.options import FaceOptions
    from ffray.media import EncodeOptions
    from ffray.pipeline.config import PipelineConfig
    from ffray.pipeline.driver import video_key

    config = PipelineConfig(work_dir=str(tmp_path))
    encode = EncodeOptions.for_output("o.mp4")
    keys = {video_key("c", ["s"], FaceOptions(), cfg, encode, {}) for cfg in (config, replace(config, overwrite=True))}
    assert len(keys) == 1


# --- manifests --------------------------------------------------------------------------------------


def test_manifest_that_is_not_utf8_names_the_offset(tmp_path):
    from ffray.cli.swap import manifest_rows

    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"source,target,output\na.jpg,b.mp4,c.mp4\na.jpg,caf\xe9.mp4,o.mp4\n")
    with pytest.raises(InputError) as caught:
        manifest_rows(str(manifest))
    offset = manifest.read_bytes().index(b"\xe9")
    assert str(caught.value) == f"{manifest}: not UTF-8 text: byte 0xe9 at offset {offset} (line 3)"
    manifest.write_bytes(b"\xef\xbb\xbfsource,target,output\na.jpg,b.mp4,c.mp4\n")  # a UTF-8 BOM is fine
    (row,) = manifest_rows(str(manifest))
    assert row.error is None and row.where == "row 1 (line 2)"


def test_manifest_rows_fail_alone_and_are_labelled_by_what_they_count(tmp_path):
    from ffray.cli.swap import manifest_rows

    jsonl = tmp_path / "m.jsonl"
    good = {"source": "a.jpg", "target": "in.mp4", "output": "out.mp4"}
    jsonl.write_text("\n".join([json.dumps(good), "", "{not json", "[1, 2]", json.dumps({**good, "source": [3]}),
                                json.dumps({**good, "output": "o2.mp4"})]) + "\n")
    rows = manifest_rows(str(jsonl))
    assert [(r.where, r.error is None) for r in rows] == [
        ("line 1", True), ("line 3", False), ("line 4", False), ("line 5", False), ("line 6", True)]
    assert rows[1].error.startswith("not JSON") and "expected a JSON object" in rows[2].error
    assert rows[4].request.output == str(tmp_path / "o2.mp4")

    csv_file = tmp_path / "m.csv"
    csv_file.write_text('source,target,output\na.jpg,"in\nwith a newline.mp4",o1.mp4\n\n,in.mp4,o2.mp4\n'
                        "a.jpg,in.mp4,o3.mp4\n")
    rows = manifest_rows(str(csv_file))
    assert [r.where for r in rows] == ["row 1 (line 2)", "row 2 (line 5)", "row 3 (line 6)"]
    assert rows[1].error == "needs source, target and output" and rows[2].error is None


def test_batch_rows_whose_output_is_refused_fail_alone_before_any_work(tmp_path):
    from ffray.cli.swap import check_batch_outputs, manifest_rows

    (tmp_path / "in.mp4").write_bytes(b"v")
    (tmp_path / "a.jpg").write_bytes(b"i")
    (tmp_path / "taken").mkdir()
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"source": "a.jpg", "target": "in.mp4", "output": "out/good.mp4"},
        {"source": "a.jpg", "target": "in.mp4", "output": "../../escape.mp4"},
        {"source": "a.jpg", "target": "in.mp4", "output": "./out/../in.mp4"},
        {"source": "a.jpg", "target": "in.mp4", "output": "a.jpg"},
        {"source": "a.jpg", "target": "in.mp4", "output": "m.jsonl"},
        {"source": "a.jpg", "target": "in.mp4", "output": "taken"},
        {"source": "a.jpg", "target": "in.mp4", "output": "out/./good.mp4"},
        {"source": "a.jpg", "target": "in.mp4", "output": "s3://bucket/x.mp4"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused = check_batch_outputs(manifest_rows(str(manifest)), str(manifest), str(tmp_path))
    assert sorted(refused) == [1, 2, 3, 4, 5, 6, 7]
    assert "outside --output-root" in refused[1] and "outside --output-root" in refused[7]
    assert f"is the same file as the target {tmp_path / 'in.mp4'}" in refused[2]
    assert "is the same file as the source image" in refused[3]
    assert "is the same file as the manifest" in refused[4]
    assert "is a directory" in refused[5]
    assert "line 1 writes this output too" in refused[6]


# --- refusals by the commands, before any Ray start ----------------------------------------------


def _run_main(capsys, argv: list[str]) -> tuple[int, list[str]]:
    from ffray.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()]


def _swap_cases(tmp: Path, target: Path, source: Path) -> list[tuple[str, list[str], Path, str]]:
    """(name, extra args, output, expected reason) for `ffray swap`; `target` and `source` are copies."""
    os.link(target, tmp / "target-hard.mp4")
    os.symlink(source, tmp / "source-link.jpg")
    foreign = tmp / "foreign.mp4"
    foreign.write_bytes(b"someone else's video")
    locked = tmp / "locked.mp4"
    locked.write_bytes(b"read-only video")
    locked.chmod(0o444)
    (tmp / "folder.mp4").mkdir()
    return [
        ("output is the target", [], target, "is the same file as the target"),
        ("output through ..", [], tmp / "sub" / ".." / target.name, "is the same file as the target"),
        ("output is a hard link to the target", [], tmp / "target-hard.mp4", "is the same file as the target"),
        ("output is a symlink to the source", [], tmp / "source-link.jpg", "is the same file as the source image"),
        ("output is a directory", [], tmp / "folder.mp4", "is a directory"),
        ("output is someone else's", [], foreign, "exists; pass --overwrite to replace it"),
        ("output is read-only", [], locked, "exists; pass --overwrite to replace it"),
        ("output is the target, --overwrite", ["--overwrite"], target, "is the same file as the target"),
    ]


def test_swap_refuses_an_output_it_must_not_touch(tmp_path, capsys):
    import ray

    target = tmp_path / "clip.mp4"
    from media_clips import make_clip

    make_clip(target, frames=8, width=64, height=48)
    source = tmp_path / "face.jpg"
    source.write_bytes(asset(SOURCE).read_bytes())
    for name, extra, output, reason in _swap_cases(tmp_path, target, source):
        before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        code, lines = _run_main(capsys, ["swap", "--source", str(source), "--target", str(target), "--output",
                                         str(output), "--work-dir", str(tmp_path / "work"), *extra])
        assert code == 2, (name, lines)
        assert len(lines) == 1 and lines[0].startswith(f"ffray: error: {output}: ") and reason in lines[0], name
        assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before, name
        assert not ray.is_initialized(), name
    assert not (tmp_path / "work" / "videos").exists()  # nothing decoded, nothing encoded


def test_swap_image_refuses_an_output_it_must_not_touch(tmp_path, capsys):
    target, source = tmp_path / "target.jpg", tmp_path / "source.jpg"
    target.write_bytes(asset(TARGET_IMAGE).read_bytes())
    source.write_bytes(asset(SOURCE).read_bytes())
    os.link(target, tmp_path / "target-hard.jpg")
    os.symlink(source, tmp_path / "source-link.png")
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"not ours")
    existing.chmod(0o444)
    (tmp_path / "folder.png").mkdir()
    cases = [
        (target, [], "is the same file as the target"),
        (f"{tmp_path}/./target.jpg", ["--overwrite"], "is the same file as the target"),
        (tmp_path / "target-hard.jpg", ["--overwrite"], "is the same file as the target"),
        (tmp_path / "source-link.png", [], "is the same file as the source image"),
        (tmp_path / "folder.png", ["--overwrite"], "is a directory"),
        (existing, [], "exists; pass --overwrite to replace it"),
    ]
    for output, extra, reason in cases:
        before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        code, lines = _run_main(capsys, ["swap-image", "--source", str(source), "--target", str(target),
                                         "--output", str(output), *extra])
        assert code == 2, (output, lines)
        assert len(lines) == 1 and lines[0].startswith(f"ffray: error: {output}: ") and reason in lines[0]
        assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # --overwrite replaces a read-only file through the atomic rename
    code, lines = _run_main(capsys, ["swap-image", "--source", str(source), "--target", str(target),
                                     "--output", str(existing), "--overwrite"])
    assert code == 0, lines
    assert existing.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


# --- end to end, on a local Ray ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_batch(tmp_path_factory):
    """One batch on a local Ray: a good row, a row escaping the root, a bad JSON line, a row writing over
    its own target. Returns (folder, completed process, manifest, good row's swap arguments)."""
    from media_clips import make_clip

    folder = tmp_path_factory.mktemp("batch")
    clip = make_clip(folder / "clip.mp4", frames=16, width=96, height=64, gop=8, audio="aac")
    other = make_clip(folder / "other.mp4", frames=8, width=64, height=48)
    source = folder / "face.jpg"
    source.write_bytes(asset(SOURCE).read_bytes())
    manifest = folder / "jobs.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"source": "face.jpg", "target": "clip.mp4", "output": "out/good.mp4"}),
        json.dumps({"source": "face.jpg", "target": "clip.mp4", "output": "../../escape.mp4"}),
        '{"source": "face.jpg", "target": "clip.mp4", "output": "out/broken.mp4"',
        "",
        json.dumps({"source": "face.jpg", "target": "other.mp4", "output": "./other.mp4"}),
    ]) + "\n")
    inputs = {p: p.read_bytes() for p in (clip, other, source, manifest)}
    common = ["--work-dir", str(folder / "work"), "--chunk-frames", "8"]
    done = subprocess.run(ffray_cmd("batch", str(manifest), *common), env=run_env(), capture_output=True,
                          text=True, timeout=900)
    for path, data in inputs.items():
        assert path.read_bytes() == data, f"{path} was changed"
    swap_args = ["swap", "--source", str(source), "--target", str(clip), "--output", str(folder / "out/good.mp4"),
                 *common]
    return folder, done, manifest, swap_args


@pytest.mark.ray
@pytest.mark.slow
def test_batch_rows_with_bad_outputs_or_lines_fail_alone(finished_batch):
    folder, done, manifest, _ = finished_batch
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (folder / "out/good.mp4").is_file()
    assert not list(folder.parent.parent.glob("escape.mp4")) and not (folder / "out/broken.mp4").exists()
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 3, done.stderr[-3000:]
    assert failed[0].startswith("FAILED line 2: ") and "outside --output-root" in failed[0]
    assert failed[1].startswith("FAILED line 3: not JSON")
    assert failed[2].startswith(f"FAILED line 5: {folder / 'other.mp4'}: is the same file as the target")
    for line in failed:  # the path a reason starts with is not repeated in front of it
        path = line.split(": ")[1]
        assert line.count(path) == 1, line
    assert "1 of 4 succeeded" in done.stderr
    assert len(list((folder / "work").glob("videos/*"))) == 1  # refused rows did no work


@pytest.mark.ray
@pytest.mark.slow
def test_rerun_of_a_finished_swap_is_already_done_and_a_changed_output_is_kept(finished_batch):
    folder, _, _, swap_args = finished_batch
    output = folder / "out/good.mp4"
    original = output.read_bytes()
    (record,) = (folder / "work").glob("videos/*/outputs/*.json")
    assert json.loads(record.read_text())["sha256"] == __import__("hashlib").sha256(original).hexdigest()
    # the same video and settings as the batch's good row: its output is this job's, byte for byte
    again = subprocess.run(ffray_cmd(*swap_args), env=run_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done" in again.stderr and str(output) in again.stderr
    assert output.read_bytes() == original
    assert job_report(folder / "work")["totals"]["chunks_processed_this_run"] == 0

    output.write_bytes(original + b"x")  # changed since: no longer ours
    changed = output.read_bytes()
    refused = subprocess.run(ffray_cmd(*swap_args), env=run_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert lines == [f"ffray: error: {output}: exists; pass --overwrite to replace it"]
    assert output.read_bytes() == changed

    replaced = subprocess.run(ffray_cmd(*swap_args, "--overwrite"), env=run_env(), capture_output=True,
                              text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert output.read_bytes() == original  # every chunk was kept: remuxed again, no frame processed
