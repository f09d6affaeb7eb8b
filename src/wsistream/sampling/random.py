"""Random patch positions inside tissue."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from wsistream.errors import NoTissueError, SamplingExhaustedError
from wsistream.sampling.base import PatchSampler, Position, TissueCriterion, check_num_patches, fitting_windows
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan
from wsistream.tissue.base import TissueMask
from wsistream.types import SlideProperties


class WindowDraw:
    """Uniform draws among the qualifying footprint windows of one slide at one read plan.

    Candidates are drawn uniformly among the mask windows that already meet
    the threshold (a summed-area table gives every window's fraction at once),
    jittered within their mask cell and checked exactly with
    :meth:`PatchSampler.accepts`.  A slide where no window can qualify raises
    :class:`~wsistream.errors.NoTissueError` at construction; ``max_retries``
    failed checks in a row raise :class:`~wsistream.errors.SamplingExhaustedError`.
    """

    def __init__(
        self, sampler: PatchSampler, mask: TissueMask, plan: ReadPlan, props: SlideProperties, max_retries: int
    ) -> None:
        fractions, _, _ = fitting_windows(mask, plan, props)
        empty = np.empty(0, np.intp)
        self.rows, self.cols = np.nonzero(fractions >= sampler.window_threshold) if fractions.size else (empty, empty)
        if len(self.rows) == 0:
            raise NoTissueError(
                props.slide_path,
                f"no {plan.footprint_level0:.0f}-px (level-0) window has tissue fraction >= "
                f"{sampler.tissue_threshold} (slide tissue fraction {mask.tissue_fraction:.3f})",
            )
        self.sampler, self.mask, self.plan, self.props, self.max_retries = sampler, mask, plan, props, max_retries
        self.max_x0 = max(0, math.floor(props.level0_width - plan.footprint_level0))
        self.max_y0 = max(0, math.floor(props.level0_height - plan.footprint_level0))

    def draw(self, rng: np.random.Generator, with_plan: bool = False) -> Position:
        """One accepted position."""
        mask, foot = self.mask, self.plan.footprint_level0
        for _ in range(self.max_retries):
            pick = int(rng.integers(len(self.rows)))
            x0 = min(self.max_x0, int((self.cols[pick] + rng.random()) * mask.downsample_x))
            y0 = min(self.max_y0, int((self.rows[pick] + rng.random()) * mask.downsample_y))
            kept, fraction = self.sampler.accepts(mask, x0, y0, foot)
            if kept:
                return Position(x0, y0, fraction, self.plan if with_plan else None)
        raise SamplingExhaustedError(
            self.props.slide_path,
            f"{self.max_retries} candidates in a row failed the tissue check "
            f"({self.sampler.tissue_criterion}, threshold {self.sampler.tissue_threshold})",
        )


@dataclass(frozen=True)
class RandomSampler(PatchSampler):
    """Uniformly random positions whose footprint passes the tissue check (see :class:`WindowDraw`).

    Parameters
    ----------
    patch_size : int
        Side of the delivered patch in pixels.
    num_patches : int
        Positions per slide visit; -1 = endless (the pipeline's
        ``patches_per_slide`` then bounds each visit).
    level : int, optional
        Read this pyramid level at native resolution (GPFM reads level 0).
    target_mpp : float, optional
        Deliver exactly this µm/px (see :mod:`wsistream.sampling.plan`).
    tissue_threshold : float
        Minimum tissue fraction of the footprint. Default 0.4.
    max_retries : int
        Consecutive candidates failing the exact check before the slide is
        retired (:class:`~wsistream.errors.SamplingExhaustedError`). Default 100.
    mpp_tolerance : float
        Relative µm/px tolerance (default 2 %).
    tissue_criterion : {"fraction", "four_pt", "four_pt_hard", "center"}
        Mask-fraction threshold, or CLAM's contour containment
        (:mod:`wsistream.tissue.containment`).
    """

    patch_size: int = 224
    num_patches: int = -1
    level: int | None = None
    target_mpp: float | None = None
    tissue_threshold: float = 0.4
    max_retries: int = 100
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    tissue_criterion: TissueCriterion = "fraction"

    def __post_init__(self) -> None:
        self.validate()
        check_num_patches(self.num_patches)
        if self.max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {self.max_retries}")

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield ``num_patches`` positions (endless with -1)."""
        draws = WindowDraw(self, mask, plan, props, self.max_retries)
        count = None if self.num_patches < 0 else self.num_patches
        return (draws.draw(rng) for _ in itertools.islice(itertools.count(), count))
