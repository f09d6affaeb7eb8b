"""``wsistream bench --quick``: every row of the throughput issue is produced, in one JSON (numbers not judged)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from wsistream.cli.main import app


def test_quick_bench_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--no-loader", "--cache-dir", str(tmp_path / "slides"), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    rows = {(r["workload"], r["row"]): r for r in result["rows"]}
    pool = "20x pool (8 slides)"
    for name in (
        "decode ceiling",
        "raw read_region loop",
        "ours phikon-v2 (opening included)",
        "ours phikon-v2 + 2 global/8 local views",
        "ours + the same views planned, rendered on device",
        "time to first patch (8-slide pool)",
        "per-slide open cost (mean)",
    ):
        assert rows[(pool, name)]["value"] > 0, name
    # a 224-px patch on 240-px JPEG tiles touches 1, 2 or 4 of them: the mean lies in (1, 4]
    assert 1 < rows[(pool, "decode ceiling")]["tiles_per_patch"] <= 4
    # the derived columns are the ratios of the rows they name (rounded values, so a relative tolerance)
    ours, raw = rows[(pool, "ours phikon-v2 (opening included)")], rows[(pool, "raw read_region loop")]
    assert abs(ours["vs_raw"] - ours["value"] / raw["value"]) <= 0.01 * ours["vs_raw"]
    ceiling = rows[(pool, "decode ceiling")]["value"]
    assert abs(ours["vs_ceiling"] - ours["value"] / ceiling) <= 0.01 * ours["vs_ceiling"]
    planned = rows[(pool, "ours + the same views planned, rendered on device")]
    assert abs(planned["views_overhead"] - (ours["value"] / planned["value"] - 1)) < 0.01
    reuse = rows[(pool, "decoded-tile cache hits (ours phikon-v2)")]  # the shared cache's counters, read
    assert reuse["hits"] + reuse["misses"] > 0 and reuse["misses"] > 0
    assert abs(reuse["value"] - reuse["hits"] / (reuse["hits"] + reuse["misses"])) < 1e-3
    gpfm = rows[("GPFM 512 px level 0", "ours gpfm (CLAM TCGA, opening included)")]
    gpfm_raw = rows[("GPFM 512 px level 0", "raw read_region(512) loop")]
    assert abs(gpfm["vs_raw"] - gpfm["value"] / gpfm_raw["value"]) <= 0.01 * gpfm["vs_raw"]
    assert rows[("40x slide, 0.5 µm/px", "raw read_region(444)+resize loop")]["value"] > 0
    peak = rows[("process", "peak RSS")]
    assert peak["unit"] == "MiB" and 100 < peak["value"] < 8192  # a leak of GBs would show here
    assert any(r["row"].startswith("DeviceViews replay on cpu") and r["unit"] == "ms/patch" for r in result["rows"])
    parity = rows[(pool, "DeviceViews on cpu vs CPU views: max |diff|")]
    # the GPU path's numerics, checked (4: one rare pixel under the released-code blur, 5e-5 of values differ)
    assert parity["value"] <= 4 and parity["fraction_differing"] < 0.001
    assert result["repeats"] == 1 and result["quick"] is True
    assert "decode ceiling" in res.output and "JSON:" in res.output


def test_table_compares_with_an_earlier_run():
    from wsistream.bench import format_table

    row = {"workload": "w", "row": "ours", "unit": "patches/s", "vs_raw": 1.25}
    now = {"rows": [{**row, "value": 300.0}, {**row, "row": "new row", "value": 1.0}]}
    then = {"rows": [{**row, "value": 200.0}]}
    lines = format_table(now, then).splitlines()
    assert "baseline" in lines[0] and "now/then" in lines[0]
    assert "200.00" in lines[1] and "1.50" in lines[1] and "vs_raw=1.25" in lines[1]
    assert "—" in lines[2]  # a row the baseline did not have
    assert "baseline" not in format_table(now).splitlines()[0]
