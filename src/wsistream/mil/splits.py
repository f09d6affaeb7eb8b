"""Patient-grouped, stratified outer and inner splits of a nested cross-validation.

Reference: ``rl_benchmarks/val_schemes/utils.py`` (``split_cv``) and
``rl_benchmarks/val_schemes/nested_cross_validation.py``: the outer split of
repeat ``r`` is ``StratifiedGroupKFold(n, shuffle=True, random_state=r)``;
every inner split uses ``random_state=r_inner``, which is 0 with the paper's
``n_repeats_inner=1``. Here the outer ``random_state`` is the *split seed*
(``split_seed + r`` for repeat ``r``, so split seeds 0, 1, 2 are the
reference's repeats 1, 2, 3) and the inner one is :data:`INNER_SPLIT_SEED`.

Fold assignment does not depend on the order in which slides were listed:
the splitter sees the slides sorted by slide id, so the same labels CSV in
another row order, or the same files found in another order, give the same
folds (and, as training walks the folds in that order, the same training).
"""

from __future__ import annotations

import numpy as np

from wsistream.mil.data import FoldError, SlideCohort

#: ``random_state`` of every inner split: the reference's ``r_inner`` with ``n_repeats_inner=1``.
INNER_SPLIT_SEED = 0

#: One outer fold: ``(train_val, test, inner)`` with ``inner`` a list of ``(train, val)`` into ``train_val``.
FoldPlan = tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]


def grouped_folds(
    strata: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, what: str = "folds"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)`` splits (train, test).

    Raises :class:`FoldError` if there are fewer distinct groups (patients)
    than folds (the reference then passes ``groups=None``, which
    scikit-learn rejects with a ``ValueError``) or a fold would be empty.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    if n_groups < n_splits:
        raise FoldError(
            None,
            f"{what}: {n_groups} patients for {n_splits} folds; pass at most {n_groups} folds or add more",
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    splits = [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(len(strata)), strata, groups)]
    for k, (_, test) in enumerate(splits):
        if len(test) == 0:
            raise FoldError(None, f"{what}: fold {k + 1} is empty; pass fewer folds")
    return splits


def _check_fold(cohort: SlideCohort, idx: np.ndarray, where: str) -> None:
    if cohort.task == "survival":
        if not (cohort.labels[idx] > 0).any():
            raise FoldError(None, f"{where} has no event, so the C-index is undefined; pass fewer folds")
        return
    present = np.unique(cohort.labels[idx])
    if present.size < 2:
        name = cohort.class_names[int(present[0])]
        raise FoldError(
            None,
            f"{where} holds only class {name!r} ({len(idx)} slides), so the AUC is undefined; "
            "pass fewer folds or add slides of the other class",
        )


def make_splits(cohort: SlideCohort, outer_folds: int, inner_folds: int, split_seed: int) -> list[FoldPlan]:
    """All outer ``(train_val, test)`` splits with their inner splits (indices into the outer train set).

    ``split_seed`` is the outer ``random_state``; inner splits use
    :data:`INNER_SPLIT_SEED`. Indices point into ``cohort`` but list slides
    in slide-id order, whatever the cohort's order. Raises
    :class:`FoldError` for too few patients or a test / validation fold
    whose metric would be undefined, before anything is trained.
    """
    order = np.argsort(np.asarray(cohort.slide_ids), kind="stable")
    strata, groups = cohort.strata()[order], np.asarray(cohort.patient_ids)[order]
    plan = []
    for k, (tv, test) in enumerate(grouped_folds(strata, groups, outer_folds, split_seed, "outer split")):
        tv_idx, test_idx = order[tv], order[test]
        _check_fold(cohort, test_idx, f"outer fold {k + 1} test set")
        where = f"outer fold {k + 1} inner split"
        inner = grouped_folds(strata[tv], groups[tv], inner_folds, INNER_SPLIT_SEED, where)
        for j, (_, va) in enumerate(inner):
            _check_fold(cohort, tv_idx[va], f"outer fold {k + 1}, inner fold {j + 1} validation set")
        plan.append((tv_idx, test_idx, inner))
    return plan
