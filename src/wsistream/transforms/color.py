"""Photometric augmentations with torchvision semantics: jitter, grayscale, solarize.

Grayscale uses the ITU-R 601-2 luma weights (0.299, 0.587, 0.114), as PIL's
``convert("L")`` that torchvision applies to the PIL images DINOv2 feeds it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import cv2
import numpy as np

from wsistream.transforms.base import (
    RandomTransform,
    check_finite,
    check_probability,
    cv_compatible,
    uniform,
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

    Each op saturates to [0, 255] and truncates back to uint8, as Pillow's
    ``ImageEnhance`` does on the PIL images DINOv2's data loader hands
    torchvision (torchvision's ``F.adjust_*`` call ``ImageEnhance.Brightness``,
    ``.Contrast``, ``.Color`` and an 8-bit HSV rotation for PIL inputs).
    Brightness and contrast are lookup tables identical to Pillow's (contrast
    blends with the rounded mean luma computed from the channel means, where
    Pillow averages the rounded per-pixel luma: the two round apart only when
    the mean sits within ~0.001 of a half-integer); saturation
    equals Pillow's except for values within 0.0005 of an integer; hue rotates
    OpenCV's 8-bit full-range HSV by the shift rounded to 1/256 turn (Pillow
    truncates ``h * 255``): on real H&E >= 98 % of values equal Pillow's, and on
    vivid colours both 8-bit HSVs are equally far from the exact rotation
    (tests pin all of it against Pillow). Working in uint8 is also 2-3x faster
    than the float32 chain.

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
    _ranges: tuple[tuple[float, float] | None, ...] = field(init=False, repr=False, compare=False)

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
                factors[i] = uniform(rng, r[0], r[1])
        return ColorJitterParams(order, *factors)

    def apply(self, image: np.ndarray, params: ColorJitterParams) -> np.ndarray:
        """Apply the enabled ops in ``params.order``, each rounding back to uint8 as Pillow does."""
        factors = (params.brightness, params.contrast, params.saturation, params.hue)
        x = cv_compatible(image)
        for i in params.order:
            f = factors[i]
            if f is None:
                continue
            if i == 0:  # brightness: blend with black
                x = cv2.LUT(x, _blend_lut(f, 0))
            elif i == 1:  # contrast: blend with the rounded mean luma (ImageEnhance.Contrast)
                mean = int(float(np.dot(np.asarray(cv2.mean(x)[:3], np.float32), LUMA_WEIGHTS)) + 0.5)
                x = cv2.LUT(x, _blend_lut(f, mean))
            elif i == 2:  # saturation: blend with the per-pixel luma (ImageEnhance.Color)
                gray = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
                x = cv2.addWeighted(x, f, gray, 1.0 - f, _TRUNCATE)
            else:  # hue: rotate H of the 8-bit HSV image, wrapping (torchvision's PIL adjust_hue)
                hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV_FULL)
                np.add(hsv[..., 0], np.uint8(round(f * 256) % 256), out=hsv[..., 0], casting="unsafe")
                x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
        return x


def _blend_lut(factor: float, base: int) -> np.ndarray:
    """Pillow's ``Image.blend(base, img, factor)`` on one uint8 value, as a 256-entry table.

    ``base + factor * (v - base)`` in float32, saturated to [0, 255] and
    truncated, exactly as ``ImagingBlend`` computes it.
    """
    t = np.float32(base) + np.float32(factor) * (_VALUES - np.float32(base))
    lut: np.ndarray = np.clip(t, 0.0, 255.0).astype(np.uint8)
    return lut


_VALUES = np.arange(256, dtype=np.float32)
#: ``addWeighted`` rounds to nearest; shifting by just under half a level makes it truncate like Pillow's
#: ``(UINT8)`` cast while absorbing float32 error on exact integers (differs only when the fraction is > 0.9995).
_TRUNCATE = -0.4995


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
        gray = cv2.cvtColor(cv_compatible(image), cv2.COLOR_RGB2GRAY)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)  # 14x faster than np.repeat


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
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

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
