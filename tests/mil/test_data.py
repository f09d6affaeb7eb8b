"""Cohort loading: joins, exclusions, bad input, tile sampling, padding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from wsistream.features.formats import write_histossl
from wsistream.mil import CohortError, load_cohort
from wsistream.mil.data import pad_batch, sample_tiles


@pytest.fixture
def small(synth):
    def make(task="binary"):
        return synth(n_patients=6, d=8, task=task, two_slide_every=3)

    return make


def test_load_mixed_npy_and_h5(tmp_path, small, cohort_writer):
    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels, h5_every=3)
    cohort = load_cohort(feat, csv, "binary")
    assert cohort.n_slides == len(slides) and cohort.dim == 8 and cohort.exclusions == ()
    assert cohort.n_patients == 6 and cohort.class_names == ("0", "1")
    i = cohort.slide_ids.index(slides[1][0])
    np.testing.assert_array_equal(cohort.features[i], slides[1][1].as_histossl_array())
    assert all(f.shape[1] == 11 for f in cohort.features)


def test_unmatched_slides_are_recorded_not_dropped(tmp_path, small, cohort_writer):
    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    write_histossl(feat / "ORPHAN", np.ones((5, 8)), np.zeros((5, 3)))  # features, no label
    df = pd.read_csv(csv)
    extra = pd.DataFrame(
        [
            {"slide_id": "GHOST", "patient_id": "PX", "label": 1},
            {"slide_id": "NOLABEL", "patient_id": "PY", "label": None},
        ]
    )
    pd.concat([df, extra]).to_csv(csv, index=False)
    cohort = load_cohort(feat, csv, "binary")
    reasons = {e.slide_id: e.reason for e in cohort.exclusions}
    assert reasons["GHOST"] == "labelled, but no feature file found"
    assert reasons["ORPHAN"] == "feature file has no row in the labels CSV"
    assert "empty" in reasons["NOLABEL"]
    assert cohort.n_slides == len(slides)


def test_slide_extension_on_feature_folder_is_matched(tmp_path):
    write_histossl(tmp_path / "f" / "TCGA-AA-0001.svs", np.ones((4, 8)), np.zeros((4, 3)))
    write_histossl(tmp_path / "f" / "TCGA-AA-0002.svs", np.zeros((4, 8)), np.zeros((4, 3)))
    pd.DataFrame({"slide_id": ["TCGA-AA-0001", "TCGA-AA-0002"], "patient_id": ["a", "b"], "label": ["x", "y"]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    cohort = load_cohort(tmp_path / "f", tmp_path / "l.csv", "binary")
    assert cohort.n_slides == 2 and cohort.exclusions == () and cohort.class_names == ("x", "y")


@pytest.mark.parametrize("ext", [".NDPI", ".mrxs", ".qptiff"])
def test_every_slide_extension_of_the_one_list_is_matched(tmp_path, ext):
    from wsistream.pipeline.paths import SLIDE_EXTENSIONS
    from wsistream.slide_ssl.data import slide_key

    write_histossl(tmp_path / "f" / f"S-1{ext}", np.ones((4, 8)), np.zeros((4, 3)))
    write_histossl(tmp_path / "f" / f"S-2{ext}", np.zeros((4, 8)), np.zeros((4, 3)))
    pd.DataFrame({"slide_id": ["S-1", "S-2"], "patient_id": ["a", "b"], "label": ["x", "y"]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    assert load_cohort(tmp_path / "f", tmp_path / "l.csv", "binary").exclusions == ()
    assert [slide_key(f"S-1{e.upper()}") for e in SLIDE_EXTENSIONS] == ["S-1"] * len(SLIDE_EXTENSIONS)
    assert slide_key("S-1.h5") == slide_key("S-1.pt") == "S-1"


def test_nan_features_name_the_slide(tmp_path, small, cohort_writer):
    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    bad = slides[2][1].features.copy()
    bad[3, 1] = np.nan
    write_histossl(feat / slides[2][0], bad, slides[2][1].coords)
    with pytest.raises(CohortError, match=rf"{slides[2][0]}: features contain NaN/Inf in 1 of"):
        load_cohort(feat, csv, "binary")


def test_mismatched_dims_name_the_slide(tmp_path, small, cohort_writer):
    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    write_histossl(feat / slides[4][0], np.ones((7, 12)), np.zeros((7, 3)))
    with pytest.raises(CohortError, match=rf"{slides[4][0]}: feature dimension differs.*d=8.*d=12"):
        load_cohort(feat, csv, "binary")


def test_label_table_errors(tmp_path, small, cohort_writer):
    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    df = pd.read_csv(csv)
    df.drop(columns="patient_id").to_csv(tmp_path / "nopat.csv", index=False)
    with pytest.raises(CohortError, match="patient_column=None"):
        load_cohort(feat, tmp_path / "nopat.csv", "binary")
    assert load_cohort(feat, tmp_path / "nopat.csv", "binary", patient_column=None).n_patients == len(slides)
    pd.concat([df, df.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(CohortError, match="listed 2 times"):
        load_cohort(feat, tmp_path / "dup.csv", "binary")
    df.assign(label=np.arange(len(df)) % 3).to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(CohortError, match="task='multiclass'"):
        load_cohort(feat, tmp_path / "three.csv", "binary")
    assert load_cohort(feat, tmp_path / "three.csv", "multiclass").n_outputs == 3
    df.assign(label=1).to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(CohortError, match="same label"):
        load_cohort(feat, tmp_path / "one.csv", "binary")
    with pytest.raises(CohortError, match="feature directory not found"):
        load_cohort(tmp_path / "nope", csv, "binary")


def test_survival_time_event_columns(tmp_path, small, cohort_writer):
    slides, labels = small(task="survival")
    feat, csv = cohort_writer(tmp_path, slides, labels)
    df = pd.read_csv(csv)
    df["time"], df["event"] = df["label"].abs(), (df["label"] > 0).astype(int)
    df.drop(columns="label").to_csv(tmp_path / "te.csv", index=False)
    a = load_cohort(feat, csv, "survival")
    b = load_cohort(feat, tmp_path / "te.csv", "survival", time_column="time", event_column="event")
    np.testing.assert_allclose(a.labels, b.labels)
    assert set(a.strata()) <= {0, 1} and a.n_outputs == 1
    df.assign(label=0.0).to_csv(tmp_path / "zero.csv", index=False)
    with pytest.raises(CohortError, match="non-zero"):
        load_cohort(feat, tmp_path / "zero.csv", "survival")


def test_sample_tiles_modes():
    arr = np.arange(50, dtype=np.float32).reshape(25, 2)
    rng = np.random.default_rng(0)
    rand = sample_tiles(arr, 10, rng, "random")
    assert rand.shape == (10, 2) and len(set(rand[:, 0])) == 10
    first = sample_tiles(arr, 10, rng, "first")
    assert sorted(first[:, 0]) == list(arr[:10, 0])
    assert sample_tiles(arr, 100, rng, "random").shape == (25, 2)
    assert sample_tiles(arr, None, rng, "first").shape == (25, 2)
    a = sample_tiles(arr, 10, np.random.default_rng(3), "random")
    b = sample_tiles(arr, 10, np.random.default_rng(3), "random")
    np.testing.assert_array_equal(a, b)


def test_pad_batch():
    x, mask = pad_batch([np.ones((3, 4), np.float32), np.full((5, 4), 2, np.float32)])
    assert x.shape == (2, 5, 4) and mask.shape == (2, 5, 1) and mask.dtype == torch.bool
    assert mask[0, :, 0].tolist() == [False, False, False, True, True]
    assert float(x[0, 3:].abs().sum()) == 0


def test_public_api_resolves():
    import wsistream.eval as ev
    import wsistream.mil as mil

    assert set(mil.__all__) == set(mil._EXPORTS)
    assert all(getattr(mil, n) is not None for n in mil.__all__)
    assert all(getattr(ev, n) is not None for n in ev.__all__)
    with pytest.raises(AttributeError):
        mil.not_a_name


def _cv_config():
    from wsistream.mil import NestedCVConfig

    return NestedCVConfig(
        outer_folds=3, inner_folds=2, learning_rates=(1e-2,), weight_decays=(0.0,), epochs=2, batch_size=4, n_tiles=12
    )


@pytest.mark.parametrize("protocol", ["histossl", "random-tiles"])
def test_lazy_rows_give_the_same_cohort_and_results_as_memory(tmp_path, synth, cohort_writer, protocol):
    from wsistream.mil import CohortOptions, LazyRows, nested_cross_validation

    slides, labels = synth(n_patients=12, d=8, two_slide_every=3)
    feat, csv = cohort_writer(tmp_path, slides, labels, h5_every=2)
    cfg = dataclasses.replace(_cv_config(), protocol=protocol)
    first = cfg.sampling == "first"
    ram = load_cohort(feat, csv, "binary", options=CohortOptions(n_tiles=12, first_rows_only=first))
    lazy = load_cohort(feat, csv, "binary", options=CohortOptions(n_tiles=12, first_rows_only=first, memory_gb=0))
    assert ram.in_memory and not lazy.in_memory and all(isinstance(f, LazyRows) for f in lazy.features)
    for a, b, (sid, sf) in zip(ram.features, lazy.features, sorted(slides, key=lambda s: s[0])):
        full = sf.as_histossl_array()
        np.testing.assert_array_equal(a, full[:12] if first else full)
        assert b.shape == a.shape
        idx = np.random.default_rng(0).permutation(len(a))[:7]
        np.testing.assert_array_equal(b[idx], a[idx])  # any order, npy and h5 alike
    r1, r2 = nested_cross_validation(ram, "abmil", cfg), nested_cross_validation(lazy, "abmil", cfg)
    np.testing.assert_array_equal(r1.metrics, r2.metrics)
    for f1, f2 in zip(r1.folds, r2.folds):
        np.testing.assert_array_equal(f1.test_scores, f2.test_scores)


def test_labels_csv_row_order_does_not_change_the_cohort(tmp_path, small, cohort_writer):
    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    pd.read_csv(csv).iloc[::-1].to_csv(tmp_path / "rev.csv", index=False)
    a, b = load_cohort(feat, csv, "binary"), load_cohort(feat, tmp_path / "rev.csv", "binary")
    assert a.slide_ids == b.slide_ids == tuple(sorted(a.slide_ids))
    np.testing.assert_array_equal(a.labels, b.labels)


def test_short_slides_are_noticed_and_min_tiles_excludes(tmp_path, small, cohort_writer):
    from wsistream.mil import CohortOptions

    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    sid = slides[0][0]
    write_histossl(feat / sid, np.ones((5, 8)), np.zeros((5, 3)))
    cohort = load_cohort(feat, csv, "binary", options=CohortOptions(n_tiles=20, first_rows_only=True))
    notes = {n.slide_id: n.message for n in cohort.notices}
    assert notes[sid] == "5 tiles, fewer than n_tiles=20: all 5 are used"
    assert len(cohort.features[cohort.slide_ids.index(sid)]) == 5
    with pytest.raises(CohortError, match=rf"{sid}: 5 usable tiles, fewer than min_tiles=6; pass bad_slides="):
        load_cohort(feat, csv, "binary", options=CohortOptions(min_tiles=6))
    kept = load_cohort(feat, csv, "binary", options=CohortOptions(min_tiles=6, bad_slides="exclude"))
    assert sid not in kept.slide_ids
    assert {e.slide_id: e.reason for e in kept.exclusions}[sid] == "5 usable tiles, fewer than min_tiles=6"


def test_nan_tiles_refuse_listing_every_slide_or_are_dropped(tmp_path, small, cohort_writer):
    from wsistream.mil import CohortOptions

    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    for k, (sid, sf) in enumerate(slides[1:3]):
        bad = sf.features.copy()
        bad[[0, 4][: k + 1], 2] = [np.nan, np.inf][: k + 1]
        write_histossl(feat / sid, bad, sf.coords)
    s1, s2 = slides[1][0], slides[2][0]
    with pytest.raises(CohortError, match=rf"2 slides cannot be used: {s1}: .*NaN/Inf in 1 of .*; {s2}: .*2 of"):
        load_cohort(feat, csv, "binary", options=CohortOptions(memory_gb=0))
    ex = load_cohort(feat, csv, "binary", options=CohortOptions(bad_slides="exclude"))
    assert {e.slide_id for e in ex.exclusions} == {s1, s2} and s1 not in ex.slide_ids
    for memory_gb in (0.0, 1.0):
        dropped = load_cohort(feat, csv, "binary", options=CohortOptions(drop_nan_tiles=True, memory_gb=memory_gb))
        rows = dropped.features[dropped.slide_ids.index(s2)]
        assert len(rows) == slides[2][1].n_tiles - 2
        np.testing.assert_array_equal(rows[np.arange(len(rows))][:3], slides[2][1].as_histossl_array()[[1, 2, 3]])
        assert {n.slide_id: n.message for n in dropped.notices}[s2].startswith("dropped 2 NaN/Inf tiles of")


def test_dimension_mismatch_and_unreadable_files_can_be_excluded(tmp_path, small, cohort_writer):
    from wsistream.mil import CohortOptions

    slides, labels = small()
    feat, csv = cohort_writer(tmp_path, slides, labels)
    odd, broken = slides[4][0], slides[5][0]
    write_histossl(feat / odd, np.ones((7, 12)), np.zeros((7, 3)))
    (feat / broken / "features.npy").write_bytes(b"not an npy file")
    with pytest.raises(CohortError, match=rf"{broken}: cannot read .*; pass bad_slides='exclude'"):
        load_cohort(feat, csv, "binary")
    cohort = load_cohort(feat, csv, "binary", options=CohortOptions(bad_slides="exclude"))
    reasons = {e.slide_id: e.reason for e in cohort.exclusions}
    assert reasons[odd] == f"feature dimension d=12 differs from the cohort's d=8 ({len(slides) - 2} slides)"
    assert reasons[broken].startswith("cannot read") and cohort.n_slides == len(slides) - 2 and cohort.dim == 8


def test_cohort_options_say_what_to_pass():
    from wsistream.mil import CohortOptions

    with pytest.raises(ValueError, match="pass one of"):
        CohortOptions(bad_slides="skip")
    with pytest.raises(ValueError, match="needs n_tiles"):
        CohortOptions(first_rows_only=True)
    with pytest.raises(ValueError, match="min_tiles=0"):
        CohortOptions(min_tiles=0)
