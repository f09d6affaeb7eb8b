"""Render SSL views on the accelerator from the primary patch and planned parameters.

With ``PatchPipeline(view_rendering="device")`` workers do no pixel work for
views: each patch travels once (uint8) with one small float vector per view
copy (:func:`wsistream.views.plan_views`), and :class:`DeviceViews` cuts,
resizes, flips, jitters, blurs and solarises the whole batch on the GPU with
the CPU path's numerics. This removes the views' CPU cost (the DINOv2 chain
costs more than reading the patch, ``docs/performance.md``) and ships 3.4×
fewer bytes per patch than ten rendered views.

>>> views = dinov2_multicrop()                                     # doctest: +SKIP
>>> pipe = PatchPipeline(..., views=views, view_rendering="device")
>>> render = DeviceViews(views).to("cuda")
>>> for batch in loader:
...     crops = render(batch["image"], batch["view_plans"])        # {"global_0": uint8 N×3×224×224, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from wsistream.torch import _device_ops as ops
from wsistream.transforms.blur import GaussianBlur
from wsistream.transforms.color import ColorJitter, RandomGrayscale, RandomSolarize
from wsistream.transforms.geometric import RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip
from wsistream.transforms.stain import HEDJitter
from wsistream.views.config import ViewConfig
from wsistream.views.crops import Crop
from wsistream.views.plan import PlannedOp, ViewPlanner

__all__ = ["DeviceViews"]

_JITTER = ((0, "brightness", ops.adjust_brightness), (1, "contrast", ops.adjust_contrast),
           (2, "saturation", ops.adjust_saturation), (3, "hue", ops.adjust_hue))  # fmt: skip


class DeviceViews(nn.Module):
    """Replay :func:`~wsistream.views.plan_views` plans on a batch of primary patches.

    Parameters
    ----------
    views : sequence of ViewConfig
        The same view list the pipeline plans with (its ops must be
        device-capable: crops, flips, RandomRotate90, ColorJitter,
        RandomGrayscale, GaussianBlur, RandomSolarize, HEDJitter).

    Notes
    -----
    Output pixels equal the CPU path's within one or two grey levels on
    rare values (``tests/torch/test_torch_device_views.py`` pins the bounds
    per op); a solarize threshold can turn such a level into a large
    difference on the pixels that sit exactly at it.
    Crops with ``interpolation="area"`` that enlarge are not supported, nor
    crops with ``resize="pil"`` (Pillow's fixed-point two-pass resampler has
    no device kernel; ``dinov2_multicrop(resize="opencv")`` renders here).
    """

    def __init__(self, views: Sequence[ViewConfig]) -> None:
        super().__init__()
        planner = ViewPlanner(views)  # the worker's planner: same layouts, same refusals
        self.views = planner.views
        self._layouts = planner.layouts
        for key, layout in self._layouts.items():
            for planned in layout:
                if isinstance(planned.op, Crop) and planned.op.resize == "pil":
                    raise ValueError(
                        f"view {key!r}: resize='pil' (Pillow's resampler) has no device kernel; pass "
                        "resize='opencv' to the crop (dinov2_multicrop(resize='opencv')) or view_rendering='cpu'"
                    )
                if isinstance(planned.op, Crop) and planned.op.interpolation == "area":
                    raise ValueError(
                        f"view {key!r}: interpolation='area' cannot enlarge on the device; use 'bicubic' "
                        "(DINOv2) or view_rendering='cpu'"
                    )

    @property
    def keys(self) -> list[str]:
        """View keys in rendering order."""
        return list(self._layouts)

    def forward(self, images: torch.Tensor, plans: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Render every view key.

        Parameters
        ----------
        images : torch.Tensor
            uint8 ``N×3×H×W`` primary patches (``batch["image"]``), any device.
        plans : mapping of str to torch.Tensor
            ``batch["view_plans"]``: ``N×P`` per view key (float64 from the collate; used as float32).

        Returns
        -------
        dict of str to torch.Tensor
            uint8 ``N×3×size×size`` per key, on the device of ``images``.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N×3×H×W, got {images.dtype} {tuple(images.shape)}")
        missing = [k for k in self._layouts if k not in plans]
        if missing:
            raise ValueError(f"plans lack view keys {missing}; were they made by the same view list?")
        # the CPU path's numerics need float32 throughout, also inside a caller's autocast region
        with torch.autocast(images.device.type, enabled=False):
            return self._render(images, plans)

    def _render(self, images: torch.Tensor, plans: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        source = images.to(torch.float32)
        out = {}
        for key, layout in self._layouts.items():
            plan = plans[key].to(device=images.device, dtype=torch.float32)
            width = sum(len(p.fields) for p in layout)
            if tuple(plan.shape) != (images.shape[0], width):
                raise ValueError(
                    f"plan {key!r} has shape {tuple(plan.shape)}, expected ({images.shape[0]}, {width}): one row "
                    "per image, laid out by plan_layout"
                )
            x = source
            for planned in layout:
                x = _replay(planned, x, plan)
            out[key] = x.to(torch.uint8)
        return out


def _replay(planned: PlannedOp, x: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    op = planned.op

    def col(name: str) -> torch.Tensor:
        return plan[:, planned.column(name)]

    if isinstance(op, Crop):
        return _crop(op, x, col("top"), col("left"), col("height"), col("width"))
    fired = col("fired") > 0.5
    if isinstance(op, RandomHorizontalFlip):
        return _on_rows(x, fired, lambda sub, rows: sub.flip(-1))
    if isinstance(op, RandomVerticalFlip):
        return _on_rows(x, fired, lambda sub, rows: sub.flip(-2))
    if isinstance(op, RandomRotate90):
        return _on_rows(x, fired, lambda sub, rows: ops.rotate90(sub, col("quarter_turns")[rows]))
    if isinstance(op, HEDJitter):
        start = planned.column("alpha_h")
        alpha, beta = plan[:, start : start + 3], plan[:, start + 3 : start + 6]
        beta_in_od = op.units == "od"
        return _on_rows(x, fired, lambda sub, rows: ops.hed_jitter(sub, alpha[rows], beta[rows], beta_in_od))
    if isinstance(op, RandomGrayscale):
        return _on_rows(x, fired, lambda sub, rows: ops.grayscale(sub))
    if isinstance(op, RandomSolarize):
        return _on_rows(x, fired, lambda sub, rows: ops.solarize(sub, float(op.threshold)))
    if isinstance(op, GaussianBlur):
        return _on_rows(x, fired, lambda sub, rows: ops.gaussian_blur(sub, col("sigma")[rows], op.kernel_size))
    if isinstance(op, ColorJitter):
        order = plan[:, planned.column("order0") : planned.column("order0") + 4].round().long()
        for step in range(4):
            for index, name, kernel in _JITTER:
                factor = col(name)
                arg = factor if name == "hue" else factor.view(-1, 1, 1, 1)
                active = fired & (order[:, step] == index) & ~torch.isnan(factor)
                x = _on_rows(x, active, lambda sub, rows, kernel=kernel, arg=arg: kernel(sub, arg[rows]))  # type: ignore[misc]
        return x
    raise ValueError(f"no device kernel for {type(op).__name__}")  # plan_layout admits only the ops above


def _on_rows(
    x: torch.Tensor, selected: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``x`` with the ``selected`` rows replaced by ``fn(x[rows], rows)``: an op costs only the rows it touches."""
    rows = selected.nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    return x.index_copy(0, rows, fn(x[rows], rows))


def _crop(
    op: Crop, x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """Cut each row's box and resize it to ``op.size`` as :meth:`Crop.apply` (area when it shrinks both axes)."""
    size = int(op.size)
    use_area = (height >= size) & (width >= size) if op.antialias else torch.zeros_like(height, dtype=torch.bool)
    rows = ops.resample_matrices(top, height, size, x.shape[2], op.interpolation, use_area)
    cols = ops.resample_matrices(left, width, size, x.shape[3], op.interpolation, use_area)
    y = ops.resample(ops.resample(x, rows, axis=2), cols, axis=3)  # N×3×size×size
    return torch.round(y).clamp(0, 255)
