"""The streaming state machine behind ``iter(PatchPipeline)``.

State is a handful of counters (epoch, queue position, assignments, per-slot
attempts, dead slides): every random choice is re-derived from the seed and
those counters (:mod:`wsistream.pipeline.seeding`), so :meth:`PatchStream.state_dict`
is small and :meth:`PatchPipeline.resume` continues the exact same stream.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

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
from wsistream.pipeline.seeding import RngStream, stream_rng
from wsistream.pipeline.slot import Slot, SlotCounters
from wsistream.sampling.base import Position
from wsistream.types import FailureRecord, PatchResult

logger = logging.getLogger("wsistream")

if TYPE_CHECKING:
    from wsistream.pipeline.pipeline import PatchPipeline

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


class PatchStream(Iterator[PatchResult]):
    """Iterator over a pipeline's patches; ``state_dict()`` resumes it exactly."""

    def __init__(self, pipeline: PatchPipeline, state: dict[str, Any] | None = None) -> None:
        self.p = pipeline
        self.epoch = 0
        self.queue_pos = 0
        self.next_assignment = 0
        self.rr = 0
        self.yielded = 0
        self.yielded_in_epoch = 0
        self.dead: set[int] = set(pipeline.quarantined_indices)
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
        n = len(self.p.slide_list)
        if self.p.slide_sampling == "random":
            return [int(i) for i in stream_rng(self.p.seed_used, RngStream.SLIDE_ORDER, epoch).permutation(n)]
        return list(range(n))

    def _record(self, slide_path: str, stage: str, exc: BaseException, retired: bool = True) -> None:
        record = FailureRecord(slide_path, stage, type(exc).__name__, str(exc), time.time(), retired)
        self.p.record_failure(record)

    def _open(self, counters: SlotCounters) -> Slot | None:
        """Open, plan, mask and start sampling one slide; record and return None on failure."""
        p = self.p
        path = p.slide_list[counters.slide_index]
        stage, handle = "open", None
        try:
            handle = p.backend.open(path)
            props = p.mpp_policy.apply(handle.properties)
            stage = "plan"
            plan = p.sampler.plan(props)
            p.check_view_resolutions(props)
            stage = "tissue"
            mask = p.tissue_mask(handle, props)
            if mask.is_empty:
                raise NoTissueError(path, f"{p.tissue_detector!r} found no tissue on the overview")
            stage = "sample"
            rng = stream_rng(p.seed_used, RngStream.POSITIONS, counters.assignment)
            positions = p.position_iterator(mask, plan, props, rng, counters)
            first = next(positions, None)  # surface NoTissueError now, not mid-stream
            if first is None:
                raise NoTissueError(path, "the sampler produced no position")
            slot = Slot(counters, handle, p.slide_metadata(props), plan, mask, _prepend(first, positions))
            p.stats.slides_opened += 1
            return slot
        except WsiStreamError as exc:
            if handle is not None:
                handle.close()
            self._record(path, stage, exc)
            p.stats.slides_failed += 1
            if isinstance(exc, _PERMANENT):
                self.dead.add(counters.slide_index)
            return None

    def _preopen_upcoming(self) -> None:
        """Let the backend start opening the slides this refill (and the next :data:`_PREOPEN_AHEAD`) opens.

        Remote backends open them in background threads, so a pool's round trips overlap
        (``docs/storage.md``); local backends do nothing.  Order and contents are unchanged.
        """
        want = self.p.pool_size - len(self.pool) + _PREOPEN_AHEAD
        skip = self.dead | {slot.counters.slide_index for slot in self.pool}
        queue = (self._order[j] for j in range(self.queue_pos, len(self._order)))  # no copy of a long order
        upcoming = list(itertools.islice((i for i in queue if i not in skip), want))
        self.p.backend.preopen([self.p.slide_list[i] for i in upcoming], overview_side=self.p.max_overview_side)

    def _refill(self) -> None:
        if len(self.pool) < self.p.pool_size:
            self._preopen_upcoming()
        while len(self.pool) < self.p.pool_size:
            if self.queue_pos >= len(self._order):
                if not self.p.cycle:
                    return
                if len(self.dead) == len(self.p.slide_list):
                    return
                if self.yielded_in_epoch == 0 and not self.pool:
                    # a whole epoch without a single patch: every slide failed or
                    # retired; cycling again would spin forever
                    raise NoUsableSlidesError(self.p.failures)
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
        if self.yielded == 0 and self.p.failures:
            raise NoUsableSlidesError(self.p.failures)
        raise StopIteration

    def _next_from(self, slot: Slot) -> PatchResult | None:
        """One attempt on ``slot``; handles visit length, retirement and read errors."""
        p = self.p
        c = slot.counters
        visit_done = False
        try:
            position = next(slot.positions)
        except StopIteration:
            self._retire(slot)
            return None
        except WsiStreamError as exc:
            self._record(slot.slide_path, "sample", exc)
            p.stats.slides_failed += 1
            if isinstance(exc, _PERMANENT):
                self.dead.add(c.slide_index)
            self._retire(slot)
            return None
        c.attempts += 1
        attempt = c.attempts - 1
        result: PatchResult | None = None
        try:
            result = p.make_result(slot, position, stream_rng(p.seed_used, RngStream.PATCH, c.assignment, attempt))
        except TileDecodeError as exc:
            c.read_errors += 1
            self._record(slot.slide_path, "read", exc, retired=False)
            p.stats.read_errors += 1
        except WsiStreamError as exc:  # e.g. a view resolution this slide cannot deliver
            self._record(slot.slide_path, "read", exc)
            p.stats.slides_failed += 1
            if isinstance(exc, _PERMANENT):
                self.dead.add(c.slide_index)
            self._retire(slot)
            return None
        slide_done = p.patches_per_slide > 0 and c.attempts >= p.patches_per_slide
        if not slide_done:
            with contextlib.suppress(WsiStreamError):  # the read that needs the tiles reports any failure
                slot.prefetch_next()  # remote slides only: the next tiles arrive while others decode
        if slide_done:
            self._retire(slot)
        elif c.read_errors >= p.max_read_errors:
            self._record(
                slot.slide_path,
                "read",
                TileDecodeError(slot.slide_path, f"retired after {c.read_errors} undecodable regions"),
            )
            self._retire(slot)
        else:
            visit_done = attempt % p.patches_per_visit == p.patches_per_visit - 1
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


def _prepend(first: Position, rest: Iterator[Position]) -> Iterator[Position]:
    yield first
    yield from rest
