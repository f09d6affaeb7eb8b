"""The checkpoint of a pretraining run: what it holds, when a run may resume from it, and how it is written.

A checkpoint holds the model, optimizer, (fp16) loss scaler, history and RNG state of step ``s``, with the
configuration, world size and slide ids it was written under; :func:`check_resumable` refuses a checkpoint of
another run, so that a resumed run replays steps ``s+1 ...`` exactly (:mod:`wsistream.slide_ssl.train`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from wsistream.errors import WsiStreamError
from wsistream.slide_ssl.config import PretrainConfig
from wsistream.slide_ssl.data import SlideTokenCohort
from wsistream.slide_ssl.objective import SSLModel
from wsistream.slide_ssl.runlog import DistContext, atomic_save, write_loss_csv, write_loss_png

CHECKPOINT = "checkpoint.pt"
ENCODER = "slide_encoder.pt"
FORMAT = "wsistream.slide_ssl/1"


class PretrainError(WsiStreamError):
    """Training cannot go on (repeated non-finite losses, incompatible checkpoint)."""


def checkpoint_state(
    model: SSLModel,
    opt: torch.optim.Optimizer,
    cfg: PretrainConfig,
    step: int,
    history: list[dict[str, Any]],
    ctx: DistContext,
    cohort: SlideTokenCohort,
    peak_lr: float,
) -> dict[str, Any]:
    """The checkpoint of ``step``: model, optimizer, history, RNG state and what :func:`check_resumable` compares."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "history": history,
        "rng": rng,
        "world_size": ctx.world_size,
        "slide_ids": list(cohort.slide_ids),
        "schedule": {"steps": cfg.steps, "peak_lr": peak_lr},
    }


def check_resumable(
    state: dict[str, Any], cfg: PretrainConfig, ctx: DistContext, cohort: SlideTokenCohort, path: Path
) -> None:
    """Refuse (:class:`PretrainError`) a checkpoint of another format, configuration, world size or cohort."""
    if state.get("format") != FORMAT:
        raise PretrainError(str(path), f"not a {FORMAT} checkpoint; pass another --out or resume=False")
    saved, now = dict(state["config"]), cfg.to_dict()
    for config in (saved, now):  # settings that do not change the run's numbers may differ on resume
        config.pop("checkpoint_every", None)
        config["encoder"] = {k: v for k, v in dict(config.get("encoder", {})).items() if k != "checkpoint_layers"}
    if json.dumps(saved, sort_keys=True, default=list) != json.dumps(now, sort_keys=True, default=list):
        raise PretrainError(
            str(path), "checkpoint was written with another configuration; pass the same options or resume=False"
        )
    if state["world_size"] != ctx.world_size:
        raise PretrainError(
            str(path),
            f"checkpoint used world size {state['world_size']}, now {ctx.world_size}; "
            "exact resume needs the same number of processes",
        )
    if list(state["slide_ids"]) != list(cohort.slide_ids):
        raise PretrainError(
            str(path), "the feature folder's usable slides differ from the checkpoint's; pass the same --features"
        )


def save_checkpoint(
    model: SSLModel,
    opt: torch.optim.Optimizer,
    cfg: PretrainConfig,
    step: int,
    history: list[dict[str, Any]],
    ctx: DistContext,
    cohort: SlideTokenCohort,
    peak_lr: float,
    out: Path,
    scaler: torch.amp.GradScaler,
) -> None:
    """Write the checkpoint, ``loss.csv`` and ``loss.png`` on rank 0; every rank waits for it."""
    if ctx.is_main:
        state = checkpoint_state(model, opt, cfg, step, history, ctx, cohort, peak_lr)
        if scaler.is_enabled():
            state["scaler"] = scaler.state_dict()
        atomic_save(state, out / CHECKPOINT)
        write_loss_csv(out / "loss.csv", history)
        write_loss_png(out / "loss.png", history, f"slide-pretrain {cfg.method}")
    if ctx.world_size > 1:
        dist.barrier()
