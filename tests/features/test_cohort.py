"""Cohort runs: manifest, failures recorded and skipped, resume after interruption, sharding, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wsistream.features import (
    DeepZoomTiling,
    ExtractionConfig,
    OutputNotWritableError,
    benchmark_throughput,
    extract_cohort,
    iter_feature_dir,
    read_features,
    read_manifest,
)
from wsistream.features.cli import app
from wsistream.tissue import DEFAULT_OVERVIEW_SIDE

CPU = ExtractionConfig(batch_size=4, num_workers=0, device="cpu")
TILING = DeepZoomTiling(tissue_threshold=0.2, overview_side=512)


def _run(slides, out, encoder, **kw):
    return extract_cohort(slides, out, encoder, tiling=TILING, config=CPU, progress=False, **kw)


def test_failures_are_recorded_and_skipped(phikon, feat_slides, tmp_path: Path):
    slides = [feat_slides[k] for k in ("40x", "broken", "20x", "blank")]
    report = _run(slides, tmp_path, phikon, cohort="C1")
    assert report.root == tmp_path / "phikon" / "C1"
    assert [r.status for r in report.records] == ["done", "failed", "done", "failed"]
    assert not report.ok and report.count("done") == 2
    manifest = read_manifest(report.root)
    assert manifest[feat_slides["broken"]]["error"].startswith("SlideOpenError: ")
    assert "d-broken.svs" in manifest[feat_slides["broken"]]["error"]
    assert manifest[feat_slides["blank"]]["error"].startswith("NoTissueError: ")
    done = manifest[feat_slides["40x"]]
    assert done["n_tiles"] == read_features(done["output"]).n_tiles > 0 and done["seconds"] > 0
    assert sorted(p.name for p in report.root.iterdir()) == ["a40x.svs", "b20x.svs", "manifest.jsonl"]
    lines = (report.root / "manifest.jsonl").read_text().splitlines()
    assert {"slide", "status", "n_tiles", "seconds", "error"} <= set(json.loads(lines[0]))


def test_rerun_skips_finished_and_redoes_partial(phikon, feat_slides, tmp_path: Path):
    slides = [feat_slides["40x"], feat_slides["20x"]]
    first = _run(slides, tmp_path, phikon)
    done_dir = first.root / "a40x.svs"
    before = (done_dir / "features.npy").stat().st_mtime_ns
    partial = first.root / "b20x.svs"  # simulate a kill while b20x was being written
    (partial / "features.npy").unlink()
    (partial / ".features.npy.tmp-99999").write_bytes(b"\x93NUMPY half written")
    (partial / ".extraction.json.tmp-99999").write_text("{")
    assert [f.slide_id for f in iter_feature_dir(tmp_path)] == ["a40x.svs"]  # a reader never sees the partial one
    second = _run(slides, tmp_path, phikon)
    assert [r.status for r in second.records] == ["skipped", "done"]
    assert (done_dir / "features.npy").stat().st_mtime_ns == before
    assert sorted(p.name for p in partial.iterdir()) == ["coords.npy", "extraction.json", "features.npy"]
    np.testing.assert_array_equal(read_features(partial).features, read_features(done_dir.parent / "b20x.svs").features)
    (partial / "features.npy").write_bytes(b"truncated")  # a corrupt output is redone, not trusted
    third = _run(slides, tmp_path, phikon)
    assert [r.status for r in third.records] == ["skipped", "done"]
    assert read_manifest(first.root)[slides[1]]["status"] == "done"


def test_interrupted_run_resumes(phikon, feat_slides, tmp_path: Path):
    calls = {"n": 0}

    def dying_forward(model, pixels):
        calls["n"] += 1
        if calls["n"] == 2:  # first batch of the second slide
            raise KeyboardInterrupt
        return phikon.forward(model, pixels)

    dying = dataclasses.replace(phikon, forward=dying_forward)
    slides = [feat_slides["40x"], feat_slides["20x"]]
    with pytest.raises(KeyboardInterrupt):
        _run(slides, tmp_path, dying)
    root = tmp_path / "phikon" / "default"
    assert [f.slide_id for f in iter_feature_dir(root)] == ["a40x.svs"]
    assert list(read_manifest(root)) == [slides[0]]
    resumed = _run(slides, tmp_path, phikon)
    assert [r.status for r in resumed.records] == ["skipped", "done"] and resumed.ok


def test_write_failure_in_the_writer_thread_fails_that_slide_leaves_no_file_and_the_run_goes_on(
    phikon, feat_slides, tmp_path: Path, monkeypatch
):
    """The disk fills while the writer thread writes the first slide's features; the next slide still lands."""
    import threading

    import wsistream.features.formats as formats

    real_save = np.save
    writer_threads = set()

    def failing_save(fh, arr, *a, **k):
        writer_threads.add(threading.current_thread().name)
        if "b20x.svs" in getattr(fh, "name", "") and ".features.npy" in fh.name:
            fh.write(b"\x93NUMPY partial")
            raise OSError(28, "No space left on device")
        return real_save(fh, arr, *a, **k)

    monkeypatch.setattr(formats.np, "save", failing_save)
    report = _run([feat_slides["20x"], feat_slides["40x"]], tmp_path, phikon)
    monkeypatch.undo()
    assert writer_threads == {"wsistream-feature-writer"}  # off the model loop
    assert [r.status for r in report.records] == ["failed", "done"]
    assert "OSError" in report.records[0].error and "No space left" in report.records[0].error
    assert list((report.root / "b20x.svs").iterdir()) == []  # no temporary, no coords without features
    assert [f.slide_id for f in iter_feature_dir(tmp_path)] == ["a40x.svs"]
    assert [r["status"] for r in read_manifest(report.root).values()] == ["failed", "done"]


def test_sharding_and_h5(phikon, feat_slides, tmp_path: Path):
    slides = [feat_slides["40x"], feat_slides["20x"], feat_slides["broken"]]
    r0 = _run(slides, tmp_path, phikon, fmt="h5", rank=0, world_size=2)
    r1 = _run(slides, tmp_path, phikon, fmt="h5", rank=1, world_size=2)
    assert [Path(r.slide).name for r in r0.records] == ["a40x.svs", "d-broken.svs"]
    assert [Path(r.slide).name for r in r1.records] == ["b20x.svs"]
    assert r0.manifest.name == "manifest.rank000.jsonl" and r1.manifest.name == "manifest.rank001.jsonl"
    assert set(read_manifest(r0.root)) == set(slides)
    assert sorted(f.slide_id for f in iter_feature_dir(r0.root)) == ["a40x", "b20x"]
    feats = read_features(r0.root / "a40x.h5")
    assert feats.attrs["tiling"] == "deepzoom" and feats.coords.shape[1] == 3


def test_torchrun_environment_shards(phikon, feat_slides, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    report = _run([feat_slides["40x"], feat_slides["20x"]], tmp_path, phikon)
    assert (report.rank, report.world_size) == (1, 2) and [Path(r.slide).name for r in report.records] == ["b20x.svs"]


def test_bad_output_and_inputs(phikon, feat_slides, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match=r"a-file.*not writable"):
        _run([feat_slides["20x"]], blocker / "out", phikon)
    with pytest.raises(ValueError, match=r"same file name"):
        _run([feat_slides["20x"], str(tmp_path / "b20x.svs")], tmp_path, phikon)
    with pytest.raises(ValueError, match=r"fmt="):
        _run([feat_slides["20x"]], tmp_path, phikon, fmt="csv")


def _cli(*args: str):
    extra = ["--no-progress"] if args[0] == "extract" else []
    return CliRunner().invoke(app, [*args, "--num-workers", "0", "--device", "cpu", *extra])


def test_cli_extract_exit_codes(tiny_vit_dir: Path, feat_slides, tmp_path: Path):
    ok = _cli(
        "extract",
        "--encoder",
        "phikon",
        "--weights",
        str(tiny_vit_dir),
        "--slides",
        feat_slides["20x"],
        "--out",
        str(tmp_path),
        "--format",
        "h5",
        "--n-tiles",
        "2",
        "--batch-size",
        "2",
        "--cohort",
        "X",
    )
    assert ok.exit_code == 0, ok.output
    assert "1 done" in ok.output and read_features(tmp_path / "phikon" / "X" / "b20x.h5").n_tiles == 2
    assert read_features(tmp_path / "phikon" / "X" / "b20x.h5").attrs["overview_side"] == DEFAULT_OVERVIEW_SIDE
    old_masks = _cli(
        "extract", "--encoder", "phikon", "--weights", str(tiny_vit_dir), "--slides", feat_slides["20x"],
        "--out", str(tmp_path), "--format", "h5", "--n-tiles", "2", "--batch-size", "2", "--cohort", "Y",
        "--overview-side", "2048",
    )  # fmt: skip
    assert old_masks.exit_code == 0, old_masks.output
    assert read_features(tmp_path / "phikon" / "Y" / "b20x.h5").attrs["overview_side"] == 2048
    bad = _cli(
        "extract",
        "--encoder",
        "phikon",
        "--weights",
        str(tiny_vit_dir),
        "--slides",
        feat_slides["20x"],
        "--slides",
        feat_slides["broken"],
        "--out",
        str(tmp_path),
        "--format",
        "h5",
        "--cohort",
        "X",
    )
    assert bad.exit_code == 1 and "1 skipped" in bad.output and "d-broken.svs" in bad.output
    missing = _cli(
        "extract",
        "--encoder",
        "phikon",
        "--weights",
        str(tmp_path / "nowhere"),
        "--slides",
        feat_slides["20x"],
        "--out",
        str(tmp_path),
    )
    assert missing.exit_code == 2 and "nowhere" in missing.output and "does not exist" in missing.output
    none = _cli(
        "extract",
        "--encoder",
        "phikon",
        "--weights",
        str(tiny_vit_dir),
        "--slides",
        str(tmp_path / "*.nothing"),
        "--out",
        str(tmp_path),
    )
    assert none.exit_code == 2 and "no slides" in none.output


def test_cli_bench_and_throughput_report(phikon, tiny_vit_dir: Path, feat_slides):
    rep = benchmark_throughput(feat_slides["20x"], phikon, tiling=TILING, config=CPU, max_tiles=8)
    assert rep.n_tiles > 0 and min(rep.loader_tiles_per_s, rep.model_tiles_per_s, rep.full_tiles_per_s) > 0
    assert rep.bottleneck in ("data loading", "model") and "tiles/s" in str(rep)
    out = _cli(
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
        "--tissue-threshold",
        "0.2",
    )
    assert out.exit_code == 0, out.output
    assert "loader alone" in out.output and "full path" in out.output


def test_undecodable_tile_in_a_worker_is_reported_by_its_own_name(phikon, tmp_path: Path):
    from wsistream.synthetic import write_aperio_svs

    slide = write_aperio_svs(
        tmp_path / "corrupt.svs", width=1600, height=1200, mpp=0.252, downsamples=(1, 4), seed=1, corrupt_tile=(3, 2)
    )
    config = ExtractionConfig(batch_size=4, num_workers=1, device="cpu")
    report = extract_cohort([str(slide)], tmp_path / "out", phikon, tiling=TILING, config=config, progress=False)
    (record,) = report.records
    assert record.status == "failed" and record.error.startswith("TileDecodeError: "), record.error
    assert "corrupt.svs" in record.error and "\n" not in record.error


def test_cli_extract_tiles(tiny_vit_dir: Path, tmp_path: Path):
    from PIL import Image

    for cls in ("NORM", "TUM"):
        (tmp_path / "NCT" / cls).mkdir(parents=True)
        Image.fromarray(np.full((224, 224, 3), 120, np.uint8)).save(tmp_path / "NCT" / cls / f"{cls}-A.tif")
    args = ["extract-tiles", "--encoder", "phikon", "--weights", str(tiny_vit_dir), "--tiles", str(tmp_path / "NCT")]
    first = _cli(*args, "--out", str(tmp_path / "out"))
    assert first.exit_code == 0, first.output
    assert np.load(tmp_path / "out" / "phikon" / "NCT" / "tile_features.npy").shape == (2, 32)
    again = _cli(*args, "--out", str(tmp_path / "out"))
    assert again.exit_code == 0 and "already finished" in again.output
    missing = _cli(
        "extract-tiles",
        "--encoder",
        "phikon",
        "--weights",
        str(tiny_vit_dir),
        "--tiles",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "out"),
    )
    assert missing.exit_code == 2 and "nope" in missing.output
