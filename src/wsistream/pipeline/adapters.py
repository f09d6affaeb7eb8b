"""Dataset adapters (metadata from slide paths) and post-read patch filters."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np


class DatasetAdapter(ABC):
    """Derives dataset metadata (dataset name, patient id, extras) from a slide path."""

    @abstractmethod
    def parse(self, slide_path: str) -> dict[str, Any]:
        """Return ``{"dataset_name": ..., "patient_id": ..., **extra}`` for ``slide_path``."""


class TCGAAdapter(DatasetAdapter):
    """TCGA barcodes: ``TCGA-TSS-PART-SAMPLE...`` → patient ``TCGA-TSS-PART`` and sample type code."""

    _BARCODE = re.compile(r"(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-(\d{2})[A-Z]?)?", re.IGNORECASE)

    def parse(self, slide_path: str) -> dict[str, Any]:
        """Parse the barcode in the file name; no match gives an empty patient id."""
        match = self._BARCODE.search(Path(slide_path).name)
        if match is None:
            return {"dataset_name": "TCGA", "patient_id": None}
        out: dict[str, Any] = {"dataset_name": "TCGA", "patient_id": match.group(1).upper()}
        if match.group(2):
            out["sample_type"] = match.group(2)
        return out

    def __repr__(self) -> str:
        return "TCGAAdapter()"


class PatchFilter(ABC):
    """Accepts or rejects a patch after it is read (pixel-level QC the mask cannot do)."""

    @abstractmethod
    def accept(self, image: np.ndarray) -> bool:
        """True to keep the uint8 H×W×3 patch."""
