"""One shard's stream: its slides, its pipeline per epoch/pass, its counters and its state."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wsistream.errors import NoUsableSlidesError, WsiStreamError
from wsistream.pipeline import PatchPipeline, PatchStream
from wsistream.torch.sharding import PartitionPolicy, shard_indices, shard_seed
from wsistream.types import FailureRecord, PatchResult

logger = logging.getLogger("wsistream")

#: Version tag of the worker states :class:`ShardIterator` saves (checked on resume).
STATE_FORMAT = "wsistream.torch/1"

_STAT_KEYS = ("slides_opened", "slides_failed", "read_errors", "patches_filtered")


class ShardUnusableError(NoUsableSlidesError):
    """A shard whose stream promised a length (``cycle=True`` or ``patches_per_rank``) has no usable slide.

    Raised in the worker; the DataLoader re-raises it in the main process
    (rebuilt from its message, so there ``failures`` is empty and the
    message carries the list).  Catch :class:`~wsistream.errors.NoUsableSlidesError`.
    """

    def __init__(self, failures: Sequence[object] | str, where: str = "") -> None:
        if isinstance(failures, str):  # the DataLoader rebuilds worker errors from their message
            self.failures = []
            WsiStreamError.__init__(self, None, failures)
            return
        super().__init__(failures)
        if where:
            WsiStreamError.__init__(self, None, f"{where}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShardUnusableError, (self.failures,) if self.failures else (str(self),))


@dataclass(frozen=True)
class WorkerStats:
    """Counters of one shard (a DataLoader worker of one rank), cumulative over its life and resumes.

    Attributes
    ----------
    rank, worker_id, shard : int
        Who produced the item (``shard = rank · num_workers + worker_id``).
    pid : int
        Worker process id.
    rss_bytes : int
        Resident memory of the worker process (-1 where ``/proc`` is unavailable), read at most
        every :data:`RSS_EVERY_ITEMS` items (a ``/proc`` read per patch cost ~2 % of a worker).
    slides_opened, slides_failed, read_errors, patches_filtered : int
        The shard's :class:`~wsistream.pipeline.PipelineStats`, summed over epochs and passes.
    patches : int
        Patches yielded by the shard so far (all epochs).
    """

    rank: int
    worker_id: int
    shard: int
    pid: int
    rss_bytes: int
    slides_opened: int
    slides_failed: int
    read_errors: int
    patches_filtered: int
    patches: int


@dataclass(frozen=True)
class StreamItem:
    """One item of :class:`~wsistream.torch.WsiStreamDataset` (batch it with ``collate_patches``).

    Attributes
    ----------
    result : PatchResult or None
        The patch; ``None`` for a *failure notice*, the single item a shard
        yields at the end of a finite epoch when failures are left to report
        (``collate_patches`` counts it in ``failures`` but not in the tensors).
    shard, epoch, index : int
        Which shard, which epoch, and the patch's ordinal within that shard's
        epoch (-1 for a notice): ``(shard, epoch, index)`` identifies a patch.
    slide_index : int
        Index of the slide in the dataset's ``slides`` (-1 for a notice).
    failures : tuple of FailureRecord
        Failures the shard recorded since its previous item: this is how every
        worker's failures reach the main process.
    worker : WorkerStats
        The shard's counters as of this item.
    patch_size : int
        Side of the patch (lets a batch of notices alone still have a shape).
    """

    result: PatchResult | None
    shard: int
    epoch: int
    index: int
    slide_index: int
    failures: tuple[FailureRecord, ...]
    worker: WorkerStats
    patch_size: int


@dataclass(frozen=True)
class ShardSpec:
    """What every shard of one dataset shares: fixed when the dataset is built, sent to each worker.

    Attributes
    ----------
    slides : tuple of str
        The dataset's slides, in order (a shard streams a subset by index).
    seed : int
        The pipeline's seed (mixed with shard, epoch and pass).
    fingerprint : str
        Digest of ``slides``: a checkpoint must have been saved over the same list.
    rank, world_size : int
        This process's rank and the number of ranks.
    partition : {"strided", "contiguous"}
        How slide indices are split over shards.
    shuffle_partition : bool
        Reshuffle the split every epoch (the pipeline's ``slide_sampling="random"``).
    cycle : bool
        The pipeline cycles (an endless pass).
    patch_size : int
        Side of the patches (a batch of failure notices alone still has a shape).
    patches_per_rank : int or None
        Equal-length policy: patches each rank yields per epoch.
    """

    slides: tuple[str, ...]
    seed: int
    fingerprint: int
    rank: int
    world_size: int
    partition: PartitionPolicy
    shuffle_partition: bool
    cycle: bool
    patch_size: int
    patches_per_rank: int | None

    def check_state(self, state: Mapping[str, Any], shard: int, n_shards: int) -> None:
        """Raise ``ValueError`` unless ``state`` was saved by shard ``shard`` of ``n_shards`` of this dataset."""
        expected = {"shard": shard, "n_shards": n_shards, "seed": self.seed, "slides": self.fingerprint}
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(
                    f"checkpoint does not match this loader: {key}={state.get(key)!r} in the checkpoint, "
                    f"{value!r} here; resume with the same slides, seed, world_size and num_workers "
                    f"(checkpoint: {state.get('n_shards')} shards = ranks × workers)"
                )


def _records(failures: Sequence[object]) -> list[FailureRecord]:
    """The failure records of a ``NoUsableSlidesError`` (rebuilt-from-message errors carry none)."""
    return [f for f in failures if isinstance(f, FailureRecord)]


#: Items between two reads of the worker's resident memory for :class:`WorkerStats`.
RSS_EVERY_ITEMS = 32


def rss_bytes() -> int:
    """Resident set size of this process in bytes (-1 where ``/proc/self/statm`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return -1


class ShardIterator(Iterator[StreamItem]):
    """Iterator over one shard's items for one epoch; ``snapshot()`` is its resumable state."""

    def __init__(
        self,
        spec: ShardSpec,
        template: Callable[[], PatchPipeline],
        epoch: int,
        worker_id: int,
        num_workers: int,
        state: dict[str, Any] | None,
    ) -> None:
        self.spec = spec
        self._template = template
        self.format = STATE_FORMAT
        self.worker_id = worker_id
        self.shard = spec.rank * num_workers + worker_id
        self.n_shards = spec.world_size * num_workers
        self.quota: int | None = None
        if spec.patches_per_rank is not None:
            n = spec.patches_per_rank
            self.quota = n // num_workers + (1 if worker_id < n % num_workers else 0)
        self.epoch = epoch
        self.pass_no = 0
        self.emitted = 0  # items of this epoch
        self.pass_emitted = 0
        self.ended = False
        self.stats = dict.fromkeys((*_STAT_KEYS, "patches"), 0)
        self._stream_state: dict[str, Any] | None = None
        if state is not None:
            self._restore(state)
        self.indices = shard_indices(
            len(spec.slides),
            self.shard,
            self.n_shards,
            policy=spec.partition,
            seed=(spec.seed, self.epoch) if spec.shuffle_partition else None,
            wrap=self.quota is not None,
        )
        self._slide_index = {spec.slides[i]: i for i in self.indices}
        self._pipeline: PatchPipeline | None = None
        self._stream: PatchStream | None = None
        self._rss_bytes = -1
        self._items_since_rss = RSS_EVERY_ITEMS  # read on the first item

    # -- state -------------------------------------------------------------------------
    def _restore(self, state: dict[str, Any]) -> None:
        self.spec.check_state(state, self.shard, self.n_shards)
        self.epoch = int(state["epoch"])
        self.pass_no = int(state["pass"])
        self.emitted = int(state["emitted"])
        self.pass_emitted = int(state["pass_emitted"])
        self.ended = bool(state["ended"])
        self.stats.update({k: int(v) for k, v in state["stats"].items()})
        self._stream_state = state["stream"]

    def snapshot(self) -> dict[str, Any]:
        """Seeds and counters that reproduce the rest of this shard's epoch."""
        stream = self._stream.state_dict() if self._stream is not None else self._stream_state
        return {
            "format": self.format,
            "shard": self.shard,
            "n_shards": self.n_shards,
            "seed": self.spec.seed,
            "slides": self.spec.fingerprint,
            "epoch": self.epoch,
            "pass": self.pass_no,
            "emitted": self.emitted,
            "pass_emitted": self.pass_emitted,
            "ended": self.ended,
            "stats": self._current_stats(),
            "stream": stream,
        }

    def _current_stats(self) -> dict[str, int]:
        stats = dict(self.stats)
        if self._pipeline is not None:
            for key in _STAT_KEYS:
                stats[key] += getattr(self._pipeline.stats, key)
        return stats

    # -- passes ------------------------------------------------------------------------
    def _start_pass(self) -> PatchStream:
        template = self._template()
        self._pipeline = dataclasses.replace(
            template,
            slide_paths=[self.spec.slides[i] for i in self.indices],
            seed=shard_seed(self.spec.seed, self.shard, self.n_shards, self.epoch, self.pass_no),
        )
        state, self._stream_state = self._stream_state, None
        self._stream = self._pipeline.resume(state) if state is not None else iter(self._pipeline)
        return self._stream

    def _end_pass(self) -> None:
        if self._pipeline is not None:
            for key in _STAT_KEYS:
                self.stats[key] += getattr(self._pipeline.stats, key)
        if self._stream is not None:
            self._stream.close()
        self._pipeline, self._stream = None, None
        self.pass_no += 1
        self.pass_emitted = 0

    def _take_failures(self) -> tuple[FailureRecord, ...]:
        """Failures recorded since the last item; removed from the pipeline so memory stays flat."""
        if self._pipeline is None or not self._pipeline.failures:
            return ()
        taken = tuple(self._pipeline.failures)
        self._pipeline.failures.clear()
        return taken

    # -- iteration -----------------------------------------------------------------------
    def __next__(self) -> StreamItem:
        while not self.ended:
            if self.quota is not None and self.emitted >= self.quota:
                self._finish()
                break
            stream = self._stream or self._start_pass()
            try:
                result = next(stream)
            except StopIteration:
                notice = self._pass_exhausted(None)
            except NoUsableSlidesError as exc:
                notice = self._pass_exhausted(exc)
            else:
                return self._item(result)
            if notice is not None:
                return notice
        raise StopIteration

    def _pass_exhausted(self, exc: NoUsableSlidesError | None) -> StreamItem | None:
        """Handle the end of the shard's pipeline: next pass (equal-length policy), notice, or error."""
        endless = self.quota is not None or self.spec.cycle
        if endless and (exc is not None or self.pass_emitted == 0):
            records = _records(exc.failures) if exc is not None else list(self._take_failures())
            self._finish()
            if records:
                where = f"shard {self.shard} (rank {self.spec.rank}, worker {self.worker_id})"
                raise ShardUnusableError(records, where) from exc
            raise RuntimeError(
                f"shard {self.shard} (rank {self.spec.rank}, worker {self.worker_id}) produced no patch in a "
                "whole pass over its slides and recorded no failure (are they all quarantined by "
                "skip_known_failures, or does patch_filter reject everything?)"
            )
        if self.quota is not None:
            self._end_pass()  # wrap around: a fresh pass with its own seed
            return None
        failures = tuple(_records(exc.failures)) if exc is not None else self._take_failures()
        self._finish()
        if exc is not None:
            logger.warning("wsistream: shard %d has no usable slide; it ends this epoch empty", self.shard)
        if not failures:
            return None
        stats = self._worker_stats()
        return StreamItem(None, self.shard, self.epoch, -1, -1, failures, stats, self.spec.patch_size)

    def _finish(self) -> None:
        if self._pipeline is not None:
            for key in _STAT_KEYS:
                self.stats[key] += getattr(self._pipeline.stats, key)
        if self._stream is not None:
            self._stream.close()
        self._pipeline, self._stream, self._stream_state = None, None, None
        self.ended = True

    def _item(self, result: PatchResult) -> StreamItem:
        index = self.emitted
        self.emitted += 1
        self.pass_emitted += 1
        self.stats["patches"] += 1
        failures = self._take_failures()
        slide_index = self._slide_index.get(result.coordinate.slide_path, -1)
        stats = self._worker_stats()
        size = self.spec.patch_size
        return StreamItem(result, self.shard, self.epoch, index, slide_index, failures, stats, size)

    def _worker_stats(self) -> WorkerStats:
        if self._items_since_rss >= RSS_EVERY_ITEMS:
            self._rss_bytes, self._items_since_rss = rss_bytes(), 0
        self._items_since_rss += 1
        stats = self._current_stats()
        return WorkerStats(
            rank=self.spec.rank,
            worker_id=self.worker_id,
            shard=self.shard,
            pid=os.getpid(),
            rss_bytes=self._rss_bytes,
            **stats,
        )

    def close(self) -> None:
        """Close the shard's open slides."""
        if self._stream is not None:
            self._stream.close()
