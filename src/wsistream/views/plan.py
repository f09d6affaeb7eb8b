"""Draw every random choice of a view set without touching pixels, as flat float32 vectors.

Rendering ten DINOv2 views on the CPU costs more than reading the patch
(``docs/performance.md``). :func:`plan_views` draws exactly the random numbers
:func:`~wsistream.views.render_views` would draw (same ``rng`` calls, same
order), but instead of applying each op it writes the op's parameters into a
small vector per view copy. The worker ships the primary patch plus these
vectors (a few hundred bytes); :class:`wsistream.torch.DeviceViews` replays
them on the accelerator, batched. Same seed ⇒ the same boxes, flips, jitter
factors, blur sigmas as the CPU path.

Each supported op owns a fixed run of named fields (:data:`OP_FIELDS`); a view
copy's vector is the crop's fields followed by each op's, in chain order, and
:func:`plan_layout` says where each run starts. A flag field is 1.0 when the op
fired; a ColorJitter factor that is disabled in the config is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsistream.transforms.base import ComposeTransforms, PatchTransform
from wsistream.transforms.blur import GaussianBlur
from wsistream.transforms.color import ColorJitter, RandomGrayscale, RandomSolarize
from wsistream.transforms.geometric import RandomHorizontalFlip, RandomVerticalFlip
from wsistream.views.config import ViewConfig, validate_views
from wsistream.views.crops import Crop

__all__ = ["OP_FIELDS", "PlannedOp", "device_chain", "plan_layout", "plan_views"]

#: The parameter fields each device-capable op writes, in order.
OP_FIELDS: dict[type, tuple[str, ...]] = {
    Crop: ("top", "left", "height", "width"),
    RandomHorizontalFlip: ("fired",),
    RandomVerticalFlip: ("fired",),
    ColorJitter: ("fired", "order0", "order1", "order2", "order3", "brightness", "contrast", "saturation", "hue"),
    RandomGrayscale: ("fired",),
    GaussianBlur: ("fired", "sigma"),
    RandomSolarize: ("fired",),
}


@dataclass(frozen=True)
class PlannedOp:
    """One op of a view chain and where its fields sit in the plan vector."""

    op: PatchTransform
    offset: int
    fields: tuple[str, ...]

    def column(self, name: str) -> int:
        """Index of field ``name`` in the plan vector."""
        return self.offset + self.fields.index(name)


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
    if view.transforms is not None:
        chain = view.transforms.transforms if isinstance(view.transforms, ComposeTransforms) else (view.transforms,)
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


def _pack(op: PatchTransform, params: object) -> list[float]:
    if isinstance(op, Crop):
        return [float(params.top), float(params.left), float(params.height), float(params.width)]  # type: ignore[attr-defined]
    if params is None:
        return [0.0] * len(_fields(op))
    if isinstance(op, ColorJitter):
        factors = (params.brightness, params.contrast, params.saturation, params.hue)  # type: ignore[attr-defined]
        return [1.0, *map(float, params.order), *(np.nan if f is None else float(f) for f in factors)]  # type: ignore[attr-defined]
    if isinstance(op, GaussianBlur):
        return [1.0, float(params)]  # type: ignore[arg-type]
    return [1.0]


def plan_views(views: Sequence[ViewConfig], height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the parameters of every copy of every view of one ``height``×``width`` patch.

    Consumes ``rng`` exactly as :func:`~wsistream.views.render_views` does, so
    the planned views are the rendered views' twins.

    Returns
    -------
    dict of str to np.ndarray
        ``{"global_0": float32 vector, ...}`` laid out by :func:`plan_layout`.

    Raises
    ------
    ValueError
        If a view holds an op the device cannot replay, or has ``mpp_override``.
    """
    views = validate_views(views)
    out: dict[str, np.ndarray] = {}
    for view in views:
        layout = plan_layout(view)
        for key in view.view_names():
            vector: list[float] = []
            for planned in layout:
                op = planned.op
                if isinstance(op, Crop):
                    vector += _pack(op, op.sample_box(rng, height, width))
                else:
                    vector += _pack(op, op.sample(rng))  # type: ignore[attr-defined]
            out[key] = np.asarray(vector, dtype=np.float32)
    return out
