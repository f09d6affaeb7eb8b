"""H&E-like texture atlases: small periodic images that level 0 is tiled from.

Rendering 1.2 gigapixels of procedural texture per slide would dominate the write time, so each slide
builds three seamless (periodic) textures of about a megapixel once — background glass, eosin-rich stroma
and nucleus-dense tissue — and level 0 copies rows of them (:func:`fill_band`). Periodicity means no seams
wherever the copies meet; the tissue layout decides which texture shows where, so the repetition is not
apparent at the scales patch samplers look at.

Colours come from Beer–Lambert stain mixing: the haematoxylin optical-density vector of Ruifrok & Johnston
("Quantification of histochemical staining by color deconvolution", Anal Quant Cytol Histol 2001) and an
eosin vector between theirs (which renders stroma magenta) and the reference of Macenko et al. ("A method
for normalizing histology slides for quantitative analysis", ISBI 2009), so the result deconvolves into
plausible haematoxylin and eosin channels. Physical sizes (nuclei of 4–10 µm,
collagen fibres) are converted with the slide's µm/px, so a 20x and a 40x slide look like the same tissue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: Optical-density vectors (R, G, B): Ruifrok & Johnston's haematoxylin; eosin tuned towards Macenko's.
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286], np.float32)
_EOSIN = (lambda v: v / np.linalg.norm(v))(np.array([0.10, 0.93, 0.35], np.float32))
#: Transmitted light through clear glass; ~240 is what scanners record for slide background.
_GLASS = 240.0

#: Side lengths of the periodic textures. Different periods make the combined pattern repeat less often.
_BACKGROUND_PERIOD = 1024
_STROMA_PERIOD = 1152
_DENSE_PERIOD = 1024


@dataclass(frozen=True)
class TextureAtlas:
    """Three periodic RGB textures (read-only uint8 arrays, ``(period, period, 3)``).

    Attributes
    ----------
    background : numpy.ndarray
        Near-white glass, ~(240, 240, 240) with faint noise.
    stroma : numpy.ndarray
        Pink eosin fibres with sparse elongated and small round nuclei.
    dense : numpy.ndarray
        Light-pink cytoplasm crowded with purple haematoxylin nuclei (tumour-like).
    """

    background: np.ndarray
    stroma: np.ndarray
    dense: np.ndarray


def _periodic_noise(
    rng: np.random.Generator,
    size: int,
    sigma_along: float,
    sigma_across: float | None = None,
    theta: float = 0.0,
) -> np.ndarray:
    """Return unit-variance periodic Gaussian-filtered noise, optionally anisotropic.

    Filtering in the Fourier domain makes the result wrap around seamlessly. ``sigma_along`` is the
    correlation length along direction ``theta`` (radians), ``sigma_across`` across it.
    """
    across = sigma_along if sigma_across is None else sigma_across
    white = rng.standard_normal((size, size), dtype=np.float32)
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    c, s = math.cos(theta), math.sin(theta)
    f_along = fx * c + fy * s
    f_across = -fx * s + fy * c
    gain = np.exp(np.float32(-2.0 * math.pi**2) * ((sigma_along * f_along) ** 2 + (across * f_across) ** 2))
    noise = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size)).astype(np.float32)
    noise -= noise.mean()
    return noise / max(float(noise.std()), 1e-12)


def _draw_nuclei(
    rng: np.random.Generator,
    canvas: np.ndarray,
    count: int,
    radius_px: tuple[float, float],
    aspect: tuple[float, float],
    stain: tuple[float, float],
    theta: float | None = None,
) -> None:
    """Draw ``count`` filled ellipses of haematoxylin concentration into ``canvas``, wrapping at the edges.

    ``theta=None`` orients each nucleus at random; otherwise nuclei follow ``theta`` ± 0.3 rad (fibroblasts
    lie along the collagen).
    """
    size = canvas.shape[0]
    shift = 4  # sub-pixel precision bits of cv2.ellipse
    scale = 1 << shift
    for _ in range(count):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(*radius_px)
        ratio = rng.uniform(*aspect)
        angle = math.degrees(rng.uniform(0, math.pi) if theta is None else theta + rng.normal(0, 0.3))
        value = float(rng.uniform(*stain))
        axes = (round(r * ratio * scale), round(r * scale))
        reach = r * ratio + 1
        for dy in (-size, 0, size):
            for dx in (-size, 0, size):
                y, x = cy + dy, cx + dx
                if -reach <= y <= size + reach and -reach <= x <= size + reach:
                    centre = (round(x * scale), round(y * scale))
                    cv2.ellipse(canvas, centre, axes, angle, 0, 360, value, -1, cv2.LINE_8, shift)


def _blur_wrap(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that treats ``image`` as periodic (OpenCV's blur has no wrap-around border)."""
    pad = math.ceil(4 * sigma)
    padded = np.pad(image, pad, mode="wrap")
    blurred = cv2.GaussianBlur(padded, (0, 0), sigmaX=sigma)
    return np.ascontiguousarray(blurred[pad:-pad, pad:-pad])


def _stain_to_rgb(rng: np.random.Generator, hema: np.ndarray, eosin: np.ndarray, noise: float) -> np.ndarray:
    """Mix stain concentrations into RGB by Beer–Lambert and add sensor noise."""
    od = hema[..., None] * _HEMATOXYLIN + eosin[..., None] * _EOSIN
    rgb = _GLASS * np.exp(-od)
    rgb += noise * rng.standard_normal(rgb.shape, dtype=np.float32)
    return _freeze(np.clip(np.round(rgb), 0, 255).astype(np.uint8))


def _freeze(array: np.ndarray) -> np.ndarray:
    """Mark an array read-only: atlases are cached and shared between slides."""
    array.flags.writeable = False
    return array


def _background(rng: np.random.Generator) -> np.ndarray:
    """Clear glass: 240 with a faint shading ripple and per-pixel noise (saturation stays below 2 %)."""
    size = _BACKGROUND_PERIOD
    shade = 0.8 * _periodic_noise(rng, size, 60.0)
    grain = rng.standard_normal((size, size, 3), dtype=np.float32)
    rgb = _GLASS + shade[..., None] + grain
    return _freeze(np.clip(np.round(rgb), 0, 255).astype(np.uint8))


def _stroma(rng: np.random.Generator, um: float) -> np.ndarray:
    """Collagen-rich stroma: wavy eosin fibres in two directions, gaps, sparse nuclei."""
    size = _STROMA_PERIOD
    theta = rng.uniform(0, math.pi)
    fibres = 0.7 * _periodic_noise(rng, size, 7.0 / um, 0.8 / um, theta)
    fibres += 0.5 * _periodic_noise(rng, size, 5.0 / um, 0.7 / um, theta + rng.uniform(0.4, 1.2))
    # No structure coarser than ~10 µm: anything larger would repeat visibly at thumbnail scale (slow
    # variation comes from the non-periodic stain gain of the layout instead).
    density = _periodic_noise(rng, size, 10.0 / um)
    eosin = 0.42 + 0.16 * fibres + 0.08 * density
    eosin = np.where(fibres + 0.5 * density < -1.3, 0.06, eosin)  # clefts between collagen bundles
    eosin = np.clip(eosin, 0.04, 1.1).astype(np.float32)
    hema = np.zeros((size, size), np.float32)
    area_um2 = (size * um) ** 2
    _draw_nuclei(rng, hema, int(area_um2 / 900), (1.6 / um, 2.2 / um), (2.2, 3.8), (0.7, 1.1), theta)
    _draw_nuclei(rng, hema, int(area_um2 / 2500), (2.3 / um, 3.0 / um), (1.0, 1.2), (1.2, 1.6))
    hema = _blur_wrap(hema, max(0.5, 0.25 / um))
    hema *= 1.0 + 0.15 * _periodic_noise(rng, size, 0.4 / um)
    eosin *= 1.0 - 0.5 * np.clip(hema, 0.0, 1.0)
    return _stain_to_rgb(rng, hema, eosin, noise=2.5)


def _dense(rng: np.random.Generator, um: float) -> np.ndarray:
    """Cellular tissue: pale cytoplasm, about a third of the area covered by nuclei with chromatin grain."""
    size = _DENSE_PERIOD
    eosin = 0.28 + 0.08 * _periodic_noise(rng, size, 2.0 / um) + 0.05 * _periodic_noise(rng, size, 6.0 / um)
    eosin = np.clip(eosin, 0.05, 0.8).astype(np.float32)
    hema = np.zeros((size, size), np.float32)
    area_um2 = (size * um) ** 2
    radius = (3.0 / um, 4.5 / um)
    mean_area = math.pi * ((3.0 + 4.5) / 2) ** 2 * 1.2
    _draw_nuclei(rng, hema, int(0.35 * area_um2 / mean_area), radius, (1.0, 1.5), (0.8, 1.3))
    hema = _blur_wrap(hema, max(0.5, 0.25 / um))
    hema *= 1.0 + 0.25 * _periodic_noise(rng, size, 0.35 / um)
    hema += 0.04
    return _stain_to_rgb(rng, np.clip(hema, 0.0, 2.0), eosin, noise=2.5)


@lru_cache(maxsize=4)
def make_atlas(seed: int, mpp: float) -> TextureAtlas:
    """Build (or fetch from a small cache) the texture atlas for ``seed`` at ``mpp`` µm/px.

    Parameters
    ----------
    seed : int
        Seed of the textures; independent of the tissue layout seed stream.
    mpp : float
        Level-0 resolution used to size nuclei and fibres; must be positive.

    Returns
    -------
    TextureAtlas
    """
    if not mpp > 0:
        raise ValueError(f"mpp must be > 0, got {mpp!r}")
    bg_seq, stroma_seq, dense_seq = np.random.SeedSequence(seed).spawn(3)
    return TextureAtlas(
        background=_background(np.random.default_rng(bg_seq)),
        stroma=_stroma(np.random.default_rng(stroma_seq), mpp),
        dense=_dense(np.random.default_rng(dense_seq), mpp),
    )


def fill_band(texture: np.ndarray, y0: int, out: np.ndarray) -> None:
    """Fill ``out`` (``(rows, width, 3)``) with ``texture`` tiled periodically from level-0 row ``y0``.

    Column ``x`` of ``out`` shows texture column ``x mod period``, so every band of the same slide lines up.
    """
    period = texture.shape[0]
    rows, width = out.shape[:2]
    block = texture[(y0 + np.arange(rows)) % period]
    for x in range(0, width, period):
        stop = min(width, x + period)
        out[:, x:stop] = block[:, : stop - x]
