"""What one batch costs to cross from a DataLoader worker to the main process, decoding excluded.

The items of one batch are built once (Phikon-v2 recipe on the 20x bench pool); a one-worker
DataLoader then collates and sends that same batch ``--batches`` times, so what is timed is only
``collate_patches`` + the shared-memory hand-off: the worker's CPU per batch, the main process's CPU
per batch (unpickling, file-descriptor hand-offs) and the wall time per batch, beside an in-process
``collate_patches`` of the same items.  This is the overhead that separates "1 worker" from
"1 process, no DataLoader" in ``wsistream bench``.

Usage::

    python benchmarks/loader_handoff.py --batch-size 32 --batches 300

Measured (2-core VM, 32 patches of 224 px, before → after the shared-memory collate):
worker CPU per batch 17.9 → 6.5 ms, main CPU per batch 6.0 → 2.4 ms, in-process collate 8.5 → 2.1 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from wsistream.bench.slides import pool_20x_slides
from wsistream.recipes import build_pipeline
from wsistream.torch import StreamItem, WsiStreamDataset, collate_patches


class _SameBatch(IterableDataset[list[StreamItem]]):
    """Yields the same list of items ``n`` times and prints the worker's CPU per batch at the end."""

    def __init__(self, items: list[StreamItem], n: int) -> None:
        self.items, self.n = items, n

    def __iter__(self) -> Iterator[list[StreamItem]]:
        cpu_from = time.process_time()
        for _ in range(self.n):
            yield self.items
        print(json.dumps({"worker_cpu_ms_per_batch": (time.process_time() - cpu_from) / self.n * 1e3}), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pool = pool_20x_slides()
    stream = iter(WsiStreamDataset(lambda: build_pipeline("phikon-v2", pool), rank=0, world_size=1))
    items = [next(stream) for _ in range(args.batch_size)]
    loader = DataLoader(_SameBatch(items, args.batches), batch_size=None, num_workers=1, collate_fn=collate_patches)
    warmup = min(20, args.batches // 2)
    result: dict[str, Any] = {"batch_size": args.batch_size}
    for seen, _ in enumerate(loader, start=1):
        if seen == warmup:
            wall_from, cpu_from = time.perf_counter(), time.process_time()
    measured = args.batches - warmup
    result["wall_ms_per_batch"] = (time.perf_counter() - wall_from) / measured * 1e3
    result["main_cpu_ms_per_batch"] = (time.process_time() - cpu_from) / measured * 1e3
    start = time.perf_counter()
    for _ in range(50):
        collate_patches(items)
    result["in_process_collate_ms"] = (time.perf_counter() - start) / 50 * 1e3
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
