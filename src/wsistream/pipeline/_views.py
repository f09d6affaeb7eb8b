"""Checks of a pipeline's view settings, done once at construction rather than mid-stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsistream.views import ViewConfig, ViewPlanner


def prepare_views(
    views: Sequence[ViewConfig] | None, view_rendering: str, patch_size: int
) -> tuple[tuple[ViewConfig, ...] | None, ViewPlanner | None]:
    """Validated views and, for ``view_rendering="device"``, the planner the workers draw with.

    Raises ``ValueError`` for an invalid view list, a centre crop larger than
    the patch, an unknown ``view_rendering``, device rendering without views,
    or an op the device cannot replay (named).
    """
    if view_rendering not in ("cpu", "device"):
        raise ValueError(f"view_rendering must be 'cpu' or 'device', got {view_rendering!r}")
    if views is None:
        if view_rendering == "device":
            raise ValueError("view_rendering='device' needs views=[...]; drop it or pass the views to render")
        return None, None
    from wsistream.views import CenterCrop, ViewPlanner, validate_views

    checked = tuple(validate_views(views))
    for view in checked:
        if isinstance(view.crop, CenterCrop) and view.crop.size > patch_size:
            raise ValueError(
                f"view {view.name!r}: CenterCrop({view.crop.size}) is larger than the {patch_size}-px patch; "
                f"pass a crop size <= {patch_size} or a larger sampler patch_size"
            )
    return checked, ViewPlanner(checked) if view_rendering == "device" else None
