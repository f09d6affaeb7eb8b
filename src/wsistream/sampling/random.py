"""Random patch positions inside tissue."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from wsistream.errors import NoTissueError, SamplingExhaustedError
from wsistream.sampling.base import PatchSampler, Position, fitting_windows, validate_common
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan
from wsistream.tissue.base import TissueMask
from wsistream.types import SlideProperties


@dataclass(frozen=True)
class RandomSampler(PatchSampler):
    """Uniformly random positions whose footprint is at least ``tissue_threshold`` tissue.

    Candidates are drawn uniformly among the mask windows that already meet
    the threshold (a summed-area table gives every window's fraction at once),
    then jittered within their mask cell and checked exactly; so sparse slides
    cost no more than dense ones, and a slide where no window can qualify is
    reported (:class:`~wsistream.errors.NoTissueError`) instead of retried
    forever.

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
    """

    patch_size: int = 224
    num_patches: int = -1
    level: int | None = None
    target_mpp: float | None = None
    tissue_threshold: float = 0.4
    max_retries: int = 100
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE

    def __post_init__(self) -> None:
        validate_common(self.patch_size, self.level, self.target_mpp, self.tissue_threshold, self.mpp_tolerance)
        if self.num_patches == 0 or self.num_patches < -1:
            raise ValueError(f"num_patches must be >= 1, or -1 for endless, got {self.num_patches}")
        if self.max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {self.max_retries}")

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield ``num_patches`` positions (endless with -1)."""
        fractions, _, _ = fitting_windows(mask, plan, props)
        rows, cols = np.nonzero(fractions >= max(self.tissue_threshold, 1e-9)) if fractions.size else ((), ())
        if len(rows) == 0:
            raise NoTissueError(
                props.slide_path,
                f"no {plan.footprint_level0:.0f}-px (level-0) window has tissue fraction >= "
                f"{self.tissue_threshold} (slide tissue fraction {mask.tissue_fraction:.3f})",
            )
        foot = plan.footprint_level0
        max_x0 = max(0, math.floor(props.level0_width - foot))
        max_y0 = max(0, math.floor(props.level0_height - foot))
        produced, failures = 0, 0
        while self.num_patches < 0 or produced < self.num_patches:
            pick = int(rng.integers(len(rows)))
            x0 = min(max_x0, int((cols[pick] + rng.random()) * mask.downsample_x))
            y0 = min(max_y0, int((rows[pick] + rng.random()) * mask.downsample_y))
            fraction = mask.fraction_in(x0, y0, foot, foot)
            if fraction >= self.tissue_threshold:
                failures = 0
                produced += 1
                yield Position(x0, y0, fraction)
                continue
            failures += 1
            if failures >= self.max_retries:
                raise SamplingExhaustedError(
                    props.slide_path,
                    f"{self.max_retries} candidates in a row had tissue fraction < {self.tissue_threshold}",
                )
