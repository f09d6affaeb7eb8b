"""Phikon's tiling: the tiles of ``DeepZoomGenerator(tile_size=224, overlap=0)`` at 0.5 µm/px, streamed.

HistoSSLscaling (Filiot et al., 2023, ``rl_benchmarks``) extracts the tiles of
``openslide.deepzoom.DeepZoomGenerator(slide, tile_size=224, overlap=0,
limit_bounds=False)`` at the DeepZoom level whose resolution is 0.5 µm/px and
addresses them as ``(tile_level, col, row)``.  :class:`DeepZoomSampler` streams
exactly those tiles (full tiles; DeepZoom's smaller border tiles are left out,
as a fixed-size patch cannot hold them), read with DeepZoom's geometry and its
``PIL.Image.thumbnail(LANCZOS)`` scaling (``ReadPlan.resample="lanczos"``), so
a patch has the pixels of ``DeepZoomGenerator.get_tile`` and its coordinate
converts back to the DeepZoom address (:meth:`DeepZoomSampler.address`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wsistream.errors import NoTissueError
from wsistream.sampling.base import PatchSampler, Position, TissueCriterion
from wsistream.sampling.deepzoom_grid import DeepZoomGrid
from wsistream.sampling.plan import ReadPlan
from wsistream.tissue.base import TissueMask
from wsistream.types import PatchCoordinate, SlideProperties


@dataclass(frozen=True)
class DeepZoomSampler(PatchSampler):
    """Every full DeepZoom tile at ``target_mpp`` with enough tissue, in scan or seeded order.

    Parameters
    ----------
    tile_size : int
        DeepZoom ``tile_size`` (HistoSSLscaling: 224); also the patch size.
    target_mpp : float
        µm/px of the DeepZoom level to use (HistoSSLscaling: 0.5).  DeepZoom
        levels are powers of two of level 0, so the delivered µm/px is the
        closest power-of-two multiple (e.g. 0.504 on a 0.252 µm/px scan), recorded.
    mpp_tolerance : float
        Largest relative gap between that level and ``target_mpp``. Default 0.1.
    tissue_threshold, tissue_criterion, shuffle
        As for :class:`~wsistream.sampling.GridSampler`.
    """

    finite: ClassVar[bool] = True

    tile_size: int = 224
    target_mpp: float = 0.5
    tissue_threshold: float = 0.5
    shuffle: bool = False
    mpp_tolerance: float = 0.1
    tissue_criterion: TissueCriterion = "fraction"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def patch_size(self) -> int:  # type: ignore[override]
        """The DeepZoom tile size."""
        return self.tile_size

    @property
    def level(self) -> None:  # type: ignore[override]
        """No fixed slide level: DeepZoom picks it."""
        return None

    def _grid(self, props: SlideProperties) -> tuple[DeepZoomGrid, int, float]:
        grid = DeepZoomGrid.from_properties(props, self.tile_size)
        dz_level, mpp = grid.level_for_mpp(props, self.target_mpp, self.mpp_tolerance)
        return grid, dz_level, mpp

    def plan(self, props: SlideProperties) -> ReadPlan:
        """DeepZoom's read of a full tile at the chosen DeepZoom level."""
        grid, dz_level, mpp = self._grid(props)
        reads = grid.tile_reads(dz_level, np.array([0]), np.array([0]))
        level = int(reads["slide_level"])
        read_size = int(reads["read_w"][0])
        return ReadPlan(level, read_size, self.tile_size, props.level_downsamples[level], mpp, resample="lanczos")

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield each qualifying full tile once."""
        grid, dz_level, _ = self._grid(props)
        width, height = grid.level_dimensions[dz_level]
        cols, rows = np.meshgrid(np.arange(width // self.tile_size), np.arange(height // self.tile_size))
        reads = grid.tile_reads(dz_level, cols.ravel(), rows.ravel())
        full = (reads["read_w"] == plan.read_size) & (reads["read_h"] == plan.read_size)
        tiles = []
        for x0, y0 in zip(reads["x0"][full], reads["y0"][full], strict=True):
            kept, fraction = self.accepts(mask, float(x0), float(y0), plan.footprint_level0)
            if kept:
                tiles.append(Position(int(x0), int(y0), fraction))
        if not tiles:
            raise NoTissueError(props.slide_path, f"no full DeepZoom tile at level {dz_level} passes the tissue check")
        order = rng.permutation(len(tiles)) if self.shuffle else range(len(tiles))
        for i in order:
            yield tiles[int(i)]

    def address(self, coordinate: PatchCoordinate, props: SlideProperties) -> tuple[int, int, int]:
        """HistoSSLscaling's ``(tile_level, col, row)`` of a patch this sampler produced."""
        grid, dz_level, _ = self._grid(props)
        step = self.tile_size * grid.level0_downsample(dz_level)
        return dz_level, round(coordinate.x0 / step), round(coordinate.y0 / step)
