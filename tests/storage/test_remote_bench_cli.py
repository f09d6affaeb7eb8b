"""``wsistream bench --remote --quick``: the remote rows, against loopback S3 and https (numbers not judged)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wsistream.cli.main import app


def test_quick_remote_bench_writes_every_row(tmp_path):
    out = tmp_path / "remote.json"
    args = ["bench", "--remote", "--quick", "--no-loader", "--cache-dir", str(tmp_path / "slides"), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    # the raw probe signs its GETs as the client does (an anonymous GET of a small object is refused: 403)
    assert rows["raw ranged-request ceiling (server + proxy)"]["value"] > 0
    local, warm = rows["local files, 1 process"], rows["S3, 1 process (directory cache warm)"]
    assert abs(warm["ratio"] - warm["value"] / local["value"]) <= 0.01 * warm["ratio"]
    fsspec = rows["S3, 1 process, s3_reads='fsspec' (s3fs client)"]
    speedup = fsspec["presigned_over_fsspec"]
    assert abs(speedup - warm["value"] / fsspec["value"]) <= 0.01 * speedup
    assert 0 < rows["requests per patch (pool open)"]["value"] <= 1.5
    assert rows["bytes per patch (pool open)"]["covered_jpeg_bytes"] > 0
    assert 0 < rows["time to first patch, S3 cold"]["value"] < 30
    # the same pool over https:// from the Range server in a child process, its own ceiling beside it
    assert rows["raw ranged-request ceiling (https Range server + proxy)"]["value"] > 0
    https = rows["https Range server, 1 process (directory cache warm)"]
    assert abs(https["ratio"] - https["value"] / local["value"]) <= 0.01 * https["ratio"]
    assert 0 < https["requests_per_patch"] <= 1.5
    # each server's own CPU per ranged GET, read from its processes over the warm stream: moto copies the
    # whole 17 MB object per GET, the Range server reads the range (why the https rows exist)
    moto = rows["server CPU per ranged GET (moto + proxy)"]
    web = rows["server CPU per ranged GET (Range server + proxy)"]
    assert moto["value"] > web["value"] > 0
    assert moto["per_patch_ms"] == pytest.approx(moto["value"] * rows["requests per patch (pool open)"]["value"], 0.01)
