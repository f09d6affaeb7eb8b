"""Colour deconvolution into haematoxylin/eosin/DAB and HED-space jitter.

The stain matrix is Ruifrok & Johnston's (A. C. Ruifrok and D. A. Johnston,
"Quantification of histochemical staining by color deconvolution", Anal.
Quant. Cytol. Histol. 23(4):291-299, 2001) with the row values and the
optical-density scaling scikit-image uses in ``skimage.color.rgb2hed``
(``log(rgb) / log(1e-6)``, RGB floored at 1e-6), so concentrations here are
comparable with values computed by ``rgb2hed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from wsistream.transforms.base import (
    RandomTransform,
    check_finite,
    check_probability,
    cv_compatible,
    float_to_uint8,
)

__all__ = ["HED_FROM_RGB", "RGB_FROM_HED", "HEDJitter", "hed_to_rgb", "rgb_to_hed"]

#: Rows: optical-density colour of haematoxylin, eosin and DAB (R, G, B), Ruifrok & Johnston 2001.
RGB_FROM_HED = np.array(
    [
        [0.65, 0.70, 0.29],  # haematoxylin
        [0.07, 0.99, 0.11],  # eosin
        [0.27, 0.57, 0.78],  # DAB
    ],
    dtype=np.float64,
)
#: Inverse of :data:`RGB_FROM_HED`: scaled optical density (row vector) -> H, E, D concentrations.
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

_LOG_FLOOR = math.log(1e-6)  # OD of the darkest representable value, the scale unit


def _scaled_od_lut() -> np.ndarray:
    """``log(max(v / 255, 1e-6)) / log(1e-6)`` for every uint8 value ``v`` (0 for white, 1 for black)."""
    v = np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6)
    return (np.log(v) / _LOG_FLOOR).astype(np.float32)


_OD_LUT = _scaled_od_lut()


def rgb_to_hed(image: np.ndarray) -> np.ndarray:
    """Stain concentrations (float32 H×W×3: H, E, D) of a uint8 RGB image.

    As ``skimage.color.rgb2hed`` except that negative concentrations are kept
    (skimage clips them to 0), so that :func:`hed_to_rgb` inverts this exactly
    up to uint8 rounding.
    """
    return _affine(_scaled_od(image), HED_FROM_RGB, np.zeros(3))


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """uint8 RGB image of float H×W×3 stain concentrations (inverse of :func:`rgb_to_hed`)."""
    od = _affine(np.ascontiguousarray(hed, dtype=np.float32), RGB_FROM_HED, np.zeros(3))
    return _od_to_uint8(od)


def _scaled_od(image: np.ndarray) -> np.ndarray:
    return cv2.LUT(cv_compatible(image), _OD_LUT)


def _affine(x: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``x @ matrix + offset`` per pixel (row-vector convention), float32."""
    m = np.concatenate([np.asarray(matrix, np.float64).T, np.asarray(offset, np.float64)[:, None]], axis=1)
    return cv2.transform(x, m.astype(np.float32))


def _od_to_uint8(od: np.ndarray) -> np.ndarray:
    np.maximum(od, 0.0, out=od)  # OD < 0 is brighter than white: saturates to 255 anyway
    od *= np.float32(_LOG_FLOOR)
    rgb = np.exp(od, out=od)
    return float_to_uint8(rgb, 255.0)


@dataclass(frozen=True)
class HEDJitter(RandomTransform):
    """Perturb each stain's concentration: ``s' = alpha * s + beta`` in HED space.

    The HED colour augmentation of Tellez et al. ("Whole-slide mitosis
    detection in H&E breast histology using PHH3 as a reference to train
    distilled stain-invariant convolutional networks", IEEE TMI 37(9), 2018;
    "HED-light" / "HED-strong" in Tellez et al., MedIA 58, 2019): RGB is
    deconvolved into H, E, D concentrations with the Ruifrok-Johnston matrix,
    each channel ``i`` gets ``alpha_i ~ U(1 - sigma, 1 + sigma)`` and
    ``beta_i ~ U(-sigma, sigma)``, and the result is recombined into RGB.
    Because the map is affine in optical density, it is applied as one 3×3
    matrix plus offset per image. Geometry is untouched (a per-pixel colour
    map); ``alpha = 1, beta = 0`` is the identity.

    ``alpha`` is unit-free, but ``beta`` is an absolute concentration, so its
    effect depends on the units of the concentrations, which the papers leave
    implicit. ``units="od"`` (default) measures them in optical density
    (``-ln(I / 255)``; tissue spans about 0.1-2): ``sigma=0.05`` shifts a
    stain by at most 0.05 OD, a light perturbation as "HED-light" intends.
    ``units="skimage"`` uses ``skimage.color.rgb2hed``'s units (OD / 13.8,
    :func:`rgb_to_hed`), as ports built on ``rgb2hed`` do: the same ``beta``
    is 13.8× stronger (``sigma=0.05`` adds up to 0.69 OD of stain, tinting
    even blank glass).

    Parameters
    ----------
    sigma : float
        Jitter strength; 0.05 is Tellez's HED-light setting, 0.2 HED-strong.
    units : {"od", "skimage"}
        Units of ``beta`` (see above).
    p : float
        Probability of jittering (default 1.0).
    """

    sigma: float = 0.05
    units: Literal["od", "skimage"] = "od"
    p: float = 1.0

    def __post_init__(self) -> None:
        check_probability(self.p)
        s = check_finite(self.sigma, "sigma")
        if not 0.0 <= s < 1.0:
            raise ValueError(f"sigma must be in [0, 1), got {s}; Tellez et al. use 0.05 (light) or 0.2 (strong)")
        if self.units not in ("od", "skimage"):
            raise ValueError(f"units must be 'od' or 'skimage', got {self.units!r}")

    def sample_params(self, rng: np.random.Generator) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Draw ``(alpha, beta)``, three values each (H, E, D)."""
        alpha = rng.uniform(1.0 - self.sigma, 1.0 + self.sigma, size=3)
        beta = rng.uniform(-self.sigma, self.sigma, size=3)
        return tuple(float(a) for a in alpha), tuple(float(b) for b in beta)

    def apply(self, image: np.ndarray, params: tuple[tuple[float, ...], tuple[float, ...]]) -> np.ndarray:
        """Apply the affine stain perturbation in optical density."""
        alpha, beta = (np.asarray(v, dtype=np.float64) for v in params)
        if self.units == "od":  # work in skimage units internally: OD / -ln(1e-6)
            beta = beta / -_LOG_FLOOR
        # s = od @ Hinv;  od' = (s * alpha + beta) @ H  =  od @ (Hinv diag(alpha) H) + beta @ H
        matrix = (HED_FROM_RGB * alpha[None, :]) @ RGB_FROM_HED
        offset = beta @ RGB_FROM_HED
        return _od_to_uint8(_affine(_scaled_od(image), matrix, offset))
