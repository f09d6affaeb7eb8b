"""Soak: stream a cohort with ~10 % bad slides through DataLoader workers; report patches/s, failures, RSS.

A bounded run (it stops at ``--patches`` or ``--seconds``, whichever comes first, and exits by itself):

    python benchmarks/soak.py                     # 50k patches or 3 minutes
    python benchmarks/soak.py --seconds 90 --out bench_out/soak.json

Good slides come from :func:`wsistream.synthetic.write_synthetic_cohort` (cached between runs); the bad
ones are written next to them, one of each kind in turn: a corrupt level-0 tile (opens, some regions
fail), a truncated file, a slide without µm/px, a background-only slide, a zero-byte file, a text file
named ``.svs``.  The stream is :class:`wsistream.torch.WsiStreamDataset` (each worker streams a disjoint
slide subset) when importable, else a minimal local ``IterableDataset`` doing the same.  RSS is read
from ``/proc/<pid>/status`` (``VmRSS``) for the main process and every worker; "flat" means a worker's
RSS grew by less than ``--rss-tolerance`` between the first sample after warm-up and the last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wsistream.pipeline import PatchPipeline
from wsistream.sampling import RandomSampler
from wsistream.synthetic import write_aperio_svs, write_synthetic_cohort

BAD_KINDS = ("corrupt_tile", "truncated", "no_mpp", "background", "zero_byte", "not_a_slide")


def vm_rss_mb(pid: int | str = "self") -> float:
    """``VmRSS`` of a process in MiB (NaN when it cannot be read, e.g. the process has exited)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def write_bad(folder: Path, kind: str, index: int, template: Path, size: tuple[int, int]) -> Path:
    """One bad slide of ``kind`` (written once, reused by later runs)."""
    path = folder / f"bad-{index:02d}-{kind}.svs"
    if path.exists():
        return path
    w, h = size
    common: dict[str, Any] = {"width": w, "height": h, "downsamples": (1, 4, 16), "seed": 1000 + index}
    if kind == "corrupt_tile":
        write_aperio_svs(path, mpp=0.5, corrupt_tile=(w // 480, h // 480), **common)
    elif kind == "truncated":
        data = template.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "no_mpp":
        write_aperio_svs(path, mpp=None, **common)
    elif kind == "background":
        write_aperio_svs(path, mpp=0.5, background_only=True, **common)
    elif kind == "zero_byte":
        path.write_bytes(b"")
    else:
        path.write_text("not a slide\n" * 100)
    return path


def build_cohort(folder: Path, n: int, bad_fraction: float, size: tuple[int, int]) -> tuple[list[str], list[str]]:
    """``n`` slides, ``round(n · bad_fraction)`` of them bad, the bad ones spread through the list."""
    n_bad = max(1, round(n * bad_fraction))
    good = [str(p) for p in write_synthetic_cohort(folder, n - n_bad, width=size[0], height=size[1],
                                                   mpp=0.5, downsamples=(1, 4, 16))]  # fmt: skip
    bad = [str(write_bad(folder, BAD_KINDS[i % len(BAD_KINDS)], i, Path(good[0]), size)) for i in range(n_bad)]
    slides = list(good)
    step = max(1, len(slides) // n_bad)
    for i, path in enumerate(bad):
        slides.insert(min(len(slides), i * (step + 1) + step // 2), path)
    return slides, bad


def make_pipeline(slides: list[str], failure_log: str, seed: int = 0) -> PatchPipeline:
    """Phikon-v2-like stream: 224 px at 0.5 µm/px, >= 50 % tissue, slides cycling through a pool of 4."""
    return PatchPipeline(
        slide_paths=slides,
        sampler=RandomSampler(patch_size=224, target_mpp=0.5, tissue_threshold=0.5),
        pool_size=4,
        patches_per_slide=50,
        cycle=True,
        slide_sampling="random",
        seed=seed,
        failure_log=failure_log,
    )


class LocalDataset(IterableDataset):
    """Fallback when ``wsistream.torch`` is unavailable: each worker streams ``slides[worker::workers]``."""

    def __init__(self, slides: list[str], failure_log: str) -> None:
        super().__init__()
        self.slides, self.failure_log = slides, failure_log

    def __iter__(self):
        info = get_worker_info()
        wid, n = (0, 1) if info is None else (info.id, info.num_workers)
        for r in make_pipeline(self.slides[wid::n], self.failure_log, seed=wid):
            yield {"image": torch.from_numpy(r.image).permute(2, 0, 1), "pid": os.getpid()}


def make_loader(slides: list[str], failure_log: str, workers: int, batch_size: int) -> tuple[DataLoader, str]:
    try:
        from wsistream.torch import WsiStreamDataset, collate_patches
    except ImportError:
        ds = LocalDataset(slides, failure_log)
        return DataLoader(ds, batch_size=batch_size, num_workers=workers), "local IterableDataset"
    ds = WsiStreamDataset(make_pipeline(slides, failure_log))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_patches)
    return loader, "wsistream.torch.WsiStreamDataset"


def batch_info(batch: dict[str, Any]) -> tuple[int, list[int], list[Any]]:
    """(patches, worker pids, failure records) of a batch from either dataset."""
    n = int(batch["image"].shape[0])
    if "worker_stats" in batch:
        return n, [w.pid for w in batch["worker_stats"]], list(batch.get("failures", []))
    return n, sorted({int(p) for p in batch["pid"]}), []


def soak(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    slides, bad = build_cohort(folder, args.slides, args.bad_fraction, (args.width, args.height))
    write_s = time.perf_counter() - t0
    log = Path(args.out).with_suffix(".failures.jsonl")
    log.unlink(missing_ok=True)
    loader, dataset_kind = make_loader(slides, str(log), args.workers, args.batch_size)
    print(f"{len(slides)} slides ({len(bad)} bad) ready in {write_s:.1f} s; streaming with {dataset_kind}, "
          f"{args.workers} workers, until {args.patches} patches or {args.seconds:.0f} s", flush=True)  # fmt: skip
    samples: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    pids: set[int] = set()
    patches = last_patches = 0
    start = last = time.perf_counter()
    first_batch_s = None
    it = iter(loader)
    try:
        while patches < args.patches and time.perf_counter() - start < args.seconds:
            batch = next(it)
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
            n, worker_pids, records = batch_info(batch)
            patches += n
            pids.update(worker_pids)
            failures.update(f"{r.error_type}{'' if r.retired else ' (region)'}" for r in records)
            now = time.perf_counter()
            if now - last >= args.sample_every or patches >= args.patches:
                samples.append({
                    "t_s": round(now - start, 1),
                    "patches": patches,
                    "patches_per_s": round((patches - last_patches) / (now - last), 1),
                    "failures": sum(failures.values()),
                    "rss_main_mb": round(vm_rss_mb(), 1),
                    "rss_workers_mb": {str(p): round(vm_rss_mb(p), 1) for p in sorted(pids)},
                })  # fmt: skip
                print_sample(samples[-1], header=len(samples) == 1)
                last, last_patches = now, patches
    finally:
        del it  # shuts the workers down
    elapsed = time.perf_counter() - start
    log_lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {
        "config": vars(args) | {"dataset": dataset_kind, "bad_slides": [Path(b).name for b in bad]},
        "samples": samples,
        "summary": summarise(samples, patches, elapsed, first_batch_s, failures, log_lines, args.rss_tolerance),
    }


def print_sample(s: dict[str, Any], header: bool) -> None:
    if header:
        print(f"{'t (s)':>7} {'patches':>9} {'patch/s':>8} {'failures':>8} {'main MB':>8}  workers MB", flush=True)
    workers = " ".join(f"{v:.0f}" for v in s["rss_workers_mb"].values())
    print(f"{s['t_s']:7.1f} {s['patches']:9d} {s['patches_per_s']:8.1f} {s['failures']:8d} "
          f"{s['rss_main_mb']:8.0f}  {workers}", flush=True)  # fmt: skip


def summarise(
    samples: list[dict[str, Any]],
    patches: int,
    elapsed: float,
    first_batch_s: float | None,
    failures: Counter[str],
    log_lines: list[dict[str, Any]],
    tolerance: float,
) -> dict[str, Any]:
    """Totals, and RSS growth per worker between the first sample after warm-up (25 % of the run) and the last."""
    growth: dict[str, float] = {}
    if len(samples) >= 2:
        warm = next((s for s in samples if s["t_s"] >= 0.25 * samples[-1]["t_s"]), samples[0])
        for pid, end in samples[-1]["rss_workers_mb"].items():
            begin = warm["rss_workers_mb"].get(pid)
            if begin and begin == begin and end == end:  # skip NaN (a worker that exited)
                growth[pid] = round(100 * (end - begin) / begin, 1)
    return {
        "patches": patches,
        "seconds": round(elapsed, 1),
        "patches_per_s": round(patches / elapsed, 1) if elapsed else 0.0,
        "time_to_first_batch_s": round(first_batch_s or 0.0, 2),
        "failures_by_type": dict(failures),
        "failure_log_lines": len(log_lines),
        "failure_log_by_type": dict(Counter(d["error_type"] for d in log_lines)),
        "rss_growth_pct_after_warmup": growth,
        "rss_flat": bool(growth) and all(g < 100 * tolerance for g in growth.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=50_000, help="stop after this many patches")
    parser.add_argument("--seconds", type=float, default=180.0, help="stop after this long (streaming time)")
    parser.add_argument("--slides", type=int, default=30, help="cohort size")
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=2400)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS growth after warm-up")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "wsistream" / "soak"))
    parser.add_argument("--out", default="bench_out/soak.json", help="JSON results (failure log beside it)")
    args = parser.parse_args(argv)
    result = soak(args)
    Path(args.out).write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(f"\n{s['patches']} patches in {s['seconds']} s = {s['patches_per_s']} patches/s "
          f"(first batch after {s['time_to_first_batch_s']} s)")  # fmt: skip
    print(f"failures: {s['failures_by_type']} (failure log: {s['failure_log_lines']} lines)")
    print(f"worker RSS growth after warm-up (%): {s['rss_growth_pct_after_warmup']} -> flat: {s['rss_flat']}")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
