"""What the slides look like: consistent levels, tissue with holes, H&E colours, determinism."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest

from wsistream.synthetic import write_aperio_svs

from .helpers import HEIGHT, WIDTH, read_level, read_rgb, saturation


def _tissue_origin(slide: openslide.OpenSlide, size0: int) -> tuple[int, int, float]:
    """Level-0 top-left of the ``size0`` square with the most tissue (found on the lowest level), and
    the tissue fraction of that square."""
    low = read_level(slide, slide.level_count - 1)
    ds = round(slide.level_downsamples[-1])
    k = size0 // ds
    tissue = (saturation(low) > 0.1).astype(np.float32)
    cover = cv2.boxFilter(tissue, -1, (k, k), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_CONSTANT)
    cover[low.shape[0] - k + 1 :, :] = 0
    cover[:, low.shape[1] - k + 1 :] = 0
    y, x = np.unravel_index(int(np.argmax(cover)), cover.shape)
    return int(x) * ds, int(y) * ds, float(cover[y, x])


@pytest.mark.parametrize("level", [1, 2])
def test_lower_levels_are_area_downsamples_of_level0(rgb_svs: Path, level: int) -> None:
    slide = openslide.OpenSlide(rgb_svs)
    ds = round(slide.level_downsamples[level])
    size = 1024 if level == 1 else 1536
    x0, y0, _ = _tissue_origin(slide, size)
    lower = read_rgb(slide, (x0, y0), level, (size // ds, size // ds)).astype(np.float64)
    full = read_rgb(slide, (x0, y0), 0, (size, size))
    expected = cv2.resize(full, (size // ds, size // ds), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.abs(lower - expected).mean() < 4.0  # two JPEG generations apart, nothing more
    assert np.corrcoef(lower.ravel(), expected.ravel())[0, 1] > 0.95


def test_default_slide_has_tissue_with_holes(rgb_svs: Path) -> None:
    low = read_level(openslide.OpenSlide(rgb_svs), 2)
    mask = (saturation(low) > 0.1).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # drop stray nuclei/pixels
    assert 0.25 < mask.mean() < 0.55
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    holes = [c for c, h in zip(contours, hierarchy[0]) if h[3] >= 0 and cv2.contourArea(c) >= 4]
    assert holes, "expected background holes enclosed by tissue"


def test_background_only_slide_has_no_tissue(background_svs: Path) -> None:
    slide = openslide.OpenSlide(background_svs)
    for level in (2, 0):
        rgb = read_level(slide, level) if level else read_rgb(slide, (0, 0), 0, (WIDTH, 512))
        assert saturation(rgb).max() < 0.06
        assert 234 <= rgb.mean() <= 246
        assert rgb.min() > 200


def _colour_fractions(rgb: np.ndarray) -> tuple[float, float]:
    """Fractions of eosin-pink and haematoxylin-purple pixels."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    pink = (r > 190) & (r - g > 40) & (b - g > 20)
    purple = (b > r) & (b - g > 40) & (g < 140)
    return float(pink.mean()), float(purple.mean())


@pytest.mark.parametrize("fixture", ["rgb_svs", "ycbcr420_svs"])
def test_tissue_is_pink_and_purple(request: pytest.FixtureRequest, fixture: str) -> None:
    slide = openslide.OpenSlide(request.getfixturevalue(fixture))
    x0, y0, cover = _tissue_origin(slide, 1024)
    assert cover > 0.6
    pink, purple = _colour_fractions(read_rgb(slide, (x0, y0), 0, (1024, 1024)))
    assert pink > 0.05, f"too little eosin: {pink:.3f}"
    assert purple > 0.01, f"too few nuclei: {purple:.3f}"


def test_ycbcr_and_rgb_code_the_same_image(rgb_svs: Path, ycbcr420_svs: Path) -> None:
    a = read_level(openslide.OpenSlide(rgb_svs), 1).astype(np.int16)
    b = read_level(openslide.OpenSlide(ycbcr420_svs), 1).astype(np.int16)
    assert np.abs(a - b).mean() < 6.0


def test_same_arguments_give_identical_pixels(rgb_svs: Path, tmp_path: Path) -> None:
    again = write_aperio_svs(tmp_path / "again.svs", width=WIDTH, height=HEIGHT, seed=0)
    first, second = openslide.OpenSlide(rgb_svs), openslide.OpenSlide(again)
    for level in range(3):
        assert np.array_equal(read_level(first, level), read_level(second, level))
    other = write_aperio_svs(tmp_path / "other.svs", width=WIDTH, height=HEIGHT, seed=1, downsamples=(1, 16))
    assert not np.array_equal(read_level(first, 2), read_level(openslide.OpenSlide(other), 1))
