"""CLAM's tissue segmentation (Lu et al., Nat. Biomed. Eng. 2021), re-implemented.

Follows ``WholeSlideImage.segmentTissue`` of mahmoodlab/CLAM
(``wsi_core/WholeSlideImage.py``): HSV saturation → median blur (``mthresh``)
→ binary threshold at ``sthresh`` or Otsu (``use_otsu``) → morphological
closing with a ``close``×``close`` square kernel → contours with
``RETR_CCOMP`` → ``_filter_contours``: a foreground contour is kept when its
area minus its holes' area exceeds ``a_t`` reference-patch areas; per kept
contour the ``max_n_holes`` largest holes larger than ``a_h`` reference-patch
areas are kept.  Areas are in units of ``ref_patch_size²`` level-0 pixels
scaled to the overview (``scaled_ref_patch_area = ref_patch_size² /
(downsample_x · downsample_y)``), exactly as CLAM scales them.

The kept contours are rasterised into the mask (holes cleared) and also
returned in level-0 pixels on :attr:`TissueMask.contours`, truncated to int32
as CLAM's ``scaleContourDim`` does (the patch grid starts at their bounding box).

Which image is segmented (:meth:`CLAMTissueDetector.detect_slide`): CLAM's
``create_patches_fp.py`` with ``seg_level=-1`` (every preset) segments the
whole pyramid level ``get_best_level_for_downsample(64)``, not a thumbnail of a
fixed size, and the area thresholds scale with that level's downsample, so
the detector reads that level (``seg_downsample=64``).  A single-level slide
is segmented at level 0 by mahmoodlab/CLAM; GPFM's copy instead wraps it in
``ImgReader``, whose virtual levels are level 0 PIL-resized by 1/2/4/8/16, and
picks the one whose *squared* downsample is nearest 64 (÷8) —
``single_level="gpfm"`` reproduces that read exactly (including its use of the
x downsample for the height of the region read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from wsistream.errors import SlideTooSmallError
from wsistream.tissue.base import TissueDetector, TissueMask, saturation
from wsistream.types import best_level_for_downsample

if TYPE_CHECKING:
    from wsistream.backends.base import SlideHandle
    from wsistream.types import SlideProperties

#: CLAM refuses to segment a level with more pixels (``create_patches_fp.py``: "likely too large").
_CLAM_MAX_SEG_PIXELS = 1e10
#: GPFM ``ImgReader.default_dims``: the virtual levels of a single-level slide.
_GPFM_VIRTUAL_DOWNSAMPLES = (1.0, 2.0, 4.0, 8.0, 16.0)

#: Segmentation presets by dataset.  ``tcga`` is the GPFM TCGA preset as the
#: GPFM recipe document states it (``use_otsu=True``); ``tcga-clam`` is
#: GPFM preset: birkhoffkiki/GPFM ``Patching/presets/tcga.csv`` (commit 4f8be2b;
#: ``use_otsu=TRUE``), the file ``get_coor_scripts/TCGA.sh`` passes with
#: ``--preset tcga.csv``; ``tcga-clam`` is mahmoodlab/CLAM ``presets/tcga.csv``
#: (the same values with ``use_otsu=False``).  ``bcnb`` and ``dhmc`` are GPFM's
#: ``Patching/presets/BCNB.csv`` and ``DHMC.csv``.  All use ``contour_fn=four_pt``;
#: the GPFM presets segment single-level slides as GPFM's ``ImgReader`` does.
#: ``use_padding`` of each preset (patching, not segmentation) is in
#: :data:`CLAM_PRESET_PADDING`.
CLAM_PRESETS: dict[str, dict[str, object]] = {
    "tcga": {
        "use_otsu": True, "sthresh": 8, "mthresh": 7, "close": 4, "a_t": 16, "a_h": 4, "max_n_holes": 8,
        "single_level": "gpfm",
    },
    "tcga-clam": {"use_otsu": False, "sthresh": 8, "mthresh": 7, "close": 4, "a_t": 16, "a_h": 4, "max_n_holes": 8},
    "bcnb": {
        "use_otsu": False, "sthresh": 10, "mthresh": 7, "close": 4, "a_t": 16, "a_h": 4, "max_n_holes": 8,
        "single_level": "gpfm",
    },
    "dhmc": {
        "use_otsu": False, "sthresh": 4, "mthresh": 6, "close": 4, "a_t": 16, "a_h": 2, "max_n_holes": 8,
        "single_level": "gpfm",
    },
}  # fmt: skip
#: ``use_padding`` of the same preset files (edge patches kept and padded, see CLAMGridSampler).
CLAM_PRESET_PADDING: dict[str, bool] = {"tcga": True, "tcga-clam": True, "bcnb": False, "dhmc": True}


@dataclass(frozen=True)
class CLAMTissueDetector(TissueDetector):
    """CLAM ``segmentTissue`` with contour area filtering.

    Defaults are those ``create_patches_fp.py`` passes (``sthresh=8,
    mthresh=7, close=4, use_otsu=False``; ``a_t=100, a_h=16, max_n_holes=8``),
    not the ``segmentTissue`` signature defaults.

    Parameters
    ----------
    sthresh, sthresh_up : int
        Binary threshold on the blurred saturation and the value written for foreground.
    mthresh : int
        Median blur kernel size (odd; CLAM's presets include 6 for DHMC, which
        OpenCV rejects, so an even value is rounded up to the next odd one, as
        ``cv2.medianBlur`` would fail otherwise).
    use_otsu : bool
        Otsu's threshold instead of ``sthresh``.
    close : int
        Square closing kernel; 0 disables.
    a_t, a_h : float
        Minimum tissue / hole area, in reference-patch areas.
    max_n_holes : int
        Largest holes kept per contour.
    ref_patch_size : int
        Reference patch side in level-0 pixels for the area units. Default 512.
    otsu_floor : bool
        With ``use_otsu``, never threshold below ``sthresh``.  CLAM ignores
        ``sthresh`` under Otsu, so on a blank slide Otsu splits glass noise
        and CLAM reports "tissue"; on slides with tissue Otsu's threshold is
        far above ``sthresh`` and the floor changes nothing.  Default True;
        ``False`` reproduces CLAM bit for bit.
    seg_downsample : float or None
        Segment the pyramid level OpenSlide's ``get_best_level_for_downsample``
        picks for this downsample, as CLAM does (``seg_level=-1``: 64).
        ``None``: the pipeline's overview (``max_overview_side``) instead.
    single_level : {"clam", "gpfm"}
        A single-level slide is segmented at level 0 (``"clam"``), or at
        GPFM's ``ImgReader`` virtual level (``"gpfm"``, see the module docstring).
    """

    sthresh: int = 8
    sthresh_up: int = 255
    mthresh: int = 7
    use_otsu: bool = False
    close: int = 4
    a_t: float = 100
    a_h: float = 16
    max_n_holes: int = 8
    ref_patch_size: int = 512
    otsu_floor: bool = True
    seg_downsample: float | None = 64.0
    single_level: Literal["clam", "gpfm"] = "clam"

    def __post_init__(self) -> None:
        if self.mthresh < 1:
            raise ValueError(f"mthresh must be >= 1, got {self.mthresh}")
        if self.close < 0 or self.max_n_holes < 0 or self.a_t < 0 or self.a_h < 0:
            raise ValueError("close, max_n_holes, a_t and a_h must be >= 0")
        if self.ref_patch_size < 1:
            raise ValueError(f"ref_patch_size must be >= 1, got {self.ref_patch_size}")
        if self.seg_downsample is not None and not self.seg_downsample >= 1:
            raise ValueError(
                f"seg_downsample must be >= 1 (CLAM: 64) or None for the overview, got {self.seg_downsample}"
            )
        if self.single_level not in ("clam", "gpfm"):
            raise ValueError(f"single_level={self.single_level!r}; pass 'clam' (level 0) or 'gpfm' (ImgReader's level)")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> CLAMTissueDetector:
        """A detector with one of the per-dataset presets of :data:`CLAM_PRESETS`."""
        key = name.lower()
        if key not in CLAM_PRESETS:
            raise ValueError(f"unknown CLAM preset {name!r}; pass one of {sorted(CLAM_PRESETS)}")
        return cls(**{**CLAM_PRESETS[key], **overrides})  # type: ignore[arg-type]

    def detect_slide(self, handle: SlideHandle, props: SlideProperties, max_side: int) -> TissueMask:
        """Segment CLAM's ``seg_level`` (or the overview when ``seg_downsample`` is None)."""
        if self.seg_downsample is None:
            return super().detect_slide(handle, props, max_side)
        image, downsample = self.segmentation_image(handle, props)
        return self.detect(image, downsample)

    def segmentation_image(self, handle: SlideHandle, props: SlideProperties) -> tuple[np.ndarray, tuple[float, float]]:
        """The image CLAM segments and its (x, y) level-0 pixels per pixel (``_assertLevelDownsamples``)."""
        assert self.seg_downsample is not None
        width0, height0 = props.level_dimensions[0]
        if props.level_count == 1 and self.single_level == "gpfm":
            ds_x = [width0 / int(width0 / r) for r in _GPFM_VIRTUAL_DOWNSAMPLES]
            level = int(np.argmin([abs(d * d - self.seg_downsample) for d in ds_x]))
            r = _GPFM_VIRTUAL_DOWNSAMPLES[level]
            w, h = int(width0 / r), int(height0 / r)
            _check_seg_size(props, w, h)
            read_w, read_h = int(w * ds_x[level]), int(h * ds_x[level])  # GPFM scales both by the x downsample
            region = handle.read_region(0, 0, 0, (read_w, read_h))
            from PIL import Image

            image = np.asarray(Image.fromarray(region).resize((w, h), Image.Resampling.BICUBIC))
        else:
            level = best_level_for_downsample(props.level_downsamples, self.seg_downsample)
            w, h = props.level_dimensions[level]
            _check_seg_size(props, w, h)
            image = handle.read_region(0, 0, level, (w, h))
        return image, (width0 / w, height0 / h)

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Segment as CLAM does; see the module docstring."""
        ksize = self.mthresh if self.mthresh % 2 == 1 else self.mthresh + 1
        blurred = cv2.medianBlur(saturation(overview), ksize)
        if self.use_otsu:
            otsu, binary = cv2.threshold(blurred, 0, self.sthresh_up, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
            if self.otsu_floor and otsu < self.sthresh:
                _, binary = cv2.threshold(blurred, self.sthresh, self.sthresh_up, cv2.THRESH_BINARY)
        else:
            _, binary = cv2.threshold(blurred, self.sthresh, self.sthresh_up, cv2.THRESH_BINARY)
        if self.close > 0:
            binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((self.close, self.close), np.uint8))
        dsx, dsy = float(downsample[0]), float(downsample[1])
        ref_area = int(self.ref_patch_size**2 / (dsx * dsy))
        tissue, holes = self._filter(binary, self.a_t * ref_area, self.a_h * ref_area)
        mask = np.zeros(binary.shape, np.uint8)
        for contour, contour_holes in zip(tissue, holes, strict=True):
            cv2.drawContours(mask, [contour], -1, 1, thickness=cv2.FILLED)
            if contour_holes:
                cv2.drawContours(mask, contour_holes, -1, 0, thickness=cv2.FILLED)
        scale = np.array([dsx, dsy])
        level0 = tuple(
            (_to_level0(contour, scale), tuple(_to_level0(h, scale) for h in contour_holes))
            for contour, contour_holes in zip(tissue, holes, strict=True)
        )
        return TissueMask(mask.astype(bool), dsx, dsy, contours=level0)

    def _filter(
        self, binary: np.ndarray, min_tissue_area: float, min_hole_area: float
    ) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        if hierarchy is None or not contours:
            return [], []
        parents = hierarchy[0][:, 3]
        kept, kept_holes = [], []
        for idx in np.flatnonzero(parents == -1):
            hole_ids = np.flatnonzero(parents == idx)
            area = cv2.contourArea(contours[int(idx)]) - sum(cv2.contourArea(contours[int(h)]) for h in hole_ids)
            if area == 0 or not area > min_tissue_area:
                continue
            holes = sorted((contours[int(h)] for h in hole_ids), key=cv2.contourArea, reverse=True)
            kept.append(contours[int(idx)])
            kept_holes.append([h for h in holes[: self.max_n_holes] if cv2.contourArea(h) > min_hole_area])
        return kept, kept_holes


def _to_level0(contour: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Contour points in level-0 pixels, truncated to int32 (CLAM ``scaleContourDim``)."""
    return np.array(contour.reshape(-1, 2) * scale, dtype=np.int32)


def _check_seg_size(props: SlideProperties, width: int, height: int) -> None:
    if width * height > _CLAM_MAX_SEG_PIXELS:
        raise SlideTooSmallError(
            props.slide_path,
            f"CLAM's segmentation level is {width}x{height} px, more than CLAM segments (1e10 px); "
            "pass seg_downsample=None to segment the overview instead",
        )
