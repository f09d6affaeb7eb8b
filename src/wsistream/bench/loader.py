"""DataLoader scaling rows of the benchmark (needs the torch extra)."""

from __future__ import annotations

import functools
from typing import Any

from wsistream.recipes import build_pipeline
from wsistream.torch import benchmark_throughput


def loader_scaling(pool: list[str], n_batches: int = 25, batch_size: int = 32) -> list[dict[str, Any]]:
    """Patches/s of the Phikon-v2 stream through a DataLoader with 1 and 2 workers, and worker RSS."""
    factory = functools.partial(build_pipeline, "phikon-v2", pool)
    rows: list[dict[str, Any]] = []
    rates = {}
    for workers in (1, 2):
        result = benchmark_throughput(factory, num_workers=workers, n_batches=n_batches, batch_size=batch_size)
        rates[workers] = result["patches_per_s"]
        extra: dict[str, Any] = {"wait_fraction": float(result["wait_fraction"])}
        if workers == 2:
            extra["scaling"] = rates[2] / rates[1] if rates[1] else 0.0
        rows.append(
            {
                "workload": "DataLoader, 20x pool",
                "row": f"{workers} worker(s), steady state",
                "value": round(rates[workers], 3),
                "unit": "patches/s",
                **extra,
            }
        )
        rows.append(
            {
                "workload": "DataLoader, 20x pool",
                "row": f"{workers} worker(s), max worker RSS",
                "value": round(result["max_worker_rss_bytes"] / 2**20, 1),
                "unit": "MiB",
            }
        )
    return rows
