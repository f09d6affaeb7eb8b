"""Declarative SSL view specifications."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from wsistream.transforms.base import ComposeTransforms, PatchTransform
from wsistream.views.crops import Crop

__all__ = ["ViewConfig", "validate_views"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ViewConfig:
    """One kind of SSL view: a crop, then a transform chain, ``count`` independent copies.

    Copies are named ``f"{name}_{index_offset + i}"`` for ``i`` in
    ``range(count)``, always suffixed (``count=1`` gives ``"name_0"``).
    ``index_offset`` lets views with *different* chains share a prefix: DINOv2's
    two global crops differ (blur vs blur + solarize), so
    :func:`~wsistream.views.dinov2_multicrop` builds them as
    ``ViewConfig("global", ..., count=1)`` and
    ``ViewConfig("global", ..., count=1, index_offset=1)``, giving
    ``"global_0"`` and ``"global_1"``. The generated names must be unique
    across a view list (:func:`validate_views`), not the ``name`` fields.

    Parameters
    ----------
    name : str
        Prefix of the view keys: letters, digits, ``_``, ``.``, ``-``; starts
        with a letter or digit.
    crop : Crop or None
        Applied first (e.g. :class:`~wsistream.views.RandomResizedCrop`);
        ``None`` keeps the source patch's size.
    transforms : PatchTransform, sequence of PatchTransform, or None
        Applied in order after the crop. A sequence is stored as a
        :class:`~wsistream.transforms.ComposeTransforms`.
    count : int
        Number of independently sampled copies (>= 1).
    mpp_override : float or None
        Render this view from a patch read at this µm/px around the same
        centre (same pixel size) instead of the primary patch; ``None`` = the
        primary patch.
    index_offset : int
        First suffix index (>= 0).
    """

    name: str
    crop: Crop | None = None
    transforms: PatchTransform | Sequence[PatchTransform] | None = None
    count: int = 1
    mpp_override: float | None = None
    index_offset: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"view name must be a non-empty string of letters, digits, '_', '.' or '-' "
                f"(starting with a letter or digit), got {self.name!r}; e.g. name='global'"
            )
        if self.crop is not None and not isinstance(self.crop, Crop):
            raise ValueError(
                f"crop must be a Crop (RandomResizedCrop, CenterCrop, Resize) or None, got "
                f"{type(self.crop).__name__}; put other ops in transforms="
            )
        t = self.transforms
        if t is not None and not isinstance(t, PatchTransform):
            if isinstance(t, (str, bytes)) or not isinstance(t, Sequence):
                raise ValueError(
                    f"transforms must be a PatchTransform, a sequence of them, or None; got {type(t).__name__}"
                )
            object.__setattr__(self, "transforms", ComposeTransforms(tuple(t)) if len(t) else None)
        for attr in ("count", "index_offset"):  # accept numpy integers, store plain ints
            value = getattr(self, attr)
            if isinstance(value, np.integer):
                object.__setattr__(self, attr, int(value))
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(
                f"view {self.name!r}: count must be an int >= 1, got {self.count!r}; "
                "drop the view from the list instead of passing count=0"
            )
        if isinstance(self.index_offset, bool) or not isinstance(self.index_offset, int) or self.index_offset < 0:
            raise ValueError(f"view {self.name!r}: index_offset must be an int >= 0, got {self.index_offset!r}")
        m = self.mpp_override
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0):
            raise ValueError(
                f"view {self.name!r}: mpp_override must be a positive µm/px (e.g. 1.0 for ~10x) or None, got {m!r}"
            )

    @property
    def chain(self) -> PatchTransform | None:
        """``transforms`` as one transform: ``__post_init__`` has composed a sequence already."""
        return cast("PatchTransform | None", self.transforms)

    def view_names(self) -> list[str]:
        """Keys of this view's copies: ``["name_0", "name_1", ...]`` (shifted by ``index_offset``)."""
        return [f"{self.name}_{self.index_offset + i}" for i in range(self.count)]

    @property
    def size(self) -> int | None:
        """Side of the output when a crop fixes it, else ``None`` (the source patch's size)."""
        return None if self.crop is None else int(self.crop.size)


def validate_views(views: Sequence[ViewConfig]) -> tuple[ViewConfig, ...]:
    """Check a view list and return it as a tuple.

    Raises
    ------
    ValueError
        If the list is empty, holds something other than :class:`ViewConfig`,
        or two views would produce the same key.
    """
    if isinstance(views, ViewConfig):
        views = (views,)
    if isinstance(views, (str, bytes)) or not isinstance(views, Sequence):
        raise ValueError(f"views must be a sequence of ViewConfig, got {type(views).__name__}")
    if len(views) == 0:
        raise ValueError("views is empty; pass at least one ViewConfig, or views=None for no SSL views")
    seen: dict[str, int] = {}
    for i, v in enumerate(views):
        if not isinstance(v, ViewConfig):
            raise ValueError(f"views[{i}] is a {type(v).__name__}, not a ViewConfig")
        for key in v.view_names():
            if key in seen:
                raise ValueError(
                    f"duplicate view key {key!r} (views[{seen[key]}] and views[{i}]); give the views "
                    "different names, or use index_offset to continue a name's numbering"
                )
            seen[key] = i
    return tuple(views)
