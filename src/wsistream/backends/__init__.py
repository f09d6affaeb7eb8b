"""Slide readers: one small abstract interface, one file per library."""

from wsistream.backends.base import PLAUSIBLE_MPP_RANGE, SlideBackend, SlideHandle, plausible_mpp
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.backends.tiffslide import TiffSlideBackend

__all__ = [
    "PLAUSIBLE_MPP_RANGE",
    "OpenSlideBackend",
    "SlideBackend",
    "SlideHandle",
    "TiffSlideBackend",
    "plausible_mpp",
]
