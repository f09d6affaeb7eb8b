"""Macenko stain normalisation.

M. Macenko et al., "A method for normalizing histology slides for
quantitative analysis", ISBI 2009, pp. 1107-1110. The estimation follows the
paper and its widely used reference implementation (M. Veta's
``normalizeStaining.m``, ported by torchstain/HEnorm): optical density
``OD = -log((I + 1) / Io)``; drop near-transparent pixels (any channel's OD
``< beta``); take the plane of the two largest eigenvectors of the OD
covariance; the stain vectors are the directions at the ``alpha`` and
``100 - alpha`` percentiles of the pixels' angle in that plane (haematoxylin
= the one with the larger red OD); concentrations by least squares; their
99th percentile is the "maximum concentration". Normalising re-expresses an
image's concentrations, rescaled to the reference's maxima, with the
reference's stain vectors.

Usage::

    norm = MacenkoNormalizer().fit(reference_rgb)   # uint8 H×W×3 reference tile
    out = norm.normalize(patch)                      # or norm(patch, rng) in a chain
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from wsistream.transforms.base import (
    RandomTransform,
    check_finite,
    check_image,
    check_probability,
    float_to_uint8,
)

__all__ = ["MacenkoNormalizer", "MacenkoStains", "estimate_macenko"]

#: Reference H and E OD vectors (columns) and 99th-percentile concentrations of
#: ``normalizeStaining.m`` (the defaults torchstain and HEnorm also use).
DEFAULT_STAIN_MATRIX = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
DEFAULT_MAX_CONCENTRATIONS = (1.9705, 1.0308)


@dataclass(frozen=True)
class MacenkoStains:
    """Stain vectors (3×2, columns H then E, unit length) and 99th-percentile concentrations (2,)."""

    stain_matrix: np.ndarray
    max_concentrations: np.ndarray


def _optical_density(image: np.ndarray, io: float) -> np.ndarray:
    od: np.ndarray = -np.log((image.reshape(-1, 3).astype(np.float32) + 1.0) / np.float32(io))
    return od


def estimate_macenko(
    image: np.ndarray, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15, min_pixels: int = 100
) -> MacenkoStains | None:
    """Estimate an image's H&E stain vectors and maximum concentrations (Macenko 2009).

    Parameters
    ----------
    image : np.ndarray
        uint8 H×W×3 RGB.
    io : float
        Transmitted (background) light intensity; 240 as the reference implementation.
    alpha : float
        Percentile of the angle distribution taken as the extreme stain
        directions (1 = robust min/max), as the paper.
    beta : float
        OD threshold below which a pixel counts as background (0.15).
    min_pixels : int
        Fewer stained pixels than this and the estimate is unreliable.

    Returns
    -------
    MacenkoStains or None
        ``None`` when the image has too little stain (e.g. blank glass).
    """
    od = _optical_density(image, io)
    stained = od[np.all(od >= beta, axis=1)]
    if stained.shape[0] < max(min_pixels, 3):
        return None
    cov = np.cov(stained.astype(np.float64), rowvar=False)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    plane = vecs[:, 1:3]
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = stained @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    v_lo = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_hi = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v_lo, v_hi] if v_lo[0] > v_hi[0] else [v_hi, v_lo], axis=1)
    he /= np.linalg.norm(he, axis=0, keepdims=True)
    conc = np.linalg.pinv(he) @ od.T.astype(np.float64)
    max_c = np.percentile(conc, 99, axis=1)
    if not np.all(np.isfinite(he)) or not np.all(max_c > 1e-6):
        return None
    return MacenkoStains(he, max_c)


@dataclass(frozen=True)
class MacenkoNormalizer(RandomTransform):
    """Map an image's H&E appearance onto a reference's (Macenko et al. 2009).

    Construct with the reference implementation's default target, or fit the
    target on a reference tile with :meth:`fit` (returns a new normaliser;
    instances are immutable). As a :class:`~wsistream.transforms.PatchTransform`
    it is deterministic; ``rng`` only decides whether it fires (``p``).
    Images with too little stain to estimate their vectors (blank glass,
    pen-free background) are returned unchanged.

    Parameters
    ----------
    stain_matrix : 3×2 nested tuple
        Target H and E optical-density vectors (columns).
    max_concentrations : (float, float)
        Target 99th-percentile H and E concentrations.
    io, alpha, beta : float
        See :func:`estimate_macenko` (240, 1, 0.15 as the reference implementation).
    p : float
        Probability of normalising (default 1.0).
    """

    stain_matrix: tuple[tuple[float, float], ...] = DEFAULT_STAIN_MATRIX
    max_concentrations: tuple[float, float] = DEFAULT_MAX_CONCENTRATIONS
    io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    p: float = 1.0
    _he: np.ndarray = field(init=False, repr=False, compare=False)  # stain_matrix as float32 (3×2)
    _max_c: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_probability(self.p)
        he = np.asarray(self.stain_matrix, dtype=np.float64)
        max_c = np.asarray(self.max_concentrations, dtype=np.float64)
        if he.shape != (3, 2) or not np.all(np.isfinite(he)):
            raise ValueError(f"stain_matrix must be 3×2 finite (columns H, E), got shape {he.shape}")
        if max_c.shape != (2,) or not np.all(np.isfinite(max_c)) or not np.all(max_c > 0):
            raise ValueError(f"max_concentrations must be two positive numbers, got {self.max_concentrations!r}")
        if check_finite(self.io, "io") <= 0:
            raise ValueError(f"io must be > 0 (background intensity, 240 typical), got {self.io}")
        if not 0.0 <= check_finite(self.alpha, "alpha") < 50.0:
            raise ValueError(f"alpha is a percentile in [0, 50), got {self.alpha}; the paper uses 1")
        if check_finite(self.beta, "beta") < 0:
            raise ValueError(f"beta is an OD threshold >= 0, got {self.beta}; the paper uses 0.15")
        object.__setattr__(self, "stain_matrix", tuple(tuple(float(v) for v in row) for row in he.tolist()))
        object.__setattr__(self, "max_concentrations", tuple(float(v) for v in max_c))
        object.__setattr__(self, "_he", he.astype(np.float32))
        object.__setattr__(self, "_max_c", max_c)

    def estimate(self, image: np.ndarray) -> MacenkoStains | None:
        """Stain vectors and maximum concentrations of ``image`` with this normaliser's settings."""
        check_image(image)
        return estimate_macenko(image, self.io, self.alpha, self.beta)

    def fit(self, reference: np.ndarray) -> MacenkoNormalizer:
        """Return a normaliser whose target is ``reference``'s stains.

        Raises
        ------
        ValueError
            If ``reference`` has too little stain to estimate (pick a tile
            with tissue; at least 100 pixels with OD >= ``beta``).
        """
        stains = self.estimate(reference)
        if stains is None:
            raise ValueError(
                "reference has too little stained tissue to estimate H&E vectors; "
                f"pass a tissue-rich tile (>= 100 pixels with OD >= beta={self.beta})"
            )
        return replace(
            self,
            stain_matrix=tuple(map(tuple, stains.stain_matrix.tolist())),
            max_concentrations=tuple(stains.max_concentrations.tolist()),
        )

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Normalise ``image`` to the target (returned unchanged if its stains cannot be estimated)."""
        check_image(image)
        src = estimate_macenko(image, self.io, self.alpha, self.beta)
        if src is None:
            return image
        od = _optical_density(image, self.io).T.astype(np.float64)  # 3×N
        conc = np.linalg.pinv(src.stain_matrix) @ od
        conc *= (self._max_c / src.max_concentrations)[:, None]
        od_out = self._he @ conc.astype(np.float32)  # 3×N
        np.maximum(od_out, np.float32(np.log(self.io / 255.0)), out=od_out)  # brighter than 255 saturates
        out = np.float32(self.io) * np.exp(-od_out)
        return float_to_uint8(np.ascontiguousarray(out.T)).reshape(image.shape)

    def sample_params(self, rng: np.random.Generator) -> bool:
        """Nothing to draw: normalisation is deterministic."""
        return True

    def apply(self, image: np.ndarray, params: bool) -> np.ndarray:
        """Normalise (see :meth:`normalize`)."""
        return self.normalize(image)
