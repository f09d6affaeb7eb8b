"""The ``coords`` attributes that TRIDENT, CLAM and TITAN read from a feature ``.h5``.

Those tools read the tiling from ``f["coords"].attrs``, not from the file root:

* TRIDENT ``trident/IO.py`` ``coords_to_h5`` writes ``patch_size`` (tile side at the
  target magnification), ``patch_size_level0`` (the same side in level-0 pixels),
  ``level0_magnification``, ``target_magnification``, ``overlap``, ``name``,
  ``savetodir``, ``level0_width``, ``level0_height`` (Python ints and strings, so
  int64 / str attributes), and ``read_coords`` returns ``dict(f["coords"].attrs)``;
  ``WSI.extract_patch_features`` re-reads a tiling from ``patch_size`` and the two
  magnifications (``WSIPatcher``: level-0 side ``round(patch_size · src_mag / dst_mag)``).
  Feature files carry ``features.attrs`` ``name``, ``savetodir``, ``encoder``.
* TITAN (``MahmoodLab/TITAN`` README, ``encode_slide_from_patch_features``) and TRIDENT's
  slide encoders read ``f["coords"].attrs["patch_size_level0"]``.
* CLAM ``dataset_modules/dataset_h5.py`` ``Whole_Slide_Bag_FP`` reads ``patch_level`` and
  ``patch_size`` (``wsi_core/WholeSlideImage.py`` ``process_contour`` also writes
  ``downsample``, the level's (x, y) downsample).

``patch_size`` is TRIDENT's: the side of the tile given to the encoder. CLAM's
``read_region(coord, patch_level, (patch_size, patch_size))`` therefore reads exactly the
encoded pixels only when the tiles were not resampled (``read_size == patch_size``);
``read_size`` (pixels of ``patch_level`` read per tile) is written beside it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

#: TRIDENT ``WSI._fetch_magnification``: µm/px upper bounds of each nominal magnification.
_MAGNIFICATION_BINS = ((0.16, 80), (0.2, 60), (0.3, 40), (0.6, 20), (1.2, 10), (2.4, 5))


def nominal_magnification(mpp: float) -> int:
    """Objective magnification TRIDENT assigns to ``mpp`` µm/px (0.252 → 40, 0.5 → 20)."""
    if not mpp > 0:
        raise ValueError(f"mpp must be > 0 µm/px, got {mpp}")
    for bound, mag in _MAGNIFICATION_BINS:
        if mpp < bound:
            return mag
    return max(1, round(10 / mpp))


def coords_attrs(attrs: Mapping[str, Any], slide_name: str, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """TRIDENT/CLAM/TITAN attributes of the ``coords`` dataset from a tiling's attributes.

    Keys are written only when the tiling described them (``patch_size``,
    ``patch_size_level0``, ``level``, ``mpp``, ``level0_mpp``, ...), so a file
    written from bare arrays carries no made-up geometry.
    """
    out: dict[str, Any] = {"name": slide_name, "savetodir": os.fspath(out_dir), "overlap": 0}
    ints = {
        "patch_size": "patch_size",
        "patch_size_level0": "patch_size_level0",
        "level": "patch_level",
        "read_size": "read_size",
        "level0_width": "level0_width",
        "level0_height": "level0_height",
    }
    for src, dst in ints.items():
        if attrs.get(src) is not None:
            out[dst] = np.int64(attrs[src])
    if attrs.get("level_downsample") is not None:
        out["downsample"] = np.full(2, float(attrs["level_downsample"]), np.float64)
    if attrs.get("level0_mpp") is not None and attrs.get("mpp") is not None:
        out["level0_magnification"] = np.int64(nominal_magnification(float(attrs["level0_mpp"])))
        out["target_magnification"] = np.int64(nominal_magnification(float(attrs["mpp"])))
        out["mpp"] = float(attrs["mpp"])
        out["level0_mpp"] = float(attrs["level0_mpp"])
    out["coords_frame"] = "level0_pixels"
    return out


def features_attrs(attrs: Mapping[str, Any], slide_name: str, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """TRIDENT's ``features`` dataset attributes: ``name``, ``savetodir``, ``encoder``."""
    out: dict[str, Any] = {"name": slide_name, "savetodir": os.fspath(out_dir)}
    if attrs.get("encoder") is not None:
        out["encoder"] = str(attrs["encoder"])
    return out
