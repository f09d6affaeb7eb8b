"""DataLoader scaling rows of the benchmark (needs the torch extra)."""

from __future__ import annotations

import functools
from typing import Any

from wsistream.bench.workloads import concurrent_stream_rate, row
from wsistream.recipes import build_pipeline
from wsistream.torch import benchmark_throughput


def loader_scaling(pool: list[str], n_batches: int = 25, batch_size: int = 32) -> list[dict[str, Any]]:
    """Patches/s of the Phikon-v2 stream through a DataLoader with 1 and 2 workers, and worker RSS.

    Beside them, in the same run: the same stream in 1 and 2 plain processes (no DataLoader), so the
    2-worker scaling can be read against what the machine gave two streams at that moment, and the main
    process's CPU share (collation and transfer compete with the workers on a 2-core machine).
    """
    factory = functools.partial(build_pipeline, "phikon-v2", pool)
    workload = "DataLoader, 20x pool"
    n_patches = n_batches * batch_size
    alone = {k: concurrent_stream_rate(factory, n_patches, k) for k in (1, 2)}
    rows = [
        row(workload, "1 process(es), no DataLoader", alone[1]),
        row(workload, "2 process(es), no DataLoader", alone[2], scaling=alone[2] / alone[1]),
    ]
    rates = {}
    for workers in (1, 2):
        result = benchmark_throughput(factory, num_workers=workers, n_batches=n_batches, batch_size=batch_size)
        rates[workers] = result["patches_per_s"]
        extra: dict[str, Any] = {
            "wait_fraction": float(result["wait_fraction"]),
            "main_cpu_fraction": float(result["main_cpu_fraction"]),
        }
        if workers == 2:
            extra["scaling"] = rates[2] / rates[1] if rates[1] else 0.0
            extra["vs_process_scaling"] = extra["scaling"] / (alone[2] / alone[1])
        rows.append(row(workload, f"{workers} worker(s), steady state", rates[workers], **extra))
        rows.append(
            row(workload, f"{workers} worker(s), max worker RSS", result["max_worker_rss_bytes"] / 2**20, "MiB")
        )
    return rows
