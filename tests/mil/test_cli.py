"""``mil-cv`` end to end on a tiny on-disk cohort."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
from typer.testing import CliRunner

from wsistream.features.formats import write_histossl
from wsistream.mil.cli import app

ARGS = [
    "--outer-folds",
    "3",
    "--inner-folds",
    "2",
    "--epochs",
    "2",
    "--n-tiles",
    "16",
    "--batch-size",
    "8",
    "--lr",
    "1e-2",
    "--wd",
    "0",
    "--device",
    "cpu",
]


def test_mil_cv_end_to_end(tmp_path, synth, cohort_writer):
    slides, labels = synth(n_patients=24, d=8)
    feat, csv = cohort_writer(tmp_path, slides, labels, h5_every=5)
    write_histossl(feat / "UNLABELLED", slides[0][1].features, slides[0][1].coords)
    out = tmp_path / "out"
    args = [
        "mil-cv",
        "--features",
        str(feat),
        "--labels",
        str(csv),
        "--task",
        "binary",
        "--model",
        "abmil",
        "--out",
        str(out),
        "--seed",
        "3",
        *ARGS,
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "UNLABELLED: feature file has no row in the labels CSV" in res.output
    assert "fold 3/3" in res.output and "abmil binary: auc" in res.output
    report = json.loads((out / "cv_results.json").read_text())
    assert report["metric"] == "auc" and len(report["folds"]) == 3 and report["config"]["seed"] == 3
    assert report["exclusions"] == [{"slide_id": "UNLABELLED", "reason": "feature file has no row in the labels CSV"}]
    folds = pd.read_csv(out / "cv_folds.csv")
    assert list(folds["fold"]) == [1, 2, 3] and folds["auc"].between(0, 1).all()
    assert len(pd.read_csv(out / "cv_predictions.csv")) == len(slides)
    png = (out / "cv_report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_mil_cv_passes_model_args(tmp_path, synth, cohort_writer):
    feat, csv = cohort_writer(tmp_path, *synth(n_patients=12, d=8))
    base = ["mil-cv", "--features", str(feat), "--labels", str(csv), "--model", "transmil", *ARGS]
    nystrom = ["--model-arg", "attention=nystrom", "--model-arg", "num_landmarks=4"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), *nystrom])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "o" / "cv_results.json").read_text())["config"]
    assert config["model_kwargs"] == {"attention": "nystrom", "num_landmarks": 4}
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--model-arg", "attention"])
    assert res.exit_code != 0 and "pass KEY=VALUE" in res.output


def test_mil_cv_survival_writes_km_plot(tmp_path, synth, cohort_writer):
    feat, csv = cohort_writer(tmp_path, *synth(n_patients=16, d=8, task="survival"))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "mil-cv",
            "--features",
            str(feat),
            "--labels",
            str(csv),
            "--task",
            "survival",
            "--model",
            "meanpool",
            "--out",
            str(out),
            *ARGS,
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "cv_results.json").read_text())["metric"] == "cindex"
    assert (out / "cv_report.png").stat().st_size > 20_000


def test_mil_cv_reports_bad_input_clearly(tmp_path, synth, cohort_writer):
    feat, csv = cohort_writer(tmp_path, *synth(n_patients=4, d=8))
    res = CliRunner().invoke(
        app,
        [
            "mil-cv",
            "--features",
            str(feat),
            "--labels",
            str(csv),
            "--out",
            str(tmp_path / "o"),
            "--outer-folds",
            "5",
            "--epochs",
            "1",
        ],
    )
    assert res.exit_code == 2 and "4 patients for 5 folds" in res.output
    res = CliRunner().invoke(
        app,
        [
            "mil-cv",
            "--features",
            str(feat),
            "--labels",
            str(csv),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "clam",
        ],
    )
    assert res.exit_code != 0 and "pass one of" in res.output


def test_module_entry_point_help():
    res = subprocess.run(
        [sys.executable, "-m", "wsistream.mil.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and "mil-cv" in res.stdout and "linear-eval" in res.stdout


def test_mil_cv_records_protocol_split_seeds_and_notices(tmp_path, synth, cohort_writer):
    slides, labels = synth(n_patients=12, d=8)
    feat, csv = cohort_writer(tmp_path, slides, labels)
    short = slides[0][0]
    write_histossl(feat / short, slides[0][1].features[:5], slides[0][1].coords[:5])
    out = tmp_path / "out"
    base = ["mil-cv", "--features", str(feat), "--labels", str(csv), "--model", "meanpool", *ARGS]
    res = CliRunner().invoke(app, [*base, "--out", str(out), "--split-seed", "2", "--repeats", "2", "--memory-gb", "0"])
    assert res.exit_code == 0, res.output
    assert "protocol histossl: tile sampling 'first', n_tiles=16" in res.output
    assert "read from disk per batch" in res.output and "2 repeats x 3 folds" in res.output
    assert f"{short}: 5 tiles, fewer than n_tiles=16: all 5 are used" in res.output
    report = json.loads((out / "cv_results.json").read_text())
    assert report["protocol"]["name"] == "histossl" and report["protocol"]["tile_sampling"] == "first"
    assert report["protocol"]["deviations"]["epochs"] == {"value": 2, "protocol": 50}
    assert report["repeats"]["split_seeds"] == [2, 3] and len(report["repeats"]["means"]) == 2
    assert [f["split_seed"] for f in report["folds"]] == [2, 2, 2, 3, 3, 3]
    assert report["config"]["seed"] == 0 and report["config"]["split_seed"] == 2
    assert report["notices"] == [{"slide_id": short, "message": "5 tiles, fewer than n_tiles=16: all 5 are used"}]
    folds = pd.read_csv(out / "cv_folds.csv")
    assert list(folds["repeat"]) == [1, 1, 1, 2, 2, 2]
    assert len(pd.read_csv(out / "cv_predictions.csv")) == 2 * len(slides)
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "r"), "--protocol", "random-tiles"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "cv_results.json").read_text())["protocol"]["tile_sampling"] == "random"


def test_mil_cv_refuses_bad_slides_before_training_or_excludes_them(tmp_path, synth, cohort_writer):
    import numpy as np

    slides, labels = synth(n_patients=12, d=8)
    feat, csv = cohort_writer(tmp_path, slides, labels)
    bad = slides[3][1].features.copy()
    bad[0] = np.nan
    write_histossl(feat / slides[3][0], bad, slides[3][1].coords)
    base = ["mil-cv", "--features", str(feat), "--labels", str(csv), "--model", "meanpool", *ARGS]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "fold 1/" not in res.output
    assert f"{slides[3][0]}: features contain NaN/Inf in 1 of the first" in res.output
    assert "--bad-slides exclude" in res.output and "--drop-nan-tiles" in res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--bad-slides", "exclude"])
    assert res.exit_code == 0, res.output
    excl = json.loads((tmp_path / "b" / "cv_results.json").read_text())["exclusions"]
    assert [e["slide_id"] for e in excl] == [slides[3][0]]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "c"), "--bad-slides", "skip"])
    assert res.exit_code != 0 and "pass one of" in res.output
