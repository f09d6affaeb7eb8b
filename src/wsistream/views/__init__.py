"""SSL views: named crops of a patch, each followed by its own augmentation chain.

>>> from wsistream.views import ViewConfig, RandomResizedCrop
>>> views = [
...     ViewConfig(name="global", crop=RandomResizedCrop(size=224, scale=(0.32, 1.0)), count=2),
...     ViewConfig(name="local", crop=RandomResizedCrop(size=96, scale=(0.05, 0.32)), count=8),
... ]

:func:`render_views` turns one patch into ``{"global_0": ..., "local_7": ...}``;
:func:`dinov2_multicrop` builds DINOv2's exact recipe; :func:`plan_views` draws the same
choices without pixels, for :class:`wsistream.torch.DeviceViews`. See ``docs/views.md``.
"""

from wsistream.views.config import ViewConfig, validate_views
from wsistream.views.crops import CenterCrop, Crop, CropBox, Interpolation, RandomResizedCrop, Resampler, Resize
from wsistream.views.plan import OP_FIELDS, PlannedOp, ViewPlanner, device_chain, plan_layout, plan_views, render_plan
from wsistream.views.presets import dinov2_multicrop
from wsistream.views.render import render_views

__all__ = [
    "OP_FIELDS",
    "CenterCrop",
    "Crop",
    "CropBox",
    "Interpolation",
    "PlannedOp",
    "RandomResizedCrop",
    "Resampler",
    "Resize",
    "ViewConfig",
    "ViewPlanner",
    "device_chain",
    "dinov2_multicrop",
    "plan_layout",
    "plan_views",
    "render_plan",
    "render_views",
    "validate_views",
]
