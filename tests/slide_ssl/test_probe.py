"""The seed's probe protocol (linear head, reference splits) and the exclude list."""

from __future__ import annotations

import numpy as np
import pytest

from wsistream.slide_ssl.data import SlideTokenCohort, read_slide_ids, slide_key
from wsistream.slide_ssl.linear_head import HeadProbeConfig, head_probe
from wsistream.slide_ssl.probe import reference_splits


def test_head_probe_schedule_is_the_references():
    cfg = HeadProbeConfig()
    assert cfg.lr == pytest.approx(5e-4)  # blr 0.004 * batch 1 * gc 32 / 256 (SLP main.py l.40-42)
    assert cfg.lr_at(0.0) == 0.0 and cfg.lr_at(0.5) == pytest.approx(2.5e-4)  # 1-epoch linear warm-up
    assert cfg.lr_at(1.0) == pytest.approx(5e-4) and cfg.lr_at(10.0) == pytest.approx(1e-6)
    assert cfg.lr_at(5.5) == pytest.approx(1e-6 + (5e-4 - 1e-6) * 0.5)  # half-cycle cosine midpoint
    with pytest.raises(ValueError, match="warmup_epochs"):
        HeadProbeConfig(epochs=1, warmup_epochs=1)


def test_head_probe_learns_a_separable_task_and_is_deterministic():
    rng = np.random.default_rng(0)
    n = 120
    y = np.stack([rng.integers(0, 2, n), rng.integers(0, 2, n)], 1).astype(float)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += 3 * (2 * y[:, 0] - 1)  # label 0 readable from feature 0; label 1 is noise
    y[:5, 1] = np.nan  # missing values are left out of that label's loss and metrics
    splits = reference_splits(n, repeats=3)
    # lr 0.125 instead of the reference's 5e-4: 10 epochs on 84 slides are only 26 steps, which leave a
    # 6-input head at its random init (with 0.1 / 256 * 32 some splits still score below 0.5)
    scores = head_probe(x, y, splits, cfg=HeadProbeConfig(base_lr=1.0), seed=1).summary()
    assert scores["per_label_auroc"]["label0"] > 0.95
    assert 0.2 < scores["per_label_auroc"]["label1"] < 0.8
    again = head_probe(x, y, splits, cfg=HeadProbeConfig(base_lr=1.0), seed=1).summary()
    assert again == scores


def test_reference_splits_are_sklearns_70_10_20():
    from sklearn.model_selection import train_test_split

    splits = reference_splits(48, repeats=10)
    assert len(splits) == 10
    for r, sp in enumerate(splits):
        # ceil(0.3 * 48) = 15 held out; ceil(15 * (0.2 / 0.3)) = ceil(10.000000000000002) = 11 of them test,
        # as the reference's own float arithmetic gives
        assert (len(sp.train), len(sp.val), len(sp.test)) == (33, 4, 11)
        assert sorted(np.concatenate([sp.train, sp.val, sp.test]).tolist()) == list(range(48))
        train, _ = train_test_split(list(range(48)), test_size=0.3, random_state=r)  # SLP utils.py l.151
        assert sp.train.tolist() == train
    assert splits[0].test.tolist() != splits[1].test.tolist()


def test_read_slide_ids_from_csv_text_and_list(tmp_path):
    (tmp_path / "ex.csv").write_text("slide_id,EGFR\nTCGA-A.h5,1\nTCGA-B,0\n,1\n")
    (tmp_path / "ex.txt").write_text("# held out\nTCGA-A.svs\n\nTCGA-C\n")
    assert read_slide_ids(tmp_path / "ex.csv") == {"TCGA-A", "TCGA-B"}
    assert read_slide_ids(str(tmp_path / "ex.txt")) == {"TCGA-A", "TCGA-C"}
    assert read_slide_ids("TCGA-A, TCGA-D.h5") == {"TCGA-A", "TCGA-D"}
    assert read_slide_ids(["x.h5"]) == {"x"} and slide_key("a.b.H5") == "a.b"
    (tmp_path / "bad.csv").write_text("id\nTCGA-A\n")
    with pytest.raises(ValueError, match=r"bad\.csv: no 'slide_id' column"):
        read_slide_ids(tmp_path / "bad.csv")


def test_cohort_without_records_the_exclusions(feature_dir):
    from wsistream.errors import NoUsableSlidesError

    cohort = SlideTokenCohort.scan(feature_dir, min_tiles=8)
    kept = cohort.without({"slide_1", "slide_4.h5"})
    assert kept.slide_ids == ["slide_0", "slide_2", "slide_3", "slide_5"]
    assert np.array_equal(kept.load(1).features, cohort.load(2).features)
    assert [s.action for s in kept.skips[-2:]] == ["excluded", "excluded"]
    with pytest.raises(NoUsableSlidesError, match="excluded"):
        cohort.without(cohort.slide_ids)
