"""benchmarks/device_extract.py (issue 15's one-shot GPU script) runs end to end, here on CPU torch.

A session lent a device has one short call to spend; this keeps the script from breaking between draws.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_extract.py"


def test_device_script_reports_every_row_and_an_exact_device_resize(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--quick"]
    cmd += ["--workers", "1", "--batch-size", "32", "--max-tiles", "200"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "device_extract.json").read_text())
    assert [s["slide"].endswith(".svs") for s in report["slides"]] == [True, True]
    for slide in report["slides"]:
        assert slide["tiles"] > 32 and slide["stored_tiles"] >= slide["tiles"] // 4
        assert slide["resize_check"] == {"checked": True, "tiles": 32, "max_abs_diff": 0, "share_differing": 0.0}
        row = slide["workers"]["1"]
        rates = [slide["ceiling_tiles_per_s"], slide["reader_tiles_per_s"], slide["model_tiles_per_s"]]
        assert min([*rates, row["loader_tiles_per_s"], row["full_tiles_per_s"]]) > 0
        assert row["full_vs_model"] == row["full_tiles_per_s"] / slide["model_tiles_per_s"]
    assert "| slide | tiles | ceiling (1 core)" in done.stdout
