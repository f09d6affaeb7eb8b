"""Lossless geometric augmentations: flips and 90° rotations.

Histology has no canonical orientation, so the dihedral group (flips and
quarter turns) is a free, exact augmentation. Flips return new C-contiguous
arrays (OpenCV); rotations return numpy views, which
:func:`wsistream.views.render_views` makes C-contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from wsistream.transforms.base import RandomTransform, check_probability, cv_compatible

__all__ = ["RandomHorizontalFlip", "RandomRotate90", "RandomVerticalFlip"]


@dataclass(frozen=True)
class _RandomFlip(RandomTransform):
    """A mirror about one axis with probability ``p``; subclasses name the axis (OpenCV's flip code)."""

    p: float = 0.5
    _flip_code: ClassVar[int]

    def __post_init__(self) -> None:
        check_probability(self.p)

    def sample_params(self, rng: np.random.Generator) -> bool:
        """Nothing to draw: a fired flip is always the same flip."""
        return True

    def apply(self, image: np.ndarray, params: bool) -> np.ndarray:
        """Flip along this class's axis."""
        return cv2.flip(cv_compatible(image), self._flip_code)


@dataclass(frozen=True)
class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right (along the width axis) with probability ``p``.

    Parameters
    ----------
    p : float
        Probability of flipping. Default 0.5, as torchvision's
        ``RandomHorizontalFlip`` and DINOv2's geometric augmentation
        (``dinov2/data/augmentations.py``, ``RandomHorizontalFlip(p=0.5)``).
    """

    _flip_code = 1


@dataclass(frozen=True)
class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom (along the height axis) with probability ``p`` (default 0.5, as torchvision)."""

    _flip_code = 0


@dataclass(frozen=True)
class RandomRotate90(RandomTransform):
    """Rotate by ``k`` quarter turns, ``k`` uniform in {0, 1, 2, 3}, with probability ``p``.

    As albumentations' ``RandomRotate90``, ``k`` includes 0 so that with
    ``p=1`` the orientation is uniform over the four rotations; combined with
    :class:`RandomHorizontalFlip` (p=0.5) this gives all eight dihedral
    orientations with equal probability. A non-square image has its height and
    width swapped for odd ``k``.

    Parameters
    ----------
    p : float
        Probability of drawing a rotation (default 1.0).
    """

    p: float = 1.0

    def __post_init__(self) -> None:
        check_probability(self.p)

    def sample_params(self, rng: np.random.Generator) -> int:
        """Draw the number of counter-clockwise quarter turns."""
        return int(rng.integers(0, 4))

    def apply(self, image: np.ndarray, params: int) -> np.ndarray:
        """Rotate counter-clockwise by ``params`` quarter turns."""
        return np.rot90(image, k=int(params), axes=(0, 1))
