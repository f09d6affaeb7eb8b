"""The seed's probe protocol: a linear head trained for 10 epochs on frozen slide embeddings, last epoch kept.

Reference: JunboShen/slide-level-pretraining (``SLP``) ``dinov2_with_new_settings/``
``scripts_finetune_dinov2/run_mutation_dinov2_4layers_cls_input_global_pool.sh`` (``sh``) and
``finetune_dinov2_cls_global/`` ``main.py``, ``training.py``, ``utils.py``, ``params.py``,
``classification_head.py`` (commit 8acd96a):

- head ``nn.Linear(4 * D + d, n_labels)`` on the CLS of layers 9-12 concatenated with the mean tile
  embedding (``classification_head.py`` l.84, 104, 131-133; ``sh`` l.19 ``FEATLAYER="9-10-11-12"``);
- ``BCEWithLogitsLoss`` for the multi-label task (``utils.py`` l.321-322);
- AdamW (``params.py`` l.41), ``lr = blr * batch * gc / 256`` with ``blr=0.004``, batch 1, ``gc=32``
  (``main.py`` l.40-42; ``sh`` l.15-16), weight decay 0.01 on weights and 0 on biases (``sh`` l.17;
  ``utils.py`` l.242-247; the head's layer-decay scale is ``0.95**0 = 1``, ``utils.py`` l.232, 285);
- half-cycle cosine from ``lr`` to ``min_lr=1e-6`` after a 1-epoch linear warm-up, set every ``gc``
  slides at the fractional epoch (``utils.py`` l.288-304, ``training.py`` l.113-114; ``params.py`` l.37;
  ``sh`` l.46);
- one slide per iteration, loss / ``gc``, an optimizer step every ``gc`` slides of an epoch; the
  gradients of an epoch's last ``len % gc`` slides are not cleared and join the next epoch's first step
  (``training.py`` l.135-150); a new random order every epoch (``RandomSampler``, ``utils.py`` l.192);
- 10 epochs, the model after the last epoch is tested (``sh`` l.14, 48 ``--model_select last_epoch``;
  ``training.py`` l.85-91).

Differences, stated: the embeddings are computed once with the encoder in eval mode (the reference
re-encodes every slide each epoch with the frozen encoder in train mode, i.e. with its dropout 0.1 on,
and under fp16 autocast); slides with a missing label value are left out of that label's loss term
(the reference's task has every label). The ``gc`` slides of a step are evaluated as one batch whose
summed loss / ``gc`` has the same gradient as the reference's slide-by-slide accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsistream.slide_ssl.probe import ProbeScores, Split, binary_metrics


@dataclass(frozen=True)
class HeadProbeConfig:
    """Linear-head probe settings; defaults are the reference's (see the module docstring for file:line)."""

    epochs: int = 10
    base_lr: float = 0.004
    accum: int = 32
    batch_size: int = 1
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.accum < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs, accum and batch_size must be >= 1, got {self.epochs, self.accum, self.batch_size}"
            )
        if self.base_lr <= 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ValueError("base_lr must be > 0, min_lr and weight_decay >= 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs})")

    @property
    def lr(self) -> float:
        """Peak lr ``base_lr * batch_size * accum / 256`` (SLP ``main.py`` l.40-42): 5e-4 by default."""
        return self.base_lr * self.batch_size * self.accum / 256.0

    def lr_at(self, epoch: float) -> float:
        """MAE ``adjust_learning_rate`` at a fractional epoch (SLP ``utils.py`` l.288-304)."""
        if epoch < self.warmup_epochs:
            return self.lr * epoch / self.warmup_epochs
        frac = (epoch - self.warmup_epochs) / (self.epochs - self.warmup_epochs)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _train_head(x: torch.Tensor, y: torch.Tensor, cfg: HeadProbeConfig, gen: torch.Generator) -> torch.nn.Linear:
    """Train ``Linear(F, L)`` on ``x`` (n, F), ``y`` (n, L) with NaN = unknown; returns the last-epoch head."""
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():  # nn.Linear's default init, drawn from our generator for determinism
        bound = 1.0 / math.sqrt(x.shape[1])
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.AdamW(
        [
            {"params": [head.weight], "weight_decay": cfg.weight_decay},
            {"params": [head.bias], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    known = ~torch.isnan(y)
    target = torch.nan_to_num(y, nan=0.0)
    n = x.shape[0]
    chunk = cfg.accum * cfg.batch_size
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, chunk):
            idx = order[start : start + chunk]
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(epoch + start / n)
            per = F.binary_cross_entropy_with_logits(head(x[idx]), target[idx], reduction="none")
            k = known[idx]
            per_slide = (per * k).sum(1) / k.sum(1).clamp(min=1)  # BCEWithLogitsLoss mean over known labels
            torch.autograd.backward(per_slide.sum() / chunk)
            if idx.numel() == chunk:  # a full gc group: step (a shorter tail carries into the next epoch)
                opt.step()
                opt.zero_grad()
    return head


def head_probe(
    x: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    *,
    label_names: Sequence[str] | None = None,
    cfg: HeadProbeConfig | None = None,
    seed: int = 0,
    name: str = "linear head",
) -> ProbeScores:
    """The seed's probe: one multi-label linear head per split trained on ``train``, tested after the last epoch.

    ``x`` (n, F) frozen slide embeddings (:func:`~.probe.embed_slides` with ``layers=(-4, -3, -2, -1)``,
    ``concat_mean_input=True``), ``y`` (n, L) 0/1 with NaN for missing. The validation part is not used for
    model selection (the reference keeps the last epoch). Deterministic for a given ``seed``.
    """
    cfg = cfg or HeadProbeConfig()
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    roc = np.full((len(splits), y.shape[1]), np.nan)
    prc = np.full_like(roc, np.nan)
    for r, sp in enumerate(splits):
        gen = torch.Generator().manual_seed(seed * 1000 + r)
        head = _train_head(xt[sp.train], yt[sp.train], cfg, gen)
        with torch.no_grad():
            prob = torch.sigmoid(head(xt[sp.test])).numpy()
        for k in range(y.shape[1]):
            ok = ~np.isnan(y[sp.test, k])
            roc[r, k], prc[r, k] = binary_metrics(y[sp.test, k][ok].astype(int), prob[ok, k])
    names = list(label_names) if label_names is not None else [f"label{k}" for k in range(y.shape[1])]
    return ProbeScores(name, names, roc, prc)
