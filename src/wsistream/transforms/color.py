"""Photometric augmentations with torchvision semantics: jitter, grayscale, solarize.

Grayscale uses the ITU-R 601-2 luma weights (0.299, 0.587, 0.114), as PIL's
``convert("L")`` that torchvision applies to the PIL images DINOv2 feeds it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import cv2
import numpy as np

from wsistream.transforms.base import (
    RandomTransform,
    check_finite,
    check_probability,
    cv_compatible,
    float_to_uint8,
)

__all__ = [
    "LUMA_WEIGHTS",
    "ColorJitter",
    "ColorJitterParams",
    "RandomGrayscale",
    "RandomSolarize",
]

#: ITU-R 601-2 luma weights for R, G, B (PIL ``convert("L")``).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_OPS = ("brightness", "contrast", "saturation", "hue")
JitterValue = float | tuple[float, float]


def _jitter_range(
    value: JitterValue, name: str, center: float, bound: tuple[float, float], clip_first_on_zero: bool
) -> tuple[float, float] | None:
    """Parse a strength or (min, max) range as torchvision ``ColorJitter._check_input``; ``None`` = off."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = check_finite(float(value), name)
        if v < 0:
            raise ValueError(f"{name} strength must be >= 0, got {v}; pass 0 to disable {name} jitter")
        lo, hi = center - v, center + v
        if clip_first_on_zero:
            lo = max(lo, 0.0)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = (check_finite(v, name) for v in value)
        if not bound[0] <= lo <= hi <= bound[1]:
            raise ValueError(f"{name} range must satisfy {bound[0]} <= min <= max <= {bound[1]}, got {tuple(value)}")
    else:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if lo == hi == center:
        return None
    return (lo, hi)


@dataclass(frozen=True)
class ColorJitterParams:
    """One draw of :class:`ColorJitter`: the op order and each factor (``None`` = op disabled)."""

    order: tuple[int, ...]
    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None


@dataclass(frozen=True)
class ColorJitter(RandomTransform):
    """Randomly change brightness, contrast, saturation and hue, in a random order.

    Semantics of torchvision's ``ColorJitter``: a strength ``s`` gives a factor
    uniform in ``[max(0, 1 - s), 1 + s]`` (hue: a shift uniform in
    ``[-s, s]``, ``s <= 0.5``), or pass an explicit ``(min, max)`` range. On
    each call the four ops are applied in a fresh random permutation
    (``torch.randperm(4)`` in torchvision), each drawing its factor when it is
    reached:

    - brightness: ``img * f``
    - contrast: blend with the mean of the image's grayscale, ``f*img + (1-f)*mean``
    - saturation: blend with the per-pixel grayscale, ``f*img + (1-f)*gray``
    - hue: rotate the HSV hue by ``h`` turns.

    Every op clips to [0, 255] as torchvision does; intermediate values stay
    float (no re-quantisation between ops) and the result is rounded once.

    Parameters
    ----------
    brightness, contrast, saturation : float or (float, float)
        Jitter strengths; DINOv2 uses 0.4, 0.4, 0.2
        (``dinov2/data/augmentations.py``, ``color_jittering``).
    hue : float or (float, float)
        Hue shift strength in turns, ``<= 0.5``; DINOv2 uses 0.1.
    p : float
        Probability of jittering at all. torchvision's ``ColorJitter`` always
        applies (``p=1``, the default); DINOv2 wraps it in
        ``RandomApply(p=0.8)``, i.e. ``p=0.8`` here.
    """

    brightness: JitterValue = 0.0
    contrast: JitterValue = 0.0
    saturation: JitterValue = 0.0
    hue: JitterValue = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        check_probability(self.p)
        inf = float("inf")
        ranges = (
            _jitter_range(self.brightness, "brightness", 1.0, (0.0, inf), True),
            _jitter_range(self.contrast, "contrast", 1.0, (0.0, inf), True),
            _jitter_range(self.saturation, "saturation", 1.0, (0.0, inf), True),
            _jitter_range(self.hue, "hue", 0.0, (-0.5, 0.5), False),
        )
        if isinstance(self.hue, numbers.Real) and not isinstance(self.hue, bool) and self.hue > 0.5:
            raise ValueError(f"hue strength must be <= 0.5 (half a turn), got {self.hue}; DINOv2 uses 0.1")
        object.__setattr__(self, "_ranges", ranges)

    @property
    def ranges(self) -> dict[str, tuple[float, float] | None]:
        """The factor range of each op (``None`` = disabled)."""
        return dict(zip(_OPS, self._ranges, strict=True))

    def sample_params(self, rng: np.random.Generator) -> ColorJitterParams:
        """Draw a permutation of the four ops, then each enabled op's factor in that order."""
        order = tuple(int(i) for i in rng.permutation(4))
        factors: list[float | None] = [None] * 4
        for i in order:
            r = self._ranges[i]
            if r is not None:
                factors[i] = float(rng.uniform(r[0], r[1]))
        return ColorJitterParams(order, *factors)

    def apply(self, image: np.ndarray, params: ColorJitterParams) -> np.ndarray:
        """Apply the enabled ops in ``params.order``."""
        factors = (params.brightness, params.contrast, params.saturation, params.hue)
        if all(f is None for f in factors):
            return image
        x = cv_compatible(image).astype(np.float32)
        for i in params.order:
            f = factors[i]
            if f is None:
                continue
            if i == 0:  # brightness: blend with black
                x *= f
            elif i == 1:  # contrast: blend with the mean luma (linear, so = luma of the channel means)
                mean = float(np.dot(np.asarray(cv2.mean(x)[:3], np.float32), LUMA_WEIGHTS))
                x *= f
                x += (1.0 - f) * mean
            elif i == 2:  # saturation: blend with the per-pixel luma
                gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
                x *= f
                x += (1.0 - f) * gray[..., None]
            else:  # hue: rotate H in HSV (OpenCV float HSV, in place: H in degrees)
                x *= np.float32(1.0 / 255.0)
                cv2.cvtColor(x, cv2.COLOR_RGB2HSV, dst=x)
                h = x[..., 0]
                h += np.float32(360.0 * f)  # |shift| <= 180, so one wrap suffices
                if f >= 0:
                    np.subtract(h, np.float32(360.0), out=h, where=h >= 360.0)
                else:
                    np.add(h, np.float32(360.0), out=h, where=h < 0.0)
                cv2.cvtColor(x, cv2.COLOR_HSV2RGB, dst=x)
                x *= np.float32(255.0)
            np.clip(x, 0.0, 255.0, out=x)
        return float_to_uint8(x)


@dataclass(frozen=True)
class RandomGrayscale(RandomTransform):
    """Convert to 3-channel grayscale (R = G = B = luma) with probability ``p``.

    Parameters
    ----------
    p : float
        Default 0.1 as torchvision; DINOv2 uses 0.2
        (``dinov2/data/augmentations.py``, ``RandomGrayscale(p=0.2)``).
    """

    p: float = 0.1

    def __post_init__(self) -> None:
        check_probability(self.p)

    def sample_params(self, rng: np.random.Generator) -> bool:
        """Nothing to draw."""
        return True

    def apply(self, image: np.ndarray, params: bool) -> np.ndarray:
        """Replace every channel by the ITU-R 601-2 luma (rounded, as PIL)."""
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        return np.repeat(gray[..., None], 3, axis=2)


@dataclass(frozen=True)
class RandomSolarize(RandomTransform):
    """Invert every pixel value ``>= threshold`` (``v -> 255 - v``) with probability ``p``.

    Parameters
    ----------
    threshold : float
        Values at or above it are inverted (torchvision/PIL semantics). Default
        128, as DINOv2's second global crop.
    p : float
        Default 0.5 as torchvision; DINOv2 uses 0.2 on its second global crop
        (``dinov2/data/augmentations.py``, ``RandomSolarize(threshold=128, p=0.2)``).
    """

    threshold: float = 128
    p: float = 0.5

    def __post_init__(self) -> None:
        check_probability(self.p)
        t = check_finite(self.threshold, "threshold")
        if not 0.0 <= t <= 256.0:
            raise ValueError(f"threshold must be in [0, 256] for uint8 images, got {t}; DINOv2 uses 128")
        lut = np.arange(256, dtype=np.uint8)
        lut = np.where(lut >= t, 255 - lut, lut).astype(np.uint8)
        object.__setattr__(self, "_lut", lut)

    def sample_params(self, rng: np.random.Generator) -> bool:
        """Nothing to draw."""
        return True

    def apply(self, image: np.ndarray, params: bool) -> np.ndarray:
        """Invert the values at or above the threshold through a lookup table."""
        return cv2.LUT(cv_compatible(image), self._lut)
