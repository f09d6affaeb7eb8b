"""Presets, schedules, losses and the student/teacher pair."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsistream.slide_ssl.batch import build_view_batch
from wsistream.slide_ssl.config import (
    CropConfig,
    EncoderConfig,
    ObjectiveConfig,
    OptimConfig,
    segment_lengths_for,
)
from wsistream.slide_ssl.data import SlideTokenCohort
from wsistream.slide_ssl.losses import Centering, cosine_schedule, dino_loss, koleo_loss
from wsistream.slide_ssl.objective import SSLModel, build_schedules
from wsistream.slide_ssl.presets import method_preset


def test_reference_presets():
    dino, v2, grid = (method_preset(m) for m in ("dino", "dinov2", "dinov2-grid"))
    assert segment_lengths_for(32768, 256) == dino.encoder.segment_lengths == (1024, 2048, 4096, 8192, 16384)
    assert (dino.encoder.dim, dino.encoder.depth, dino.encoder.heads, dino.encoder.ffn_dim) == (768, 12, 16, 3072)
    assert (dino.crops.global_scale, dino.crops.local_scale, dino.crops.max_tiles, dino.crops.local_cap) == (
        0.95,
        0.5,
        8192,
        2048,
    )
    assert (dino.objective.out_dim, dino.objective.teacher_temp, dino.objective.momentum_teacher) == (8192, 0.04, 0.996)
    assert (dino.optim.weight_decay, dino.optim.weight_decay_end, dino.optim.clip_grad) == (0.04, 0.4, 3.0)
    assert v2.objective.ibot_weight == 1.0 and v2.objective.mask_ratio == (0.1, 0.5)
    assert (v2.objective.warmup_teacher_temp, v2.objective.teacher_temp, v2.objective.momentum_teacher) == (
        0.04,
        0.07,
        0.992,
    )
    assert v2.optim.grad_accum == 1 and grid.optim.grad_accum == 32 and v2.optim.lr_scaling == "sqrt_1024"
    assert grid.crops.mode == "grid" and (grid.crops.global_scale, grid.crops.local_scale) == (0.875, 0.375)
    assert grid.objective.ibot_separate_head and grid.objective.ibot_out_dim == 65536


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (EncoderConfig, {"dim": 30, "heads": 5}, "multiple of 4"),
        (EncoderConfig, {"segment_lengths": (8,), "dilations": (1, 2)}, "one entry per branch"),
        (EncoderConfig, {"segment_lengths": (2,), "dilations": (4,)}, "shorter than its dilation"),
        (CropConfig, {"mode": "pixels"}, "pass 'coords' or 'grid'"),
        (CropConfig, {"local_scale": 0.0}, r"local_scale must be in \(0, 1\]"),
        (ObjectiveConfig, {"mask_ratio": (0.6, 0.2)}, "0 <= lo <= hi"),
        (ObjectiveConfig, {"dino_weight": 0.0}, "pass a positive one"),
        (OptimConfig, {"grad_accum": 0}, "grad_accum must be >= 1"),
    ],
)
def test_configs_reject_bad_values_with_advice(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)
    with pytest.raises(ValueError, match="pass one of dino, dinov2, dinov2-grid"):
        method_preset("byol")


def test_config_round_trip():
    cfg = method_preset("dinov2-grid", steps=7)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_lr_scaling_rules():
    assert OptimConfig(base_lr=5e-4).scaled_lr(512) == pytest.approx(1e-3)  # DINO: lr * B / 256
    assert OptimConfig(base_lr=4e-3, lr_scaling="sqrt_1024").scaled_lr(256) == pytest.approx(2e-3)  # sqrt(B/1024)


def test_schedules_follow_the_references():
    cfg = method_preset("dinov2", steps=100, batch_size=4)
    s = build_schedules(cfg, world_size=2)
    peak = 2e-4 * math.sqrt(8 / 1024)
    assert s.peak_lr == pytest.approx(peak)
    assert s.lr[0] == 0.0 and s.lr[9] == pytest.approx(peak) and s.lr[-1] == pytest.approx(1e-6, rel=0.2)
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.2, rel=1e-3)
    assert s.momentum[0] == pytest.approx(0.992) and s.momentum[-1] == pytest.approx(1.0, abs=1e-5)
    assert s.teacher_temp[0] == pytest.approx(0.04) and np.all(s.teacher_temp[30:] == 0.07)
    assert s.freeze_last_layer_steps == 10
    np.testing.assert_allclose(cosine_schedule(1.0, 0.0, 5), [1.0, 0.9045085, 0.6545085, 0.3454915, 0.0954915])


def test_dino_loss_skips_same_view_pairs():
    torch.manual_seed(0)
    s = [torch.randn(3, 6) for _ in range(4)]
    t = [torch.softmax(torch.randn(3, 6), -1) for _ in range(2)]
    manual = []
    for i, p in enumerate(t):
        for v, sv in enumerate(s):
            if v != i:
                manual.append(-(p * F.log_softmax(sv / 0.1, -1)).sum(-1).mean())
    torch.testing.assert_close(dino_loss(s, t, 0.1), torch.stack(manual).mean())


def test_koleo_needs_two_rows_and_rewards_spread():
    assert koleo_loss(torch.randn(1, 8)).item() == 0.0
    spread = koleo_loss(torch.eye(4))
    close = koleo_loss(torch.eye(4) + 5.0)
    assert spread < close


def test_centering_ema():
    c = Centering(3, momentum=0.9)
    c.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    torch.testing.assert_close(c.center, torch.tensor([[0.2, 0.2, 0.2]]))
    c.update(torch.zeros(0, 3))  # no tokens: no change
    torch.testing.assert_close(c.center, torch.tensor([[0.2, 0.2, 0.2]]))


@pytest.mark.parametrize("method", ["dino", "dinov2", "dinov2-grid"])
def test_forward_loss_and_teacher_update(method, tiny_config, feature_dir):
    cfg = tiny_config(method)
    cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, koleo_weight=0.1))
    torch.manual_seed(0)
    model = SSLModel(cfg).train()
    assert model.teacher.training == (method == "dino")  # teacher_dropout: SLP dino never calls teacher.eval()
    cohort = SlideTokenCohort.scan(feature_dir, min_tiles=8)
    batch = build_view_batch(
        [cohort.load(i) for i in range(3)],
        cfg.crops,
        cfg.objective,
        np.random.default_rng(0),
        with_masks=cfg.objective.ibot_weight > 0,
    )
    assert batch.global_x.shape[0] == 6 and batch.local_x is not None and batch.local_x.shape[0] == 6
    out = model.forward_loss(batch, teacher_temp=0.04)
    assert all(torch.isfinite(v) for v in out.values())
    assert (out["ibot"] > 0) == (method != "dino") and out["koleo"] != 0
    out["loss"].backward()
    assert model.student["backbone"].input_proj.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.update_teacher(0.75)
    for b, t, s in zip(before, model.teacher.parameters(), model.student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def test_param_groups(tiny_config):
    cfg = tiny_config("dinov2")
    model = SSLModel(cfg)
    groups = model.param_groups(cfg.optim)
    by_param = {id(p): g for g in groups for p in g["params"]}
    enc = model.student["backbone"]
    assert by_param[id(enc.input_proj.weight)]["lr_multiplier"] == 0.2
    assert by_param[id(enc.input_proj.bias)]["wd_multiplier"] == 0.0
    assert by_param[id(enc.norm.weight)]["wd_multiplier"] == 0.0
    assert by_param[id(enc.layers[0].fc1.weight)]["wd_multiplier"] == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.student.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["dino", "dinov2"])
def test_teacher_dropout_follows_the_preset(method, tiny_config, feature_dir):
    """SLP dino's teacher runs with the student's dropout; DINOv2's SSLMetaArch.train keeps it in eval."""
    cfg = tiny_config(method)
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, dropout=0.5))
    model = SSLModel(cfg).train()
    s = SlideTokenCohort.scan(feature_dir, min_tiles=8).load(0)
    x, pos = torch.from_numpy(s.features)[None], torch.from_numpy(s.grid)[None]
    with torch.no_grad():
        a, b = (model.teacher["backbone"](x, pos).cls for _ in range(2))
        assert (not torch.equal(a, b)) == cfg.objective.teacher_dropout == (method == "dino")
        model.eval()
        assert not model.teacher.training
        torch.testing.assert_close(model.teacher["backbone"](x, pos).cls, model.teacher["backbone"](x, pos).cls)
