"""Gaussian blur as DINOv2 applies it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wsistream.transforms.base import RandomTransform, check_finite, check_probability, uniform

__all__ = ["GaussianBlur", "gaussian_kernel1d"]


def gaussian_kernel1d(kernel_size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps at integer offsets ``-(k-1)/2 .. (k-1)/2``.

    The same kernel as torchvision's ``F.gaussian_blur`` (``_get_gaussian_kernel1d``).
    """
    half = (kernel_size - 1) / 2.0
    x = np.linspace(-half, half, kernel_size, dtype=np.float64)
    pdf = np.exp(-0.5 * (x / sigma) ** 2)
    return np.asarray((pdf / pdf.sum()).astype(np.float32))


@dataclass(frozen=True)
class GaussianBlur(RandomTransform):
    """Blur with a 9-tap Gaussian of sigma uniform in ``[radius_min, radius_max]``, with probability ``p``.

    DINOv2's ``GaussianBlur`` (``dinov2/data/transforms.py``, lines 12-21) is
    torchvision's ``GaussianBlur(kernel_size=9, sigma=(radius_min, radius_max))``
    wrapped in ``RandomApply``; torchvision draws sigma uniformly, builds the
    kernel of :func:`gaussian_kernel1d`, pads by reflection (without repeating
    the edge pixel, i.e. OpenCV's ``BORDER_REFLECT_101``) and rounds back to
    uint8. This class does exactly that, separably, with OpenCV.

    Here ``p`` is the probability that the blur **is applied**. (The released
    DINOv2 wrapper passes ``1 - p`` to ``RandomApply``, inverting it; see
    :func:`wsistream.views.dinov2_multicrop` for how that is handled.)

    Parameters
    ----------
    p : float
        Probability of blurring (default 0.5, DINOv2's default).
    radius_min, radius_max : float
        Range of the Gaussian standard deviation in pixels (DINOv2 defaults
        0.1 and 2.0, after DINO/BYOL).
    kernel_size : int
        Odd kernel width; 9 in DINOv2.
    """

    p: float = 0.5
    radius_min: float = 0.1
    radius_max: float = 2.0
    kernel_size: int = 9

    def __post_init__(self) -> None:
        check_probability(self.p)
        lo = check_finite(self.radius_min, "radius_min")
        hi = check_finite(self.radius_max, "radius_max")
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"need 0 < radius_min <= radius_max, got ({lo}, {hi}); DINOv2 uses radius_min=0.1, radius_max=2.0"
            )
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {k!r}; DINOv2 uses 9")

    def sample_params(self, rng: np.random.Generator) -> float:
        """Draw the blur sigma."""
        return uniform(rng, self.radius_min, self.radius_max)

    def apply(self, image: np.ndarray, params: float) -> np.ndarray:
        """Separable blur with reflect-101 borders."""
        k = gaussian_kernel1d(self.kernel_size, params)
        return cv2.sepFilter2D(np.ascontiguousarray(image), -1, k, k, delta=0.0, borderType=cv2.BORDER_REFLECT_101)
