"""DINO head, teacher centring, DINO / iBOT / KoLeo losses and cosine schedules.

References: facebookresearch/dinov2 ``dinov2/layers/dino_head.py``,
``dinov2/loss/dino_clstoken_loss.py``, ``dinov2/loss/ibot_patch_loss.py``,
``dinov2/loss/koleo_loss.py``, ``dinov2/utils/utils.py`` (``CosineScheduler``);
SLP ``dino/vision_transformer.py`` (``DINOHead`` with ``norm_last_layer``) and
``dino/main.py`` (``DINOLoss``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class NormedLinear(nn.Module):
    """Weight-normalised linear layer without bias, ``W = g * V / ||V||`` (row-wise).

    Same function as ``weight_norm(nn.Linear(in, out, bias=False))`` with ``g`` filled with 1;
    ``freeze_norm=True`` keeps ``g`` fixed (DINO ``norm_last_layer=True``).
    """

    def __init__(self, in_dim: int, out_dim: int, freeze_norm: bool) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.v, a=math.sqrt(5))  # nn.Linear's default init
        self.g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not freeze_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        return F.linear(x, self.g * self.v / self.v.norm(dim=1, keepdim=True))


class DINOHead(nn.Module):
    """MLP (``nlayers`` Linear + GELU, truncated-normal std 0.02) -> L2-normalise -> weight-normalised prototypes."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int, norm_last_layer: bool
    ) -> None:
        super().__init__()
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = NormedLinear(bottleneck_dim, out_dim, freeze_norm=norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim) prototype logits."""
        x = self.mlp(x)
        eps = 1e-6 if x.dtype in (torch.float16, torch.bfloat16) else 1e-12
        logits: torch.Tensor = self.last_layer(F.normalize(x, dim=-1, p=2, eps=eps))
        return logits


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class Centering(nn.Module):
    """Teacher centring: ``softmax((t - c) / T)``, then ``c <- m c + (1 - m) mean(t)`` (mean over all ranks).

    DINO: the mean is over the teacher's CLS outputs; iBOT: over the masked tokens' outputs. Sum and count are
    all-reduced, so a rank without masked tokens still joins the collective (DINOv2 averages per-rank means).
    """

    center: torch.Tensor  # (1, dim) buffer, checkpointed with the model

    def __init__(self, dim: int, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def probs(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        """Centred, sharpened teacher distribution (float32)."""
        return F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of the centre with the batch mean of ``teacher_logits`` (N, K)."""
        stats = torch.cat([teacher_logits.float().sum(0), teacher_logits.new_tensor([teacher_logits.shape[0]]).float()])
        if _world() > 1:
            dist.all_reduce(stats)
        count = float(stats[-1])
        if count > 0:
            batch_center = (stats[:-1] / count).unsqueeze(0)
            self.center.mul_(self.momentum).add_(batch_center, alpha=1 - self.momentum)


def dino_loss(
    student_views: list[torch.Tensor], teacher_probs: list[torch.Tensor], student_temp: float
) -> torch.Tensor:
    """Mean over pairs (teacher view i, student view v != i) of the batch-mean ``-sum p_t log softmax(s / T_s)``.

    The first ``len(teacher_probs)`` student views are the global crops the teacher saw, in the same order
    (DINO ``DINOLoss.forward``; DINOv2 divides the same sum by ``n_global_terms + n_local_terms``).
    """
    total, terms = student_views[0].new_zeros((), dtype=torch.float32), 0
    for v, s in enumerate(student_views):
        lsm = F.log_softmax(s.float() / student_temp, dim=-1)
        for i, p in enumerate(teacher_probs):
            if i == v:
                continue
            total = total - (p * lsm).sum(-1).mean()
            terms += 1
    return total / max(terms, 1)


def ibot_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    token_weights: torch.Tensor,
    n_views: int,
    student_temp: float,
) -> torch.Tensor:
    """Masked-token cross-entropy (DINOv2 ``iBOTPatchLoss.forward_masked``).

    Each token is weighted by 1 / (masked tokens of its crop); the sum is divided by the number of global crops.
    """
    ce = -(teacher_probs * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)
    return (ce * token_weights).sum() / n_views


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator on L2-normalised rows, ``-mean log d(x_i, NN(x_i))``.

    Needs at least two rows; with one (the reference's batch size of 1) the nearest neighbour is the row
    itself and the loss is ``-log(eps)``, which is why SLP sets the weight to 0. Returns 0 then.
    """
    if x.shape[0] < 2:
        return x.new_zeros((), dtype=torch.float32)
    x = F.normalize(x.float(), eps=eps, p=2, dim=-1)
    dots = x @ x.t()
    dots.fill_diagonal_(-1.0)
    nn_idx = dots.argmax(dim=1)
    dist_ = F.pairwise_distance(x, x[nn_idx], p=2, eps=eps)
    return -torch.log(dist_ + eps).mean()


def cosine_schedule(base: float, final: float, total: int, warmup: int = 0, start_warmup: float = 0.0) -> np.ndarray:
    """Linear warm-up ``start_warmup -> base`` over ``warmup`` steps, then cosine ``base -> final``.

    Same values as DINOv2 ``CosineScheduler`` (``dinov2/utils/utils.py``).
    """
    warmup = min(max(int(warmup), 0), total)
    warm = np.linspace(start_warmup, base, warmup) if warmup else np.zeros(0)
    n = total - warmup
    it = np.arange(n)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * it / max(n, 1)))
    return np.concatenate([warm, cos]).astype(np.float64)
