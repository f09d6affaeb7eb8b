"""``benchmark_throughput``: patches/s, data wait and worker memory of one loader configuration."""

from __future__ import annotations

import os
import time
from typing import Any

from wsistream._procstat import box_busy_cpu_s
from wsistream.torch.dataset import PipelineSource, WsiStreamDataset
from wsistream.torch.loader import make_loader
from wsistream.torch.monitor import MonitoredLoader


def benchmark_throughput(
    source: PipelineSource | WsiStreamDataset,
    num_workers: int = 2,
    n_batches: int = 20,
    batch_size: int = 32,
    *,
    warmup_batches: int = 2,
    **loader_kwargs: Any,
) -> dict[str, Any]:
    """Stream ``warmup_batches + n_batches`` batches and report the measured rates.

    The loop does nothing with the batches, so the numbers are the loader's
    ceiling.  Rates exclude the warm-up batches (worker start, first slide
    opens, tissue masks).  A finite pipeline may end early: ``batches``
    says how many were measured.

    Parameters
    ----------
    source : PatchPipeline, callable or WsiStreamDataset
        What to stream; a pipeline or factory is wrapped as one rank (rank 0 of 1).
    num_workers, batch_size : int
        Loader configuration.
    n_batches : int
        Batches measured after the warm-up.
    warmup_batches : int
        Batches streamed first and left out of the rates.
    **loader_kwargs
        Passed to :func:`~wsistream.torch.make_loader` (``pin_memory``, ``multiprocessing_context``...).

    Returns
    -------
    dict
        ``patches_per_s``, ``batches_per_s``, ``wait_fraction`` (share of the
        measured time spent waiting, ~1 for an empty loop), ``startup_s``
        (time to the first batch), ``slides_opened``, ``slides_failed``,
        ``failures``, ``worker_rss_bytes`` (per shard), ``max_worker_rss_bytes``,
        ``main_cpu_fraction`` (CPU seconds of this process, its threads included,
        per measured second: what collation, transfer and the loop cost the
        consumer, which competes with the workers for cores), ``box_busy_cores``
        (busy CPU-seconds of the whole machine per measured second, from ``/proc/stat``: near
        ``box_cpus`` the rate was bound by the box's cores, whoever used them; ``None`` without
        ``/proc``), ``box_cpus``, and the configuration.
    """
    if n_batches < 1 or warmup_batches < 0:
        raise ValueError(f"need n_batches >= 1 and warmup_batches >= 0, got {n_batches} and {warmup_batches}")
    dataset = source if isinstance(source, WsiStreamDataset) else WsiStreamDataset(source, rank=0, world_size=1)
    loader_kwargs.setdefault("stateful", False)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, **loader_kwargs)
    monitor = MonitoredLoader(loader, log_every_s=None)
    start = time.perf_counter()
    cpu_from = time.process_time()
    box_from = box_busy_cpu_s()
    startup_s = None
    measured_from = None
    base: dict[str, Any] = {}
    for seen, _ in enumerate(monitor, start=1):
        if startup_s is None:
            startup_s = time.perf_counter() - start
        if seen == warmup_batches:
            base = monitor.stats()
            measured_from = time.perf_counter()
            cpu_from = time.process_time()
            box_from = box_busy_cpu_s()
        if seen >= warmup_batches + n_batches:
            break
    end = time.perf_counter()
    cpu_s = time.process_time() - cpu_from
    box_to = box_busy_cpu_s()
    final = monitor.stats()
    if measured_from is None:  # warm-up 0, or the stream ended during it
        measured_from, base = start, {"patches": 0, "batches": 0, "wait_s": 0.0}
    seconds = max(end - measured_from, 1e-9)
    patches = final["patches"] - base["patches"]
    batches = final["batches"] - base["batches"]
    return {
        "num_workers": num_workers,
        "batch_size": batch_size,
        "batches": batches,
        "patches": patches,
        "seconds": seconds,
        "patches_per_s": patches / seconds,
        "batches_per_s": batches / seconds,
        "wait_fraction": min(1.0, (final["wait_s"] - base["wait_s"]) / seconds),
        "startup_s": startup_s,
        "slides_opened": final["slides_opened"],
        "slides_failed": final["slides_failed"],
        "failures": final["failures"],
        "worker_rss_bytes": final["worker_rss_bytes"],
        "max_worker_rss_bytes": final["max_worker_rss_bytes"],
        "main_cpu_fraction": cpu_s / seconds,
        "box_busy_cores": None if box_from is None or box_to is None else (box_to - box_from) / seconds,
        "box_cpus": os.cpu_count(),
    }
