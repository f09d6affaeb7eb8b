"""Slide opening, the first half of a stream: file → µm/px → read plan → tissue mask → positions (a :class:`Slot`).

:class:`SlideOpener` holds only what opening needs (the pipeline builds one
in ``__post_init__``); patch reading stays with the pipeline
(``PatchPipeline.make_result``). The stream calls :meth:`SlideOpener.open`
through the pipeline and records an :class:`OpenFailure` it gets back, so the
opener neither logs nor keeps any state of the stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from wsistream.backends.base import SlideBackend, SlideHandle
from wsistream.errors import NoTissueError, WsiStreamError
from wsistream.pipeline.adapters import DatasetAdapter
from wsistream.pipeline.cache import MaskCache, file_version
from wsistream.pipeline.mpp import MppPolicy
from wsistream.pipeline.seeding import RngStream, stream_rng
from wsistream.pipeline.slot import Slot, SlotCounters
from wsistream.sampling.base import PatchSampler, Position
from wsistream.sampling.grid import GridSampler
from wsistream.sampling.plan import ReadPlan, plan_read
from wsistream.sampling.random import RandomSampler
from wsistream.tissue.base import TissueDetector, TissueMask
from wsistream.types import SlideMetadata, SlideProperties

OpenStage = Literal["open", "plan", "tissue", "sample"]


@dataclass(frozen=True)
class OpenFailure:
    """Why a slide could not join the pool: the stage that failed and its error (recorded by the stream)."""

    stage: OpenStage
    error: WsiStreamError


@dataclass(frozen=True, eq=False)
class SlideOpener:
    """Opens one slide of a pipeline into a :class:`Slot`, or says at which stage and why it cannot.

    Parameters
    ----------
    backend, sampler, tissue_detector, mpp_policy, dataset_adapter
        The pipeline's components (``PatchPipeline`` documents them).
    mask_cache
        The process's mask LRU (:func:`~wsistream.pipeline.cache.process_mask_cache`).
    overview_side
        Longest overview side for tissue detection (``PatchPipeline.overview_side``).
    replacement, patches_per_slide, seed
        How positions are drawn (``"without_replacement"`` walks a seeded tile
        permutation that continues across visits) and the root seed.
    view_mpps
        The views' ``mpp_override`` values, checked at opening (stage ``plan``).
    """

    backend: SlideBackend
    sampler: PatchSampler
    tissue_detector: TissueDetector
    mpp_policy: MppPolicy
    dataset_adapter: DatasetAdapter | None
    mask_cache: MaskCache
    overview_side: int
    replacement: Literal["with_replacement", "without_replacement"]
    patches_per_slide: int
    seed: int
    view_mpps: tuple[float, ...]

    def open(self, path: str, counters: SlotCounters) -> Slot | OpenFailure:
        """Open, plan, mask and start sampling ``path``; the handle is closed again on failure."""
        stage: OpenStage = "open"
        handle = None
        try:
            handle = self.backend.open(path)
            props = self.mpp_policy.apply(handle.properties)
            stage = "plan"
            plan = self.sampler.plan(props)
            self.check_view_resolutions(props)
            stage = "tissue"
            mask = self.tissue_mask(handle, props)
            if mask.is_empty:
                raise NoTissueError(path, f"{self.tissue_detector!r} found no tissue on the overview")
            stage = "sample"
            rng = stream_rng(self.seed, RngStream.POSITIONS, counters.assignment)
            positions = self.positions(mask, plan, props, rng, counters)
            first = next(positions, None)  # surface NoTissueError now, not mid-stream
            if first is None:
                raise NoTissueError(path, "the sampler produced no position")
            return Slot(counters, handle, self.slide_metadata(props), plan, mask, _prepend(first, positions))
        except WsiStreamError as exc:
            if handle is not None:
                handle.close()
            return OpenFailure(stage, exc)

    def tissue_mask(self, handle: SlideHandle, props: SlideProperties) -> TissueMask:
        """The slide's mask, from the LRU or computed from the overview."""
        # everything detect_slide depends on: the process's pipelines share this cache, and a detector that
        # reads at a physical resolution (ModelTissueDetector) gives another mask for another µm/px
        version = file_version(props.slide_path)
        key = (props.slide_path, version, props.mpp_level0, repr(self.tissue_detector), self.overview_side)
        mask = self.mask_cache.get(key)
        if mask is None:
            mask = self.tissue_detector.detect_slide(handle, props, self.overview_side)
            self.mask_cache.put(key, mask)
        return mask

    def positions(
        self,
        mask: TissueMask,
        plan: ReadPlan,
        props: SlideProperties,
        rng: np.random.Generator,
        counters: SlotCounters,
    ) -> Iterator[Position]:
        """Positions of one slide visit (honours ``replacement``)."""
        if self.replacement == "with_replacement" or not isinstance(self.sampler, RandomSampler):
            return self.sampler.positions(mask, plan, props, rng)
        grid = GridSampler(
            patch_size=self.sampler.patch_size,
            target_mpp=self.sampler.target_mpp,
            level=self.sampler.level,
            tissue_threshold=self.sampler.tissue_threshold,
            mpp_tolerance=self.sampler.mpp_tolerance,
            tissue_criterion=self.sampler.tissue_criterion,
        )
        tiles = list(grid.positions(mask, plan, props, rng))  # scan order; raises NoTissueError if empty
        return _without_replacement(tiles, self.seed, counters, self.patches_per_slide)

    def check_view_resolutions(self, props: SlideProperties) -> None:
        """Raise now (stage ``plan``) if a view's ``mpp_override`` cannot be read from this slide."""
        for mpp in self.view_mpps:
            plan_read(props, self.sampler.patch_size, target_mpp=mpp, tolerance=self.sampler.mpp_tolerance)

    def slide_metadata(self, props: SlideProperties) -> SlideMetadata:
        """Metadata for a slide (adapter fields + properties)."""
        fields = dict(self.dataset_adapter.parse(props.slide_path)) if self.dataset_adapter else {}
        return SlideMetadata(
            slide_path=props.slide_path,
            properties=props,
            dataset_name=str(fields.pop("dataset_name", "unknown")),
            patient_id=fields.pop("patient_id", None),
            extra=fields,
        )


def _without_replacement(
    tiles: list[Position], seed: int, counters: SlotCounters, patches_per_slide: int
) -> Iterator[Position]:
    """Tiles of a seeded, endless sequence of permutations, starting where this visit begins.

    Visit ``e`` (the slide's ``e``-th epoch) takes items ``[e·n, (e+1)·n)`` of
    ``perm_0 + perm_1 + ...`` with ``n = patches_per_slide`` (-1: one whole
    pass), so every tile is used once before any repeats, with no state kept
    between visits.
    """
    n_tiles = len(tiles)
    per_visit = n_tiles if patches_per_slide < 0 else patches_per_slide
    start = counters.epoch * per_visit
    first_pass, offset = divmod(start, n_tiles)

    def sequence() -> Iterator[Position]:
        for pass_no in itertools.count(first_pass):
            order = stream_rng(seed, RngStream.GRID_ORDER, counters.slide_index, pass_no).permutation(n_tiles)
            begin = offset if pass_no == first_pass else 0
            for i in order[begin:]:
                yield tiles[int(i)]

    return itertools.islice(sequence(), per_visit)


def _prepend(first: Position, rest: Iterator[Position]) -> Iterator[Position]:
    yield first
    yield from rest
