"""Distributed training on a wsistream, with checkpoints that survive preemption.

Run (CPU, gloo; on GPUs the NCCL backend and one GPU per process are picked up)::

    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py --out runs/demo --steps 40
    # preempted? run the same command with --resume: the model, the optimiser and every
    # rank's loader continue exactly where the last checkpoint was taken
    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py --out runs/demo --steps 40 --resume

Without ``--slides`` a small synthetic cohort is written to ``OUT/slides`` first.

Each rank streams its own slides (``WsiStreamDataset`` reads RANK / WORLD_SIZE
from torch.distributed), endlessly (``cycle=True``), so every rank runs the
same number of steps and no DDP step waits on a rank that ran out of data.
The toy task regresses each patch's tissue fraction from its pixels.

A checkpoint (``OUT/checkpoint.pt``) holds the step, the model and optimiser
states, and every rank's ``StatefulDataLoader`` state (gathered to rank 0; a
few KB in all).  ``--kill-after-step N`` kills every rank with SIGKILL right
after the checkpoint of step N (a preemption drill); ``--log-batches`` makes
each rank append ``step digest loss`` per batch to ``OUT/batches-rank{R}.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from wsistream.backends import OpenSlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import RandomSampler
from wsistream.torch import GpuNormalizer, MonitoredLoader, WsiStreamDataset, make_loader, to_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slides", help="slide folder, glob or .txt list (default: a synthetic cohort in OUT/slides)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, logs")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--mpp", type=float, default=1.0, help="µm/px of the patches")
    p.add_argument("--ckpt-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--kill-after-step", type=int, default=None, help="SIGKILL all ranks after this checkpoint")
    p.add_argument("--log-batches", action="store_true", help="append per-batch digests to OUT/batches-rank{R}.txt")
    p.add_argument("--log-every-s", type=float, default=30.0)
    return p.parse_args(argv)


def build_pipeline(args: argparse.Namespace, slides: str | list[str]) -> PatchPipeline:
    """The stream: random patches at ``--mpp``, 8 per slide visit, endless."""
    return PatchPipeline(
        slide_paths=slides,
        sampler=RandomSampler(patch_size=args.patch_size, target_mpp=args.mpp),
        backend=OpenSlideBackend(cache_bytes=32 * 2**20),  # explicit per-worker tile cache
        pool_size=4,
        patches_per_slide=8,
        slide_sampling="random",
        cycle=True,
        overview_side=512,
        seed=args.seed,
    )


def batch_digest(batch: dict) -> str:
    """Hash of a batch's coordinates and pixels (what --log-batches records)."""
    h = hashlib.sha1()
    for key in ("slide_index", "x0", "y0", "shard", "epoch", "index"):
        h.update(batch[key].cpu().numpy().tobytes())
    h.update(batch["image"].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TinyNet(nn.Module):
    """Normalise on the device, two convolutions, regress one number."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = GpuNormalizer()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x)).squeeze(1)


def default_slides(out: Path, rank: int) -> str:
    folder = out / "slides"
    if rank == 0:
        from wsistream.synthetic import write_synthetic_cohort

        write_synthetic_cohort(folder, 6, width=2000, height=1600, mpp=0.5, downsamples=(1, 4))
    dist.barrier()
    return str(folder)


def save_checkpoint(
    path: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, monitor: MonitoredLoader
) -> None:
    """Gather every rank's loader state; rank 0 writes atomically (tmp file + rename)."""
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, monitor.state_dict())
    if dist.get_rank() == 0:
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "step": step,
                "world_size": dist.get_world_size(),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "loaders": states,
            },
            tmp,
        )
        os.replace(tmp, path)
    dist.barrier()  # nobody goes on (or gets killed) before the file is complete


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slides = args.slides or default_slides(out, rank)

    dataset = WsiStreamDataset(build_pipeline(args, slides))  # rank/world from torch.distributed
    loader = make_loader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=use_cuda,
        persistent_workers=args.num_workers > 0,
    )
    monitor = MonitoredLoader(loader, log_every_s=args.log_every_s if rank == 0 else None)

    torch.manual_seed(args.seed)
    model = TinyNet().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["world_size"] != world:
            raise SystemExit(f"checkpoint was taken with {ckpt['world_size']} ranks; run with that many")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        monitor.load_state_dict(ckpt["loaders"][rank])
        step = ckpt["step"]
        if rank == 0:
            print(f"resumed from step {step}", flush=True)
    ddp = DistributedDataParallel(model)
    batch_log = open(out / f"batches-rank{rank}.txt", "a") if args.log_batches else None  # noqa: SIM115

    start = time.perf_counter()
    loss = torch.zeros(())
    for batch in monitor:
        if step >= args.steps:
            break
        step += 1
        batch = to_device(batch, device)
        target = batch["tissue_fraction"].float()
        loss = nn.functional.mse_loss(ddp(batch["image"]), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if batch_log is not None:
            batch_log.write(f"{step} {batch_digest(batch)} {loss.item():.8f}\n")
            batch_log.flush()
        if step % args.ckpt_every == 0 or step == args.steps:
            save_checkpoint(ckpt_path, step, model, opt, monitor)
            if step == args.kill_after_step:
                os.kill(os.getpid(), signal.SIGKILL)  # preemption drill: no cleanup, no goodbye
        if step >= args.steps:
            break
    if rank == 0:
        s = monitor.stats()
        print(
            f"done: step {step}, loss {loss.item():.4f}, {time.perf_counter() - start:.1f}s, "
            f"{s['patches_per_s']:.0f} patches/s per rank, data wait {100 * s['wait_fraction']:.0f}%, "
            f"slides opened {s['slides_opened']}, failed {s['slides_failed']}",
            flush=True,
        )
    if batch_log is not None:
        batch_log.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
