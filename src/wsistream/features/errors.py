"""Errors of feature extraction; each names the file it concerns and says why.

They subclass :class:`wsistream.errors.WsiStreamError`, so ``.slide_path``
holds the offending path (a weights folder, a checkpoint, an output folder or
a slide) and ``.reason`` the cause; messages survive DataLoader workers.
"""

from __future__ import annotations

from typing import Any

from wsistream.errors import WsiStreamError
from wsistream.features.formats import FeatureFileError


class EncoderLoadError(WsiStreamError):
    """Encoder weights are missing, unreadable, or do not fit the requested architecture."""


class CheckpointKeyError(EncoderLoadError):
    """A checkpoint conversion would leave missing or unexpected parameters (both are listed)."""

    def __init__(self, path: str | None, missing: list[str], unexpected: list[str], hint: str = "") -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {', '.join(self.unexpected)}")
        reason = "checkpoint does not match the architecture; " + "; ".join(parts)
        super().__init__(path, reason + (f" ({hint})" if hint else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (CheckpointKeyError, (self.slide_path, self.missing, self.unexpected))


class OutputNotWritableError(WsiStreamError):
    """The output folder cannot be created or written."""


__all__ = ["CheckpointKeyError", "EncoderLoadError", "FeatureFileError", "OutputNotWritableError"]
