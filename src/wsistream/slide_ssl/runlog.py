"""Run outputs: loss CSV, loss-curve PNG, skip log, atomic checkpoint writes, torchrun helpers."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from wsistream.slide_ssl.data import SkipRecord

LOSS_COLUMNS = ("step", "loss", "dino", "ibot", "koleo", "lr", "weight_decay", "momentum", "teacher_temp", "tokens")


def write_loss_csv(path: Path, history: Sequence[dict[str, Any]]) -> Path:
    """(Re)write the loss table, one row per optimizer step."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(LOSS_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    os.replace(tmp, path)
    return path


def write_loss_png(path: Path, history: Sequence[dict[str, Any]], title: str) -> Path:
    """Loss curves (total and components; a smoothed total when there are many steps)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "dino", "ibot", "koleo"):
        vals = [r[key] for r in history]
        if key != "loss" and not any(v != 0 for v in vals):
            continue
        ax.plot(steps, vals, label=key, lw=1.0 if key != "loss" else 1.6)
    if len(history) >= 50:
        k = max(5, len(history) // 50)
        vals = [r["loss"] for r in history]
        smooth = [sum(vals[max(0, i - k + 1) : i + 1]) / len(vals[max(0, i - k + 1) : i + 1]) for i in range(len(vals))]
        ax.plot(steps, smooth, label=f"loss (mean of {k})", color="black", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def append_skips(path: Path, records: Iterable[SkipRecord]) -> None:
    """Append skip records as JSON lines."""
    with open(path, "a") as fh:
        for r in records:
            fh.write(json.dumps(r.to_dict()) + "\n")


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class DistContext:
    """torchrun rank layout; ``world_size == 1`` means no process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the torchrun process group only when ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(rank, world, local, device)


def allreduce_mean_(tensors: Sequence[torch.Tensor], world_size: int) -> None:
    """Average tensors over ranks in place, through one flat buffer."""
    if world_size <= 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n
