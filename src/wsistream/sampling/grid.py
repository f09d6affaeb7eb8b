"""Non-overlapping (or strided) tiles on a level-0 grid."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wsistream.errors import NoTissueError
from wsistream.sampling.base import PatchSampler, Position, TissueCriterion
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan
from wsistream.tissue.base import TissueMask
from wsistream.types import SlideProperties


@dataclass(frozen=True)
class GridSampler(PatchSampler):
    """Every grid tile with enough tissue, in scan order or a seeded shuffled order.

    The grid starts at level-0 (0, 0) with a step of ``stride`` output pixels
    (default ``patch_size``: non-overlapping) converted to level-0 pixels;
    only tiles that lie fully inside the slide are used.

    Parameters
    ----------
    patch_size, level, target_mpp, tissue_threshold, mpp_tolerance
        As for :class:`~wsistream.sampling.RandomSampler`.
    stride : int, optional
        Grid step in delivered pixels. Default: ``patch_size``.
    shuffle : bool
        Yield the tiles in a random order drawn from the pipeline's generator.
    tissue_criterion : {"fraction", "four_pt", "four_pt_hard", "center"}
        Mask-fraction threshold, or CLAM's contour containment (GPFM's extraction).
    """

    finite: ClassVar[bool] = True

    patch_size: int = 224
    target_mpp: float | None = None
    level: int | None = None
    stride: int | None = None
    tissue_threshold: float = 0.4
    shuffle: bool = False
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    tissue_criterion: TissueCriterion = "fraction"

    def __post_init__(self) -> None:
        self.validate()
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1 pixel, got {self.stride}")

    def grid(self, mask: TissueMask, plan: ReadPlan, props: SlideProperties) -> list[Position]:
        """All qualifying tiles in scan order (row-major)."""
        foot = plan.footprint_level0
        step = foot * (self.stride or self.patch_size) / self.patch_size
        xs = np.arange(0, props.level0_width - foot + 1e-6, step)
        ys = np.arange(0, props.level0_height - foot + 1e-6, step)
        tiles = []
        for y in ys:
            for x in xs:
                kept, fraction = self.accepts(mask, x, y, foot)
                if kept:
                    tiles.append(Position(round(x), round(y), fraction))
        return tiles

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield each qualifying tile once."""
        tiles = self.grid(mask, plan, props)
        if not tiles:
            raise NoTissueError(
                props.slide_path,
                f"no grid tile of {plan.footprint_level0:.0f} level-0 px has tissue fraction "
                f">= {self.tissue_threshold}",
            )
        order = rng.permutation(len(tiles)) if self.shuffle else range(len(tiles))
        for i in order:
            yield tiles[int(i)]
