"""Training driver: exact resume, outputs, recorded skips, non-finite losses."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from wsistream.slide_ssl.checkpoint import CHECKPOINT, ENCODER, PretrainError
from wsistream.slide_ssl.data import SlideTokenCohort
from wsistream.slide_ssl.objective import SSLModel
from wsistream.slide_ssl.probe import load_slide_encoder
from wsistream.slide_ssl.train import pretrain


@pytest.mark.parametrize("method", ["dinov2", "dino"])
def test_interrupted_and_resumed_run_replays_the_same_losses(method, tiny_config, feature_dir, tmp_path):
    cfg = tiny_config(method, steps=5, checkpoint_every=2)
    full = pretrain(feature_dir, tmp_path / "full", cfg, progress=False)
    part = pretrain(feature_dir, tmp_path / "part", cfg, progress=False, stop_after=3)
    assert len(part.history) == 3 and part.encoder_path is None
    resumed = pretrain(feature_dir, tmp_path / "part", cfg, progress=False)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.losses == full.losses  # exact float equality
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a == b
    sd_full = torch.load(full.encoder_path, weights_only=True)["state_dict"]
    sd_res = torch.load(resumed.encoder_path, weights_only=True)["state_dict"]
    assert all(torch.equal(sd_full[k], sd_res[k]) for k in sd_full)


def test_layer_checkpointing_can_be_switched_on_when_resuming(tiny_config, feature_dir, tmp_path):
    cfg = tiny_config("dinov2", steps=4, checkpoint_every=2)
    full = pretrain(feature_dir, tmp_path / "full", cfg, progress=False)
    pretrain(feature_dir, tmp_path / "part", cfg, progress=False, stop_after=2)
    recompute = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, checkpoint_layers=True))
    resumed = pretrain(feature_dir, tmp_path / "part", recompute, progress=False)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.losses == full.losses  # exact: recomputed activations, replayed dropout masks


def test_outputs_checkpoint_and_loss_files(tiny_config, feature_dir, tmp_path):
    cfg = tiny_config("dinov2-grid", steps=3, checkpoint_every=2)
    res = pretrain(feature_dir, tmp_path, cfg, progress=False)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "rng", "history", "config", "step", "schedule", "slide_ids"} <= set(state)
    assert state["step"] == 3 and len(state["optimizer"]["state"]) > 0
    assert any(k.startswith("teacher.") for k in state["model"]) and "dino_center.center" in state["model"]
    with open(tmp_path / "loss.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["loss"]) == pytest.approx(res.losses[-1])
    assert (tmp_path / "loss.png").stat().st_size > 1000
    exported, from_ckpt = (
        load_slide_encoder(tmp_path / ENCODER).state_dict(),
        load_slide_encoder(tmp_path / CHECKPOINT).state_dict(),
    )
    assert all(torch.equal(exported[k], from_ckpt[k]) for k in exported)


def test_resume_refuses_another_configuration(tiny_config, feature_dir, tmp_path):
    pretrain(feature_dir, tmp_path, tiny_config("dino", steps=2), progress=False)
    with pytest.raises(PretrainError, match="another configuration"):
        pretrain(feature_dir, tmp_path, tiny_config("dino", steps=2, seed=5), progress=False)
    res = pretrain(feature_dir, tmp_path, tiny_config("dino", steps=2, seed=5), progress=False, resume=False)
    assert len(res.history) == 2


def test_mismatched_in_dim_is_a_clear_error(tiny_config, feature_dir, tmp_path):
    cfg = tiny_config("dino")
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, in_dim=12))
    with pytest.raises(ValueError, match="pass in_dim=8"):
        pretrain(SlideTokenCohort.scan(feature_dir), tmp_path, cfg, progress=False)


def test_training_on_a_folder_with_bad_slides_records_them(tiny_config, feature_dir, write_slide, tmp_path):
    write_slide(feature_dir / "nan.h5", nan_rows=10_000)
    write_slide(feature_dir / "d12.h5", dim=12)
    (feature_dir / "broken.h5").write_bytes(b"\x00" * 10)
    res = pretrain(feature_dir, tmp_path / "out", tiny_config("dinov2", steps=2), progress=False)
    assert len(res.history) == 2 and all(map(torch.isfinite, map(torch.tensor, res.losses)))
    lines = [json.loads(x) for x in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert {x["slide"].rsplit("/", 1)[-1] for x in lines} == {"nan.h5", "d12.h5", "broken.h5"}


def test_slide_vanishing_mid_training_is_skipped(tiny_config, feature_dir, tmp_path):
    cohort = SlideTokenCohort.scan(feature_dir, min_tiles=8, preload=False)
    cohort.paths[1].unlink()
    res = pretrain(cohort, tmp_path, tiny_config("dino", steps=3), progress=False)
    assert len(res.history) == 3
    assert any("skipped mid-training" in s.reason for s in res.skips)


def test_non_finite_losses_skip_steps_then_abort(tiny_config, feature_dir, tmp_path, monkeypatch):
    real = SSLModel.forward_loss
    calls = {"n": 0}

    def flaky(self, batch, teacher_temp):
        out = real(self, batch, teacher_temp)
        calls["n"] += 1
        if calls["n"] in (3, 4):  # step 2 (two micro-batches)
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SSLModel, "forward_loss", flaky)
    res = pretrain(feature_dir, tmp_path / "a", tiny_config("dino", steps=3), progress=False)
    assert len(res.history) == 3 and any("non-finite" in s.reason for s in res.skips)

    monkeypatch.setattr(SSLModel, "forward_loss", lambda self, b, t: {"loss": torch.tensor(float("nan"))})
    with pytest.raises(PretrainError, match="5 steps in a row"):
        pretrain(feature_dir, tmp_path / "b", tiny_config("dino", steps=8), progress=False)


def test_fp16_mode_scales_the_loss_and_resumes_exactly(tiny_config, feature_dir, tmp_path):
    cfg = tiny_config("dino", steps=4, checkpoint_every=2, precision="fp16")
    full = pretrain(feature_dir, tmp_path / "full", cfg, progress=False)
    assert all(torch.isfinite(torch.tensor(full.losses)))
    state = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)
    assert state["scaler"]["scale"] > 0  # GradScaler state is checkpointed (dino/main.py l.169-170)
    fp32 = pretrain(feature_dir, tmp_path / "fp32", dataclasses.replace(cfg, precision="fp32"), progress=False)
    assert full.losses != fp32.losses  # the forward really ran in float16
    assert abs(full.losses[0] - fp32.losses[0]) < 0.05 * abs(fp32.losses[0])
    pretrain(feature_dir, tmp_path / "part", cfg, progress=False, stop_after=2)
    assert pretrain(feature_dir, tmp_path / "part", cfg, progress=False).losses == full.losses


def test_renamed_slide_ssl_names_are_deprecated_aliases():
    import wsistream.slide_ssl as slide_ssl

    with pytest.warns(DeprecationWarning, match="renamed load_slide_encoder"):
        assert slide_ssl.load_encoder is load_slide_encoder
    assert "load_encoder" not in slide_ssl.__all__ and slide_ssl.load_slide_encoder is load_slide_encoder
    for old, new in (("SlideCohort", "SlideTokenCohort"), ("Crop", "TileCrop"), ("CropBox", "TileCropBox")):
        with pytest.warns(DeprecationWarning, match=f"renamed {new}"):
            assert getattr(slide_ssl, old) is getattr(slide_ssl, new)
        assert old not in slide_ssl.__all__ and old not in dir(slide_ssl)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_only_fp16_uses_a_loss_scaler(precision, tiny_config, feature_dir, tmp_path):
    # dino/main.py l.116-118: GradScaler only with --use_fp16; bf16 has float32's range and needs none
    pretrain(feature_dir, tmp_path, tiny_config("dino", steps=1, precision=precision), progress=False)
    assert "scaler" not in torch.load(tmp_path / CHECKPOINT, weights_only=True)
    with pytest.raises(ValueError, match="pass 'auto', 'fp32', 'bf16' or 'fp16'"):
        tiny_config("dino", precision="fp8")
