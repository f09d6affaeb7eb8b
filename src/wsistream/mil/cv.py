"""Nested cross-validation with patient-grouped, stratified folds.

Reference: ``rl_benchmarks/val_schemes/nested_cross_validation.py``
(``NestedCrossValidation.run``) with the paper settings of
``conf/slide_level_task/cross_validation/task/*.yaml``; splits in
:mod:`wsistream.mil.splits`, protocols in :mod:`wsistream.mil.protocols`:

1. Outer split: ``StratifiedGroupKFold(5, shuffle=True,
   random_state=split_seed)`` by patient, stratified on the class (event
   indicator for survival).
2. For each outer training set and each grid point (learning rate x weight
   decay, default {1e-3, 1e-4} x {0, 1e-4}): a 5-fold inner split of the same
   kind; train on each inner training set for ``epochs`` epochs, scoring the
   inner validation fold after each epoch; average the per-epoch validation
   metric over inner folds and take its best epoch.
3. The grid point with the best mean inner metric wins; refit on the whole
   outer training set for the selected number of epochs; the outer test
   metric is the one after the last refit epoch.
4. Report the mean and (population) standard deviation over outer folds.
   With ``repeats`` > 1 the whole procedure runs once per split seed
   (``split_seed``, ``split_seed + 1``, ...: the reference's
   ``n_repeats_outer``, whose repeat ``r`` uses ``random_state=r``); the
   headline mean ± std pools all outer folds, as the reference logs it, and
   the mean ± std of the per-repeat means is reported beside it.

Randomness: ``split_seed`` fixes the folds only; ``seed`` fixes everything
trained (initialisation, batch order, dropout, tile order/subsets), so
training can be varied on fixed splits. Each run derives its own seed from
``(seed, split seed, outer fold, grid point, inner fold)``.

Reference flaws and deviations:

* ``epoch_selection='reference'`` (default) reproduces the reference's
  off-by-one: the best 0-based epoch index ``e`` becomes ``max(e, 1)`` refit
  epochs, i.e. one epoch fewer than the best inner epoch. ``'corrected'``
  refits for ``e + 1`` epochs.
* With fewer patients than folds the reference passes ``groups=None`` to
  ``StratifiedGroupKFold``, which scikit-learn rejects with a ``ValueError``;
  here it is a :class:`FoldError` that says how many folds to pass, raised
  before any training, as is a validation/test fold with a single class (or
  no event, for survival), where the metric is undefined.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from wsistream.mil.cv_results import CVResult, FoldResult
from wsistream.mil.data import FoldError, SlideCohort
from wsistream.mil.objectives import METRIC_NAME
from wsistream.mil.protocols import DEFAULT_PROTOCOL, get_protocol
from wsistream.mil.registry import DEFAULT_BATCH_SIZE, build_model, canonical_model_name
from wsistream.mil.splits import FoldPlan, make_splits
from wsistream.mil.train import TILE_SAMPLING, FitHistory, TrainConfig, fit

EPOCH_SELECTION = ("reference", "corrected")
#: Settings a protocol fixes; ``deviations()`` lists those set otherwise.
_PROTOCOL_FIELDS = (
    "outer_folds",
    "inner_folds",
    "learning_rates",
    "weight_decays",
    "epochs",
    "batch_size",
    "n_tiles",
    "tile_sampling",
    "epoch_selection",
)


@dataclass(frozen=True)
class NestedCVConfig:
    """Settings of a nested cross-validation (defaults: the HistoSSLscaling paper).

    Attributes
    ----------
    protocol : str
        ``histossl`` (default, the reference code) or ``random-tiles``; see
        :mod:`wsistream.mil.protocols`. Fixes ``tile_sampling`` unless it is
        passed.
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
    tile_sampling : str or None
        ``first`` or ``random`` (see :class:`~wsistream.mil.train.TrainConfig`);
        ``None`` = the protocol's.
    epoch_selection : str
        ``reference`` (off-by-one reproduced) or ``corrected``.
    seed : int
        Seeds everything trained: initialisation, batches, dropout, tiles.
    split_seed : int
        Outer-split ``random_state`` (the reference's repeat index, 0).
    repeats : int
        Nested CVs on split seeds ``split_seed .. split_seed + repeats - 1``.
    device : str
        Torch device.
    """

    protocol: str = DEFAULT_PROTOCOL
    outer_folds: int = 5
    inner_folds: int = 5
    learning_rates: tuple[float, ...] = (1e-3, 1e-4)
    weight_decays: tuple[float, ...] = (0.0, 1e-4)
    epochs: int = 50
    batch_size: int | None = None
    n_tiles: int | None = 1000
    tile_sampling: str | None = None
    epoch_selection: str = "reference"
    seed: int = 0
    split_seed: int = 0
    repeats: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        get_protocol(self.protocol)  # validates the name
        if self.outer_folds < 2 or self.inner_folds < 2:
            raise ValueError(
                f"outer_folds={self.outer_folds}, inner_folds={self.inner_folds}: pass at least 2 for both"
            )
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats}: pass at least 1 (one nested CV per split seed)")
        if not self.learning_rates or not self.weight_decays:
            raise ValueError("learning_rates and weight_decays need at least one value each, e.g. (1e-3,) and (0.0,)")
        object.__setattr__(self, "learning_rates", tuple(float(v) for v in self.learning_rates))
        object.__setattr__(self, "weight_decays", tuple(float(v) for v in self.weight_decays))
        if self.epoch_selection not in EPOCH_SELECTION:
            raise ValueError(f"epoch_selection={self.epoch_selection!r}: pass one of {EPOCH_SELECTION}")
        if self.tile_sampling is not None and self.tile_sampling not in TILE_SAMPLING:
            raise ValueError(f"tile_sampling={self.tile_sampling!r}: pass one of {TILE_SAMPLING} or None")
        TrainConfig(epochs=self.epochs, batch_size=self.batch_size or 1, n_tiles=self.n_tiles)  # validates

    @property
    def sampling(self) -> str:
        """The tile sampling in force: ``tile_sampling``, or the protocol's when it is ``None``."""
        return self.tile_sampling or get_protocol(self.protocol).tile_sampling

    @property
    def split_seeds(self) -> tuple[int, ...]:
        """Outer-split seeds, one per repeat."""
        return tuple(range(self.split_seed, self.split_seed + self.repeats))

    def deviations(self) -> dict[str, dict[str, Any]]:
        """Settings that differ from the protocol's: ``{name: {"value": ..., "protocol": ...}}``."""
        ref = NestedCVConfig(protocol=self.protocol)
        out = {}
        for f in fields(self):
            name = "sampling" if f.name == "tile_sampling" else f.name
            if f.name in _PROTOCOL_FIELDS and getattr(self, name) != getattr(ref, name):
                out[f.name] = {"value": getattr(self, name), "protocol": getattr(ref, name)}
        return out

    def train_config(self, model: str, learning_rate: float, weight_decay: float, epochs: int) -> TrainConfig:
        """Build the :class:`TrainConfig` of one run."""
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size or DEFAULT_BATCH_SIZE[model],
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            n_tiles=self.n_tiles,
            tile_sampling=self.sampling,
            device=self.device,
        )


def _best_epoch(mean_curve: np.ndarray, rule: str) -> tuple[int, float]:
    if np.all(np.isnan(mean_curve)):
        raise FoldError(None, "every inner validation metric is NaN; check the labels of the inner folds")
    e = int(np.nanargmax(mean_curve))
    epochs = max(e, 1) if rule == "reference" else e + 1
    return epochs, float(mean_curve[e])


def _grid_search(
    build: Callable[[], Any],
    cohort: SlideCohort,
    cfg: NestedCVConfig,
    name: str,
    fold: FoldPlan,
    key: tuple[int, int],
    tick: Callable[[], None] | None,
) -> list[dict[str, float]]:
    """Step 2: one row per grid point — its epochs to refit and mean inner validation metric."""
    tv_idx, _, inner = fold
    rows = []
    for g, (lr, wd) in enumerate(itertools.product(cfg.learning_rates, cfg.weight_decays)):
        curves = []
        for j, (tr, va) in enumerate(inner):
            seed = int(np.random.SeedSequence([cfg.seed, *key, g, j]).generate_state(1)[0])
            tc = cfg.train_config(name, lr, wd, cfg.epochs)
            _, hist = fit(build, cohort, tv_idx[tr], tv_idx[va], tc, seed, on_epoch=tick)
            curves.append(hist.eval_metric)
        n_ep, val = _best_epoch(np.nanmean(np.asarray(curves), axis=0), cfg.epoch_selection)
        rows.append({"learning_rate": lr, "weight_decay": wd, "epochs": n_ep, "inner_metric": val})
    return rows


def _refit(
    build: Callable[[], Any],
    cohort: SlideCohort,
    cfg: NestedCVConfig,
    name: str,
    fold: FoldPlan,
    key: tuple[int, int],
    best: dict[str, float],
    tick: Callable[[], None] | None,
) -> FitHistory:
    """Step 3: train the selected grid point on the whole outer training set, scored on the outer test set."""
    tv_idx, test_idx, _ = fold
    seed = int(np.random.SeedSequence([cfg.seed, *key, 10_000]).generate_state(1)[0])
    tc = cfg.train_config(name, best["learning_rate"], best["weight_decay"], int(best["epochs"]))
    _, hist = fit(build, cohort, tv_idx, test_idx, tc, seed, on_epoch=tick)
    if tick is not None:  # the refit runs fewer epochs than budgeted; fill the bar
        for _ in range(cfg.epochs - tc.epochs):
            tick()
    return hist


def _fold_result(
    cohort: SlideCohort,
    fold: FoldPlan,
    rows: list[dict[str, float]],
    best: dict[str, float],
    hist: FitHistory,
    position: tuple[int, int, int],
) -> FoldResult:
    """The record of one outer fold; ``position`` = (repeat, split seed, fold index), 0-based repeat and fold."""
    repeat, split_seed, k = position
    tv_idx, test_idx, _ = fold
    return FoldResult(
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
        repeat=repeat + 1,
        split_seed=split_seed,
    )


def _cv_result(
    cohort: SlideCohort,
    cfg: NestedCVConfig,
    name: str,
    folds: list[FoldResult],
    corrected: bool,
    model_kwargs: dict[str, Any],
) -> CVResult:
    """Step 4: every fold with the configuration that produced it (deviations from the protocol included)."""
    return CVResult(
        task=cohort.task,
        model=name,
        metric_name=METRIC_NAME[cohort.task],
        folds=tuple(folds),
        config={
            **asdict(cfg),
            "tile_sampling": cfg.sampling,
            "split_seeds": list(cfg.split_seeds),
            "deviations": cfg.deviations(),
            "corrected": corrected,
            "model_kwargs": model_kwargs,
        },
        n_slides=cohort.n_slides,
        n_patients=cohort.n_patients,
        class_names=cohort.class_names,
        exclusions=cohort.exclusions,
        notices=cohort.notices,
    )


def nested_cross_validation(
    cohort: SlideCohort,
    model: str,
    config: NestedCVConfig | None = None,
    *,
    corrected: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> CVResult:
    """Run the nested CV of ``model`` on ``cohort`` (once per split seed) and return per-fold results.

    Parameters
    ----------
    cohort : SlideCohort
        From :func:`~wsistream.mil.data.load_cohort`.
    model : str
        A name or alias of :data:`wsistream.registry.MIL_MODELS`.
    config : NestedCVConfig, optional
        Defaults to the paper settings under the ``histossl`` protocol.
    corrected : bool
        Corrected variant of DSMIL / TransMIL / HIPT-MIL.
    model_kwargs : mapping, optional
        Constructor overrides.
    progress : callable, optional
        ``progress(fold, total_epochs)`` is called at the start of each outer
        fold (numbered across repeats) and must return a callable invoked
        once per trained epoch (e.g. a progress bar's ``update``).
    """
    cfg = config or NestedCVConfig()
    name = canonical_model_name(model)
    kwargs = dict(model_kwargs or {})

    def build() -> Any:
        return build_model(name, cohort.dim, cohort.n_outputs, corrected=corrected, **kwargs)

    n_grid = len(cfg.learning_rates) * len(cfg.weight_decays)
    # step 1, for every repeat: every fold is checked before anything is trained
    plans = [make_splits(cohort, cfg.outer_folds, cfg.inner_folds, s) for s in cfg.split_seeds]
    folds: list[FoldResult] = []
    for r, (split_seed, plan) in enumerate(zip(cfg.split_seeds, plans, strict=True)):
        for k, fold in enumerate(plan):
            total = cfg.epochs * (n_grid * len(fold[2]) + 1)
            tick = progress(r * cfg.outer_folds + k + 1, total) if progress else None
            rows = _grid_search(build, cohort, cfg, name, fold, (split_seed, k), tick)
            best = rows[int(np.nanargmax([row["inner_metric"] for row in rows]))]
            hist = _refit(build, cohort, cfg, name, fold, (split_seed, k), best, tick)
            folds.append(_fold_result(cohort, fold, rows, best, hist, (r, split_seed, k)))
    return _cv_result(cohort, cfg, name, folds, corrected, kwargs)
