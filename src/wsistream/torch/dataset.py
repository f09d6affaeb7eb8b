"""``WsiStreamDataset``: a :class:`PatchPipeline` as a sharded, exactly resumable ``IterableDataset``."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from wsistream.pipeline import PatchPipeline
from wsistream.torch._shard import STATE_FORMAT, ShardIterator, ShardSpec, StreamItem, WorkerStats
from wsistream.torch.sharding import PartitionPolicy, resolve_rank_world, slides_fingerprint

logger = logging.getLogger("wsistream")

#: What :class:`WsiStreamDataset` accepts: a pipeline, or a zero-argument picklable callable returning one.
PipelineSource = PatchPipeline | Callable[[], PatchPipeline]

__all__ = ["STATE_FORMAT", "PipelineSource", "StreamItem", "WorkerStats", "WsiStreamDataset"]


class WsiStreamDataset(IterableDataset[StreamItem]):
    """Stream a pipeline's patches from every DataLoader worker of every rank, each on its own slides.

    Every (rank, worker) pair — a *shard* — streams a disjoint subset of the
    slides (:func:`~wsistream.torch.partition_slides_by_rank`) through its own
    copy of the pipeline, seeded from ``(seed, shard, epoch)``.  Items are
    :class:`StreamItem`; batch them with :func:`~wsistream.torch.collate_patches`
    (or build the loader with :func:`~wsistream.torch.make_loader`).

    The dataset follows the ``torchdata.stateful_dataloader.StatefulDataLoader``
    protocol: each worker's ``state_dict()`` is a few counters (see
    ``docs/torch.md``), and a loader restored from it continues with exactly
    the batches the uninterrupted run would have produced.

    Parameters
    ----------
    source : PatchPipeline or callable
        The pipeline, or a zero-argument picklable callable returning one
        (called once here and once per worker: use it when the pipeline itself
        should not be pickled).  Its ``slide_list`` and ``seed_used`` are read
        here, in the main process, so workers agree on them even with ``seed=None``.
    rank, world_size : int, optional
        Default: :mod:`torch.distributed` if initialised, else ``RANK`` /
        ``WORLD_SIZE`` (torchrun), else 0 and 1.  Read when the dataset is built.
    partition : {"strided", "contiguous"}
        How slides are split between shards.  With ``slide_sampling="random"``
        the slides are also permuted per epoch before the split.
    patches_per_rank : int, optional
        Equal-length policy: each rank yields exactly this many patches per
        epoch (split evenly between its workers); a shard that runs out wraps
        around with a fresh pass over its slides, a cycling pipeline is cut.
        Makes every rank run the same number of steps (safe for DDP) and lets
        more shards than slides share slides.
    allow_uneven : bool
        With ``world_size > 1`` and a finite pipeline (``cycle=False``),
        ranks get different numbers of patches, which hangs a DDP step; that
        raises unless ``patches_per_rank`` is given or this is True (e.g. when
        the training loop uses ``torch.distributed.algorithms.Join``).

    Notes
    -----
    A shard none of whose slides is usable ends quietly in a finite epoch
    (after one failure notice, see :class:`StreamItem`), but raises
    :class:`~wsistream.torch.ShardUnusableError` (a
    :class:`~wsistream.errors.NoUsableSlidesError`) when the stream promised a
    length (``cycle=True`` or ``patches_per_rank``): ending would leave its
    rank short of batches.
    """

    def __init__(
        self,
        source: PipelineSource,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        partition: PartitionPolicy = "strided",
        patches_per_rank: int | None = None,
        allow_uneven: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(source, PatchPipeline):
            self._pipeline: PatchPipeline | None = source
            self._factory: Callable[[], PatchPipeline] | None = None
            template = source
        elif callable(source):
            self._pipeline, self._factory = None, source
            template = source()
            if not isinstance(template, PatchPipeline):
                raise TypeError(f"the factory returned {type(template).__name__}; it must return a PatchPipeline")
        else:
            raise TypeError(
                f"source must be a PatchPipeline or a zero-argument callable returning one, got {type(source).__name__}"
            )
        if partition not in ("strided", "contiguous"):
            raise ValueError(f"partition={partition!r}; pass 'strided' or 'contiguous'")
        if patches_per_rank is not None and patches_per_rank < 1:
            raise ValueError(f"patches_per_rank must be >= 1 (None: whole shard), got {patches_per_rank}")
        rank, world_size = resolve_rank_world(rank, world_size)
        slides = tuple(template.slide_list)
        #: What every shard of this dataset shares (sent to each worker).
        self.spec = ShardSpec(
            slides=slides,
            seed=template.seed_used,
            fingerprint=slides_fingerprint(list(slides)),
            rank=rank,
            world_size=world_size,
            partition=partition,
            shuffle_partition=template.slide_sampling == "random",
            cycle=template.cycle,
            patch_size=template.sampler.patch_size,
            patches_per_rank=patches_per_rank,
        )
        self.allow_uneven = allow_uneven
        if self.world_size > 1 and not self.cycle and patches_per_rank is None and not allow_uneven:
            raise ValueError(
                f"with cycle=False each of the {self.world_size} ranks ends its epoch after its own slides' "
                "patches, so ranks would run different numbers of steps and a DDP step would hang; pass "
                "patches_per_rank=N (every rank yields exactly N patches per epoch), a pipeline with "
                "cycle=True and a fixed number of steps, or allow_uneven=True if your loop handles "
                "uneven inputs (torch.distributed.algorithms.Join)"
            )
        self.validate_workers(0)
        # Shared memory, so set_epoch() reaches persistent workers too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # type: ignore[no-untyped-call]
        self._pending: dict[str, Any] | None = None
        self._iter: ShardIterator | None = None
        self._template_cache: PatchPipeline | None = template if self._pipeline is not None else None

    # -- the spec, read-only ---------------------------------------------------------
    @property
    def slides(self) -> list[str]:
        """The dataset's slides, in order."""
        return list(self.spec.slides)

    @property
    def seed(self) -> int:
        """The pipeline's seed."""
        return self.spec.seed

    @property
    def rank(self) -> int:
        """Rank of this process."""
        return self.spec.rank

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return self.spec.world_size

    @property
    def cycle(self) -> bool:
        """Whether the pipeline cycles."""
        return self.spec.cycle

    @property
    def patches_per_rank(self) -> int | None:
        """Patches each rank yields per epoch (equal-length policy), or ``None``."""
        return self.spec.patches_per_rank

    @property
    def fingerprint(self) -> int:
        """Digest of the slide list that checkpoints are checked against."""
        return self.spec.fingerprint

    # -- configuration -------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next iteration (mixed into the partition and pipeline seeds).

        Call it before each epoch, as with ``DistributedSampler``; without it
        every epoch repeats epoch 0's order.  Reaches persistent workers.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        """The epoch the next fresh iteration starts."""
        return int(self._epoch.item())

    def validate_workers(self, num_workers: int) -> None:
        """Raise now, before training, if ``num_workers`` cannot work with this dataset.

        Raises
        ------
        ValueError
            More shards (ranks × workers) than slides without ``patches_per_rank``,
            or ``patches_per_rank`` smaller than the number of workers.
        """
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        workers = max(1, num_workers)
        shards = self.world_size * workers
        if self.patches_per_rank is None and shards > len(self.slides):
            raise ValueError(
                f"{len(self.slides)} slides cannot be split over {self.world_size} rank(s) × {workers} "
                f"worker(s) = {shards} shards without leaving some empty; use num_workers <= "
                f"{max(1, len(self.slides) // self.world_size)}, add slides, or pass patches_per_rank=N "
                "(equal-length policy: shards may then share slides)"
            )
        if self.patches_per_rank is not None and self.patches_per_rank < workers:
            raise ValueError(
                f"patches_per_rank={self.patches_per_rank} is split between {workers} workers; "
                f"pass patches_per_rank >= {workers}"
            )

    def check_picklable(self) -> None:
        """Raise a clear error if the dataset cannot be sent to ``spawn``/``forkserver`` workers."""
        try:
            pickle.dumps(self)
        except Exception as exc:
            what = "the pipeline factory" if self._factory is not None else "the pipeline"
            raise ValueError(
                f"{what} cannot be pickled ({type(exc).__name__}: {exc}), so DataLoader workers started "
                "with 'spawn' or 'forkserver' cannot receive it; pass a module-level function or a "
                "functools.partial as the factory, or use multiprocessing_context='fork'"
            ) from exc

    def num_batches(self, batch_size: int, num_workers: int, drop_last: bool = False) -> int:
        """Batches one rank's loader yields per epoch under ``patches_per_rank`` (same on every rank)."""
        if self.patches_per_rank is None:
            raise ValueError("the number of batches is only fixed with patches_per_rank=N")
        workers = max(1, num_workers)
        total = 0
        for w in range(workers):
            quota = self.patches_per_rank // workers + (1 if w < self.patches_per_rank % workers else 0)
            total += quota // batch_size if drop_last else -(-quota // batch_size)
        return total

    def pipeline_template(self) -> PatchPipeline:
        """Return the user's pipeline (built by the factory when one was given); never iterated."""
        if self._template_cache is None:
            assert self._factory is not None
            pipeline = self._factory()
            if pipeline.slide_list != self.slides:
                raise ValueError(
                    "the factory returned a pipeline with a different slide list in this process; "
                    "a factory must build the same pipeline every time it is called"
                )
            self._template_cache = pipeline
        return self._template_cache

    # -- iteration -----------------------------------------------------------------
    def __iter__(self) -> ShardIterator:
        info = get_worker_info()
        worker_id, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        self.validate_workers(num_workers)
        state, self._pending = self._pending, None
        if self._iter is not None:
            self._iter.close()
        self._iter = ShardIterator(self.spec, self.pipeline_template, self.epoch, worker_id, num_workers, state)
        return self._iter

    # -- StatefulDataLoader protocol -----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Return this worker's position: seeds and counters only (a few hundred bytes)."""
        if self._iter is not None:
            return self._iter.snapshot()
        if self._pending is not None:
            return dict(self._pending)
        return {"format": STATE_FORMAT, "started": False, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` at the next ``iter()`` (checked against this worker then)."""
        fmt = state.get("format") if isinstance(state, dict) else type(state).__name__
        if fmt != STATE_FORMAT:
            raise ValueError(
                f"not a WsiStreamDataset state (format {fmt!r}); "
                "pass a state_dict() saved from a WsiStreamDataset loader"
            )
        self._iter = None
        self._pending = None if not state.get("started", True) else dict(state)
        if not state.get("started", True):
            self.set_epoch(int(state["epoch"]))

    def check_loader_state(self, loader_state: Mapping[str, Any], num_workers: int) -> None:
        """Check a ``StatefulDataLoader.state_dict()`` against this dataset in the main process, before training.

        Workers check their own state anyway; this raises the same ``ValueError``
        before any worker starts (``MonitoredLoader.load_state_dict`` calls it).
        """
        workers = max(1, num_workers)
        snapshots = loader_state.get("_snapshot", {}).get("_worker_snapshots")
        if num_workers > 0:
            if snapshots is None or len(snapshots) != num_workers:
                found = "no worker" if snapshots is None else f"{len(snapshots)} worker"
                raise ValueError(
                    f"checkpoint holds {found} states and this loader has num_workers={num_workers}; "
                    "resume with the num_workers of the run that saved it"
                )
            entries = [(int(w["worker_id"]), w.get("dataset_state")) for w in snapshots.values()]
        else:
            if snapshots is not None:
                raise ValueError(
                    f"checkpoint holds {len(snapshots)} worker states and this loader has num_workers=0; "
                    "resume with the num_workers of the run that saved it"
                )
            entries = [(0, loader_state.get("dataset_state"))]
        for worker_id, state in entries:
            if state and state.get("started", True):
                self.spec.check_state(state, self.rank * workers + worker_id, self.world_size * workers)

    # -- pickling (spawn workers) ------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_iter"] = None
        if state["_factory"] is not None:
            state["_template_cache"] = None
        return state
