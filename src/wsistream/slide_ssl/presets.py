"""The reference configuration of each slide-level SSL method (sources cited as in :mod:`.config`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from wsistream.slide_ssl.config import (
    METHODS,
    CropConfig,
    ObjectiveConfig,
    OptimConfig,
    PretrainConfig,
    _check,
)


def method_preset(method: str, **overrides: Any) -> PretrainConfig:
    """Reference configuration of ``method`` (``dino``, ``dinov2``, ``dinov2-grid``), with top-level overrides.

    Examples
    --------
    >>> cfg = method_preset("dinov2", steps=50)
    >>> cfg.objective.teacher_temp, cfg.crops.global_scale
    (0.07, 1.0)
    """
    _check(method in METHODS, f"method={method!r}; pass one of {', '.join(METHODS)}")
    if method == "dino":
        crops, obj, opt = CropConfig(), ObjectiveConfig(), OptimConfig()
    else:
        # run_dinov2.sh: GLOBAL_CROPS_SCALE=1.0 ("0.95 gives bugs for one particular image"), LOCAL 0.5;
        # slide_encoder.yaml: 8192 prototypes, koleo 0, warm-up 3 of 10 epochs, wd end 0.2, base lr 2e-4;
        # dinov2/train/train.py l.301-317 steps after every slide (no accumulation).
        crops = CropConfig(global_scale=1.0, local_scale=0.5, equalize=True)
        obj = ObjectiveConfig(
            norm_last_layer=False,
            teacher_temp=0.07,
            warmup_teacher_temp=0.04,
            teacher_temp_warmup_frac=0.3,
            momentum_teacher=0.992,
            ibot_weight=1.0,
            koleo_weight=0.0,
            teacher_dropout=False,
        )
        opt = OptimConfig(
            base_lr=2e-4,
            lr_scaling="sqrt_1024",
            weight_decay_end=0.2,
            clip_mode="global",
            input_proj_lr_mult=0.2,
        )
    if method == "dinov2-grid":
        # dinov2_with_new_settings = dinov2 with its changes: run_dinov2.sh GLOBAL 0.875 / LOCAL 0.375 on grid
        # crops; slide_encoder.yaml: separate iBOT head with 65536 prototypes, no teacher-temp warm-up
        # (constant 0.07), base lr 4e-3, no lr warm-up, gradients accumulated over 32 slides.
        crops = dataclasses.replace(crops, mode="grid", global_scale=0.875, local_scale=0.375)
        obj = dataclasses.replace(obj, teacher_temp_warmup_frac=0.0, ibot_separate_head=True, ibot_out_dim=65536)
        opt = dataclasses.replace(opt, base_lr=4e-3, warmup_frac=0.0, grad_accum=32)
    base = PretrainConfig(method=method, crops=crops, objective=obj, optim=opt)  # type: ignore[arg-type]
    return dataclasses.replace(base, **overrides)
