"""Which level to read, how much of it, and what µm/px the delivered patch has.

With ``target_mpp``, the patch is read from the *coarsest level that is not
coarser than the target* (within ``tolerance``) and area-resampled to
``patch_size``.  A level within ``tolerance`` of the target is read directly
at ``patch_size``.  Example: a 40x Aperio slide (0.252 µm/px, levels 1/4/16)
with ``target_mpp=0.5`` reads ``round(224 · 0.5 / 0.252) = 444`` level-0
pixels and area-resamples them to 224: delivered µm/px = 0.252 · 444 / 224 =
0.49950 (0.1 % off target; the only error is the rounding of ``read_size``).

Asking for a resolution finer than level 0 would need upsampling, which
invents detail: it raises :class:`~wsistream.errors.ResolutionUnavailableError`
unless ``allow_upsample=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wsistream.errors import MissingMppError, ResolutionUnavailableError, SlideTooSmallError
from wsistream.types import SlideProperties

#: Default relative tolerance between delivered and requested µm/px (2 %).
#: A level within it is read directly; resampled reads land within
#: ``1 / (2 · read_size)`` of the target (< 0.25 % for 224-px patches).
DEFAULT_MPP_TOLERANCE = 0.02


@dataclass(frozen=True)
class ReadPlan:
    """How one slide is read for a sampler.

    Attributes
    ----------
    level : int
        Pyramid level read.
    read_size : int
        Side of the region read, in pixels of ``level``.
    patch_size : int
        Side of the delivered patch.
    level_downsample : float
        Level-0 pixels per pixel of ``level``.
    mpp : float or None
        Delivered µm/px (``None`` when the slide's µm/px is unknown and a fixed level was asked).
    """

    level: int
    read_size: int
    patch_size: int
    level_downsample: float
    mpp: float | None
    #: How ``read_size`` becomes ``patch_size``: ``"area"`` (cv2.INTER_AREA), or
    #: ``"lanczos"`` (PIL ``thumbnail(LANCZOS)``, DeepZoom's ``get_tile`` scaling).
    resample: Literal["area", "lanczos"] = "area"
    #: Grey level of pixels outside the slide (255 white; 0 for CLAM's padded edge patches).
    pad_value: int = 255

    @property
    def footprint_level0(self) -> float:
        """Patch side in level-0 pixels."""
        return self.read_size * self.level_downsample

    def snap(self, x0: float, y0: float, level_size: tuple[int, int]) -> tuple[int, int]:
        """Level-0 origin moved onto the read level's pixel grid, kept inside the level.

        A level > 0 read whose origin is not a whole level pixel is blended
        across neighbouring pixels by OpenSlide and snapped by direct tile
        decoders; snapping first makes every backend return the same pixels and
        the recorded coordinate exact.  The snapped read never starts past
        ``level_size - read_size``, so rounding cannot push a patch over the
        slide edge.
        """
        ds = self.level_downsample
        if ds == 1.0:
            return int(x0), int(y0)
        lx = min(round(x0 / ds), level_size[0] - self.read_size)
        ly = min(round(y0 / ds), level_size[1] - self.read_size)
        return round(max(0, lx) * ds), round(max(0, ly) * ds)

    @property
    def needs_resize(self) -> bool:
        """True when ``read_size != patch_size`` (an area resample follows the read)."""
        return self.read_size != self.patch_size


def plan_read(
    props: SlideProperties,
    patch_size: int,
    *,
    level: int | None = None,
    target_mpp: float | None = None,
    tolerance: float = DEFAULT_MPP_TOLERANCE,
    allow_upsample: bool = False,
) -> ReadPlan:
    """Choose the level and read size for ``patch_size`` output pixels.

    Exactly one of ``level`` and ``target_mpp`` is used; with neither, level 0.

    Raises
    ------
    MissingMppError
        ``target_mpp`` was given and the slide has no usable µm/px.
    ResolutionUnavailableError
        ``target_mpp`` is finer than level 0 and ``allow_upsample`` is False.
    SlideTooSmallError
        The footprint does not fit in level 0.
    """
    path = props.slide_path
    if target_mpp is not None:
        if props.mpp_level0 is None:
            raise MissingMppError(
                path,
                f"target_mpp={target_mpp} needs the slide's µm/px, which is missing or implausible; "
                "pass mpp_overrides={path: mpp} or mpp_fallback=... to PatchPipeline",
            )
        chosen = None
        for lvl in range(props.level_count - 1, -1, -1):  # coarsest first
            if props.mpp_level0 * props.level_downsamples[lvl] <= target_mpp * (1 + tolerance):
                chosen = lvl
                break
        if chosen is None:
            if not allow_upsample:
                raise ResolutionUnavailableError(
                    path,
                    f"target_mpp={target_mpp} is finer than level 0 ({props.mpp_level0:.4f} µm/px); "
                    "reading it would need upsampling: pass a coarser target_mpp, or allow_upsample=True",
                )
            chosen = 0
        level_mpp = props.mpp_level0 * props.level_downsamples[chosen]
        if abs(level_mpp - target_mpp) <= tolerance * target_mpp:
            read_size = patch_size
        else:
            read_size = max(1, round(patch_size * target_mpp / level_mpp))
        plan = ReadPlan(
            chosen, read_size, patch_size, props.level_downsamples[chosen], level_mpp * read_size / patch_size
        )
    else:
        lvl = 0 if level is None else level
        if not 0 <= lvl < props.level_count:
            raise SlideTooSmallError(path, f"level={lvl} does not exist (the slide has {props.level_count} levels)")
        fixed_level_mpp = props.mpp_at_level(lvl)
        plan = ReadPlan(lvl, patch_size, patch_size, props.level_downsamples[lvl], fixed_level_mpp)
    level_w, level_h = props.level_dimensions[plan.level]
    if plan.read_size > level_w or plan.read_size > level_h:
        raise SlideTooSmallError(
            path,
            f"a {plan.read_size}-px read at level {plan.level} does not fit in the level "
            f"({level_w}x{level_h}); pass a smaller patch_size or a coarser resolution",
        )
    return plan
