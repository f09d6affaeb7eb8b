"""Argument checking for the slide writer, kept apart so the writer reads as the file layout it makes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast


@dataclass(frozen=True)
class SlideSpec:
    """Validated, normalised writer arguments (see :func:`wsistream.synthetic.write_aperio_svs`)."""

    width: int
    height: int
    mpp: float | None
    app_mag: float | None
    downsamples: tuple[int, ...]
    tile_size: int
    quality: int
    tissue_blobs: int
    photometric: Literal["rgb", "ycbcr"]
    subsampling: tuple[int, int]
    mpp_text: str | None
    corrupt_tile: tuple[int, int] | None


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def validate_spec(
    *,
    width: int,
    height: int,
    mpp: float | None,
    app_mag: float | None,
    downsamples: Sequence[int],
    tile_size: int,
    quality: int,
    tissue_blobs: int,
    photometric: str,
    subsampling: tuple[int, int],
    mpp_text: str | None,
    corrupt_tile: tuple[int, int] | None,
) -> SlideSpec:
    """Check every writer argument and return them normalised.

    Raises
    ------
    ValueError
        With a message naming the argument, its value and what is accepted.
    """
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    tile_size = _positive_int("tile_size", tile_size, 16)
    if tile_size % 16:
        raise ValueError(f"tile_size must be a multiple of 16 (TIFF rule), got {tile_size}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp={mpp!r} is not a positive finite number; pass mpp_text={str(mpp)!r} to write it raw")
    if app_mag is not None and not (math.isfinite(app_mag) and app_mag > 0):
        raise ValueError(f"app_mag must be a positive finite number or None, got {app_mag!r}")
    if mpp_text is not None and ("|" in mpp_text or "\n" in mpp_text or "\r" in mpp_text):
        raise ValueError(f"mpp_text={mpp_text!r} would break the '|'-separated Aperio description")
    factors = tuple(_positive_int("downsamples[i]", ds) for ds in downsamples)
    if not factors or factors[0] != 1:
        raise ValueError(f"downsamples must start with 1 (level 0), got {tuple(downsamples)!r}")
    if any(b <= a for a, b in itertools.pairwise(factors)):
        raise ValueError(f"downsamples must be strictly increasing, got {factors!r}")
    if width // factors[-1] < 1 or height // factors[-1] < 1:
        raise ValueError(
            f"downsample {factors[-1]} leaves an empty level for a {width}x{height} slide; "
            "pass smaller downsamples or a larger slide"
        )
    sizes = [(width // ds, height // ds) for ds in factors]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"downsamples {factors!r} give levels of equal size {sizes!r} for a {width}x{height} slide")
    if photometric not in ("rgb", "ycbcr"):
        raise ValueError(f"photometric must be 'rgb' or 'ycbcr', got {photometric!r}")
    sub = (int(subsampling[0]), int(subsampling[1]))
    if photometric == "rgb" and sub != (1, 1):
        raise ValueError(f"subsampling={sub!r} needs photometric='ycbcr'; RGB-coded JPEG has no chroma")
    if sub not in {(1, 1), (2, 1), (2, 2)}:
        raise ValueError(f"subsampling must be (1, 1), (2, 1) or (2, 2), got {sub!r}")
    if corrupt_tile is not None:
        col, row = corrupt_tile
        across, down = -(-width // tile_size), -(-height // tile_size)
        if not (0 <= col < across and 0 <= row < down):
            raise ValueError(f"corrupt_tile={corrupt_tile!r} is outside the {across}x{down} level-0 tile grid")
        corrupt_tile = (int(col), int(row))
    return SlideSpec(
        width=width,
        height=height,
        mpp=None if mpp is None else float(mpp),
        app_mag=None if app_mag is None else float(app_mag),
        downsamples=factors,
        tile_size=tile_size,
        quality=int(quality),
        tissue_blobs=_positive_int("tissue_blobs", tissue_blobs, 0),
        photometric=cast(Literal["rgb", "ycbcr"], photometric),
        subsampling=sub,
        mpp_text=mpp_text,
        corrupt_tile=corrupt_tile,
    )
