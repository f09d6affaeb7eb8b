"""Student/teacher pair with DINO / DINOv2 losses, EMA update, parameter groups and schedules.

Reference: SLP ``dinov2_with_new_settings/dinov2/train/ssl_meta_arch.py``
(``SSLMetaArch.forward_backward``, ``update_teacher``), SLP ``dino/main.py``
(``train_one_epoch``) and DINOv2 ``dinov2/train/train.py`` (``build_schedulers``).
The teacher sees the two global crops (no mask), the student all crops with
iBOT masks on the global ones; the teacher is in eval mode (no dropout), as
``SSLMetaArch.train`` sets it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from wsistream.slide_ssl.batch import ViewBatch
from wsistream.slide_ssl.config import OptimConfig, PretrainConfig
from wsistream.slide_ssl.encoder import SlideEncoder
from wsistream.slide_ssl.losses import Centering, DINOHead, cosine_schedule, dino_loss, ibot_loss, koleo_loss


def _build_student(cfg: PretrainConfig) -> nn.ModuleDict:
    o, e = cfg.objective, cfg.encoder

    def head(out_dim: int) -> DINOHead:
        return DINOHead(e.dim, out_dim, o.head_hidden_dim, o.head_bottleneck_dim, o.head_nlayers, o.norm_last_layer)

    parts: dict[str, nn.Module] = {"backbone": SlideEncoder(e), "dino_head": head(o.out_dim)}
    if o.ibot_weight > 0 and o.ibot_separate_head:
        parts["ibot_head"] = head(o.ibot_out_dim)
    return nn.ModuleDict(parts)


class SSLModel(nn.Module):
    """DINO (``ibot_weight=0``) or DINOv2 (iBOT, optional KoLeo) student/teacher pair.

    Examples
    --------
    >>> from wsistream.slide_ssl.config import EncoderConfig
    >>> from wsistream.slide_ssl.presets import method_preset
    >>> cfg = method_preset("dino", encoder=EncoderConfig(in_dim=8, dim=16, depth=1, heads=2, ffn_dim=32))
    >>> model = SSLModel(cfg)
    >>> sorted(model.student.keys())
    ['backbone', 'dino_head']
    """

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = _build_student(cfg)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        o = cfg.objective
        self.do_ibot = o.ibot_weight > 0
        self.dino_center = Centering(o.out_dim, o.center_momentum)
        ibot_dim = o.ibot_out_dim if (self.do_ibot and o.ibot_separate_head) else o.out_dim
        self.ibot_center = Centering(ibot_dim, o.center_momentum) if self.do_ibot else None

    def train(self, mode: bool = True) -> SSLModel:
        """Train the student; the teacher follows only with ``objective.teacher_dropout``, else stays in eval."""
        super().train(mode)
        self.teacher.train(mode and self.cfg.objective.teacher_dropout)
        return self

    def _ibot_head(self, part: nn.ModuleDict) -> nn.Module:
        return part["ibot_head"] if "ibot_head" in part else part["dino_head"]

    def forward_loss(self, batch: ViewBatch, teacher_temp: float) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch: ``loss`` (weighted total), ``dino``, ``ibot``, ``koleo`` (unweighted)."""
        o = self.cfg.objective
        n_views = batch.global_x.shape[0]
        mask = batch.global_mask if self.do_ibot else None
        has_mask = mask is not None and bool(mask.any())
        with torch.no_grad():
            t_out = self.teacher["backbone"](batch.global_x, batch.global_pos, batch.global_pad)
            t_logits = self.teacher["dino_head"](t_out.cls)
            t_probs = list(self.dino_center.probs(t_logits, teacher_temp).chunk(2))
            self.dino_center.update(t_logits)
            if self.ibot_center is not None:
                t_tok = t_out.patch[mask] if has_mask else t_out.patch[:, :0].reshape(0, t_out.patch.shape[-1])
                t_tok_logits = self._ibot_head(self.teacher)(t_tok)
                t_tok_probs = self.ibot_center.probs(t_tok_logits, teacher_temp)
                self.ibot_center.update(t_tok_logits)
        s_g = self.student["backbone"](
            batch.global_x, batch.global_pos, batch.global_pad, mask=mask if has_mask else None
        )
        views = list(self.student["dino_head"](s_g.cls).chunk(2))
        if batch.local_x is not None:
            s_l = self.student["backbone"](batch.local_x, batch.local_pos, batch.local_pad)
            views += list(self.student["dino_head"](s_l.cls).chunk(self.cfg.crops.n_local))
        zero = s_g.cls.new_zeros((), dtype=torch.float32)
        out = {"dino": dino_loss(views, t_probs, o.student_temp), "ibot": zero, "koleo": zero}
        if has_mask and mask is not None:
            s_tok_logits = self._ibot_head(self.student)(s_g.patch[mask])
            per_view = mask.sum(1, keepdim=True).clamp(min=1).float()
            weights = (1.0 / per_view).expand_as(mask)[mask]
            out["ibot"] = ibot_loss(s_tok_logits, t_tok_probs, weights, n_views, o.student_temp)
        if o.koleo_weight > 0:
            out["koleo"] = sum((koleo_loss(c) for c in s_g.cls.chunk(2)), start=zero)
        out["loss"] = o.dino_weight * out["dino"] + o.ibot_weight * out["ibot"] + o.koleo_weight * out["koleo"]
        return out

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- m * teacher + (1 - m) * student`` over all parameters."""
        t: list[torch.Tensor] = list(self.teacher.parameters())
        s = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1 - momentum)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Prototype layers frozen during the first ``freeze_last_layer_frac`` of training."""
        return [p for n, p in self.student.named_parameters() if "last_layer" in n and p.requires_grad]

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """AdamW parameter groups with lr / weight-decay multipliers.

        No weight decay on biases, norms and 1-D parameters (DINO ``get_params_groups``, DINOv2
        ``get_params_groups_with_decay``); the ``input_proj`` lr is multiplied by ``input_proj_lr_mult``.
        """
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            wd = 0.0 if (name.endswith(".bias") or p.ndim == 1 or "norm" in name) else 1.0
            lr = optim.input_proj_lr_mult if "input_proj" in name else 1.0
            groups.setdefault((wd, lr), []).append(p)
        return [
            {"params": ps, "wd_multiplier": wd, "lr_multiplier": lr, "lr": 0.0, "weight_decay": 0.0}
            for (wd, lr), ps in sorted(groups.items())
        ]


@dataclass(frozen=True)
class Schedules:
    """Per-optimizer-step values; ``freeze_last_layer_steps`` leading steps keep the prototypes fixed."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_last_layer_steps: int
    peak_lr: float


def build_schedules(cfg: PretrainConfig, world_size: int = 1) -> Schedules:
    """Per-step lr, weight decay, EMA momentum and teacher temperature.

    lr: scaled by batch, linear warm-up then cosine; weight decay and momentum: cosine; teacher temperature:
    linear warm-up then constant (DINOv2 ``build_schedulers``, DINO ``cosine_scheduler``).
    """
    o, opt, n = cfg.objective, cfg.optim, cfg.steps
    batch = cfg.batch_size * world_size * (opt.grad_accum if opt.scale_with_accumulation else 1)
    peak = opt.scaled_lr(batch)
    return Schedules(
        lr=cosine_schedule(peak, opt.min_lr, n, warmup=round(opt.warmup_frac * n)),
        weight_decay=cosine_schedule(opt.weight_decay, opt.weight_decay_end, n),
        momentum=cosine_schedule(o.momentum_teacher, o.final_momentum_teacher, n),
        teacher_temp=cosine_schedule(
            o.teacher_temp,
            o.teacher_temp,
            n,
            warmup=round(o.teacher_temp_warmup_frac * n),
            start_warmup=o.warmup_teacher_temp,
        ),
        freeze_last_layer_steps=round(opt.freeze_last_layer_frac * n),
        peak_lr=peak,
    )
