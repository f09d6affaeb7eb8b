"""Nested CV: grouped folds, planted signal vs shuffled labels, repeatability, fold errors, objectives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wsistream.mil import (
    MODELS,
    FoldError,
    NestedCVConfig,
    TrainConfig,
    build_model,
    concordance,
    cox_loss,
    fit,
    grouped_folds,
    make_cohort,
    make_splits,
    mean_ovr_auc,
    nested_cross_validation,
)
from wsistream.mil.cv import _best_epoch

FAST = NestedCVConfig(
    outer_folds=3,
    inner_folds=2,
    learning_rates=(1e-2,),
    weight_decays=(0.0,),
    epochs=4,
    batch_size=8,
    n_tiles=16,
)


@pytest.fixture
def cohort_of(synth):
    def make(task, **kw):
        return make_cohort(*synth(n_patients=40, d=8, task=task, **kw), task)

    return make


def shuffled(cohort, seed=0):
    perm = np.random.default_rng(seed).permutation(cohort.n_slides)
    return dataclasses.replace(cohort, labels=cohort.labels[perm])


def test_grouped_folds_never_split_a_patient(cohort_of):
    cohort = cohort_of("binary", two_slide_every=2)  # half the patients have two slides
    groups = np.asarray(cohort.patient_ids)
    seen: set[str] = set()
    plan = make_splits(cohort, 5, 5, split_seed=0)
    assert len(plan) == 5
    for tv, test, inner in plan:
        tr, te = set(groups[tv]), set(groups[test])
        assert not tr & te and not te & seen
        seen |= te
        assert len(inner) == 5
        for itr, iva in inner:
            assert not set(groups[tv][itr]) & set(groups[tv][iva])
            assert len(itr) + len(iva) == len(tv)
    assert seen == set(groups)
    # the same through the low-level splitter, with another seed
    for train, test in grouped_folds(cohort.strata(), groups, 4, seed=7):  # the low-level splitter
        assert not set(groups[train]) & set(groups[test])


@pytest.mark.parametrize(("task", "floor"), [("binary", 0.9), ("multiclass", 0.9), ("survival", 0.7)])
def test_planted_signal_is_found_and_shuffled_labels_stay_near_chance(cohort_of, task, floor):
    cohort = cohort_of(task)
    result = nested_cross_validation(cohort, "abmil", FAST)
    assert result.metric_name == ("cindex" if task == "survival" else "auc")
    assert result.mean >= floor, result.summary()
    nulls = [nested_cross_validation(shuffled(cohort, seed), "abmil", FAST).mean for seed in range(3)]
    assert abs(np.mean(nulls) - 0.5) <= 0.15, nulls
    assert np.mean(nulls) < result.mean - 0.2


def test_result_records_selection_and_test_predictions(cohort_of):
    cohort = cohort_of("binary")
    cfg = dataclasses.replace(FAST, learning_rates=(1e-2, 1e-3), weight_decays=(0.0, 1e-4), epochs=2)
    result = nested_cross_validation(cohort, "meanpool", cfg)
    assert len(result.folds) == 3 and result.n_slides == cohort.n_slides
    all_test = [s for f in result.folds for s in f.test_slide_ids]
    assert sorted(all_test) == sorted(cohort.slide_ids)
    for f in result.folds:
        assert len(f.grid) == 4 and f.epochs in (1, 2) and len(f.test_metric_per_epoch) == f.epochs
        assert f.test_scores.shape == (len(f.test_slide_ids), 1) and f.metric == f.test_metric_per_epoch[-1]
        assert (f.learning_rate, f.weight_decay) in {(r["learning_rate"], r["weight_decay"]) for r in f.grid}
    assert result.std == pytest.approx(np.std(result.metrics))


def test_fixed_seed_is_repeatable(cohort_of):
    cohort = cohort_of("binary")
    cfg = dataclasses.replace(FAST, epochs=2)
    a = nested_cross_validation(cohort, "abmil", cfg)
    b = nested_cross_validation(cohort, "abmil", cfg)
    np.testing.assert_array_equal(a.metrics, b.metrics)
    for fa, fb in zip(a.folds, b.folds):
        np.testing.assert_array_equal(fa.test_scores, fb.test_scores)
    c = nested_cross_validation(cohort, "abmil", dataclasses.replace(cfg, split_seed=1))
    assert [f.test_slide_ids for f in c.folds] != [f.test_slide_ids for f in a.folds]


def test_split_seed_fixes_folds_and_seed_fixes_training(cohort_of):
    cohort = cohort_of("binary")
    cfg = dataclasses.replace(FAST, epochs=2)
    a = nested_cross_validation(cohort, "abmil", cfg)
    b = nested_cross_validation(cohort, "abmil", dataclasses.replace(cfg, seed=5))
    assert [f.test_slide_ids for f in b.folds] == [f.test_slide_ids for f in a.folds]  # same splits
    assert any(not np.array_equal(fa.test_scores, fb.test_scores) for fa, fb in zip(a.folds, b.folds))


def test_folds_and_training_do_not_depend_on_slide_order(synth):
    slides, labels = synth(n_patients=30, d=8, two_slide_every=3)
    cfg = dataclasses.replace(FAST, epochs=2)
    a = nested_cross_validation(make_cohort(slides, labels, "binary"), "abmil", cfg)
    rev = make_cohort(slides[::-1], labels, "binary")
    assert rev.slide_ids != tuple(s for s, _ in slides)
    b = nested_cross_validation(rev, "abmil", cfg)
    for fa, fb in zip(a.folds, b.folds):
        assert fa.test_slide_ids == fb.test_slide_ids  # listed in slide-id order, whatever the cohort order
        np.testing.assert_array_equal(fa.test_scores, fb.test_scores)
    np.testing.assert_array_equal(a.metrics, b.metrics)


def test_repeated_cv_runs_one_nested_cv_per_split_seed(cohort_of):
    cohort = cohort_of("binary")
    cfg = dataclasses.replace(FAST, epochs=2, split_seed=4)
    single = nested_cross_validation(cohort, "meanpool", cfg)
    rep = nested_cross_validation(cohort, "meanpool", dataclasses.replace(cfg, repeats=3))
    assert rep.n_repeats == 3 and len(rep.folds) == 9
    assert [f.split_seed for f in rep.folds] == [4] * 3 + [5] * 3 + [6] * 3
    np.testing.assert_array_equal(rep.metrics[:3], single.metrics)  # repeat 1 is the single run
    np.testing.assert_allclose(rep.repeat_means, rep.metrics.reshape(3, 3).mean(axis=1))
    assert rep.mean == pytest.approx(rep.metrics.mean()) and rep.std == pytest.approx(rep.metrics.std())
    assert "3 repeats x 3 folds" in rep.summary() and "mean of repeats" in rep.summary()
    assert rep.config["split_seeds"] == [4, 5, 6]


def test_protocol_sets_tile_sampling_and_records_deviations():
    assert NestedCVConfig().sampling == "first" and NestedCVConfig().deviations() == {}
    assert NestedCVConfig(protocol="random-tiles").sampling == "random"
    assert dataclasses.replace(FAST, protocol="random-tiles").sampling == "random"
    cfg = NestedCVConfig(tile_sampling="random", epochs=3)
    assert cfg.deviations() == {
        "tile_sampling": {"value": "random", "protocol": "first"},
        "epochs": {"value": 3, "protocol": 50},
    }
    with pytest.raises(ValueError, match="pass one of"):
        NestedCVConfig(protocol="clam")
    with pytest.raises(ValueError, match="repeats=0"):
        NestedCVConfig(repeats=0)


def test_histossl_protocol_sees_only_the_first_rows(synth):
    """Signal only after row n_tiles: invisible under ``histossl`` (reference), found by ``random-tiles``."""
    slides, labels = synth(n_patients=40, d=8, signal=0.0, two_slide_every=100)
    rng = np.random.default_rng(1)
    moved = []
    for sid, sf in slides:
        f = rng.normal(size=(64, 8)).astype(np.float32)
        f[40:, :4] += 4.0 * labels[sid][1]  # rows 40..63 carry the label, the first 16 never do
        coords = np.zeros((64, 3), np.float32)
        moved.append((sid, type(sf)(sid, f, coords)))
    cohort = make_cohort(moved, labels, "binary")
    ref = nested_cross_validation(cohort, "meanpool", FAST)
    rnd = nested_cross_validation(cohort, "meanpool", dataclasses.replace(FAST, protocol="random-tiles"))
    assert ref.config["tile_sampling"] == "first" and rnd.config["tile_sampling"] == "random"
    assert rnd.mean >= 0.8, rnd.summary()
    assert ref.mean <= 0.7 and ref.mean < rnd.mean - 0.2, ref.summary()


def test_fewer_patients_than_folds(synth):
    cohort = make_cohort(*synth(n_patients=4, d=8, two_slide_every=1), "binary")  # 8 slides, 4 patients
    with pytest.raises(FoldError, match="4 patients for 5 folds; pass at most 4 folds"):
        nested_cross_validation(cohort, "meanpool", dataclasses.replace(FAST, outer_folds=5))


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_single_class_fold(synth):
    slides, labels = synth(n_patients=12, d=8, two_slide_every=100)
    labels = {s: (p, int(p in ("P000", "P001"))) for s, (p, _) in labels.items()}  # 2 positive patients
    cohort = make_cohort(slides, labels, "binary")
    with pytest.raises(FoldError, match=r"holds only class '0'.*pass fewer folds"):
        nested_cross_validation(cohort, "meanpool", dataclasses.replace(FAST, outer_folds=4))


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_survival_fold_without_event(synth):
    slides, labels = synth(n_patients=8, d=8, task="survival", two_slide_every=100)
    labels = {s: (p, abs(t) if p == "P000" else -abs(t)) for s, (p, t) in labels.items()}
    with pytest.raises(FoldError, match="no event"):
        nested_cross_validation(make_cohort(slides, labels, "survival"), "meanpool", FAST)


def test_epoch_selection_rules():
    curve = np.array([0.5, 0.7, 0.9, 0.8])
    assert _best_epoch(curve, "reference") == (2, 0.9)  # reference off-by-one: index 2 -> 2 epochs
    assert _best_epoch(curve, "corrected") == (3, 0.9)
    assert _best_epoch(np.array([0.9, 0.1]), "reference") == (1, 0.9)


def test_config_validation_says_what_to_pass():
    with pytest.raises(ValueError, match="at least 2"):
        NestedCVConfig(outer_folds=1)
    with pytest.raises(ValueError, match="one of"):
        NestedCVConfig(epoch_selection="best")
    with pytest.raises(ValueError, match="positive count"):
        TrainConfig(n_tiles=0)
    assert NestedCVConfig().train_config("hipt", 1e-3, 0.0, 5).batch_size == 1
    assert NestedCVConfig().train_config("abmil", 1e-3, 0.0, 5).batch_size == 16


@pytest.mark.parametrize(("name", "corrected"), [(n, False) for n in sorted(MODELS)] + [("transmil", True)])
def test_every_model_trains(synth, name, corrected):
    cohort = make_cohort(*synth(n_patients=8, d=16, task="multiclass"), "multiclass")
    cfg = TrainConfig(epochs=2, batch_size=1 if name == "hipt" else 4, n_tiles=24, learning_rate=1e-3)
    idx = np.arange(cohort.n_slides)

    def build():
        return build_model(name, cohort.dim, cohort.n_outputs, corrected=corrected)

    _, hist = fit(build, cohort, idx[:8], idx[8:], cfg, seed=0)
    assert hist.epochs == 2 and np.isfinite(hist.train_loss).all()
    assert hist.eval_scores.shape == (len(idx) - 8, 3)


def test_cox_loss_matches_partial_likelihood():
    rng = np.random.default_rng(0)
    r = rng.normal(size=9)
    t = rng.permutation(np.arange(1, 10)).astype(float) * np.where(rng.random(9) < 0.6, 1, -1)
    expected = 0.0
    for i in range(9):
        if t[i] > 0:
            at_risk = np.abs(t) >= abs(t[i])
            expected -= r[i] - np.log(np.exp(r[at_risk]).sum())
    got = cox_loss(torch.tensor(r).reshape(-1, 1), torch.tensor(t).reshape(-1, 1))
    assert float(got) == pytest.approx(expected / 9, rel=1e-5)


def test_metrics_use_sklearn_and_lifelines():
    from lifelines.utils import concordance_index

    t = np.array([5.0, -3.0, 2.0, 8.0, -1.0])
    risk = np.array([0.1, 0.3, 0.9, -0.5, 0.2])
    assert concordance(t, risk) == pytest.approx(concordance_index(np.abs(t), -risk, t > 0))
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y]
    assert mean_ovr_auc(y, perfect) == 1.0
    assert np.isnan(mean_ovr_auc(np.zeros(3), np.zeros((3, 3))))
