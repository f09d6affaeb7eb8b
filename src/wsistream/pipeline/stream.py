"""The streaming state machine behind ``iter(PatchPipeline)``.

State is a handful of counters (epoch, queue position, assignments, per-slot
attempts, dead slides): every random choice is re-derived from the seed and
those counters (:mod:`wsistream.pipeline.seeding`), so :meth:`PatchStream.state_dict`
is small and :meth:`PatchPipeline.resume` continues the exact same stream.

The stream schedules; it does not know the pipeline. It gets a frozen
:class:`StreamSpec` (slides, pool and visit sizes, seed) and a
:class:`PatchSource` that opens a slide (:mod:`wsistream.pipeline.opening`)
and reads one patch, so this module imports nothing of ``pipeline.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

from wsistream.errors import (
    MissingMppError,
    NoTissueError,
    NoUsableSlidesError,
    ResolutionUnavailableError,
    SlideNotFoundError,
    SlideOpenError,
    SlideTooSmallError,
    TileDecodeError,
    WsiStreamError,
)
from wsistream.pipeline.opening import OpenFailure
from wsistream.pipeline.seeding import RngStream, stream_rng
from wsistream.pipeline.slot import PREFETCH_DEPTH, Slot, SlotCounters
from wsistream.pipeline.stats import PipelineStats
from wsistream.sampling.base import Position
from wsistream.types import FailureRecord, PatchResult

logger = logging.getLogger("wsistream")

#: Slides beyond those a refill opens that remote backends start opening too, so a slot that
#: retires later finds its successor already open.
_PREOPEN_AHEAD = 2

#: Failures that will recur every time the slide is opened with this config:
#: such a slide is not reopened in later epochs.
_PERMANENT = (
    NoTissueError,
    MissingMppError,
    ResolutionUnavailableError,
    SlideTooSmallError,
    SlideOpenError,
    SlideNotFoundError,
)


def check_schedule(
    pool_size: int, patches_per_slide: int, patches_per_visit: int, max_read_errors: int, slide_sampling: str
) -> None:
    """Raise ``ValueError`` for pool and visit sizes a stream cannot run with (named as ``PatchPipeline`` does)."""
    for name, value in (
        ("pool_size", pool_size),
        ("patches_per_visit", patches_per_visit),
        ("max_read_errors", max_read_errors),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if patches_per_slide == 0 or patches_per_slide < -1:
        raise ValueError(f"patches_per_slide must be >= 1, or -1 for unlimited, got {patches_per_slide}")
    if slide_sampling not in ("sequential", "random"):
        raise ValueError(f"slide_sampling={slide_sampling!r}; pass 'sequential' or 'random'")


@dataclass(frozen=True)
class StreamSpec:
    """What the scheduler needs of a pipeline's config (``PatchPipeline`` documents each field).

    ``quarantined_indices`` are indices into ``slide_list`` that start dead
    (``skip_known_failures``).
    """

    slide_list: tuple[str, ...]
    pool_size: int
    patches_per_slide: int
    patches_per_visit: int
    max_read_errors: int
    slide_sampling: Literal["sequential", "random"]
    cycle: bool
    seed: int
    quarantined_indices: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        check_schedule(
            self.pool_size, self.patches_per_slide, self.patches_per_visit, self.max_read_errors, self.slide_sampling
        )
        if not self.slide_list:
            raise ValueError("slide_list is empty; a stream needs at least one slide")


class PatchSource(Protocol):
    """What a stream needs of its pipeline: open a slide, read one patch, keep failures and counters."""

    @property
    def failures(self) -> list[FailureRecord]:
        """Every failure recorded so far (raised with :class:`~wsistream.errors.NoUsableSlidesError`)."""
        ...

    @property
    def stats(self) -> PipelineStats:
        """Counters the stream increments."""
        ...

    def open_slot(self, path: str, counters: SlotCounters) -> Slot | OpenFailure:
        """A ready slot for ``path``, or the stage and error that stopped it."""
        ...

    def make_result(self, slot: Slot, position: Position, rng: np.random.Generator) -> PatchResult | None:
        """Read one patch (``None`` when a patch filter rejects it)."""
        ...

    def record_failure(self, record: FailureRecord) -> None:
        """Keep and log one failure."""
        ...

    def preopen(self, paths: list[str]) -> None:
        """Start opening ``paths`` in the background where the backend can (remote slides); else nothing."""
        ...


class PatchStream(Iterator[PatchResult]):
    """Iterator over a pipeline's patches; ``state_dict()`` resumes it exactly."""

    def __init__(self, spec: StreamSpec, source: PatchSource, state: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.source = source
        self.epoch = 0
        self.queue_pos = 0
        self.next_assignment = 0
        self.rr = 0
        self.yielded = 0
        self.yielded_in_epoch = 0
        self.dead: set[int] = set(spec.quarantined_indices)
        self.pool: list[Slot] = []
        self._order = self._epoch_order(0)
        self._finished = False
        if state is not None:
            self._restore(state)

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters only (a few hundred bytes plus one int per dead slide)."""
        return {
            "epoch": self.epoch,
            "queue_pos": self.queue_pos,
            "next_assignment": self.next_assignment,
            "rr": self.rr,
            "yielded": self.yielded,
            "yielded_in_epoch": self.yielded_in_epoch,
            "dead": sorted(self.dead),
            "pool": [asdict(s.counters) for s in self.pool],
            "finished": self._finished,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        for key in ("epoch", "queue_pos", "next_assignment", "rr", "yielded", "yielded_in_epoch"):
            setattr(self, key, int(state[key]))
        self.dead = set(state["dead"])
        self._finished = bool(state.get("finished", False))
        self._order = self._epoch_order(self.epoch)
        for counters in state["pool"]:
            c = SlotCounters(**counters)
            slot = self._open(c)  # resumed slots reopen like new ones
            if slot is not None:
                slot.skip(c.attempts)
                self.pool.append(slot)

    # -- scheduling --------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> list[int]:
        n = len(self.spec.slide_list)
        if self.spec.slide_sampling == "random":
            return [int(i) for i in stream_rng(self.spec.seed, RngStream.SLIDE_ORDER, epoch).permutation(n)]
        return list(range(n))

    def _record(self, slide_path: str, stage: str, exc: BaseException, retired: bool = True) -> None:
        record = FailureRecord(slide_path, stage, type(exc).__name__, str(exc), time.time(), retired)
        self.source.record_failure(record)

    def _open(self, counters: SlotCounters) -> Slot | None:
        """Open one slide into a slot; record the failure, and return None, when it cannot join the pool."""
        path = self.spec.slide_list[counters.slide_index]
        opened = self.source.open_slot(path, counters)
        if isinstance(opened, Slot):
            self.source.stats.slides_opened += 1
            return opened
        self._record(path, opened.stage, opened.error)
        self.source.stats.slides_failed += 1
        if isinstance(opened.error, _PERMANENT):
            self.dead.add(counters.slide_index)
        return None

    def _preopen_upcoming(self) -> None:
        """Let the backend start opening the slides this refill (and the next :data:`_PREOPEN_AHEAD`) opens.

        Remote backends open them in background threads, so a pool's round trips overlap
        (``docs/storage.md``); local backends do nothing.  Order and contents are unchanged.
        """
        want = self.spec.pool_size - len(self.pool) + _PREOPEN_AHEAD
        skip = self.dead | {slot.counters.slide_index for slot in self.pool}
        queue = (self._order[j] for j in range(self.queue_pos, len(self._order)))  # no copy of a long order
        upcoming = list(itertools.islice((i for i in queue if i not in skip), want))
        self.source.preopen([self.spec.slide_list[i] for i in upcoming])

    def _refill(self) -> None:
        if len(self.pool) < self.spec.pool_size:
            self._preopen_upcoming()
        while len(self.pool) < self.spec.pool_size:
            if self.queue_pos >= len(self._order):
                if not self.spec.cycle:
                    return
                if len(self.dead) == len(self.spec.slide_list):
                    return
                if self.yielded_in_epoch == 0 and not self.pool:
                    # a whole epoch without a single patch: every slide failed or
                    # retired; cycling again would spin forever
                    raise NoUsableSlidesError(self.source.failures)
                self.epoch += 1
                self.queue_pos = 0
                self.yielded_in_epoch = 0
                self._order = self._epoch_order(self.epoch)
                continue
            index = self._order[self.queue_pos]
            if index in self.dead:
                self.queue_pos += 1
                continue
            if any(slot.counters.slide_index == index for slot in self.pool):
                # a slide is open in at most one slot: its next visit waits until the
                # current one retires (the pool is smaller than pool_size meanwhile)
                return
            self.queue_pos += 1
            counters = SlotCounters(self.next_assignment, index, self.epoch)
            self.next_assignment += 1
            slot = self._open(counters)
            if slot is not None:
                self.pool.append(slot)

    def _retire(self, slot: Slot) -> None:
        _close_quietly(slot)
        index = self.pool.index(slot)
        self.pool.pop(index)
        if self.pool:
            self.rr = self.rr % len(self.pool) if index >= self.rr else (self.rr - 1) % len(self.pool)
        else:
            self.rr = 0

    # -- iteration ---------------------------------------------------------------
    def __iter__(self) -> PatchStream:
        return self

    def __next__(self) -> PatchResult:
        while not self._finished:
            self._refill()
            if not self.pool:
                self._finished = True
                break
            self.rr %= len(self.pool)
            slot = self.pool[self.rr]
            result = self._next_from(slot)
            if result is not None:
                self.yielded += 1
                self.yielded_in_epoch += 1
                return result
        self.close()
        if self.yielded == 0 and self.source.failures:
            raise NoUsableSlidesError(self.source.failures)
        raise StopIteration

    def _next_from(self, slot: Slot) -> PatchResult | None:
        """One attempt on ``slot``; handles visit length, retirement and read errors."""
        spec, source = self.spec, self.source
        c = slot.counters
        visit_done = False
        try:
            position = next(slot.positions)
        except StopIteration:
            self._retire(slot)
            return None
        except WsiStreamError as exc:
            self._record(slot.slide_path, "sample", exc)
            source.stats.slides_failed += 1
            if isinstance(exc, _PERMANENT):
                self.dead.add(c.slide_index)
            self._retire(slot)
            return None
        c.attempts += 1
        attempt = c.attempts - 1
        result: PatchResult | None = None
        try:
            result = source.make_result(slot, position, stream_rng(spec.seed, RngStream.PATCH, c.assignment, attempt))
        except TileDecodeError as exc:
            c.read_errors += 1
            self._record(slot.slide_path, "read", exc, retired=False)
            source.stats.read_errors += 1
        except WsiStreamError as exc:  # e.g. a view resolution this slide cannot deliver
            self._record(slot.slide_path, "read", exc)
            source.stats.slides_failed += 1
            if isinstance(exc, _PERMANENT):
                self.dead.add(c.slide_index)
            self._retire(slot)
            return None
        slide_done = spec.patches_per_slide > 0 and c.attempts >= spec.patches_per_slide
        if not slide_done:
            left = spec.patches_per_slide - c.attempts if spec.patches_per_slide > 0 else PREFETCH_DEPTH
            with contextlib.suppress(WsiStreamError):  # the read that needs the tiles reports any failure
                # remote slides only: the next tiles arrive while others decode; never past the visit
                slot.prefetch_next(min(PREFETCH_DEPTH, left))
        if slide_done:
            self._retire(slot)
        elif c.read_errors >= spec.max_read_errors:
            self._record(
                slot.slide_path,
                "read",
                TileDecodeError(slot.slide_path, f"retired after {c.read_errors} undecodable regions"),
            )
            self._retire(slot)
        else:
            visit_done = attempt % spec.patches_per_visit == spec.patches_per_visit - 1
            if visit_done:
                self.rr += 1
        return result

    def close(self) -> None:
        """Close every open slide."""
        for slot in self.pool:
            _close_quietly(slot)
        self.pool = []


def _close_quietly(slot: Slot) -> None:
    """Close a slot; a library error while closing (file gone, handle broken) must not end the stream."""
    try:
        slot.close()
    except Exception as exc:
        logger.warning("wsistream: error closing %s: %s", slot.slide_path, exc)
