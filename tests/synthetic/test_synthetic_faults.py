"""Fault injection: a corrupted level-0 tile breaks exactly the reads that touch it."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tiffslide

from wsistream.synthetic import write_aperio_svs

from .helpers import read_rgb

TILE = 240
BAD = (2, 1)  # column, row


@pytest.fixture(scope="module")
def corrupt_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corrupt")
    return write_aperio_svs(folder / "corrupt.svs", width=1440, height=960, seed=0, corrupt_tile=BAD)


def test_slide_opens_and_other_tiles_read(corrupt_svs: Path) -> None:
    slide = openslide.OpenSlide(corrupt_svs)
    assert slide.properties["openslide.vendor"] == "aperio"
    # Everything but the bad tile: the tile row above, the tile to its left, and all lower levels.
    assert read_rgb(slide, (0, 0), 0, (1440, TILE)).mean() > 100
    assert read_rgb(slide, (0, TILE), 0, (2 * TILE, TILE)).mean() > 100
    assert read_rgb(slide, (0, 0), 1, slide.level_dimensions[1]).mean() > 100
    assert read_rgb(slide, (0, 0), 2, slide.level_dimensions[2]).mean() > 100


def test_reading_the_corrupt_tile_raises(corrupt_svs: Path) -> None:
    slide = openslide.OpenSlide(corrupt_svs)
    x, y = BAD[0] * TILE + 100, BAD[1] * TILE + 100
    with pytest.raises(openslide.OpenSlideError, match="Not a JPEG file"):
        slide.read_region((x, y), 0, (16, 16))
    # OpenSlide handles stay in the error state afterwards; a fresh handle reads elsewhere again.
    fresh = openslide.OpenSlide(corrupt_svs)
    assert read_rgb(fresh, (0, 0), 0, (64, 64)).shape == (64, 64, 3)
    with pytest.raises(imagecodecs.JpegError):
        tiffslide.TiffSlide(corrupt_svs).read_region((x, y), 0, (16, 16))


def test_corruption_touches_only_that_tile(corrupt_svs: Path, tmp_path: Path) -> None:
    clean = write_aperio_svs(tmp_path / "clean.svs", width=1440, height=960, seed=0)
    good, bad = openslide.OpenSlide(clean), openslide.OpenSlide(corrupt_svs)
    assert np.array_equal(read_rgb(good, (0, 0), 0, (1440, TILE)), read_rgb(bad, (0, 0), 0, (1440, TILE)))
    assert np.array_equal(read_rgb(good, (0, 0), 1, (360, 240)), read_rgb(bad, (0, 0), 1, (360, 240)))
