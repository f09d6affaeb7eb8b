"""Draw every random choice of a view set without touching pixels, as flat float64 vectors.

Rendering ten DINOv2 views on the CPU costs more than reading the patch
(``docs/performance.md``). :func:`plan_views` draws exactly the random numbers
:func:`~wsistream.views.render_views` would draw (same ``rng`` calls, same
order), but instead of applying each op it writes the op's parameters into a
small vector per view copy. The worker ships the primary patch plus these
vectors (1.4 KB for ten DINOv2 views); :class:`wsistream.torch.DeviceViews` replays
them on the accelerator, batched. Same seed ⇒ the same boxes, flips, jitter
factors, blur sigmas as the CPU path.

Each supported op owns a fixed run of named fields (:data:`OP_FIELDS`); a view
copy's vector is the crop's fields followed by each op's, in chain order, and
:func:`plan_layout` says where each run starts. A flag field is 1.0 when the op
fired; a ColorJitter factor that is disabled in the config is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsistream.transforms.base import ComposeTransforms, PatchTransform
from wsistream.transforms.blur import GaussianBlur
from wsistream.transforms.color import ColorJitter, ColorJitterParams, RandomGrayscale, RandomSolarize
from wsistream.transforms.geometric import RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from wsistream.transforms.stain import HEDJitter
from wsistream.views.config import ViewConfig, validate_views
from wsistream.views.crops import Crop, CropBox

__all__ = ["OP_FIELDS", "PlannedOp", "ViewPlanner", "device_chain", "plan_layout", "plan_views", "render_plan"]

#: The parameter fields each device-capable op writes, in order.
OP_FIELDS: dict[type, tuple[str, ...]] = {
    Crop: ("top", "left", "height", "width"),
    RandomHorizontalFlip: ("fired",),
    RandomVerticalFlip: ("fired",),
    RandomRotate90: ("fired", "quarter_turns"),
    ColorJitter: ("fired", "order0", "order1", "order2", "order3", "brightness", "contrast", "saturation", "hue"),
    RandomGrayscale: ("fired",),
    GaussianBlur: ("fired", "sigma"),
    RandomSolarize: ("fired",),
    HEDJitter: ("fired", "alpha_h", "alpha_e", "alpha_d", "beta_h", "beta_e", "beta_d"),
}

#: How :meth:`PlannedOp.draw` packs each op's parameters; any other op is a single "fired" flag.
_KINDS = (
    (Crop, "crop"),
    (ColorJitter, "jitter"),
    (GaussianBlur, "blur"),
    (RandomRotate90, "rotate"),
    (HEDJitter, "hed"),
)


@dataclass(frozen=True)
class PlannedOp:
    """One op of a view chain and where its fields sit in the plan vector."""

    op: PatchTransform
    offset: int
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kind", next((k for cls, k in _KINDS if isinstance(self.op, cls)), "flag"))

    def column(self, name: str) -> int:
        """Index of field ``name`` in the plan vector."""
        return self.offset + self.fields.index(name)

    def draw(self, vector: np.ndarray, rng: np.random.Generator, height: int, width: int) -> None:
        """Draw this op's parameters from ``rng`` (as rendering would) into its fields of ``vector``."""
        kind, i = self._kind, self.offset  # type: ignore[attr-defined]
        if kind == "crop":
            box = self.op.sample_box(rng, height, width)  # type: ignore[attr-defined]
            vector[i : i + 4] = (box.top, box.left, box.height, box.width)
            return
        params = self.op.sample(rng)  # type: ignore[attr-defined]
        if params is None:
            vector[i : i + len(self.fields)] = 0.0
        elif kind == "jitter":
            factors = (params.brightness, params.contrast, params.saturation, params.hue)
            vector[i : i + 9] = (1.0, *params.order, *(np.nan if f is None else f for f in factors))
        elif kind in ("blur", "rotate"):
            vector[i : i + 2] = (1.0, params)
        elif kind == "hed":
            vector[i : i + 7] = (1.0, *params[0], *params[1])
        else:
            vector[i] = 1.0

    def unpack(self, vector: np.ndarray) -> Any:
        """The op's parameters as its ``apply`` takes them (``None`` = did not fire): :meth:`draw` inverted."""
        kind, v = self._kind, vector[self.offset : self.offset + len(self.fields)]  # type: ignore[attr-defined]
        if kind == "crop":
            return CropBox(*(int(t) for t in v))
        if v[0] == 0.0:
            return None
        if kind == "jitter":
            return ColorJitterParams(tuple(int(t) for t in v[1:5]), *(None if np.isnan(f) else float(f) for f in v[5:]))
        if kind == "blur":
            return float(v[1])
        if kind == "rotate":
            return int(v[1])
        if kind == "hed":
            return tuple(float(t) for t in v[1:4]), tuple(float(t) for t in v[4:7])
        return True


def _fields(op: PatchTransform) -> tuple[str, ...]:
    for cls, fields in OP_FIELDS.items():
        if type(op) is cls or (cls is Crop and isinstance(op, Crop)):
            return fields
    supported = ", ".join(sorted(c.__name__ for c in OP_FIELDS))
    raise ValueError(
        f"{type(op).__name__} cannot be replayed on the device (supported: {supported}); "
        "render these views on the CPU (view_rendering='cpu') or drop the op"
    )


def device_chain(view: ViewConfig) -> tuple[PatchTransform, ...]:
    """The view's ops in order (crop first), flattened; ``ValueError`` if one cannot run on the device."""
    if view.mpp_override is not None:
        raise ValueError(
            f"view {view.name!r} has mpp_override={view.mpp_override}: it needs a second read, which the device "
            "path does not do; render on the CPU (view_rendering='cpu')"
        )
    ops: list[PatchTransform] = [] if view.crop is None else [view.crop]
    if view.chain is not None:
        chain = view.chain.transforms if isinstance(view.chain, ComposeTransforms) else (view.chain,)
        stack = list(chain)
        while stack:
            op = stack.pop(0)
            if isinstance(op, ComposeTransforms):
                stack[:0] = list(op.transforms)
                continue
            if isinstance(op, Crop):
                raise ValueError(
                    f"view {view.name!r}: a {type(op).__name__} inside transforms= cannot run on the device; "
                    "make it the view's crop="
                )
            ops.append(op)
    for op in ops:
        _fields(op)
    return tuple(ops)


def plan_layout(view: ViewConfig) -> tuple[PlannedOp, ...]:
    """Where each op's fields sit in the plan vector of one copy of ``view``."""
    layout, offset = [], 0
    for op in device_chain(view):
        fields = _fields(op)
        layout.append(PlannedOp(op, offset, fields))
        offset += len(fields)
    return tuple(layout)


@dataclass(frozen=True)
class ViewPlanner:
    """Plans every copy of a fixed view list; layouts are resolved once, at construction.

    Parameters
    ----------
    views : sequence of ViewConfig
        Every op must be device-capable (:func:`device_chain`).
    """

    views: Sequence[ViewConfig]
    #: (view key, its layout, plan-vector length) per view copy, in rendering order
    _entries: tuple[tuple[str, tuple[PlannedOp, ...], int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        views = validate_views(self.views)
        object.__setattr__(self, "views", views)
        entries: list[tuple[str, tuple[PlannedOp, ...], int]] = []
        for view in views:
            layout = plan_layout(view)
            size = sum(len(p.fields) for p in layout)
            entries.extend((key, layout, size) for key in view.view_names())
        object.__setattr__(self, "_entries", tuple(entries))

    @property
    def layouts(self) -> dict[str, tuple[PlannedOp, ...]]:
        """Each view key's layout, in rendering order."""
        return {key: layout for key, layout, _ in self._entries}

    def plan(self, height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One float64 vector per view copy of a ``height``×``width`` patch (see :func:`plan_views`)."""
        out: dict[str, np.ndarray] = {}
        for key, layout, size in self._entries:
            vector = np.empty(size, dtype=np.float64)
            for planned in layout:
                planned.draw(vector, rng, height, width)
            out[key] = vector
        return out


def plan_views(views: Sequence[ViewConfig], height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the parameters of every copy of every view of one ``height``×``width`` patch.

    Consumes ``rng`` exactly as :func:`~wsistream.views.render_views` does, so
    the planned views are the rendered views' twins. To plan many patches
    with one view list, build a :class:`ViewPlanner` once (the pipeline does).

    Returns
    -------
    dict of str to np.ndarray
        ``{"global_0": float64 vector, ...}`` laid out by :func:`plan_layout`; float64 holds every
        drawn value exactly, so :func:`render_plan` reproduces :func:`~wsistream.views.render_views`.

    Raises
    ------
    ValueError
        If a view holds an op the device cannot replay, or has ``mpp_override``.
    """
    return ViewPlanner(views).plan(height, width, rng)


def render_plan(
    image: np.ndarray, views: Sequence[ViewConfig] | ViewPlanner, plans: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Render planned views on the CPU: exactly what :func:`~wsistream.views.render_views` makes from the same draws.

    For previews and checks of ``view_rendering="device"`` streams (the GPU path is
    :class:`wsistream.torch.DeviceViews`).
    """
    planner = views if isinstance(views, ViewPlanner) else ViewPlanner(views)
    out: dict[str, np.ndarray] = {}
    for key, layout in planner.layouts.items():
        x = image
        for planned in layout:
            params = planned.unpack(plans[key])
            if params is not None:
                x = planned.op.apply(x, params)  # type: ignore[attr-defined]
        x = np.ascontiguousarray(x)
        out[key] = x.copy() if np.may_share_memory(x, image) else x
    return out
