"""Linear-eval presets: NCT-CRC (BACK removed, 8 classes) and Camelyon17-WILDS (split by hospital)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wsistream.eval import PRESETS, TileDatasetError, camelyon17_wilds_datasets
from wsistream.mil.cli import app

NCT = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
FAST = ["--fractions", "0.5,1.0", "--ensembling", "2", "--resamples", "20"]


@pytest.fixture
def wilds(tmp_path, tile_writer):
    """A WILDS-like metadata.csv (5 centers x 2 patients) and one feature folder for all patches."""
    rng = np.random.default_rng(0)
    rows, ids, feats = [], [], []
    for center in range(5):
        for k in range(2):
            patient = 10 * center + k
            for i in range(40):
                tumor = i % 2
                rows.append(
                    {"patient": patient, "node": k, "x_coord": 224 * i, "y_coord": 7, "tumor": tumor, "center": center}
                )
                ids.append(f"patch_patient_{patient:03d}_node_{k}_x_{224 * i}_y_7")
                feats.append(rng.normal(size=6) + 2.0 * tumor)
    meta = tmp_path / "metadata.csv"
    pd.DataFrame(rows).to_csv(meta)
    folder = tile_writer(tmp_path / "c17", np.asarray(feats, np.float32), np.asarray(ids))
    return folder, meta


def test_wilds_split_by_center(wilds):
    folder, meta = wilds
    train, test = camelyon17_wilds_datasets(folder, meta)
    assert train.class_names == test.class_names == ("Normal", "Tumor")
    assert len(train.labels) == 3 * 80 and len(test.labels) == 80
    centers_of = {f"patch_patient_{p:03d}": p // 10 for p in range(50)}
    assert {centers_of[t[:17]] for t in train.tile_ids} == {0, 3, 4}
    assert {centers_of[t[:17]] for t in test.tile_ids} == {1}
    assert train.dropped == {"not in centers [0, 3, 4] (or not in the metadata)": 160}
    _, wilds_test = camelyon17_wilds_datasets(folder, meta, test_centers=(2,))
    assert {centers_of[t[:17]] for t in wilds_test.tile_ids} == {2}
    with pytest.raises(ValueError, match="both train and test"):
        camelyon17_wilds_datasets(folder, meta, test_centers=(0,))
    pd.read_csv(meta, index_col=0).drop(columns="center").to_csv(meta)
    with pytest.raises(TileDatasetError, match=r"lacks column\(s\) \['center'\]"):
        camelyon17_wilds_datasets(folder, meta)


def test_linear_eval_wilds_preset_cli(tmp_path, wilds):
    folder, meta = wilds
    out = tmp_path / "out"
    args = ["linear-eval", "--train", str(folder), "--out", str(out), "--preset", "camelyon17-wilds", *FAST]
    res = CliRunner().invoke(app, [*args, "--metadata", str(meta)])
    assert res.exit_code == 0, res.output
    assert "train: 240 tiles" in res.output and "test: 80 tiles" in res.output
    report = json.loads((out / "linear_eval.json").read_text())
    assert report["preset"] == "camelyon17-wilds" and report["centers"] == {"train": [0, 3, 4], "test": [1]}
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "needs --metadata" in res.output


def test_linear_eval_nct_preset_removes_back_and_checks_classes(tmp_path, tile_writer, class_tree):
    rng = np.random.default_rng(0)
    dirs = []
    for split, n in (("train", 20), ("test", 8)):
        ids = np.asarray([f"{c}-{split}{i:03d}" for c in NCT for i in range(n)])
        feats = rng.normal(size=(len(ids), 20)).astype(np.float32)
        for k, c in enumerate(NCT):
            feats[np.char.startswith(ids, c), 2 * k] += 3.0
        dirs.append(tile_writer(tmp_path / split, feats, ids))
        class_tree(tmp_path / "patches", ids)
    base = ["linear-eval", "--train", str(dirs[0]), "--test", str(dirs[1]), "--labels", str(tmp_path / "patches")]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), "--preset", "nct-crc", *FAST])
    assert res.exit_code == 0, res.output
    assert "dropped 20 tiles: excluded class BACK" in res.output
    assert f"classes={list(PRESETS['nct-crc'].class_names)}".replace(" ", "") in "".join(res.output.split())
    (tmp_path / "patches" / "ADI").rename(tmp_path / "patches" / "FAT")  # a class the preset does not know
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--preset", "nct-crc", *FAST])
    assert res.exit_code == 2 and "preset nct-crc expects classes" in res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "q"), "--preset", "kather"])
    assert res.exit_code != 0 and "pass one of" in res.output
