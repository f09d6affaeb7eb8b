"""Tile-level linear evaluation: logistic regression on frozen features.

Reference: ``tools/tile_level_tasks/linear_evaluation.py`` and
``rl_benchmarks/utils/linear_evaluation.py`` of owkin/HistoSSLscaling, with
``conf/tile_level_task/linear_evaluation/config.yaml``. For each training
fraction p:

1. draw ``int(p * N_train)`` training tiles uniformly without replacement
   (not stratified, as the reference);
2. fit ``StandardScaler`` on them and scale train and test features;
3. fit ``n_ensembling`` (30) ``SGDClassifier(loss='log_loss', penalty='l2',
   learning_rate='adaptive', eta0=1e-4, early_stopping=False)`` with
   ``random_state = 0..n_ensembling-1`` and average their test
   probabilities;
4. report AUC (binary; macro one-vs-rest for C > 2), accuracy and F1 (binary;
   macro for C > 2) with a "basic" bootstrap confidence interval
   (``2*theta - q_high, 2*theta - q_low``) over ``n_resamples`` (1000) test
   resamples, plus per-class one-vs-rest AUC / accuracy / F1.

Additions: ``n_repeats`` independent training draws per fraction (the
reference draws once) summarised as mean ± std; a draw with fewer than two
classes is recorded as skipped instead of crashing; when a draw misses a
class its probability column is 0 (the reference would misalign columns);
bootstrap resamples where a metric is undefined are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wsistream.eval.tiles import TileDataset

#: Training fractions of the paper (0.1% to 100%).
PAPER_FRACTIONS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


@dataclass(frozen=True)
class LinearEvalConfig:
    """Settings of :func:`linear_evaluation` (defaults: the reference).

    Attributes
    ----------
    fractions : tuple of float
        Training fractions in (0, 1].
    n_repeats : int
        Independent training subsets per fraction (reference 1).
    n_ensembling : int
        SGD seeds whose probabilities are averaged (reference 30).
    eta0 : float
        Initial learning rate of the adaptive schedule (reference 1e-4).
    n_resamples : int
        Bootstrap resamples of the test set (reference 1000; 0 = no CI).
    confidence_level : float
        Two-sided CI level (reference 0.95).
    seed : int
        Seeds the training draws and the bootstrap.
    n_jobs : int or None
        Passed to ``SGDClassifier`` (one-vs-rest fits in parallel).
    """

    fractions: tuple[float, ...] = PAPER_FRACTIONS
    n_repeats: int = 1
    n_ensembling: int = 30
    eta0: float = 1e-4
    n_resamples: int = 1000
    confidence_level: float = 0.95
    seed: int = 0
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions={self.fractions}: pass values in (0, 1], e.g. (0.01, 0.1, 1.0)")
        if self.n_repeats < 1 or self.n_ensembling < 1:
            raise ValueError(f"n_repeats={self.n_repeats}, n_ensembling={self.n_ensembling}: pass at least 1")
        if self.n_resamples < 0 or not 0 < self.confidence_level < 1:
            raise ValueError(
                f"n_resamples={self.n_resamples}, confidence_level={self.confidence_level}: "
                "pass n_resamples >= 0 and a level in (0, 1), e.g. 0.95"
            )
        if self.eta0 <= 0:
            raise ValueError(f"eta0={self.eta0}: pass a positive initial learning rate")


def bootstrap_ci(
    labels: np.ndarray,
    predictions: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int,
    confidence_level: float,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """Estimate and basic-bootstrap CI of ``statistic(labels, predictions)``.

    Reference ``bootstrap``: resample the pairs with replacement
    ``n_resamples`` times and return ``(theta, 2*theta - q_high, 2*theta - q_low)``
    with ``q`` the bootstrap quantiles at ``(1 -/+ level) / 2``. Resamples
    where the statistic is undefined (raises ``ValueError``) are skipped.
    """
    theta = float(statistic(labels, predictions))
    if n_resamples == 0:
        return theta, float("nan"), float("nan")
    values = []
    n = len(labels)
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        try:
            values.append(float(statistic(labels[idx], predictions[idx])))
        except ValueError:
            continue
    if not values:
        return theta, float("nan"), float("nan")
    alpha = (1 - confidence_level) / 2
    lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return theta, float(2 * theta - hi), float(2 * theta - lo)


def _fit_predict(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, n_classes: int, cfg: LinearEvalConfig
) -> np.ndarray:
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    proba = np.zeros((len(x_te), n_classes))
    for seed in range(cfg.n_ensembling):
        clf = SGDClassifier(
            loss="log_loss",
            penalty="l2",
            learning_rate="adaptive",
            eta0=cfg.eta0,
            early_stopping=False,
            random_state=seed,
            n_jobs=cfg.n_jobs,
        ).fit(x_tr, y_tr)
        proba[:, clf.classes_] += clf.predict_proba(x_te)
    return proba / cfg.n_ensembling


def _metrics(y: np.ndarray, proba: np.ndarray, cfg: LinearEvalConfig, rng: np.random.Generator) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    multi = proba.shape[1] > 2
    pred = proba.argmax(axis=1)
    score = proba if multi else proba[:, 1]

    def auc(a: np.ndarray, b: np.ndarray) -> float:
        if multi:
            return float(roc_auc_score(a, b, average="macro", multi_class="ovr", labels=np.arange(proba.shape[1])))
        return float(roc_auc_score(a, b))

    def f1(a: np.ndarray, b: np.ndarray) -> float:
        return float(f1_score(a, b, average="macro" if multi else "binary"))

    out: dict[str, float] = {}
    for name, stat, p in (("auc", auc, score), ("acc", accuracy_score, pred), ("f1", f1, pred)):
        try:
            theta, lo, hi = bootstrap_ci(y, p, stat, cfg.n_resamples, cfg.confidence_level, rng)
        except ValueError:
            theta, lo, hi = float("nan"), float("nan"), float("nan")
        out.update({name: theta, f"{name}_low": lo, f"{name}_high": hi})
    return out


def _per_class(y: np.ndarray, proba: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    pred = proba.argmax(axis=1)
    out: dict[str, float] = {}
    for c, name in enumerate(names):
        yc, pc = (y == c).astype(int), (pred == c).astype(int)
        out[f"{name}_auc"] = float(roc_auc_score(yc, proba[:, c])) if 0 < yc.sum() < len(yc) else float("nan")
        out[f"{name}_acc"] = float(accuracy_score(yc, pc))
        out[f"{name}_f1"] = float(f1_score(yc, pc, zero_division=0.0))
    return out


@dataclass(frozen=True, eq=False)
class LinearEvalResult:
    """Per (fraction, repeat) rows and the configuration."""

    rows: tuple[dict[str, Any], ...]
    class_names: tuple[str, ...]
    config: dict[str, Any]
    n_train: int
    n_test: int

    def summary(self) -> list[dict[str, Any]]:
        """Per fraction: mean and std over repeats of AUC, accuracy and F1 (skipped draws left out)."""
        out = []
        for frac in sorted({r["fraction"] for r in self.rows}):
            ok = [r for r in self.rows if r["fraction"] == frac and r["status"] == "ok"]
            row: dict[str, Any] = {"fraction": frac, "n_ok": len(ok)}
            for m in ("auc", "acc", "f1"):
                vals = np.asarray([r[m] for r in ok], dtype=float)
                row[f"{m}_mean"] = float(np.mean(vals)) if len(vals) else float("nan")
                row[f"{m}_std"] = float(np.std(vals)) if len(vals) else float("nan")
            out.append(row)
        return out


def linear_evaluation(
    train: TileDataset,
    test: TileDataset,
    config: LinearEvalConfig | None = None,
    progress: Callable[[], Any] | None = None,
) -> LinearEvalResult:
    """Run the linear evaluation of ``train`` -> ``test`` over the configured fractions.

    ``progress()`` is called after each (fraction, repeat).
    """
    cfg = config or LinearEvalConfig()
    if train.class_names != test.class_names:
        raise ValueError(
            f"train classes {train.class_names} differ from test classes {test.class_names}; "
            "load both with the same class_names"
        )
    if train.features.shape[1] != test.features.shape[1]:
        raise ValueError(f"train d={train.features.shape[1]} but test d={test.features.shape[1]}")
    if test.n_classes < 2 or np.unique(test.labels).size < 2:
        raise ValueError("the test set needs at least two classes")
    rows: list[dict[str, Any]] = []
    n = len(train.labels)
    for fi, frac in enumerate(cfg.fractions):
        for rep in range(cfg.n_repeats):
            rng = np.random.default_rng([cfg.seed, fi, rep])
            size = int(frac * n)
            idx = rng.choice(n, size=size, replace=False)
            row: dict[str, Any] = {"fraction": frac, "repeat": rep, "n_train": size, "status": "ok"}
            n_cls = np.unique(train.labels[idx]).size
            if n_cls < 2:
                row["status"] = f"skipped: {size} training tiles hold {n_cls} class(es)"
                rows.append(row)
            else:
                proba = _fit_predict(train.features[idx], train.labels[idx], test.features, test.n_classes, cfg)
                row.update(_metrics(test.labels, proba, cfg, rng))
                row.update(_per_class(test.labels, proba, test.class_names))
                rows.append(row)
            if progress is not None:
                progress()
    return LinearEvalResult(
        rows=tuple(rows),
        class_names=train.class_names,
        config=asdict(cfg),
        n_train=n,
        n_test=len(test.labels),
    )
