"""Patch augmentations: uint8 RGB in, uint8 RGB out, all randomness from an explicit rng.

Every transform is a frozen dataclass implementing
:class:`PatchTransform` ``(image, rng) -> image``; random ones also expose
``sample(rng)`` / ``apply(image, params)`` so a run can record what fired.
See ``docs/views.md`` for the DINOv2 correspondence.
"""

from wsistream.transforms.base import (
    ComposeTransforms,
    PatchTransform,
    RandomTransform,
    TraceEvent,
    check_image,
    check_probability,
)
from wsistream.transforms.blur import GaussianBlur, gaussian_kernel1d
from wsistream.transforms.color import (
    LUMA_WEIGHTS,
    ColorJitter,
    ColorJitterParams,
    RandomGrayscale,
    RandomSolarize,
)
from wsistream.transforms.geometric import RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from wsistream.transforms.macenko import MacenkoNormalizer, MacenkoStains, estimate_macenko
from wsistream.transforms.stain import HED_FROM_RGB, RGB_FROM_HED, HEDJitter, hed_to_rgb, rgb_to_hed

__all__ = [
    "HED_FROM_RGB",
    "LUMA_WEIGHTS",
    "RGB_FROM_HED",
    "ColorJitter",
    "ColorJitterParams",
    "ComposeTransforms",
    "GaussianBlur",
    "HEDJitter",
    "MacenkoNormalizer",
    "MacenkoStains",
    "PatchTransform",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomRotate90",
    "RandomSolarize",
    "RandomTransform",
    "RandomVerticalFlip",
    "TraceEvent",
    "check_image",
    "check_probability",
    "estimate_macenko",
    "gaussian_kernel1d",
    "hed_to_rgb",
    "rgb_to_hed",
]
