"""The device-resize extraction path on CPU torch, and extract-bench's report, JSON and --compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from wsistream.features import DeepZoomTiling, ExtractionConfig, extract_slide
from wsistream.features.bench import benchmark_throughput

TILING = DeepZoomTiling(tissue_threshold=0.2)


def test_device_resize_path_gives_the_worker_path_features(phikon, feat_slides):
    """What a GPU run does (raw reads in workers, thumbnail batched on the device), on CPU torch."""
    slide = feat_slides["40x"]  # 0.252 µm/px: 448² reads thumbnailed to 224²
    worker = extract_slide(slide, phikon, TILING, ExtractionConfig(device="cpu", num_workers=0, resize="worker"))
    device = extract_slide(
        slide, phikon, TILING, ExtractionConfig(device="cpu", num_workers=1, batch_size=3, resize="device")
    )
    assert worker.n_tiles > 3
    np.testing.assert_allclose(device.features, worker.features, rtol=0, atol=1e-5)


def test_report_names_the_ceiling_and_the_stages(phikon, feat_slides):
    rep = benchmark_throughput(
        feat_slides["40x"],
        phikon,
        tiling=TILING,
        config=ExtractionConfig(device="cpu", num_workers=0, batch_size=4),
        max_tiles=6,
    )
    assert rep.ceiling_tiles_per_s and rep.stored_tiles >= rep.n_tiles  # each 448² read spans >= 2 x 2 stored tiles
    assert rep.resize == "worker" and rep.reader_vs_ceiling > 0
    assert {r["row"] for r in rep.rows()} >= {
        "decode ceiling (each stored tile once)",
        "reader alone (1 process)",
        "model alone",
        "full path",
    }


def test_cli_json_and_compare(tiny_vit_dir: Path, feat_slides, tmp_path: Path):
    from wsistream.cli.main import app

    args = [
        "extract-bench",
        "--encoder",
        "phikon",
        "--weights",
        str(tiny_vit_dir),
        "--slide",
        feat_slides["20x"],
        "--max-tiles",
        "4",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--tissue-threshold",
        "0.2",
    ]
    first = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "old.json")])
    assert first.exit_code == 0, first.output
    old = json.loads((tmp_path / "old.json").read_text())
    assert old["stored_tiles"] > 0 and old["bottleneck"] in ("model", "data loading") and old["rows"]
    again = CliRunner().invoke(app, [*args, "--compare", str(tmp_path / "old.json")])
    assert again.exit_code == 0 and "now/then" in again.output and "decode ceiling" in again.output
