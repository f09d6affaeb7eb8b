"""Nested cross-validation with patient-grouped, stratified folds.

Reference: ``rl_benchmarks/val_schemes/nested_cross_validation.py``
(``NestedCrossValidation.run``) and ``rl_benchmarks/val_schemes/utils.py``
(``split_cv``), with the paper settings of
``conf/slide_level_task/cross_validation/task/*.yaml``:

1. Outer split: ``StratifiedGroupKFold(5, shuffle=True)`` by patient,
   stratified on the class (event indicator for survival).
2. For each outer training set and each grid point (learning rate x weight
   decay, default {1e-3, 1e-4} x {0, 1e-4}): a 5-fold inner split of the same
   kind; train on each inner training set for ``epochs`` epochs, scoring the
   inner validation fold after each epoch; average the per-epoch validation
   metric over inner folds and take its best epoch.
3. The grid point with the best mean inner metric wins; refit on the whole
   outer training set for the selected number of epochs; the outer test
   metric is the one after the last refit epoch.
4. Report the mean and (population) standard deviation over outer folds.

Reference flaws and deviations:

* ``epoch_selection='reference'`` (default) reproduces the reference's
  off-by-one: the best 0-based epoch index ``e`` becomes ``max(e, 1)`` refit
  epochs, i.e. one epoch fewer than the best inner epoch. ``'corrected'``
  refits for ``e + 1`` epochs.
* With fewer patients than folds the reference silently stops grouping by
  patient; here it is an error, as is a validation/test fold with a single
  class (or no event, for survival), where the metric is undefined.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from wsistream.mil.data import Exclusion, FoldError, SlideCohort
from wsistream.mil.objectives import METRIC_NAME
from wsistream.mil.registry import DEFAULT_BATCH_SIZE, build_model, canonical_model_name
from wsistream.mil.train import TILE_SAMPLING, TrainConfig, fit

EPOCH_SELECTION = ("reference", "corrected")


@dataclass(frozen=True)
class NestedCVConfig:
    """Settings of a nested cross-validation (defaults: the HistoSSLscaling paper).

    Attributes
    ----------
    outer_folds, inner_folds : int
        Number of outer / inner folds (5 / 5).
    learning_rates, weight_decays : tuple of float
        Inner grid ({1e-3, 1e-4} x {0, 1e-4}).
    epochs : int
        Epochs of each inner run; upper bound of the refit (50).
    batch_size : int or None
        Slides per step; ``None`` = reference value of the model (16, HIPT 1).
    n_tiles : int or None
        Tiles per slide per step (1000); ``None`` = all tiles.
    tile_sampling : str
        ``random`` or ``first`` (see :class:`~wsistream.mil.train.TrainConfig`).
    epoch_selection : str
        ``reference`` (off-by-one reproduced) or ``corrected``.
    seed : int
        Seeds splits (``random_state``), initialisation, batches and tiles.
    device : str
        Torch device.
    """

    outer_folds: int = 5
    inner_folds: int = 5
    learning_rates: tuple[float, ...] = (1e-3, 1e-4)
    weight_decays: tuple[float, ...] = (0.0, 1e-4)
    epochs: int = 50
    batch_size: int | None = None
    n_tiles: int | None = 1000
    tile_sampling: str = "random"
    epoch_selection: str = "reference"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.outer_folds < 2 or self.inner_folds < 2:
            raise ValueError(
                f"outer_folds={self.outer_folds}, inner_folds={self.inner_folds}: pass at least 2 for both"
            )
        if not self.learning_rates or not self.weight_decays:
            raise ValueError("learning_rates and weight_decays need at least one value each, e.g. (1e-3,) and (0.0,)")
        object.__setattr__(self, "learning_rates", tuple(float(v) for v in self.learning_rates))
        object.__setattr__(self, "weight_decays", tuple(float(v) for v in self.weight_decays))
        if self.epoch_selection not in EPOCH_SELECTION:
            raise ValueError(f"epoch_selection={self.epoch_selection!r}: pass one of {EPOCH_SELECTION}")
        if self.tile_sampling not in TILE_SAMPLING:
            raise ValueError(f"tile_sampling={self.tile_sampling!r}: pass one of {TILE_SAMPLING}")
        TrainConfig(epochs=self.epochs, batch_size=self.batch_size or 1, n_tiles=self.n_tiles)  # validates

    def train_config(self, model: str, learning_rate: float, weight_decay: float, epochs: int) -> TrainConfig:
        """Build the :class:`TrainConfig` of one run."""
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size or DEFAULT_BATCH_SIZE[model],
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            n_tiles=self.n_tiles,
            tile_sampling=self.tile_sampling,
            device=self.device,
        )


@dataclass(frozen=True, eq=False)
class FoldResult:
    """One outer fold: the selected hyper-parameters and the test performance."""

    fold: int
    metric: float
    train_metric: float
    learning_rate: float
    weight_decay: float
    epochs: int
    inner_metric: float
    grid: tuple[dict[str, float], ...]
    test_metric_per_epoch: tuple[float, ...]
    test_slide_ids: tuple[str, ...]
    test_patient_ids: tuple[str, ...]
    test_labels: np.ndarray
    test_scores: np.ndarray
    n_train: int


@dataclass(frozen=True, eq=False)
class CVResult:
    """Outcome of :func:`nested_cross_validation`."""

    task: str
    model: str
    metric_name: str
    folds: tuple[FoldResult, ...]
    config: dict[str, Any]
    n_slides: int
    n_patients: int
    class_names: tuple[str, ...] = ()
    exclusions: tuple[Exclusion, ...] = field(default=())

    @property
    def metrics(self) -> np.ndarray:
        """Outer test metric per fold."""
        return np.asarray([f.metric for f in self.folds])

    @property
    def mean(self) -> float:
        """Mean outer test metric."""
        return float(np.mean(self.metrics))

    @property
    def std(self) -> float:
        """Population standard deviation of the outer test metric (``np.std``, as the reference)."""
        return float(np.std(self.metrics))

    def summary(self) -> str:
        """One line: ``model task: metric mean ± std over k folds``."""
        return (
            f"{self.model} {self.task}: {self.metric_name} {self.mean:.3f} ± {self.std:.3f} "
            f"over {len(self.folds)} outer folds ({self.n_slides} slides, {self.n_patients} patients)"
        )


def grouped_folds(
    strata: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, what: str = "folds"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)`` splits (train, test).

    Raises :class:`FoldError` if there are fewer distinct groups (patients)
    than folds or a fold would be empty.
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


def make_splits(
    cohort: SlideCohort, outer_folds: int, inner_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
    """All outer ``(train_val, test)`` splits with their inner splits (indices into the outer train set).

    Raises :class:`FoldError` for too few patients or a test / validation
    fold whose metric would be undefined, before anything is trained.
    """
    strata, groups = cohort.strata(), np.asarray(cohort.patient_ids)
    plan = []
    for k, (tv_idx, test_idx) in enumerate(grouped_folds(strata, groups, outer_folds, seed, "outer split")):
        _check_fold(cohort, test_idx, f"outer fold {k + 1} test set")
        where = f"outer fold {k + 1} inner split"
        inner = grouped_folds(strata[tv_idx], groups[tv_idx], inner_folds, seed, where)
        for j, (_, va) in enumerate(inner):
            _check_fold(cohort, tv_idx[va], f"outer fold {k + 1}, inner fold {j + 1} validation set")
        plan.append((tv_idx, test_idx, inner))
    return plan


def _best_epoch(mean_curve: np.ndarray, rule: str) -> tuple[int, float]:
    if np.all(np.isnan(mean_curve)):
        raise FoldError(None, "every inner validation metric is NaN; check the labels of the inner folds")
    e = int(np.nanargmax(mean_curve))
    epochs = max(e, 1) if rule == "reference" else e + 1
    return epochs, float(mean_curve[e])


def nested_cross_validation(
    cohort: SlideCohort,
    model: str,
    config: NestedCVConfig | None = None,
    *,
    corrected: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> CVResult:
    """Run the nested CV of ``model`` on ``cohort`` and return per-fold results.

    Parameters
    ----------
    cohort : SlideCohort
        From :func:`~wsistream.mil.data.load_cohort`.
    model : str
        ``meanpool, chowder, abmil, dsmil, transmil, hipt``.
    config : NestedCVConfig, optional
        Defaults to the paper settings.
    corrected : bool
        Corrected variant of DSMIL / TransMIL / HIPT-MIL.
    model_kwargs : mapping, optional
        Constructor overrides.
    progress : callable, optional
        ``progress(fold, total_epochs)`` is called at the start of each outer
        fold and must return a callable invoked once per trained epoch (e.g. a
        progress bar's ``update``).
    """
    cfg = config or NestedCVConfig()
    name = canonical_model_name(model)
    kwargs = dict(model_kwargs or {})

    def build() -> Any:
        return build_model(name, cohort.dim, cohort.n_outputs, corrected=corrected, **kwargs)

    grid = list(itertools.product(cfg.learning_rates, cfg.weight_decays))
    folds: list[FoldResult] = []
    plan = make_splits(cohort, cfg.outer_folds, cfg.inner_folds, cfg.seed)  # every fold checked before training
    for k, (tv_idx, test_idx, inner) in enumerate(plan):
        tick = progress(k + 1, cfg.epochs * (len(grid) * len(inner) + 1)) if progress else None
        rows = []
        for g, (lr, wd) in enumerate(grid):
            curves = []
            for j, (tr, va) in enumerate(inner):
                seed = int(np.random.SeedSequence([cfg.seed, k, g, j]).generate_state(1)[0])
                tc = cfg.train_config(name, lr, wd, cfg.epochs)
                _, hist = fit(build, cohort, tv_idx[tr], tv_idx[va], tc, seed, on_epoch=tick)
                curves.append(hist.eval_metric)
            n_ep, val = _best_epoch(np.nanmean(np.asarray(curves), axis=0), cfg.epoch_selection)
            rows.append({"learning_rate": lr, "weight_decay": wd, "epochs": n_ep, "inner_metric": val})
        best = rows[int(np.nanargmax([r["inner_metric"] for r in rows]))]
        seed = int(np.random.SeedSequence([cfg.seed, k, 10_000]).generate_state(1)[0])
        tc = cfg.train_config(name, best["learning_rate"], best["weight_decay"], int(best["epochs"]))
        _, hist = fit(build, cohort, tv_idx, test_idx, tc, seed, on_epoch=tick)
        if tick is not None:  # the refit runs fewer epochs than budgeted; fill the bar
            for _ in range(cfg.epochs - tc.epochs):
                tick()
        folds.append(
            FoldResult(
                fold=k + 1,
                metric=hist.eval_metric[-1],
                train_metric=hist.train_metric[-1],
                learning_rate=best["learning_rate"],
                weight_decay=best["weight_decay"],
                epochs=int(best["epochs"]),
                inner_metric=best["inner_metric"],
                grid=tuple(rows),
                test_metric_per_epoch=hist.eval_metric,
                test_slide_ids=tuple(cohort.slide_ids[i] for i in test_idx),
                test_patient_ids=tuple(cohort.patient_ids[i] for i in test_idx),
                test_labels=cohort.labels[test_idx],
                test_scores=hist.eval_scores,
                n_train=len(tv_idx),
            )
        )
    return CVResult(
        task=cohort.task,
        model=name,
        metric_name=METRIC_NAME[cohort.task],
        folds=tuple(folds),
        config={**asdict(cfg), "corrected": corrected, "model_kwargs": kwargs},
        n_slides=cohort.n_slides,
        n_patients=cohort.n_patients,
        class_names=cohort.class_names,
        exclusions=cohort.exclusions,
    )
