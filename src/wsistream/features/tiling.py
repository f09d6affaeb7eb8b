"""Which tiles of a slide are encoded: HistoSSLscaling's DeepZoom grid or a level-0 grid at exact µm/px.

Both tilings detect tissue on the slide overview with the core tissue
detectors, keep tiles whose tissue fraction reaches ``tissue_threshold``, and
optionally keep a seeded random subset of ``n_tiles`` tiles
(``rl_benchmarks/utils/features.py``, ``TilesMap.build_indices``:
``np.random.permutation(N)[:n_tiles]``; here from ``np.random.RandomState(seed)``
per slide, so a resumed or sharded run draws the same tiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from wsistream.backends.base import SlideHandle
from wsistream.errors import NoTissueError
from wsistream.sampling.deepzoom_grid import DeepZoomGrid
from wsistream.sampling.grid import GridSampler
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, plan_read
from wsistream.tissue.base import DEFAULT_OVERVIEW_SIDE, TissueDetector, TissueMask
from wsistream.tissue.otsu import OtsuTissueDetector
from wsistream.types import SlideProperties

ResizeMode = Literal["none", "area", "deepzoom"]


@dataclass(frozen=True)
class TileSet:
    """The tiles of one slide and how to read each.

    Attributes
    ----------
    slide_path : str
        The slide.
    x0, y0 : np.ndarray
        (N,) level-0 origin of each read.
    level : int
        Slide pyramid level read.
    read_w, read_h : np.ndarray
        (N,) read size in pixels of ``level``.
    out_w, out_h : np.ndarray
        (N,) size after resampling (``deepzoom``: DeepZoom tile size before padding).
    tile_size : int
        Side of every delivered tile (after padding).
    resize : {"none", "area", "deepzoom"}
        Resampling from read to output size: none, ``cv2.INTER_AREA`` (level-0 grid, as the
        core pipeline), or ``get_tile``'s LANCZOS thumbnail.
    coords : np.ndarray
        (N, 3) float32 ``[tile_level, x, y]`` written to HistoSSLscaling files: DeepZoom
        ``[dz_level, col, row]``, or ``[level, x0, y0]`` for the level-0 grid.
    tissue_fraction : np.ndarray
        (N,) tissue fraction of each tile footprint.
    attrs : dict
        Tiling description written into feature files.
    """

    slide_path: str
    x0: np.ndarray
    y0: np.ndarray
    level: int
    read_w: np.ndarray
    read_h: np.ndarray
    out_w: np.ndarray
    out_h: np.ndarray
    tile_size: int
    resize: ResizeMode
    coords: np.ndarray
    tissue_fraction: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x0.shape[0])

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) int64 level-0 x/y of each tile (the ``.h5`` ``coords``)."""
        return np.stack([self.x0, self.y0], axis=1).astype(np.int64)

    def take(self, index: np.ndarray) -> TileSet:
        """Return the tiles at ``index``, in that order."""
        idx = np.asarray(index, np.int64)
        arrays = {
            k: getattr(self, k)[idx]
            for k in ("x0", "y0", "read_w", "read_h", "out_w", "out_h", "coords", "tissue_fraction")
        }
        return TileSet(
            self.slide_path,
            level=self.level,
            tile_size=self.tile_size,
            resize=self.resize,
            attrs=dict(self.attrs),
            **arrays,
        )

    def subset(self, n_tiles: int | None, seed: int, random_sampling: bool = True) -> TileSet:
        """At most ``n_tiles`` tiles: a seeded permutation prefix, or the first ones in scan order."""
        if n_tiles is None or n_tiles >= len(self):
            return self
        order = np.random.RandomState(seed).permutation(len(self)) if random_sampling else np.arange(len(self))
        return self.take(order[:n_tiles])


def _validate_common(
    tile_size: int,
    target_mpp: float,
    tissue_threshold: float,
    n_tiles: int | None,
    mpp_tolerance: float,
    overview_side: int,
) -> None:
    if tile_size < 1:
        raise ValueError(f"tile size must be >= 1 pixel, got {tile_size}")
    if not target_mpp > 0:
        raise ValueError(f"target_mpp must be > 0 µm/px (0.5 is 20x), got {target_mpp}")
    if not 0.0 <= tissue_threshold <= 1.0:
        raise ValueError(f"tissue_threshold is a fraction in [0, 1], got {tissue_threshold}")
    if n_tiles is not None and n_tiles < 1:
        raise ValueError(f"n_tiles must be >= 1 or None (all tiles), got {n_tiles}")
    if not 0.0 <= mpp_tolerance < 1.0:
        raise ValueError(f"mpp_tolerance is relative, in [0, 1), got {mpp_tolerance}")
    if overview_side < 16:
        raise ValueError(f"overview_side must be >= 16 pixels, got {overview_side}")


def _geometry_attrs(props: SlideProperties, level: int, side_level0: int, read_w: np.ndarray) -> dict[str, Any]:
    """Where the tiles sit on the slide: level-0 side, read size at ``level``, its downsample, level-0 µm/px.

    ``patch_size_level0`` is the tile side in level-0 pixels (TRIDENT's attribute,
    what TITAN reads); ``read_size`` the side read from ``level`` before resampling
    (the largest read: border tiles of a DeepZoom grid are smaller).
    """
    return {
        "patch_size_level0": int(side_level0),
        "read_size": int(np.max(read_w)) if len(read_w) else 0,
        "level_downsample": float(props.level_downsamples[level]),
        "level0_mpp": props.mpp_level0,
        "level0_width": int(props.level0_width),
        "level0_height": int(props.level0_height),
    }


def _tissue_mask(
    handle: SlideHandle, props: SlideProperties, detector: TissueDetector, overview_side: int
) -> TissueMask:
    """The slide's mask through ``detect_slide``, the entry point the streaming pipeline uses.

    Detectors that read the slide at their own µm/px or cache masks on disk
    (``ModelTissueDetector``) override ``detect_slide``; ``props`` carries the µm/px policy's value.
    """
    return detector.detect_slide(handle, props, overview_side)


@dataclass(frozen=True)
class DeepZoomTiling:
    """HistoSSLscaling tiles: ``DeepZoomGenerator(tile_size, overlap=0)`` at the 0.5 µm/px level.

    Parameters
    ----------
    tile_size : int
        DeepZoom tile size (224 for iBOT/Phikon, ``rl_benchmarks.constants.TILE_SIZES``).
    target_mpp : float
        µm/px of the DeepZoom level used (0.5, "20x"). The level is the closest power-of-two
        downsample of level 0; it must be within ``mpp_tolerance``.
    mpp_tolerance : float
        Relative tolerance between the DeepZoom level and ``target_mpp`` (default 10 %,
        which accepts 40x scans at 0.227–0.275 µm/px).
    tissue_threshold : float
        Minimum tissue fraction of a tile.
    keep_partial : bool
        Keep border tiles smaller than ``tile_size`` (zero-padded bottom/right as ``TilesMap`` does).
    n_tiles, seed, random_sampling
        Keep at most ``n_tiles`` tiles: a seeded random subset, or the first ones in scan order.
    tissue_detector : TissueDetector
        Tissue detector run on the overview.
    overview_side : int
        Longest side of the overview used for tissue detection (default
        :data:`~wsistream.tissue.DEFAULT_OVERVIEW_SIDE`, as ``PatchPipeline``).
    """

    tile_size: int = 224
    target_mpp: float = 0.5
    mpp_tolerance: float = 0.1
    tissue_threshold: float = 0.5
    keep_partial: bool = False
    n_tiles: int | None = None
    seed: int = 0
    random_sampling: bool = True
    tissue_detector: TissueDetector = field(default_factory=OtsuTissueDetector)
    overview_side: int = DEFAULT_OVERVIEW_SIDE

    name: ClassVar[str] = "deepzoom"

    def __post_init__(self) -> None:
        _validate_common(
            self.tile_size,
            self.target_mpp,
            self.tissue_threshold,
            self.n_tiles,
            self.mpp_tolerance,
            self.overview_side,
        )

    def tiles(self, handle: SlideHandle, props: SlideProperties | None = None) -> TileSet:
        """All (or ``n_tiles``) tissue tiles of the slide; ``props`` overrides the handle's (µm/px policy).

        Raises
        ------
        NoTissueError
            No tile reaches ``tissue_threshold``.
        """
        props = props or handle.properties
        grid = DeepZoomGrid.from_properties(props, self.tile_size)
        dz_level, mpp = grid.level_for_mpp(props, self.target_mpp, self.mpp_tolerance)
        n_cols, n_rows = grid.level_tiles(dz_level)
        rows, cols = np.divmod(np.arange(n_cols * n_rows, dtype=np.int64), n_cols)  # row-major scan order
        reads = grid.tile_reads(dz_level, cols, rows)
        level = int(reads["slide_level"])
        arr = {k: v for k, v in reads.items() if isinstance(v, np.ndarray)}  # x0, y0, read_w/h, z_w/h
        keep = np.ones(len(cols), bool)
        if not self.keep_partial:
            keep &= (arr["z_w"] == self.tile_size) & (arr["z_h"] == self.tile_size)
        mask = _tissue_mask(handle, props, self.tissue_detector, self.overview_side)
        ds = props.level_downsamples[level]
        fractions = np.array(
            [
                mask.fraction_in(x, y, w * ds, h * ds) if k else 0.0
                for x, y, w, h, k in zip(arr["x0"], arr["y0"], arr["read_w"], arr["read_h"], keep, strict=True)
            ],
            np.float32,
        )
        keep &= (fractions >= self.tissue_threshold) & (fractions > 0)
        if not keep.any():
            raise NoTissueError(
                props.slide_path,
                f"no {self.tile_size}-px DeepZoom tile at level {dz_level} ({mpp:.3f} µm/px) has tissue "
                f"fraction >= {self.tissue_threshold} (slide tissue fraction {mask.tissue_fraction:.3f})",
            )
        idx = np.flatnonzero(keep)
        coords = np.stack([np.full(len(idx), dz_level), cols[idx], rows[idx]], axis=1).astype(np.float32)
        resize: ResizeMode = "deepzoom"
        attrs = {
            "tiling": "deepzoom",
            "tile_level": dz_level,
            "level": level,
            "patch_size": self.tile_size,
            **_geometry_attrs(props, level, grid.level0_downsample(dz_level) * self.tile_size, arr["read_w"]),
            "mpp": mpp,
            "target_mpp": self.target_mpp,
            "coords_frame": "deepzoom_address",  # of ``coords`` / features.npy; the .h5 holds level-0 pixels
            "tissue_threshold": self.tissue_threshold,
            "overview_side": self.overview_side,
            "dz_overlap": 0,
            "dz_limit_bounds": False,
        }
        tiles = TileSet(
            props.slide_path,
            arr["x0"][idx],
            arr["y0"][idx],
            level,
            arr["read_w"][idx],
            arr["read_h"][idx],
            arr["z_w"][idx],
            arr["z_h"][idx],
            self.tile_size,
            resize,
            coords,
            fractions[idx],
            attrs,
        )
        return tiles.subset(self.n_tiles, self.seed, self.random_sampling)


@dataclass(frozen=True)
class GridTiling:
    """Non-overlapping tiles on a level-0 grid at an exact µm/px (the core ``plan_read`` + ``GridSampler``).

    Each tile reads ``round(patch_size · target_mpp / level_mpp)`` pixels of the coarsest
    level not coarser than the target and area-resamples them to ``patch_size``.

    Parameters
    ----------
    patch_size : int
        Side of the delivered tile.
    target_mpp : float
        µm/px of the delivered tile.
    mpp_tolerance : float
        Relative tolerance for reading a level directly (core default 2 %).
    tissue_threshold, n_tiles, seed, random_sampling, tissue_detector, overview_side
        As for :class:`DeepZoomTiling`.
    """

    patch_size: int = 224
    target_mpp: float = 0.5
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE
    tissue_threshold: float = 0.5
    n_tiles: int | None = None
    seed: int = 0
    random_sampling: bool = True
    tissue_detector: TissueDetector = field(default_factory=OtsuTissueDetector)
    overview_side: int = DEFAULT_OVERVIEW_SIDE

    name: ClassVar[str] = "grid"

    def __post_init__(self) -> None:
        _validate_common(
            self.patch_size,
            self.target_mpp,
            self.tissue_threshold,
            self.n_tiles,
            self.mpp_tolerance,
            self.overview_side,
        )
        if self.mpp_tolerance >= 0.5:
            raise ValueError(f"mpp_tolerance must be < 0.5 for the level-0 grid, got {self.mpp_tolerance}")

    def tiles(self, handle: SlideHandle, props: SlideProperties | None = None) -> TileSet:
        """All (or ``n_tiles``) tissue tiles of the grid; raises ``NoTissueError`` when none qualifies."""
        props = props or handle.properties
        plan = plan_read(props, self.patch_size, target_mpp=self.target_mpp, tolerance=self.mpp_tolerance)
        sampler = GridSampler(
            patch_size=self.patch_size,
            target_mpp=self.target_mpp,
            tissue_threshold=self.tissue_threshold,
            mpp_tolerance=self.mpp_tolerance,
        )
        mask = _tissue_mask(handle, props, self.tissue_detector, self.overview_side)
        positions = sampler.grid(mask, plan, props)
        if not positions:
            raise NoTissueError(
                props.slide_path,
                f"no {plan.footprint_level0:.0f}-px (level-0) grid tile has tissue fraction >= "
                f"{self.tissue_threshold} (slide tissue fraction {mask.tissue_fraction:.3f})",
            )
        n = len(positions)
        x0 = np.array([p.x0 for p in positions], np.int64)
        y0 = np.array([p.y0 for p in positions], np.int64)
        read = np.full(n, plan.read_size, np.int64)
        out = np.full(n, plan.patch_size, np.int64)
        coords = np.stack([np.full(n, plan.level), x0, y0], axis=1).astype(np.float32)
        attrs = {
            "tiling": "grid",
            "level": plan.level,
            "patch_size": plan.patch_size,
            **_geometry_attrs(props, plan.level, round(plan.footprint_level0), read),
            "mpp": plan.mpp,
            "target_mpp": self.target_mpp,
            "coords_frame": "level0_pixels",
            "tissue_threshold": self.tissue_threshold,
            "overview_side": self.overview_side,
        }
        tiles = TileSet(
            props.slide_path,
            x0,
            y0,
            plan.level,
            read,
            read,
            out,
            out,
            plan.patch_size,
            "area" if plan.needs_resize else "none",
            coords,
            np.array([p.tissue_fraction for p in positions], np.float32),
            attrs,
        )
        return tiles.subset(self.n_tiles, self.seed, self.random_sampling)
