"""Combine several detectors (intersection or union of their masks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from wsistream.tissue.base import TissueDetector, TissueMask


@dataclass(frozen=True)
class CombinedTissueDetector(TissueDetector):
    """Tissue where all (``mode="and"``) or any (``mode="or"``) of ``detectors`` find it."""

    detectors: Sequence[TissueDetector]
    mode: Literal["and", "or"] = "and"

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ValueError("detectors is empty; pass at least one TissueDetector")
        if self.mode not in ("and", "or"):
            raise ValueError(f"mode={self.mode!r} is not supported; pass 'and' or 'or'")
        object.__setattr__(self, "detectors", tuple(self.detectors))

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Combine the member masks cell by cell."""
        masks = [d.detect(overview, downsample).mask for d in self.detectors]
        combined = np.logical_and.reduce(masks) if self.mode == "and" else np.logical_or.reduce(masks)
        return TissueMask(combined, float(downsample[0]), float(downsample[1]))
