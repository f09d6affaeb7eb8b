"""SSL views: named crops of a patch, each followed by its own augmentation chain.

>>> from wsistream.views import ViewConfig, RandomResizedCrop
>>> views = [
...     ViewConfig(name="global", crop=RandomResizedCrop(size=224, scale=(0.32, 1.0)), count=2),
...     ViewConfig(name="local", crop=RandomResizedCrop(size=96, scale=(0.05, 0.32)), count=8),
... ]

:func:`render_views` turns one patch into ``{"global_0": ..., "local_7": ...}``;
:func:`dinov2_multicrop` builds DINOv2's exact recipe. See ``docs/views.md``.
"""

from wsistream.views.config import ViewConfig, validate_views
from wsistream.views.crops import CenterCrop, Crop, CropBox, Interpolation, RandomResizedCrop, Resize
from wsistream.views.presets import dinov2_multicrop
from wsistream.views.render import render_views

__all__ = [
    "CenterCrop",
    "Crop",
    "CropBox",
    "Interpolation",
    "RandomResizedCrop",
    "Resize",
    "ViewConfig",
    "dinov2_multicrop",
    "render_views",
    "validate_views",
]
