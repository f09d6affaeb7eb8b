"""CLAM's contour-containment patch criterion, computed exactly as CLAM does.

mahmoodlab/CLAM ``wsi_core/util_classes.py`` and ``WholeSlideImage.isInContours``:
a patch with level-0 top-left ``pt`` and reference size ``ps`` (level-0
pixels) is kept for a tissue contour when

* ``four_pt`` (``isInContourV3_Easy``, CLAM's default ``contour_fn``): any of
  the four points ``centre ± shift`` (``shift = int(ps // 2 * 0.5)``) is inside
  or on the contour (``cv2.pointPolygonTest(...) >= 0``);
* ``four_pt_hard`` (``isInContourV3_Hard``): all four points are;
* ``center`` (``isInContourV2``): the centre is;

and the centre ``(pt + ps / 2)`` is not strictly inside any of that contour's
kept holes (``isInHoles``: ``pointPolygonTest(...) > 0``).  A patch is kept
when some contour keeps it.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np

from wsistream.tissue.base import TissueMask

ClamCriterion = Literal["four_pt", "four_pt_hard", "center"]


def level0_contours(mask: TissueMask) -> tuple[Any, ...]:
    """The mask's ``(contour, holes)`` pairs in level-0 pixels (derived from the mask if the detector gave none)."""
    if mask.contours:
        return mask.contours
    contours, hierarchy = cv2.findContours(mask.mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return ()
    parents = hierarchy[0][:, 3]
    scale = np.array([mask.downsample_x, mask.downsample_y])
    return tuple(
        (
            contours[int(i)].reshape(-1, 2) * scale,
            tuple(contours[int(h)].reshape(-1, 2) * scale for h in np.flatnonzero(parents == i)),
        )
        for i in np.flatnonzero(parents == -1)
    )


def clam_keeps(contours: tuple[Any, ...], x0: float, y0: float, ref_patch: int, criterion: ClamCriterion) -> bool:
    """Whether CLAM's ``criterion`` keeps the patch at level-0 ``(x0, y0)`` of side ``ref_patch``."""
    cx, cy = x0 + ref_patch // 2, y0 + ref_patch // 2
    if criterion == "center":
        points = [(cx, cy)]
    else:
        shift = int(ref_patch // 2 * 0.5)
        points = [
            (cx - shift, cy - shift),
            (cx + shift, cy + shift),
            (cx + shift, cy - shift),
            (cx - shift, cy + shift),
        ]
    need_all = criterion == "four_pt_hard"
    hole_centre = (float(x0 + ref_patch / 2), float(y0 + ref_patch / 2))
    for contour, holes in contours:
        poly = np.asarray(contour, np.float32).reshape(-1, 1, 2)
        inside = [cv2.pointPolygonTest(poly, (float(px), float(py)), False) >= 0 for px, py in points]
        if not (all(inside) if need_all else any(inside)):
            continue
        in_hole = any(
            cv2.pointPolygonTest(np.asarray(h, np.float32).reshape(-1, 1, 2), hole_centre, False) > 0 for h in holes
        )
        if not in_hole:
            return True
    return False
