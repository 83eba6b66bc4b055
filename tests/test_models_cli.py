"""`ffray models list|pull|verify` through the real CLI dispatcher (exit codes, messages, JSON)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib

import pytest
from conftest import asset

from ffray.cli import main


@pytest.fixture
def dirs(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(asset("models/yunet_s_640_640.onnx"), source / "yunet_2023_mar.onnx")
    shutil.copy(asset("models/scrfd_2.5g.onnx"), source / "scrfd_2.5g.onnx")
    crc = format(zlib.crc32((source / "scrfd_2.5g.onnx").read_bytes()) & 0xFFFFFFFF, "08x")
    (source / "scrfd_2.5g.hash").write_text(crc)
    return ["--cache-dir", str(tmp_path / "cache"), "--source", str(source)], tmp_path / "cache"


def run_json(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_list_pull_verify_cycle(capsys, dirs):
    store_args, cache = dirs
    code, rows = run_json(capsys, ["models", "list", "--json", *store_args])
    assert code == 0 and {r["name"] for r in rows} >= {"inswapper_128", "yunet", "gfpgan_1.4"}
    assert all(r["status"] == "missing" for r in rows)

    assert main(["models", "pull", "yunet", "scrfd", *store_args]) == 0
    out = capsys.readouterr().out
    assert "yunet: verified" in out and "scrfd: verified" in out

    code, rows = run_json(capsys, ["models", "list", "--kind", "detector", "--json", *store_args])
    status = {r["name"]: r["status"] for r in rows}
    assert status == {"yolo_face": "missing", "scrfd": "verified", "retinaface": "missing", "yunet": "verified"}
    assert {r["name"]: r["commercial"] for r in rows}["yunet"] is True
    scrfd = next(r for r in rows if r["name"] == "scrfd")
    assert scrfd["sha256"] == hashlib.sha256((cache / "scrfd_2.5g.onnx").read_bytes()).hexdigest()

    code, rows = run_json(capsys, ["models", "verify", "--json", *store_args])
    assert code == 0 and sorted(r["name"] for r in rows) == ["scrfd", "yunet"]

    path = cache / "scrfd_2.5g.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    assert main(["models", "verify", "scrfd", *store_args]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"ffray: error: {path}: corrupt or wrong file for scrfd: crc32 is ")
    assert main(["models", "pull", "scrfd", *store_args]) == 0  # fetched again
    assert main(["models", "verify", "scrfd", *store_args]) == 0


def test_table_output(capsys, dirs):
    store_args, _ = dirs
    assert main(["models", "list", *store_args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "LICENSE", "COMMERCIAL", "STATUS"]
    inswapper = next(line for line in lines if line.startswith("inswapper_128 "))
    assert "non-commercial" in inswapper and inswapper.split()[-2:] == ["no", "missing"]


def test_commercial_only(capsys, dirs):
    store_args, _ = dirs
    assert main(["models", "pull", "inswapper_128", "--commercial-only", *store_args]) == 3
    err = capsys.readouterr().err
    assert "inswapper_128: its licence (InsightFace, non-commercial research only) does not allow commercial" in err
    code, rows = run_json(capsys, ["models", "list", "--commercial-only", "--json", *store_args])
    assert rows and all(r["commercial"] for r in rows)


def test_pull_includes_the_converter(capsys, dirs):
    store_args, _ = dirs
    assert main(["models", "pull", "ghost_1_256", "--json", *store_args]) == 3
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["ghost_1_256", "crossface_ghost"]


def test_unknown_and_missing(capsys, dirs):
    store_args, cache = dirs
    assert main(["models", "pull", "inswaper_128", *store_args]) == 3
    assert "inswaper_128: not a known model" in capsys.readouterr().err
    assert main(["models", "verify", "yunet", *store_args]) == 3
    assert "is not in the cache; run `ffray models pull yunet`" in capsys.readouterr().err
    assert not cache.exists() or not any(p.suffix == ".onnx" for p in cache.iterdir())
