"""Render a patch into its named SSL views."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wsistream.transforms.base import TraceEvent, check_image
from wsistream.views.config import ViewConfig, validate_views

__all__ = ["render_views"]


def render_views(
    image: np.ndarray,
    views: Sequence[ViewConfig],
    rng: np.random.Generator,
    read_at_mpp: Callable[[float], np.ndarray] | None = None,
    *,
    trace: dict[str, list[TraceEvent]] | None = None,
) -> dict[str, np.ndarray]:
    """Produce every copy of every view of one patch.

    Views are rendered in list order and, within a view, copy 0 first; each
    copy draws its crop and then its transforms from ``rng``, so one seed gives
    the same views on every run.

    Parameters
    ----------
    image : np.ndarray
        The primary patch, uint8 H×W×3 RGB. Never modified.
    views : sequence of ViewConfig
        Checked with :func:`~wsistream.views.validate_views`.
    rng : np.random.Generator
        The only source of randomness.
    read_at_mpp : callable, optional
        ``read_at_mpp(mpp)`` returns a uint8 H×W×3 patch read around the same
        centre at ``mpp`` µm/px; called once per distinct ``mpp_override``
        (and only if a view has one).
    trace : dict, optional
        When given, ``trace[key]`` is set to the list of
        :class:`~wsistream.transforms.TraceEvent` s of that view copy (crop
        box, which ops fired, their parameters), for logging and tests.

    Returns
    -------
    dict of str to np.ndarray
        ``{"name_i": view}``, uint8, C-contiguous, H×W×3, never sharing memory
        with ``image``.

    Raises
    ------
    ValueError
        On an invalid view list or image, or a view with ``mpp_override``
        when ``read_at_mpp`` is ``None``.
    """
    views = validate_views(views)
    check_image(image)
    sources: dict[float, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for view in views:
        if view.mpp_override is None:
            source = image
        else:
            if read_at_mpp is None:
                raise ValueError(
                    f"view {view.name!r} has mpp_override={view.mpp_override} but no read_at_mpp was given; "
                    "pass read_at_mpp (the pipeline does) or drop mpp_override"
                )
            if view.mpp_override not in sources:
                src = read_at_mpp(view.mpp_override)
                check_image(src, f"read_at_mpp({view.mpp_override}) result")
                sources[view.mpp_override] = src
            source = sources[view.mpp_override]
        for key in view.view_names():
            events: list[TraceEvent] | None = [] if trace is not None else None
            result = source
            if view.crop is not None:
                result = view.crop(result, rng) if events is None else view.crop.trace_call(result, rng, events)
            if view.chain is not None:
                t = view.chain
                result = t(result, rng) if events is None else t.trace_call(result, rng, events)
            check_image(result, f"view {key!r} output")
            result = np.ascontiguousarray(result)
            if np.may_share_memory(result, source):
                result = result.copy()
            out[key] = result
            if trace is not None and events is not None:
                trace[key] = events
    return out
