"""Which level-0 µm/px a slide is streamed with, and where it came from.

A missing or implausible µm/px (absent, zero, NaN, a 72-dpi TIFF default) is
never guessed: it is an error whenever a physical resolution is asked,
unless the user states a per-slide override or an explicit fallback.  The
source used is recorded in ``SlideProperties.mpp_source``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wsistream.backends.base import plausible_mpp
from wsistream.types import SlideProperties


@dataclass(frozen=True)
class MppPolicy:
    """Per-slide µm/px overrides and an optional fallback.

    Parameters
    ----------
    overrides : mapping
        ``{slide: mpp}``; a key matches the full path, the file name or the
        file stem.  An override wins over the file's own value.
    fallback : float, optional
        µm/px for slides whose file has no plausible value.
    """

    overrides: Mapping[str, float] = field(default_factory=dict)
    fallback: float | None = None

    def __post_init__(self) -> None:
        for key, value in self.overrides.items():
            if plausible_mpp(value) is None:
                raise ValueError(f"mpp override for {key!r} is {value!r}; pass a µm/px in (0.05, 20], e.g. 0.5")
        if self.fallback is not None and plausible_mpp(self.fallback) is None:
            raise ValueError(f"mpp_fallback={self.fallback!r}; pass a µm/px in (0.05, 20], e.g. 0.5, or None")

    @classmethod
    def build(cls, overrides: Mapping[str, float] | str | os.PathLike[str] | None, fallback: float | None) -> MppPolicy:
        """From a mapping or a CSV file with columns ``slide,mpp`` (header required)."""
        if overrides is None:
            return cls({}, fallback)
        if isinstance(overrides, Mapping):
            return cls({str(k): float(v) for k, v in overrides.items()}, fallback)
        with open(overrides, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows and not {"slide", "mpp"} <= set(rows[0]):
            raise ValueError(f"{overrides}: mpp CSV needs a header with columns 'slide' and 'mpp'")
        return cls({r["slide"]: float(r["mpp"]) for r in rows}, fallback)

    def apply(self, props: SlideProperties) -> SlideProperties:
        """``props`` with the µm/px this policy assigns and its source."""
        path = Path(props.slide_path)
        for key in (props.slide_path, path.name, path.stem):
            if key in self.overrides:
                return dataclasses.replace(props, mpp_level0=float(self.overrides[key]), mpp_source="override")
        if props.mpp_level0 is not None:
            return props
        if self.fallback is not None:
            return dataclasses.replace(props, mpp_level0=float(self.fallback), mpp_source="fallback")
        return props
