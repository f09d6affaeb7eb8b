"""wsistream: stream exact-resolution patches and SSL views from whole-slide images."""

__version__ = "0.2.0.dev0"
