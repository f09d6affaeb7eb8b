"""Collate crops of several slides into padded view tensors.

Views are stacked view-major, as DINOv2's ``collate_data_and_cast`` does: the
global tensor holds crop 0 of every slide, then crop 1 of every slide, so
``chunk(2)`` splits it by crop; locals likewise. Crops of one group differ in
length; they are right-padded and a ``pad`` mask marks the padding (the
encoder's attention ignores it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from wsistream.slide_ssl.config import CropConfig, ObjectiveConfig
from wsistream.slide_ssl.crops import TileCrop, multi_crop, sample_view_masks
from wsistream.slide_ssl.data import SlideTokens


@dataclass(frozen=True)
class ViewBatch:
    """Padded multi-crop views of ``n_slides`` slides.

    ``global_*`` are (2B, Lg, ...), ``local_*`` are (n_local·B, Ll, ...) or None without local crops;
    ``pad`` is ``True`` at padding, ``global_mask`` ``True`` at iBOT-masked tokens (None without masking).
    """

    global_x: torch.Tensor
    global_pos: torch.Tensor
    global_pad: torch.Tensor
    global_mask: torch.Tensor | None
    local_x: torch.Tensor | None
    local_pos: torch.Tensor | None
    local_pad: torch.Tensor | None
    n_slides: int

    def to(self, device: torch.device | str) -> ViewBatch:
        """Move every tensor to ``device``."""
        moved: dict[str, Any] = {
            f.name: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return replace(self, **moved)

    @property
    def n_tokens(self) -> int:
        """Non-padding tokens in all views."""
        n = int((~self.global_pad).sum())
        return n + (int((~self.local_pad).sum()) if self.local_pad is not None else 0)


def _pad_group(
    slides: Sequence[SlideTokens], crops: list[tuple[int, TileCrop]], masks: list[np.ndarray] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    length = max(len(c) for _, c in crops)
    dim = slides[0].features.shape[1]
    x = np.zeros((len(crops), length, dim), dtype=np.float32)
    pos = np.zeros((len(crops), length, 2), dtype=np.int64)
    pad = np.ones((len(crops), length), dtype=bool)
    mk = np.zeros((len(crops), length), dtype=bool) if masks is not None else None
    for row, (s, crop) in enumerate(crops):
        n = len(crop)
        x[row, :n] = slides[s].features[crop.indices]
        pos[row, :n] = crop.positions
        pad[row, :n] = False
        if mk is not None and masks is not None:
            mk[row, :n] = masks[row]
    return (
        torch.from_numpy(x),
        torch.from_numpy(pos),
        torch.from_numpy(pad),
        torch.from_numpy(mk) if mk is not None else None,
    )


def build_view_batch(
    slides: Sequence[SlideTokens],
    crops_cfg: CropConfig,
    objective: ObjectiveConfig,
    rng: np.random.Generator,
    with_masks: bool,
) -> ViewBatch:
    """Crop every slide (:func:`~wsistream.slide_ssl.crops.multi_crop`), mask global crops, pad and stack."""
    per_slide = [multi_crop(s.grid, crops_cfg, rng) for s in slides]
    g = [(si, per_slide[si][0][v]) for v in range(2) for si in range(len(slides))]
    loc = [(si, per_slide[si][1][v]) for v in range(crops_cfg.n_local) for si in range(len(slides))]
    masks = None
    if with_masks:
        masks = sample_view_masks([c.layout for _, c in g], objective.mask_probability, objective.mask_ratio, rng)
    gx, gpos, gpad, gmask = _pad_group(slides, g, masks)
    lx = lpos = lpad = None
    if loc:
        lx, lpos, lpad, _ = _pad_group(slides, loc, None)
    return ViewBatch(gx, gpos, gpad, gmask, lx, lpos, lpad, len(slides))
