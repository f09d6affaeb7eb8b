"""What a nested cross-validation gives: one :class:`FoldResult` per outer fold, gathered in a :class:`CVResult`.

Apart from the procedure (:mod:`wsistream.mil.cv`) so that the readers of results
(:mod:`wsistream.mil.report`) need numpy only, not the models and training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsistream.mil.records import Exclusion, Notice


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
    repeat: int = 1
    split_seed: int = 0


@dataclass(frozen=True, eq=False)
class CVResult:
    """Outcome of :func:`nested_cross_validation`: every outer fold of every repeat."""

    task: str
    model: str
    metric_name: str
    folds: tuple[FoldResult, ...]
    config: dict[str, Any]
    n_slides: int
    n_patients: int
    class_names: tuple[str, ...] = ()
    exclusions: tuple[Exclusion, ...] = field(default=())
    notices: tuple[Notice, ...] = field(default=())

    @property
    def metrics(self) -> np.ndarray:
        """Outer test metric per fold (all repeats, in order)."""
        return np.asarray([f.metric for f in self.folds])

    @property
    def mean(self) -> float:
        """Mean outer test metric over all folds of all repeats (the reference's pooled mean)."""
        return float(np.mean(self.metrics))

    @property
    def std(self) -> float:
        """Population standard deviation over all folds (``np.std``, as the reference)."""
        return float(np.std(self.metrics))

    @property
    def n_repeats(self) -> int:
        """Number of repeats (split seeds)."""
        return len({f.repeat for f in self.folds})

    @property
    def repeat_means(self) -> np.ndarray:
        """Mean outer test metric of each repeat."""
        reps = sorted({f.repeat for f in self.folds})
        return np.asarray([np.mean([f.metric for f in self.folds if f.repeat == r]) for r in reps])

    def summary(self) -> str:
        """One line: ``model task: metric mean ± std over k folds`` (+ the spread of repeat means)."""
        n_folds = len(self.folds) // self.n_repeats
        over = f"{n_folds} outer folds" if self.n_repeats == 1 else f"{self.n_repeats} repeats x {n_folds} folds"
        text = (
            f"{self.model} {self.task}: {self.metric_name} {self.mean:.3f} ± {self.std:.3f} "
            f"over {over} ({self.n_slides} slides, {self.n_patients} patients)"
        )
        if self.n_repeats > 1:
            rm = self.repeat_means
            text += f"; mean of repeats {np.mean(rm):.3f} ± {np.std(rm):.3f}"
        return text
