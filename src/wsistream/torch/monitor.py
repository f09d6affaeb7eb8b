"""Throughput, data-wait time, slide counters, worker memory and failures of a running loader."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from wsistream.torch._shard import WorkerStats
from wsistream.types import FailureRecord

logger = logging.getLogger("wsistream")


class MonitoredLoader:
    """Wrap a loader of :func:`~wsistream.torch.collate_patches` batches and measure it.

    Iterating yields the loader's batches unchanged, except that batches with
    no patch (failure notices of a worker whose slides all failed) are
    consumed here instead of reaching the training step.  Every batch's
    ``failures`` and ``worker_stats`` are collected, so failures recorded in
    any worker are available in :attr:`failures` in the main process.

    Parameters
    ----------
    loader : iterable
        A ``DataLoader`` / ``StatefulDataLoader`` (anything yielding these batch dicts).
    log_every_s : float, optional
        Log a progress line (logger ``"wsistream"``, level INFO) at most this
        often; ``None`` disables it.
    progress : bool
        Show a ``tqdm`` progress bar with patches/s and the data-wait fraction.
    total : int, optional
        Expected number of batches (for the progress bar).
    max_failures : int
        Failure records kept in :attr:`failures` (the most recent); all are counted.
    """

    def __init__(
        self,
        loader: Iterable[dict[str, Any]],
        *,
        log_every_s: float | None = 60.0,
        progress: bool = False,
        total: int | None = None,
        max_failures: int = 10_000,
    ) -> None:
        if log_every_s is not None and log_every_s <= 0:
            raise ValueError(f"log_every_s must be > 0 seconds (or None to disable), got {log_every_s}")
        if max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {max_failures}")
        self.loader = loader
        self.log_every_s = log_every_s
        self.progress = progress
        self.total = total
        #: The most recent failure records from every worker (oldest dropped past ``max_failures``).
        self.failures: deque[FailureRecord] = deque(maxlen=max_failures)
        self.failures_seen = 0
        self.batches = 0
        self.patches = 0
        self.empty_batches = 0
        self.wait_s = 0.0
        self.elapsed_s = 0.0
        self.first_batch_s: float | None = None
        #: Latest counters of each shard (worker of a rank), keyed by shard.
        self.workers: dict[int, WorkerStats] = {}

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total, unit="batch", dynamic_ncols=True)
        start = time.perf_counter()
        base_elapsed = self.elapsed_s
        last_log = start
        iterator = iter(self.loader)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                now = time.perf_counter()
                self.wait_s += now - t0
                if self.first_batch_s is None:
                    self.first_batch_s = now - start
                self.elapsed_s = base_elapsed + now - start
                n = self._record(batch)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(self._postfix(), refresh=False)
                if self.log_every_s is not None and now - last_log >= self.log_every_s:
                    last_log = now
                    logger.info("wsistream: %s", self.summary())
                if n == 0:
                    continue
                yield batch
                self.elapsed_s = base_elapsed + time.perf_counter() - start
        finally:
            self.elapsed_s = base_elapsed + time.perf_counter() - start
            if bar is not None:
                bar.close()

    def _record(self, batch: dict[str, Any]) -> int:
        n = int(batch["image"].shape[0])
        self.batches += 1
        self.patches += n
        self.empty_batches += n == 0
        for record in batch.get("failures", ()):
            self.failures.append(record)
            self.failures_seen += 1
        for stats in batch.get("worker_stats", ()):
            self.workers[stats.shard] = stats
        return n

    def _postfix(self) -> str:
        s = self.stats()
        wait = 100 * s["wait_fraction"]
        return f"{s['patches_per_s']:.0f} patches/s, wait {wait:.0f}%, failed {s['slides_failed']}"

    def stats(self) -> dict[str, Any]:
        """Counters so far: throughput, time blocked on data, slides, failures and worker RSS."""
        elapsed = max(self.elapsed_s, 1e-9)
        workers = list(self.workers.values())
        rss = {w.shard: w.rss_bytes for w in workers}
        return {
            "batches": self.batches,
            "patches": self.patches,
            "elapsed_s": self.elapsed_s,
            "patches_per_s": self.patches / elapsed,
            "wait_s": self.wait_s,
            "wait_fraction": min(1.0, self.wait_s / elapsed),
            "first_batch_s": self.first_batch_s,
            "slides_opened": sum(w.slides_opened for w in workers),
            "slides_failed": sum(w.slides_failed for w in workers),
            "read_errors": sum(w.read_errors for w in workers),
            "patches_filtered": sum(w.patches_filtered for w in workers),
            "failures": self.failures_seen,
            "empty_batches": self.empty_batches,
            "worker_rss_bytes": rss,
            "max_worker_rss_bytes": max(rss.values(), default=-1),
        }

    def summary(self) -> str:
        """One log line of :meth:`stats`."""
        s = self.stats()
        return (
            f"{s['batches']} batches, {s['patches']} patches, {s['patches_per_s']:.1f} patches/s, "
            f"waited {s['wait_s']:.1f}s ({100 * s['wait_fraction']:.0f}%), "
            f"slides opened {s['slides_opened']} "
            f"failed {s['slides_failed']}, max worker RSS {s['max_worker_rss_bytes'] / 2**20:.0f} MiB"
        )

    # -- checkpointing: the wrapped loader's state plus these counters --------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"loader": loader.state_dict(), "monitor": counters}`` (the loader must be stateful)."""
        counters = {
            "batches": self.batches,
            "patches": self.patches,
            "empty_batches": self.empty_batches,
            "wait_s": self.wait_s,
            "elapsed_s": self.elapsed_s,
            "failures_seen": self.failures_seen,
        }
        return {"loader": self.loader.state_dict(), "monitor": counters}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped loader and the counters from :meth:`state_dict` (checked first)."""
        from wsistream.torch.dataset import WsiStreamDataset

        dataset = getattr(self.loader, "dataset", None)
        if isinstance(dataset, WsiStreamDataset):
            dataset.check_loader_state(state["loader"], int(getattr(self.loader, "num_workers", 0)))
        self.loader.load_state_dict(state["loader"])  # type: ignore[attr-defined]
        for key, value in state.get("monitor", {}).items():
            setattr(self, key, value)
