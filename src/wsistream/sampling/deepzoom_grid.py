"""DeepZoom tile geometry, computed from slide properties so that any backend can read the tiles.

HistoSSLscaling addresses tiles as ``(tile_level, x, y)`` of
``openslide.deepzoom.DeepZoomGenerator(slide, tile_size=224, overlap=0)``
(``limit_bounds=False``). This module reproduces the arithmetic of
openslide-python's ``DeepZoomGenerator._get_tile_info`` for ``overlap=0``
and ``limit_bounds=False`` (level sizes halved with ``ceil`` down to 1 px,
the preferred slide level by ``get_best_level_for_downsample``, read origin
truncated to ints, read size rounded up and clipped to the level), and
:func:`render_tile` reproduces ``get_tile``'s final scaling
(``PIL.Image.thumbnail(z_size, LANCZOS)``), so a tile read through our
backends has the same pixels as ``DeepZoomGenerator.get_tile``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from wsistream.errors import MissingMppError, ResolutionUnavailableError
from wsistream.types import SlideProperties, best_level_for_downsample


@dataclass(frozen=True)
class DeepZoomGrid:
    """The DeepZoom pyramid of a slide for one tile size (``overlap=0``, ``limit_bounds=False``).

    Attributes
    ----------
    tile_size : int
        DeepZoom tile side.
    level_dimensions : tuple of (w, h)
        Pixel size of each DeepZoom level; the last level is slide level 0.
    level_downsamples : tuple of float
        Slide level downsamples.
    slide_dimensions : tuple of (w, h)
        Slide level dimensions.
    """

    tile_size: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    slide_dimensions: tuple[tuple[int, int], ...]

    @classmethod
    def from_properties(cls, props: SlideProperties, tile_size: int = 224) -> DeepZoomGrid:
        """Build the grid of a slide from the properties a backend reports."""
        if tile_size < 1:
            raise ValueError(f"tile_size must be >= 1, got {tile_size}")
        z_size = props.level_dimensions[0]
        dims = [z_size]
        while z_size[0] > 1 or z_size[1] > 1:
            z_size = (max(1, math.ceil(z_size[0] / 2)), max(1, math.ceil(z_size[1] / 2)))
            dims.append(z_size)
        return cls(tile_size, tuple(reversed(dims)), tuple(props.level_downsamples), tuple(props.level_dimensions))

    @property
    def level_count(self) -> int:
        """Number of DeepZoom levels."""
        return len(self.level_dimensions)

    def level0_downsample(self, dz_level: int) -> int:
        """Level-0 pixels per pixel of DeepZoom level ``dz_level`` (a power of two)."""
        return 1 << (self.level_count - dz_level - 1)

    def level_tiles(self, dz_level: int) -> tuple[int, int]:
        """(columns, rows) of tiles of a DeepZoom level."""
        w, h = self.level_dimensions[dz_level]
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def level_for_mpp(self, props: SlideProperties, target_mpp: float, tolerance: float) -> tuple[int, float]:
        """Return the DeepZoom level closest to ``target_mpp`` (in log scale) and its µm/px.

        Raises
        ------
        MissingMppError
            The slide has no usable µm/px.
        ResolutionUnavailableError
            No DeepZoom level is within ``tolerance`` (relative) of the target.
        """
        if props.mpp_level0 is None:
            raise MissingMppError(
                props.slide_path,
                f"the {target_mpp} µm/px DeepZoom level needs the slide's µm/px, which is missing"
                "; pass an µm/px override or fallback",
            )
        mpps = [props.mpp_level0 * self.level0_downsample(lv) for lv in range(self.level_count)]
        best = min(range(self.level_count), key=lambda lv: abs(math.log(mpps[lv] / target_mpp)))
        if abs(mpps[best] - target_mpp) > tolerance * target_mpp:
            raise ResolutionUnavailableError(
                props.slide_path,
                f"no DeepZoom level is within {tolerance:.0%} of {target_mpp} µm/px "
                f"(closest: level {best} at "
                f"{mpps[best]:.4f} µm/px, level 0 is {props.mpp_level0:.4f} µm/px); use the level-0 grid tiling, "
                "which resamples to the exact µm/px",
            )
        return best, mpps[best]

    def _axis(self, dz_level: int, axis: int, t: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Per-axis read geometry of tile indices ``t`` (openslide-python ``_get_tile_info``, overlap 0)."""
        l0_z = self.level0_downsample(dz_level)
        slide_level = best_level_for_downsample(self.level_downsamples, l0_z)
        l0_l = self.level_downsamples[slide_level]
        l_z = l0_z / l0_l
        z_lim = self.level_dimensions[dz_level][axis]
        l_lim = self.slide_dimensions[slide_level][axis]
        z_size = np.array([min(self.tile_size, z_lim - self.tile_size * int(v)) for v in t], np.int64)
        l_loc = [l_z * (self.tile_size * int(v)) for v in t]
        l0_loc = np.array([int(l0_l * v) for v in l_loc], np.int64)
        l_size = np.array(
            [int(min(math.ceil(l_z * int(zs)), l_lim - math.ceil(lv))) for zs, lv in zip(z_size, l_loc, strict=True)],
            np.int64,
        )
        return slide_level, l0_loc, l_size, z_size

    def tile_reads(self, dz_level: int, cols: np.ndarray, rows: np.ndarray) -> TileReads:
        """Read arguments of tiles ``(cols[i], rows[i])`` of ``dz_level``.

        Returns a dict with ``slide_level`` (int) and arrays ``x0, y0`` (level-0
        origin), ``read_w, read_h`` (pixels of ``slide_level``) and ``z_w, z_h``
        (final tile size before any padding), as ``get_tile_coordinates`` /
        ``get_tile_dimensions`` give them.
        """
        if not 0 <= dz_level < self.level_count:
            raise ValueError(f"DeepZoom level {dz_level} does not exist (0..{self.level_count - 1})")
        cols, rows = np.asarray(cols, np.int64), np.asarray(rows, np.int64)
        n_cols, n_rows = self.level_tiles(dz_level)
        if cols.size and (cols.min() < 0 or cols.max() >= n_cols or rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(f"tile address outside the {n_cols}x{n_rows} tiles of DeepZoom level {dz_level}")
        ucols, ic = np.unique(cols, return_inverse=True)
        urows, ir = np.unique(rows, return_inverse=True)
        slide_level, x0, rw, zw = self._axis(dz_level, 0, ucols)
        _, y0, rh, zh = self._axis(dz_level, 1, urows)
        return {
            "slide_level": slide_level,
            "x0": x0[ic],
            "y0": y0[ir],
            "read_w": rw[ic],
            "read_h": rh[ir],
            "z_w": zw[ic],
            "z_h": zh[ir],
        }


class TileReads(TypedDict):
    """What :meth:`DeepZoomGrid.tile_reads` returns: one read level, per-tile level-0 origins and sizes."""

    slide_level: int
    x0: np.ndarray
    y0: np.ndarray
    read_w: np.ndarray
    read_h: np.ndarray
    z_w: np.ndarray
    z_h: np.ndarray


def render_tile(region: np.ndarray, z_size: tuple[int, int], tile_size: int, pad: bool) -> np.ndarray:
    """``get_tile``'s scaling of a read region to ``z_size``, then optional zero padding to ``tile_size``.

    Padding bottom/right with zeros is what ``rl_benchmarks``' ``TilesMap`` does
    for border tiles smaller than ``tile_size``.
    """
    if (region.shape[1], region.shape[0]) != tuple(z_size):
        from PIL import Image

        img = Image.fromarray(region)
        img.thumbnail((int(z_size[0]), int(z_size[1])), getattr(Image, "Resampling", Image).LANCZOS)
        region = np.array(img)  # writable: torch.from_numpy warns on read-only arrays
    if pad and region.shape[:2] != (tile_size, tile_size):
        out = np.zeros((tile_size, tile_size, 3), np.uint8)
        out[: region.shape[0], : region.shape[1]] = region
        region = out
    return np.ascontiguousarray(region)
