"""Tile-level linear evaluation: loading, excluded class, fractions, bootstrap CIs, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wsistream.eval import (
    LinearEvalConfig,
    TileDatasetError,
    bootstrap_ci,
    labels_from_class_folders,
    linear_evaluation,
    load_tile_dataset,
    write_linear_report,
)
from wsistream.eval.linear import _fit_predict
from wsistream.mil.cli import app

FAST = LinearEvalConfig(fractions=(0.01, 0.1, 1.0), n_ensembling=3, n_resamples=30, seed=0)


@pytest.fixture
def nct(tmp_path, tiles, tile_writer, class_tree):
    """Train/test folders with ids as NCT-CRC file stems and a class-folder image tree for labels."""
    ftr, itr = tiles(150, seed=0, prefix="A")
    fte, ite = tiles(60, seed=1, prefix="B")
    tree = class_tree(tmp_path / "patches", [*itr, *ite])
    return tile_writer(tmp_path / "train", ftr, itr), tile_writer(tmp_path / "test", fte, ite), tree


def test_class_folders_and_excluded_class(nct):
    train_dir, test_dir, tree = nct
    assert labels_from_class_folders(tree)["ADI-A00000"] == "ADI"
    train = load_tile_dataset(train_dir, tree, exclude_class="BACK")
    assert train.class_names == ("ADI", "LYM", "TUM") and train.dropped == {"excluded class BACK": 150}
    assert len(train.labels) == 450 and set(train.labels) == {0, 1, 2}
    i = train.tile_ids.index("TUM-A00003")
    assert train.labels[i] == 2  # TUM was index 3 with BACK, shifted down to 2 (reference remove_labels)
    test = load_tile_dataset(test_dir, tree, class_names=train.class_names, exclude_class="BACK")
    assert test.class_names == train.class_names


def test_planted_signal_and_fraction_curve(nct):
    train_dir, test_dir, tree = nct
    train = load_tile_dataset(train_dir, tree, exclude_class="BACK")
    test = load_tile_dataset(test_dir, tree, class_names=train.class_names, exclude_class="BACK")
    result = linear_evaluation(train, test, FAST)
    full = next(r for r in result.rows if r["fraction"] == 1.0)
    assert full["status"] == "ok" and full["n_train"] == 450
    assert full["auc"] >= 0.95 and full["acc"] >= 0.8
    for m in ("auc", "acc", "f1"):
        assert full[f"{m}_low"] <= full[m] <= full[f"{m}_high"]
    assert {"ADI_auc", "LYM_f1", "TUM_acc"} <= set(full)
    small = next(r for r in result.rows if r["fraction"] == 0.01)
    assert small["n_train"] == 4
    summary = {s["fraction"]: s for s in result.summary()}
    assert summary[1.0]["auc_mean"] == full["auc"]
    again = linear_evaluation(train, test, FAST)
    assert [r.get("auc") for r in again.rows] == [r.get("auc") for r in result.rows]


def test_features_without_signal_stay_near_chance(tmp_path, tiles, tile_writer):
    # Null check on features that carry no class information. (Shuffling the labels of well-separated
    # clusters is not a null: a linear model then amplifies chance label imbalances between clusters.)
    ftr, itr = tiles(100, signal=0.0, seed=0, prefix="A")
    fte, ite = tiles(100, signal=0.0, seed=1, prefix="B")
    labels = {i: i.split("-")[0] for i in [*itr, *ite]}
    train = load_tile_dataset(tile_writer(tmp_path / "a", ftr, itr), labels)
    test = load_tile_dataset(tile_writer(tmp_path / "b", fte, ite), labels, class_names=train.class_names)
    result = linear_evaluation(train, test, LinearEvalConfig(fractions=(1.0,), n_ensembling=3, n_resamples=0))
    assert abs(result.rows[0]["auc"] - 0.5) < 0.08


def test_single_class_draw_is_recorded_as_skipped(nct):
    train_dir, test_dir, tree = nct
    train = load_tile_dataset(train_dir, tree)
    test = load_tile_dataset(test_dir, tree, class_names=train.class_names)
    result = linear_evaluation(train, test, LinearEvalConfig(fractions=(0.001, 1.0), n_ensembling=1, n_resamples=0))
    tiny = result.rows[0]
    assert tiny["n_train"] == 0 and tiny["status"].startswith("skipped")
    assert result.summary()[0]["n_ok"] == 0 and result.rows[1]["status"] == "ok"


def test_missing_class_in_draw_keeps_probability_columns_aligned(tiles):
    feats, ids = tiles(30)
    y = np.asarray([["ADI", "BACK", "LYM", "TUM"].index(i.split("-")[0]) for i in ids])
    keep = y != 1
    proba = _fit_predict(feats[keep], y[keep], feats, 4, LinearEvalConfig(n_ensembling=2))
    assert proba.shape == (len(y), 4) and np.all(proba[:, 1] == 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1)[keep] == y[keep]).mean() > 0.8


def test_labels_from_csv_and_from_path_ids(tmp_path, tiles, tile_writer):
    feats, ids = tiles(10)
    folder = tile_writer(tmp_path / "a", feats, ids)
    pd.DataFrame({"tile_id": ids[:-5], "label": [i.split("-")[0] for i in ids[:-5]]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    ds = load_tile_dataset(folder, tmp_path / "l.csv")
    assert len(ds.labels) == 35 and ds.dropped == {"no label": 5}
    paths = np.asarray([f"NCT-CRC-HE-100K/{i.split('-')[0]}/{i}.tif" for i in ids])
    ds2 = load_tile_dataset(tile_writer(tmp_path / "b", feats, paths))
    assert ds2.class_names == ("ADI", "BACK", "LYM", "TUM") and len(ds2.labels) == 40
    with pytest.raises(TileDatasetError, match="not 'class/name' paths"):
        load_tile_dataset(folder)


def test_nan_tile_features_name_the_tile(tmp_path, tiles, tile_writer):
    feats, ids = tiles(5)
    feats[7, 2] = np.nan
    with pytest.raises(TileDatasetError, match=rf"{ids[7]}: tile features contain NaN/Inf in 1 tiles"):
        load_tile_dataset(tile_writer(tmp_path, feats, ids), {i: "x" for i in ids})


def test_bootstrap_basic_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = y + rng.normal(scale=1.0, size=200)

    def stat(a, b):
        return float(np.mean(b[a == 1]) - np.mean(b[a == 0]))

    theta, lo, hi = bootstrap_ci(y, p, stat, 300, 0.9, np.random.default_rng(5))
    boot = []
    r = np.random.default_rng(5)
    for _ in range(300):
        idx = r.integers(0, 200, 200)
        boot.append(stat(y[idx], p[idx]))
    q_lo, q_hi = np.percentile(boot, [5, 95])
    assert (theta, lo, hi) == pytest.approx((stat(y, p), 2 * theta - q_hi, 2 * theta - q_lo))
    assert lo < theta < hi


def test_config_validation():
    with pytest.raises(ValueError, match=r"values in \(0, 1\]"):
        LinearEvalConfig(fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="at least 1"):
        LinearEvalConfig(n_ensembling=0)


def test_report_and_cli(tmp_path, nct):
    train_dir, test_dir, tree = nct
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "linear-eval",
            "--train",
            str(train_dir),
            "--test",
            str(test_dir),
            "--labels",
            str(tree),
            "--exclude-class",
            "BACK",
            "--fractions",
            "0.001,0.1,1",
            "--ensembling",
            "2",
            "--resamples",
            "50",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "dropped 150 tiles: excluded class BACK" in res.output and "skipped" in res.output
    report = json.loads((out / "linear_eval.json").read_text())
    assert report["class_names"] == ["ADI", "LYM", "TUM"] and len(report["rows"]) == 3
    assert report["dropped"]["test"] == {"excluded class BACK": 60}
    assert len(pd.read_csv(out / "linear_eval.csv")) == 3 and len(pd.read_csv(out / "linear_eval_summary.csv")) == 3
    assert (out / "linear_eval.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(
        app, ["linear-eval", "--train", str(train_dir), "--test", str(test_dir), "--out", str(out), "--fractions", "2"]
    )
    assert bad.exit_code != 0


def test_write_report_directly(tmp_path, nct):
    train_dir, test_dir, tree = nct
    train = load_tile_dataset(train_dir, tree)
    test = load_tile_dataset(test_dir, tree, class_names=train.class_names)
    result = linear_evaluation(train, test, LinearEvalConfig(fractions=(1.0,), n_ensembling=1, n_resamples=10))
    paths = write_linear_report(result, tmp_path / "r")
    assert all(p.exists() for p in paths.values())
