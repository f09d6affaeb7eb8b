"""Patches at several physical resolutions: a fixed set, or a continuous range.

Each patch is read exactly at its drawn µm/px (same read plans as
:mod:`wsistream.sampling.plan`: coarsest level not coarser than the target,
area resampling) and records it in its coordinate, so a model trained on a
mix of magnifications knows the real µm/px of every patch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from wsistream.sampling.base import PatchSampler, Position, TissueCriterion, check_num_patches, validate_common
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan, plan_read
from wsistream.sampling.random import WindowDraw
from wsistream.tissue.base import TissueMask
from wsistream.types import SlideProperties


def _count(num_patches: int) -> Iterator[int]:
    return itertools.islice(itertools.count(), None if num_patches < 0 else num_patches)


@dataclass(frozen=True)
class MultiMagnificationSampler(PatchSampler):
    """Each patch at one of ``target_mpps`` (drawn with ``weights``), read exactly.

    A slide that cannot deliver one of the resolutions (no µm/px, finer than
    level 0) fails as a whole rather than silently dropping a magnification.

    Parameters
    ----------
    patch_size : int
        Delivered side in pixels (the same at every resolution).
    target_mpps : sequence of float
        µm/px values, e.g. (0.25, 0.5, 1.0, 2.0) for 40x/20x/10x/5x.
    weights : sequence of float, optional
        Draw probabilities (normalised); uniform by default.
    num_patches, tissue_threshold, max_retries, mpp_tolerance, tissue_criterion
        As for :class:`~wsistream.sampling.RandomSampler`.
    """

    patch_size: int = 224
    target_mpps: Sequence[float] = (0.25, 0.5, 1.0, 2.0)
    weights: Sequence[float] | None = None
    num_patches: int = -1
    tissue_threshold: float = 0.4
    max_retries: int = 100
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    tissue_criterion: TissueCriterion = "fraction"

    def __post_init__(self) -> None:
        mpps = tuple(float(m) for m in self.target_mpps)
        if not mpps:
            raise ValueError("target_mpps is empty; pass at least one µm/px, e.g. (0.5, 1.0)")
        for m in mpps:
            validate_common(self.patch_size, None, m, self.tissue_threshold, self.mpp_tolerance, self.tissue_criterion)
        object.__setattr__(self, "target_mpps", mpps)
        if self.weights is not None:
            w = np.asarray(self.weights, float)
            if w.shape != (len(mpps),) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"weights={self.weights!r}; pass {len(mpps)} non-negative numbers with a positive sum")
            object.__setattr__(self, "weights", tuple(float(x) for x in w / w.sum()))
        check_num_patches(self.num_patches)

    @property
    def level(self) -> None:  # type: ignore[override]
        """No fixed level: each resolution picks its own."""
        return None

    @property
    def target_mpp(self) -> float:  # type: ignore[override]
        """The finest resolution (the slide's plan is validated against it)."""
        return min(self.target_mpps)

    def plan(self, props: SlideProperties) -> ReadPlan:
        """Validate every resolution on the slide; return the finest plan."""
        plans = [
            plan_read(props, self.patch_size, target_mpp=m, tolerance=self.mpp_tolerance) for m in self.target_mpps
        ]
        return min(plans, key=lambda p: p.footprint_level0)

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield positions, each carrying the plan of its drawn resolution."""
        draws = [
            WindowDraw(
                self,
                mask,
                plan_read(props, self.patch_size, target_mpp=m, tolerance=self.mpp_tolerance),
                props,
                self.max_retries,
            )
            for m in self.target_mpps
        ]
        p = None if self.weights is None else np.asarray(self.weights)
        for _ in _count(self.num_patches):
            yield draws[int(rng.choice(len(draws), p=p))].draw(rng, with_plan=True)


@dataclass(frozen=True)
class ContinuousMagnificationSampler(PatchSampler):
    """Each patch at a µm/px drawn log-uniformly (or uniformly) from ``mpp_range``.

    Positions are drawn by picking a tissue cell of the mask uniformly,
    jittering within it, centring the footprint there, and checking it
    (``max_retries`` failures in a row retire the slide).

    Parameters
    ----------
    patch_size : int
        Delivered side in pixels.
    mpp_range : (float, float)
        Lowest and highest µm/px.
    log_uniform : bool
        Draw log(µm/px) uniformly (equal weight per octave of magnification). Default True.
    num_patches, tissue_threshold, max_retries, mpp_tolerance, tissue_criterion
        As for :class:`~wsistream.sampling.RandomSampler`.
    """

    patch_size: int = 224
    mpp_range: tuple[float, float] = (0.25, 2.0)
    log_uniform: bool = True
    num_patches: int = -1
    tissue_threshold: float = 0.4
    max_retries: int = 100
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    tissue_criterion: TissueCriterion = "fraction"

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.mpp_range)
        if not 0 < lo <= hi:
            raise ValueError(f"mpp_range={self.mpp_range!r}; pass (low, high) with 0 < low <= high, e.g. (0.25, 2.0)")
        validate_common(self.patch_size, None, lo, self.tissue_threshold, self.mpp_tolerance, self.tissue_criterion)
        check_num_patches(self.num_patches)

    @property
    def level(self) -> None:  # type: ignore[override]
        """No fixed level."""
        return None

    @property
    def target_mpp(self) -> float:  # type: ignore[override]
        """The finest resolution of the range."""
        return float(self.mpp_range[0])

    def plan(self, props: SlideProperties) -> ReadPlan:
        """Validate both ends of the range on the slide; return the finest plan."""
        plan_read(props, self.patch_size, target_mpp=float(self.mpp_range[1]), tolerance=self.mpp_tolerance)
        return plan_read(props, self.patch_size, target_mpp=float(self.mpp_range[0]), tolerance=self.mpp_tolerance)

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield positions, each with the plan of its drawn µm/px."""
        from wsistream.errors import NoTissueError, SamplingExhaustedError

        rows, cols = np.nonzero(mask.mask)
        if len(rows) == 0:
            raise NoTissueError(props.slide_path, "the tissue mask is empty")
        lo, hi = (float(v) for v in self.mpp_range)
        for _ in _count(self.num_patches):
            for _attempt in range(self.max_retries):
                u = rng.random()
                mpp = (
                    math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
                    if self.log_uniform
                    else lo + u * (hi - lo)
                )
                patch_plan = plan_read(props, self.patch_size, target_mpp=mpp, tolerance=self.mpp_tolerance)
                foot = patch_plan.footprint_level0
                pick = int(rng.integers(len(rows)))
                cx = (cols[pick] + rng.random()) * mask.downsample_x
                cy = (rows[pick] + rng.random()) * mask.downsample_y
                x0 = int(min(max(0.0, cx - foot / 2), max(0.0, props.level0_width - foot)))
                y0 = int(min(max(0.0, cy - foot / 2), max(0.0, props.level0_height - foot)))
                kept, fraction = self.accepts(mask, x0, y0, foot)
                if kept:
                    yield Position(x0, y0, fraction, patch_plan)
                    break
            else:
                raise SamplingExhaustedError(
                    props.slide_path, f"{self.max_retries} candidates in a row failed the tissue check"
                )
