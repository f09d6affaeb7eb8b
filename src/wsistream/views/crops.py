"""Crops that turn a patch into a fixed-size view: random-resized, centre, plain resize.

A :class:`Crop` first chooses a box in the image (:meth:`Crop.sample_box`),
then cuts it out and resizes it to ``size``×``size`` (:meth:`Crop.apply`).
Crops are :class:`~wsistream.transforms.PatchTransform` s, so one may also sit
inside a transform chain.

Two resamplers (``resize=``):

* ``"opencv"`` (class default, fast; the only one :class:`~wsistream.torch.DeviceViews`
  renders): ``interpolation`` names the filter used when the box is enlarged
  (``INTER_CUBIC``: Keys a = -0.75); with ``antialias=True`` a box that must
  shrink along both axes is area-averaged (``cv2.INTER_AREA``) instead, so
  downsampled views do not alias.
* ``"pil"``: Pillow's ``Image.resize`` with the same-named filter (bicubic:
  a = -0.5, support widened by the shrink factor, i.e. always antialiased).
  This is exactly what torchvision's ``RandomResizedCrop`` does to the PIL
  images DINOv2 feeds it (``F.resized_crop`` → ``PIL.Image.crop`` +
  ``resize``), so :func:`~wsistream.views.dinov2_multicrop` uses it by
  default. ``antialias`` is ignored (Pillow always antialiases).

Measured difference between the two on real H&E crops: see docs/views.md
("Resampling").
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from wsistream.transforms.base import PatchTransform, TraceEvent, check_finite, check_image, cv_compatible, uniform

__all__ = ["CenterCrop", "Crop", "CropBox", "Interpolation", "RandomResizedCrop", "Resize"]

Interpolation = Literal["bicubic", "bilinear", "area", "nearest"]
Resampler = Literal["opencv", "pil"]
_CV_INTERP = {
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class CropBox:
    """A box in image pixels: ``image[top:top + height, left:left + width]``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> int:
        """Number of pixels in the box."""
        return self.height * self.width


def _check_size(size: int, what: str) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{what} size must be an int >= 1 (output side in pixels), got {size!r}; e.g. size=224")


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in _CV_INTERP:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; pass one of {sorted(_CV_INTERP)} (DINOv2 uses 'bicubic')"
        )


def _check_resize(resize: str) -> None:
    if resize not in ("opencv", "pil"):
        raise ValueError(f"resize={resize!r}; pass 'pil' (torchvision on PIL images, DINOv2) or 'opencv' (fast)")


def resize_to(
    image: np.ndarray, size: int, interpolation: Interpolation, antialias: bool = True, resize: Resampler = "opencv"
) -> np.ndarray:
    """Resize ``image`` to ``size``×``size`` (returned as is when already that size); see the module docstring."""
    h, w = image.shape[:2]
    if h == size and w == size:
        return image
    if resize == "pil":
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), _pil_filter(interpolation)))
    flag = cv2.INTER_AREA if antialias and h >= size and w >= size else _CV_INTERP[interpolation]
    return cv2.resize(cv_compatible(image), (size, size), interpolation=flag)


def _pil_filter(interpolation: Interpolation) -> int:
    from PIL import Image

    r = Image.Resampling
    return {"bicubic": r.BICUBIC, "bilinear": r.BILINEAR, "area": r.BOX, "nearest": r.NEAREST}[interpolation]


class Crop(PatchTransform):
    """Choose a box, cut it out, resize it to ``size``×``size``.

    Subclasses are frozen dataclasses with an int ``size`` field and implement
    :meth:`sample_box`.
    """

    size: int
    interpolation: Interpolation = "bicubic"
    antialias: bool = True
    resize: Resampler = "opencv"

    @abstractmethod
    def sample_box(self, rng: np.random.Generator, height: int, width: int) -> CropBox:
        """Choose the box to cut from a ``height``×``width`` image (may draw from ``rng``)."""

    def apply(self, image: np.ndarray, box: CropBox) -> np.ndarray:
        """Cut ``box`` out of ``image`` and resize it to ``size``×``size``."""
        region = image[box.top : box.top + box.height, box.left : box.left + box.width]
        return resize_to(region, self.size, self.interpolation, self.antialias, self.resize)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample a box and apply it."""
        check_image(image)
        return self.apply(image, self.sample_box(rng, image.shape[0], image.shape[1]))

    def trace_call(self, image: np.ndarray, rng: np.random.Generator, events: list[TraceEvent]) -> np.ndarray:
        """As ``__call__``, recording the box."""
        check_image(image)
        box = self.sample_box(rng, image.shape[0], image.shape[1])
        events.append(TraceEvent(type(self).__name__, True, box))
        return self.apply(image, box)


def _check_pair(value: Sequence[float], name: str, hint: str) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}; e.g. {name}={hint}")
    lo, hi = (check_finite(v, name) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {tuple(value)}; pass ({hi}, {lo})?")
    return lo, hi


@dataclass(frozen=True)
class RandomResizedCrop(Crop):
    """torchvision's ``RandomResizedCrop``: random area and aspect ratio, then resize.

    ``get_params`` semantics, exactly: up to 10 attempts each draw a target
    area ``A * U(scale)`` (``A`` = image area) and an aspect ratio ``w/h``
    log-uniform in ``ratio``; ``w = round(sqrt(area * ratio))``,
    ``h = round(sqrt(area / ratio))``; the first box that fits is placed
    uniformly at random. If none fits, fall back to a centre crop of the whole
    image clamped to the nearest allowed aspect ratio.

    Parameters
    ----------
    size : int
        Output side in pixels (224 global / 96 local in DINOv2,
        ``configs/ssl_default_config.yaml``, ``crops``).
    scale : (float, float)
        Range of the crop's area as a fraction of the image, in (0, 1]
        (DINOv2: (0.32, 1.0) global, (0.05, 0.32) local).
    ratio : (float, float)
        Range of aspect ratio ``w/h`` (torchvision default (3/4, 4/3)).
    interpolation : {"bicubic", "bilinear", "area", "nearest"}
        Filter for enlarging; DINOv2 passes ``InterpolationMode.BICUBIC``
        (``dinov2/data/augmentations.py``, lines 46-48 and 55-57).
    antialias : bool
        Area-average boxes that shrink along both axes (see module docstring).
    resize : {"opencv", "pil"}
        Resampler (module docstring); ``"pil"`` is torchvision's on PIL images.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    interpolation: Interpolation = "bicubic"
    antialias: bool = True
    resize: Resampler = "opencv"

    def __post_init__(self) -> None:
        _check_size(self.size, "RandomResizedCrop")
        object.__setattr__(self, "size", int(self.size))
        scale = _check_pair(self.scale, "scale", "(0.32, 1.0)")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(
                f"scale is a fraction of the image area and must satisfy 0 < min <= max <= 1, "
                f"got {self.scale}; "
                "e.g. scale=(0.32, 1.0) for DINOv2 global crops or (0.05, 0.32) for local crops"
            )
        ratio = _check_pair(self.ratio, "ratio", "(3/4, 4/3)")
        if ratio[0] <= 0:
            raise ValueError(f"ratio (w/h) must be positive, got {self.ratio}; torchvision uses (3/4, 4/3)")
        _check_interpolation(self.interpolation)
        _check_resize(self.resize)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "ratio", ratio)

    def sample_box(self, rng: np.random.Generator, height: int, width: int) -> CropBox:
        """Draw a box as torchvision ``RandomResizedCrop.get_params``, with ``rng`` for randomness."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * uniform(rng, self.scale[0], self.scale[1])
            aspect = math.exp(uniform(rng, log_lo, log_hi))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return CropBox(top, left, h, w)
        # fallback: centre crop, aspect ratio clamped into `ratio`
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w = width
            h = round(w / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h = height
            w = round(h * self.ratio[1])
        else:
            w, h = width, height
        return CropBox((height - h) // 2, (width - w) // 2, h, w)


@dataclass(frozen=True)
class CenterCrop(Crop):
    """Cut the central ``size``×``size`` box (torchvision's rounding of the offsets).

    Unlike torchvision, an image smaller than ``size`` raises ``ValueError``
    instead of being zero-padded (black borders would be fake tissue).
    """

    size: int
    interpolation: Interpolation = "bicubic"
    antialias: bool = True
    resize: Resampler = "opencv"

    def __post_init__(self) -> None:
        _check_size(self.size, "CenterCrop")
        object.__setattr__(self, "size", int(self.size))
        _check_interpolation(self.interpolation)
        _check_resize(self.resize)

    def sample_box(self, rng: np.random.Generator, height: int, width: int) -> CropBox:
        """Return the centred box (draws nothing)."""
        if height < self.size or width < self.size:
            raise ValueError(
                f"CenterCrop(size={self.size}) needs an image at least that large, got {height}×{width}; "
                "use a larger patch_size or Resize"
            )
        return CropBox(round((height - self.size) / 2.0), round((width - self.size) / 2.0), self.size, self.size)


@dataclass(frozen=True)
class Resize(Crop):
    """Resize the whole image to ``size``×``size``.

    Patches are square, so this matches torchvision's ``Resize(size)``
    (shorter side to ``size``) on them; a non-square input is stretched.

    Parameters
    ----------
    size : int
        Output side in pixels.
    interpolation : {"bicubic", "bilinear", "area", "nearest"}
        Filter for enlarging (shrinking uses area averaging when ``antialias``).
    antialias : bool
        See the module docstring.
    resize : {"opencv", "pil"}
        Resampler (module docstring).
    """

    size: int
    interpolation: Interpolation = "bicubic"
    antialias: bool = True
    resize: Resampler = "opencv"

    def __post_init__(self) -> None:
        _check_size(self.size, "Resize")
        object.__setattr__(self, "size", int(self.size))
        _check_interpolation(self.interpolation)
        _check_resize(self.resize)

    def sample_box(self, rng: np.random.Generator, height: int, width: int) -> CropBox:
        """Return the whole image (draws nothing)."""
        return CropBox(0, 0, height, width)
