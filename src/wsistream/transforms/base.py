"""The patch-transform interface every augmentation implements.

A transform acts on a ``uint8`` H×W×3 RGB numpy array and takes **all** of its
randomness from the ``rng`` argument (a :class:`numpy.random.Generator`), so a
seeded generator reproduces a run bit for bit and worker processes never share
hidden global state. Outputs stay ``uint8``: conversion to float and
normalisation happen later, on the accelerator.

Random transforms split into :meth:`RandomTransform.sample` (draw whether the
op fires and its parameters; ``None`` = did not fire) and
:meth:`RandomTransform.apply` (deterministic). :meth:`PatchTransform.trace_call`
records what each op did as :class:`TraceEvent` s, which is how the tests
measure the firing rate of every op and how a preview can show crop boxes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "ComposeTransforms",
    "PatchTransform",
    "RandomTransform",
    "TraceEvent",
    "check_finite",
    "check_image",
    "check_probability",
    "cv_compatible",
    "float_to_uint8",
    "uniform",
]


@dataclass(frozen=True)
class TraceEvent:
    """What one op did to one image.

    Attributes
    ----------
    op : str
        Class name of the transform.
    fired : bool or None
        Whether the op changed (or could have changed) the image; ``None`` when
        the transform does not report it (a user transform without ``sample``).
    params : Any
        The sampled parameters (crop box, blur sigma, jitter factors...), or
        ``None`` when the op did not fire.
    """

    op: str
    fired: bool | None
    params: Any = None


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """``float(rng.uniform(low, high))``, bit for bit, at a third of the cost.

    NumPy's ``Generator.uniform`` computes ``low + (high - low) * next_double``,
    the same double ``rng.random()`` returns, so the stream and every value
    are unchanged (``tests/transforms/test_transform_base.py`` checks it);
    skipping the array machinery matters because a DINOv2 patch draws ~60 of them.
    """
    return low + (high - low) * rng.random()


def check_probability(p: float, name: str = "p") -> None:
    """Raise ``ValueError`` unless ``0 <= p <= 1``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= float(p) <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}; pass e.g. {name}=0.5")


def check_image(image: np.ndarray, what: str = "image") -> None:
    """Raise ``ValueError`` unless ``image`` is a ``uint8`` H×W×3 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{what} must be a uint8 H×W×3 RGB array, got dtype={image.dtype} shape={image.shape}; "
            "convert with np.asarray(img, dtype=np.uint8)[..., :3]"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} is empty (shape {image.shape})")


def check_finite(value: float, name: str) -> float:
    """Return ``float(value)``; raise ``ValueError`` if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def cv_compatible(image: np.ndarray) -> np.ndarray:
    """Return ``image`` if OpenCV can read it in place (interleaved pixels, positive row stride), else a copy.

    Flipped or rotated numpy views have negative or transposed strides that
    OpenCV rejects.
    """
    s = image.strides
    if image.ndim == 3 and s[2] == image.itemsize and s[1] == image.shape[2] * image.itemsize and s[0] > 0:
        return image
    return np.ascontiguousarray(image)


def float_to_uint8(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Round ``x * scale`` to the nearest uint8 (half to even), saturating at 0 and 255.

    ``x`` must be >= 0 (OpenCV's ``convertScaleAbs``; one allocation, unlike
    ``np.rint(...).astype``).
    """
    return cv2.convertScaleAbs(x, alpha=scale)


class PatchTransform(ABC):
    """Acts on a uint8 H×W×3 RGB numpy array; all randomness from the rng argument.

    Implementations must not modify ``image`` in place and must not use any
    global random state (no ``np.random.*`` module functions, no
    ``random``, no OpenCV RNG seeding).
    """

    @abstractmethod
    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return the transformed image (uint8 H×W×3; may be a view of ``image``)."""

    def trace_call(self, image: np.ndarray, rng: np.random.Generator, events: list[TraceEvent]) -> np.ndarray:
        """Like ``__call__``, appending a :class:`TraceEvent` per op to ``events``.

        Consumes exactly the same random numbers as ``__call__``. The default
        records an opaque event (``fired=None``); subclasses that can tell
        whether they fired override it.
        """
        out = self(image, rng)
        events.append(TraceEvent(type(self).__name__, None, None))
        return out


class RandomTransform(PatchTransform):
    """A transform that fires with probability ``p`` and then draws its parameters.

    Subclasses are frozen dataclasses with a ``p`` field; they implement
    :meth:`sample_params` and :meth:`apply`. The firing test is
    ``rng.random() < p`` (torchvision's ``torch.rand(1) < p``), drawn on every
    call, also for ``p`` of 0 or 1, so the random stream does not depend on
    ``p``.
    """

    p: float

    def sample(self, rng: np.random.Generator) -> Any | None:
        """Draw whether the op fires and, if it does, its parameters (``None`` = no-op)."""
        if not rng.random() < self.p:
            return None
        return self.sample_params(rng)

    @abstractmethod
    def sample_params(self, rng: np.random.Generator) -> Any:
        """Draw the op's parameters, given that it fires (never ``None``)."""

    @abstractmethod
    def apply(self, image: np.ndarray, params: Any) -> np.ndarray:
        """Apply the op with fixed ``params`` (deterministic)."""

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample, then apply (or return ``image`` unchanged when the op does not fire)."""
        params = self.sample(rng)
        return image if params is None else self.apply(image, params)

    def trace_call(self, image: np.ndarray, rng: np.random.Generator, events: list[TraceEvent]) -> np.ndarray:
        """Like ``__call__``, recording whether the op fired and with which parameters."""
        params = self.sample(rng)
        events.append(TraceEvent(type(self).__name__, params is not None, params))
        return image if params is None else self.apply(image, params)


@dataclass(frozen=True)
class ComposeTransforms(PatchTransform):
    """Apply ``transforms`` in order (each draws from the same ``rng``).

    Parameters
    ----------
    transforms : sequence of PatchTransform
        The chain; stored as a tuple so the composition is hashable and
        picklable.
    """

    transforms: Sequence[PatchTransform]

    def __post_init__(self) -> None:
        if isinstance(self.transforms, PatchTransform):
            object.__setattr__(self, "transforms", (self.transforms,))
        if not isinstance(self.transforms, Sequence) or isinstance(self.transforms, (str, bytes)):
            raise ValueError(f"transforms must be a sequence of PatchTransform, got {type(self.transforms).__name__}")
        chain = tuple(self.transforms)
        for i, t in enumerate(chain):
            if not isinstance(t, PatchTransform):
                raise ValueError(
                    f"transforms[{i}] is a {type(t).__name__}, not a PatchTransform; wrap plain "
                    "functions in a PatchTransform subclass whose __call__(image, rng) uses only rng"
                )
        object.__setattr__(self, "transforms", chain)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply every transform in order."""
        for t in self.transforms:
            image = t(image, rng)
        return image

    def trace_call(self, image: np.ndarray, rng: np.random.Generator, events: list[TraceEvent]) -> np.ndarray:
        """Apply every transform in order, recording one event per leaf op."""
        for t in self.transforms:
            image = t.trace_call(image, rng, events)
        return image

    def __len__(self) -> int:
        return len(self.transforms)
