"""One opened slide in the pool: handle, read plan, mask, position iterator, counters."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from wsistream.backends.base import SlideHandle
from wsistream.sampling.base import Position
from wsistream.sampling.plan import ReadPlan, plan_read
from wsistream.tissue.base import TissueMask
from wsistream.types import PatchCoordinate, SlideMetadata


@dataclass
class SlotCounters:
    """What a resumed stream needs to rebuild a slot: seeds come from these numbers."""

    assignment: int  # k-th slide opened by this stream (seeds the positions)
    slide_index: int  # index into the pipeline's slide list
    epoch: int  # epoch in which it was opened
    attempts: int = 0  # positions consumed (read, failed or filtered)
    read_errors: int = 0


#: Positions a slot's tiles are fetched ahead of its reads (see :meth:`Slot.prefetch_next`).
PREFETCH_DEPTH = 2


@dataclass
class Slot:
    """An open slide and its sampling state."""

    counters: SlotCounters
    handle: SlideHandle
    metadata: SlideMetadata
    plan: ReadPlan
    mask: TissueMask
    positions: Iterator[Position]
    _view_plans: dict[float, ReadPlan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lookahead = _Lookahead(self.positions)
        self.positions = self._lookahead
        self._prefetched_through = -1  # absolute index of the deepest position prefetched

    @property
    def slide_path(self) -> str:
        """The slide file."""
        return self.handle.slide_path

    def skip(self, n: int) -> None:
        """Advance the position iterator by ``n`` without reading (resume)."""
        for _ in itertools.islice(self.positions, n):
            pass

    def read(self, x0: int, y0: int, plan: ReadPlan) -> np.ndarray:
        """Read ``plan.read_size`` at ``plan.level`` and area-resample to ``plan.patch_size``."""
        region = self.handle.read_region(x0, y0, plan.level, (plan.read_size, plan.read_size), fill=plan.pad_value)
        if not plan.needs_resize:
            return region
        if plan.resample == "lanczos":
            from PIL import Image

            image = Image.fromarray(region)
            image.thumbnail((plan.patch_size, plan.patch_size), Image.Resampling.LANCZOS)
            return np.array(image)
        return cv2.resize(region, (plan.patch_size, plan.patch_size), interpolation=cv2.INTER_AREA)

    def prefetch_next(self, depth: int = PREFETCH_DEPTH) -> None:
        """Start fetching the next ``depth`` positions' tiles (remote slides only; the sequence is unchanged).

        Two: in a round-robin pool each slot's next patch is ``pool_size`` patches away, which at
        ~100 patches/s is about one loaded round trip; the one after it gives the fetch twice that.
        """
        if not self.handle.prefetches:
            return
        first = self._lookahead.consumed  # absolute index of the next position
        for index, position in enumerate(self._lookahead.peek_many(depth), start=first):
            if index <= self._prefetched_through:  # asked for by an earlier call (as its deeper position)
                continue
            self._prefetched_through = index
            plan = position.plan or self.plan
            x0, y0 = plan.snap(position.x0, position.y0, self.metadata.properties.level_dimensions[plan.level])
            self.handle.prefetch_region(x0, y0, plan.level, (plan.read_size, plan.read_size))

    def coordinate(self, x0: int, y0: int, plan: ReadPlan) -> PatchCoordinate:
        """The coordinate record of a read."""
        return PatchCoordinate(
            x0=x0,
            y0=y0,
            level=plan.level,
            read_size=plan.read_size,
            patch_size=plan.patch_size,
            mpp=plan.mpp,
            slide_path=self.slide_path,
            level_downsample=plan.level_downsample,
        )

    def read_centred(self, position: Position, target_mpp: float, tolerance: float) -> np.ndarray:
        """A ``patch_size`` patch at ``target_mpp`` centred on ``position``'s footprint (views)."""
        plan = self._view_plans.get(target_mpp)
        if plan is None:
            plan = plan_read(self.metadata.properties, self.plan.patch_size, target_mpp=target_mpp, tolerance=tolerance)
            self._view_plans[target_mpp] = plan
        own = position.plan or self.plan
        centre_x = position.x0 + own.footprint_level0 / 2
        centre_y = position.y0 + own.footprint_level0 / 2
        x0, y0 = plan.snap(
            centre_x - plan.footprint_level0 / 2,
            centre_y - plan.footprint_level0 / 2,
            self.metadata.properties.level_dimensions[plan.level],
        )
        return self.read(x0, y0, plan)

    def close(self) -> None:
        """Close the slide file."""
        self.handle.close()


class _Lookahead(Iterator[Position]):
    """An iterator that can show its next items without consuming them (an error is kept for ``next``)."""

    def __init__(self, items: Iterator[Position]) -> None:
        self._items = items
        self._buffered: collections.deque[Position] = collections.deque()
        self._error: BaseException | None = None
        self._exhausted = False
        #: Items returned by ``next`` so far (the absolute index of the next one).
        self.consumed = 0

    def peek_many(self, n: int) -> list[Position]:
        """Up to ``n`` next items; fewer at the end or where drawing one raised (``next`` re-raises it)."""
        while len(self._buffered) < n and self._error is None and not self._exhausted:
            try:
                self._buffered.append(next(self._items))
            except StopIteration:
                self._exhausted = True
            except Exception as exc:
                self._error = exc
        return list(itertools.islice(self._buffered, n))

    def __next__(self) -> Position:
        if self._buffered:
            item = self._buffered.popleft()
        elif self._error is not None:
            error, self._error = self._error, None
            raise error
        elif self._exhausted:
            raise StopIteration
        else:
            item = next(self._items)
        self.consumed += 1
        return item
