"""Train one MIL model and score it after every epoch.

Reference: ``rl_benchmarks/trainers/torch_trainer.py`` (``TorchTrainer.train``)
and ``rl_benchmarks/trainers/utils.py`` (``slide_level_train_step``,
``slide_level_val_step``): Adam, shuffled training batches with
``drop_last=True``, zero-padded batches with a padding mask, the validation
set scored after each epoch, metrics computed on the epoch's logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wsistream.mil.data import SlideCohort, pad_batch, sample_tiles
from wsistream.mil.objectives import make_criterion, task_metric

TILE_SAMPLING = ("first", "random")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run.

    Attributes
    ----------
    epochs : int
        Passes over the training slides (reference 50).
    batch_size : int
        Slides per step (reference 16; 1 for HIPT-MIL).
    learning_rate, weight_decay : float
        Adam settings (searched by the nested CV).
    n_tiles : int or None
        Tiles per slide per step (reference 1000); ``None`` uses all tiles.
    tile_sampling : str
        ``first`` - the reference code's behaviour (the first ``n_tiles`` rows,
        shuffled at every pass; protocol ``histossl``); ``random`` - a fresh
        random subset of ``n_tiles`` tiles per slide per training step, and a
        fixed random subset for scoring (protocol ``random-tiles``); see
        :func:`~wsistream.mil.data.sample_tiles`. The default here stays
        ``random`` (callers such as ``slide_ssl``'s probe rely on it);
        :class:`~wsistream.mil.cv.NestedCVConfig` takes its protocol's.
    device : str
        Torch device (``cpu``, ``cuda``, ``cuda:1``...).
    """

    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    n_tiles: int | None = 1000
    tile_sampling: str = "random"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: pass at least 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: pass at least 1")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"learning_rate={self.learning_rate}, weight_decay={self.weight_decay}: "
                "pass a positive learning rate and a non-negative weight decay"
            )
        if self.n_tiles is not None and self.n_tiles < 1:
            raise ValueError(f"n_tiles={self.n_tiles}: pass a positive count or None for all tiles")
        if self.tile_sampling not in TILE_SAMPLING:
            raise ValueError(f"tile_sampling={self.tile_sampling!r}: pass one of {TILE_SAMPLING}")


@dataclass(frozen=True)
class FitHistory:
    """Per-epoch losses and metrics of one run, and the last epoch's evaluation scores."""

    train_loss: tuple[float, ...]
    train_metric: tuple[float, ...]
    eval_loss: tuple[float, ...]
    eval_metric: tuple[float, ...]
    eval_scores: np.ndarray

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.train_loss)


def _targets(cohort: SlideCohort, idx: Sequence[int] | np.ndarray) -> torch.Tensor:
    lab = cohort.labels[np.asarray(idx)]
    if cohort.task == "multiclass":
        return torch.as_tensor(lab, dtype=torch.long)
    return torch.as_tensor(lab, dtype=torch.float32).reshape(-1, 1)


def _batches(idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(idx)
    if len(order) <= batch_size:  # deviation: the reference would run zero steps here
        return [order]
    n_full = len(order) // batch_size  # drop_last=True as the reference
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]


def predict(
    model: nn.Module, cohort: SlideCohort, idx: Sequence[int] | np.ndarray, config: TrainConfig, seed: int
) -> np.ndarray:
    """Logits (len(idx), outputs) of ``model`` in eval mode on a fixed, seeded tile subset per slide.

    The subset of the slide at position ``j`` of ``idx`` is drawn from
    ``default_rng([seed, j])``: it depends on the slide's place in the
    (slide-id ordered) evaluation set, not on its index in the cohort.
    """
    idx = np.asarray(idx)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(idx), config.batch_size):
            chunk = idx[start : start + config.batch_size]
            arrays = [
                sample_tiles(
                    cohort.features[i],
                    config.n_tiles,
                    np.random.default_rng([seed, start + j]),
                    config.tile_sampling,
                )
                for j, i in enumerate(chunk)
            ]
            x, mask = pad_batch(arrays)
            out.append(model(x.to(config.device), mask.to(config.device)).float().cpu())
    return torch.cat(out).numpy()


def fit(
    build: Callable[[], nn.Module],
    cohort: SlideCohort,
    train_idx: Sequence[int] | np.ndarray,
    eval_idx: Sequence[int] | np.ndarray,
    config: TrainConfig,
    seed: int,
    on_epoch: Callable[[], None] | None = None,
) -> tuple[nn.Module, FitHistory]:
    """Train a fresh model on ``train_idx``, scoring ``eval_idx`` after every epoch.

    ``seed`` fixes the model initialisation, dropout, batch order and tile
    subsets, so a run is repeatable on a given device.
    """
    train_idx, eval_idx = np.asarray(train_idx), np.asarray(eval_idx)
    torch.manual_seed(seed)
    model = build().to(config.device)
    criterion = make_criterion(cohort.task)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng([seed, 1])
    eval_seed = int(np.random.default_rng([seed, 2]).integers(2**31))
    eval_targets = _targets(cohort, eval_idx)
    hist: dict[str, list[float]] = {"tl": [], "tm": [], "el": [], "em": []}
    scores = np.empty((0, cohort.n_outputs))
    for _ in range(config.epochs):
        model.train()
        losses, logits_all, seen = [], [], []
        for batch in _batches(train_idx, config.batch_size, rng):
            arrays = [sample_tiles(cohort.features[i], config.n_tiles, rng, config.tile_sampling) for i in batch]
            x, mask = pad_batch(arrays)
            logits = model(x.to(config.device), mask.to(config.device))
            loss = criterion(logits, _targets(cohort, batch).to(config.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            logits_all.append(logits.detach().float().cpu())
            seen.append(batch)
        seen_idx = np.concatenate(seen)
        hist["tl"].append(float(np.mean(losses)))
        hist["tm"].append(task_metric(cohort.task, cohort.labels[seen_idx], torch.cat(logits_all).numpy()))
        scores = predict(model, cohort, eval_idx, config, eval_seed)
        hist["el"].append(float(criterion(torch.from_numpy(scores), eval_targets)))
        hist["em"].append(task_metric(cohort.task, cohort.labels[eval_idx], scores))
        if on_epoch is not None:
            on_epoch()
    history = FitHistory(
        train_loss=tuple(hist["tl"]),
        train_metric=tuple(hist["tm"]),
        eval_loss=tuple(hist["el"]),
        eval_metric=tuple(hist["em"]),
        eval_scores=scores,
    )
    return model, history
