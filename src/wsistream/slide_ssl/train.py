"""Training driver: micro-batches, gradient accumulation, EMA teacher, checkpoints with exact resume, torchrun.

Determinism: slide order is a per-epoch permutation from ``(seed, epoch)``; the
crops and masks of micro-batch ``(step, micro, rank)`` come from a generator
seeded with ``(seed, step, micro, rank)``; the torch RNG state (dropout) is
saved in every checkpoint. Resuming from the checkpoint of step ``s`` therefore
replays steps ``s+1 ...`` exactly as the uninterrupted run (same machine, same
thread count, same world size).

Step ``t``: set lr / weight decay from the schedules; for each of ``grad_accum``
micro-batches, forward, ``(loss / grad_accum).backward()`` (SLP
``dinov2/train/ssl_meta_arch.py`` divides by ``cfg.gc``); average gradients over
ranks; clip; drop prototype gradients while the last layer is frozen; AdamW
step; EMA teacher update. A non-finite loss skips the step on every rank
(recorded); five in a row abort with :class:`PretrainError` (SLP stops at the
first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from wsistream.features.formats import FeatureFileError
from wsistream.slide_ssl.batch import ViewBatch, build_view_batch
from wsistream.slide_ssl.checkpoint import (
    CHECKPOINT,
    ENCODER,
    FORMAT,
    PretrainError,
    check_resumable,
    save_checkpoint,
)
from wsistream.slide_ssl.config import PretrainConfig
from wsistream.slide_ssl.data import SkipRecord, SlideTokenCohort, SlideTokens, read_slide_ids
from wsistream.slide_ssl.objective import Schedules, SSLModel, build_schedules
from wsistream.slide_ssl.runlog import (
    DistContext,
    allreduce_mean_,
    append_skips,
    atomic_save,
    init_distributed,
)

_MAX_BAD_STEPS = 5


@dataclass(frozen=True)
class PretrainResult:
    """Outcome of :func:`pretrain`; ``history`` has one dict per optimizer step (columns of ``loss.csv``)."""

    out_dir: Path
    history: list[dict[str, Any]]
    checkpoint: Path
    encoder_path: Path | None
    skips: list[SkipRecord] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        """Total loss per step."""
        return [float(r["loss"]) for r in self.history]


class _SlideFeed:
    """Deterministic slide picks: sample counter -> (epoch permutation, position)."""

    def __init__(self, cohort: SlideTokenCohort, seed: int, skips: list[SkipRecord], skip_log: Path | None) -> None:
        self.cohort, self.seed, self.skips, self.skip_log = cohort, seed, skips, skip_log
        self._perm: dict[int, np.ndarray] = {}
        self.bad: set[int] = set()

    def index(self, counter: int) -> int:
        epoch, pos = divmod(counter, len(self.cohort))
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.cohort))}
        return int(self._perm[epoch][pos])

    def load(self, counter: int) -> SlideTokens:
        for k in range(len(self.cohort)):
            i = self.index(counter + k)
            if i in self.bad:
                continue
            try:
                return self.cohort.load(i)
            except FeatureFileError as exc:
                self.bad.add(i)
                rec = SkipRecord(str(self.cohort.paths[i]), f"skipped mid-training: {exc.reason}")
                self.skips.append(rec)
                if self.skip_log is not None:
                    append_skips(self.skip_log, [rec])
        raise PretrainError(None, "every slide of the cohort became unreadable during training")


def _clip(model: SSLModel, cfg: PretrainConfig) -> None:
    clip = cfg.optim.clip_grad
    if clip <= 0:
        return
    if cfg.optim.clip_mode == "global":  # DINOv2: clip_grad_norm_ per student module
        for part in model.student.values():
            torch.nn.utils.clip_grad_norm_([p for p in part.parameters() if p.grad is not None], clip)
        return
    for p in model.student.parameters():  # DINO utils.clip_gradients: per parameter
        if p.grad is not None:
            coef = clip / (float(p.grad.norm(2)) + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)


def _autocast(ctx: DistContext, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp16":
        return torch.autocast(device_type=ctx.device.type, dtype=torch.float16)
    use_bf16 = precision == "bf16" or (precision == "auto" and ctx.device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class _StepStats:
    """What one optimizer step measured, by name.

    Loss terms are summed over the step's micro-batches, each divided by ``grad_accum`` (so a mean);
    ``tokens`` counts non-padding tokens, ``nonfinite`` the micro-batches whose loss was not finite.
    :meth:`mean_over_ranks` averages every field over the ranks.
    """

    loss: float = 0.0
    dino: float = 0.0
    ibot: float = 0.0
    koleo: float = 0.0
    tokens: float = 0.0
    nonfinite: float = 0.0

    def add_micro(self, losses: dict[str, torch.Tensor], accum: int, tokens: int) -> _StepStats:
        """The sums after one finite micro-batch (``losses`` from :meth:`SSLModel.forward_loss`)."""
        terms = {k: getattr(self, k) + float(losses[k].detach()) / accum for k in ("loss", "dino", "ibot", "koleo")}
        return dataclasses.replace(self, **terms, tokens=self.tokens + tokens)

    def add_nonfinite(self) -> _StepStats:
        """The sums after a micro-batch whose loss was inf / NaN (its loss terms are left out)."""
        return dataclasses.replace(self, nonfinite=self.nonfinite + 1)

    def mean_over_ranks(self, world_size: int) -> _StepStats:
        """Every field averaged over the ranks (one float64 all-reduce; identity for one process)."""
        names = [f.name for f in dataclasses.fields(self)]
        flat = torch.tensor([getattr(self, n) for n in names], dtype=torch.float64)
        allreduce_mean_([flat], world_size)
        return _StepStats(**dict(zip(names, flat.tolist(), strict=True)))


@dataclass
class _Run:
    """Mutable state of one training run: what a checkpoint saves and :func:`_restore` loads back."""

    cfg: PretrainConfig
    ctx: DistContext
    cohort: SlideTokenCohort
    model: SSLModel
    opt: torch.optim.Optimizer
    sched: Schedules
    scaler: torch.amp.GradScaler
    skip_log: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0
    bad_in_row: int = 0


def pretrain(
    features: str | os.PathLike[str] | SlideTokenCohort,
    out_dir: str | os.PathLike[str],
    cfg: PretrainConfig,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    tile_size: float | None = None,
    exclude: str | os.PathLike[str] | Iterable[str] | None = None,
) -> PretrainResult:
    """Pretrain a slide encoder on a feature folder (or a scanned :class:`SlideTokenCohort`).

    Writes into ``out_dir``: ``checkpoint.pt`` (model, teacher, optimizer, centres, RNG, history; every
    ``cfg.checkpoint_every`` steps and at the end), ``loss.csv``, ``loss.png``, ``skipped.jsonl`` and, once
    ``cfg.steps`` are done, ``slide_encoder.pt`` (teacher backbone + encoder config). With ``resume=True`` an
    existing ``checkpoint.pt`` is continued. ``stop_after`` ends the run early after that many steps in total
    (an interruption, for tests and time-boxed jobs). Under ``torchrun`` (``WORLD_SIZE > 1``) each rank takes
    its own slides and gradients are averaged. ``exclude`` (a CSV with a ``slide_id`` column, a text file, a
    comma-separated string or a list; :func:`~wsistream.slide_ssl.data.read_slide_ids`) removes evaluation
    slides before training, as SLP's ``--exclude_data_path`` does; they are recorded as ``excluded`` in
    ``skipped.jsonl``. The slide ids trained on are stored in ``slide_encoder.pt`` so that a probe on them warns.
    """
    ctx = init_distributed()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cohort = _open_cohort(features, cfg, tile_size, exclude)
    run = _start(cohort, cfg, ctx, out, resume)
    skips = list(cohort.skips)
    feed = _SlideFeed(cohort, cfg.seed, skips, run.skip_log)
    run.model.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, max(stop_after, run.start))
    bar = _progress(range(run.start, end), run.start, cfg, progress and ctx.is_main)
    for step in bar:
        _set_hyperparameters(run, step)
        stats = _forward_backward(run, feed, step).mean_over_ranks(ctx.world_size)
        if stats.nonfinite == 0:
            run.bad_in_row = 0
            _apply_gradients(run, step)
        else:
            _skip_step(run, step, skips)
        run.opt.zero_grad(set_to_none=True)
        row = _history_row(run.sched, step, stats)
        run.history.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            sched = run.sched
            save_checkpoint(run.model, run.opt, cfg, step + 1, run.history, ctx, cohort, sched.peak_lr, out, run.scaler)
    done = len(run.history) >= cfg.steps and run.history[-1]["step"] == cfg.steps
    encoder_path = _export_encoder(run, out) if done else None
    if ctx.world_size > 1:
        dist.barrier()
    return PretrainResult(out, run.history, out / CHECKPOINT, encoder_path, skips)


def _open_cohort(
    features: str | os.PathLike[str] | SlideTokenCohort,
    cfg: PretrainConfig,
    tile_size: float | None,
    exclude: str | os.PathLike[str] | Iterable[str] | None,
) -> SlideTokenCohort:
    """The training slides: scanned (or given), minus ``exclude``, checked against ``encoder.in_dim``."""
    if isinstance(features, SlideTokenCohort):
        cohort = features
    else:
        cohort = SlideTokenCohort.scan(
            features, min_tiles=cfg.crops.min_tiles, input_dim=cfg.encoder.in_dim, tile_size=tile_size
        )
    if exclude is not None:
        cohort = cohort.without(read_slide_ids(exclude))
    if cohort.dim != cfg.encoder.in_dim:
        raise ValueError(
            f"features have dimension {cohort.dim} but encoder.in_dim={cfg.encoder.in_dim}; pass in_dim={cohort.dim}"
        )
    return cohort


def _start(cohort: SlideTokenCohort, cfg: PretrainConfig, ctx: DistContext, out: Path, resume: bool) -> _Run:
    """Model, optimizer, schedules and loss scaler, restored from ``out/checkpoint.pt`` when resuming."""
    torch.manual_seed(cfg.seed)
    model = SSLModel(cfg).to(ctx.device)
    opt = torch.optim.AdamW(model.param_groups(cfg.optim), betas=cfg.optim.betas)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    skip_log = out / "skipped.jsonl" if ctx.is_main else None
    run = _Run(cfg, ctx, cohort, model, opt, build_schedules(cfg, ctx.world_size), scaler, skip_log)
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        _restore(run, ckpt)
    elif skip_log is not None:
        skip_log.write_text("")
        append_skips(skip_log, cohort.skips)
    return run


def _restore(run: _Run, ckpt: Path) -> None:
    """Load model, optimizer, scaler, history and RNG state from a checkpoint of the same run."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    check_resumable(state, run.cfg, run.ctx, run.cohort, ckpt)
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.history, run.start = list(state["history"]), int(state["step"])
    if "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def _set_hyperparameters(run: _Run, step: int) -> None:
    """Set the lr and weight decay of every parameter group from the schedules (times the group's multipliers)."""
    for g in run.opt.param_groups:
        g["lr"] = float(run.sched.lr[step]) * g["lr_multiplier"]
        g["weight_decay"] = float(run.sched.weight_decay[step]) * g["wd_multiplier"]


def _forward_backward(run: _Run, feed: _SlideFeed, step: int) -> _StepStats:
    """The ``grad_accum`` micro-batches of this rank: crops, forward, scaled ``backward`` of ``loss / accum``.

    A micro-batch with a non-finite loss gets no backward pass and is counted in ``nonfinite``.
    """
    cfg, ctx = run.cfg, run.ctx
    accum, bsz = cfg.optim.grad_accum, cfg.batch_size
    temp = float(run.sched.teacher_temp[step])
    stats = _StepStats()
    for micro in range(accum):
        first = ((step * accum + micro) * ctx.world_size + ctx.rank) * bsz
        slides = [feed.load(first + j) for j in range(bsz)]
        rng = np.random.default_rng([cfg.seed, step, micro, ctx.rank])
        with_masks = cfg.objective.ibot_weight > 0
        batch: ViewBatch = build_view_batch(slides, cfg.crops, cfg.objective, rng, with_masks).to(ctx.device)
        with _autocast(ctx, cfg.precision):
            losses = run.model.forward_loss(batch, temp)
        if not bool(torch.isfinite(losses["loss"])):
            stats = stats.add_nonfinite()
            continue
        torch.autograd.backward(run.scaler.scale(losses["loss"] / accum))
        stats = stats.add_micro(losses, accum, batch.n_tokens)
    return stats


def _apply_gradients(run: _Run, step: int) -> None:
    """Average gradients over ranks, unscale, clip, drop frozen prototype gradients, AdamW step, EMA teacher."""
    model, opt, scaler = run.model, run.opt, run.scaler
    params = [p for p in model.student.parameters() if p.requires_grad]
    if run.ctx.world_size > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        allreduce_mean_([p.grad for p in params if p.grad is not None], run.ctx.world_size)
    scaler.unscale_(opt)
    _clip(model, run.cfg)
    if step < run.sched.freeze_last_layer_steps:
        for p in model.last_layer_parameters():
            p.grad = None
    scaler.step(opt)
    scaler.update()
    model.update_teacher(float(run.sched.momentum[step]))


def _skip_step(run: _Run, step: int, skips: list[SkipRecord]) -> None:
    """Record a step skipped for a non-finite loss; :class:`PretrainError` after five in a row."""
    run.bad_in_row += 1
    rec = SkipRecord(f"step {step + 1}", "non-finite loss; optimizer step skipped", "step_skipped")
    skips.append(rec)
    if run.skip_log is not None:
        append_skips(run.skip_log, [rec])
    if run.bad_in_row >= _MAX_BAD_STEPS:
        raise PretrainError(
            None, f"{run.bad_in_row} steps in a row had a non-finite loss; lower the lr or check the features"
        )


def _history_row(sched: Schedules, step: int, stats: _StepStats) -> dict[str, Any]:
    """One row of ``loss.csv`` / ``PretrainResult.history``."""
    return {
        "step": step + 1,
        "loss": stats.loss,
        "dino": stats.dino,
        "ibot": stats.ibot,
        "koleo": stats.koleo,
        "lr": float(sched.lr[step]),
        "weight_decay": float(sched.weight_decay[step]),
        "momentum": float(sched.momentum[step]),
        "teacher_temp": float(sched.teacher_temp[step]),
        "tokens": round(stats.tokens),
    }


def _export_encoder(run: _Run, out: Path) -> Path:
    """Write ``slide_encoder.pt`` (teacher backbone, encoder config, training slide ids) on rank 0."""
    path = out / ENCODER
    if run.ctx.is_main:
        atomic_save(
            {
                "format": FORMAT,
                "method": run.cfg.method,
                "encoder": run.cfg.to_dict()["encoder"],
                "state_dict": run.model.teacher["backbone"].state_dict(),
                "step": run.cfg.steps,
                "slide_ids": list(run.cohort.slide_ids),
            },
            path,
        )
    return path


def _progress(it: range, start: int, cfg: PretrainConfig, show: bool) -> Any:
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, initial=start, total=cfg.steps, desc=f"slide-pretrain {cfg.method}", unit="step")
