"""Level 0, one band of tile rows at a time.

A 40000 × 30000 level 0 is 3.6 GB of RGB; the writer never holds it. It asks for bands of ``tile_size``
rows (one TIFF tile row, 29 MB at that width), encodes their tiles and hands the rows to the pyramid
accumulators before the next band overwrites the same buffer.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from wsistream.synthetic._layout import TissueLayout
from wsistream.synthetic._texture import TextureAtlas, fill_band


class Level0Renderer:
    """Compose level-0 bands from a tissue layout and a texture atlas.

    Parameters
    ----------
    layout : TissueLayout
        Where tissue, holes and the dense/stroma split are.
    atlas : TextureAtlas
        The periodic textures to copy from.
    tile_size : int
        Band height and tile width; the band is padded to whole tiles on the right and bottom with
        background, which is what the TIFF stores past the image edge.
    """

    def __init__(self, layout: TissueLayout, atlas: TextureAtlas, tile_size: int) -> None:
        self.layout = layout
        self.atlas = atlas
        self.tile_size = tile_size
        width, height = layout.level0_size
        self.tiles_across = -(-width // tile_size)
        self.tiles_down = -(-height // tile_size)

    def bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(y0, band)`` for every tile row, top to bottom.

        ``band`` is ``(tile_size, tiles_across * tile_size, 3)`` uint8 and is **reused**: consume it (encode,
        downsample) before advancing the iterator. Rows of the last band past the image bottom and columns
        past its right edge hold background.
        """
        ts = self.tile_size
        width = self.layout.level0_size[0]
        padded_width = self.tiles_across * ts
        band = np.empty((ts, padded_width, 3), np.uint8)
        scratch = np.empty((ts, width, 3), np.uint8)
        has_tissue = self.layout.has_tissue
        for row in range(self.tiles_down):
            y0 = row * ts
            fill_band(self.atlas.background, y0, band)
            if has_tissue:
                self._add_tissue(y0, band[:, :width], scratch)
            yield y0, band

    def _add_tissue(self, y0: int, out: np.ndarray, scratch: np.ndarray) -> None:
        """Overwrite the tissue pixels of ``out`` with stroma or dense texture and apply the stain gain."""
        fields = self.layout.sample_rows(y0, out.shape[0])
        tissue = fields[..., 0] >= 128
        if not tissue.any():
            return
        dense = fields[..., 1] >= 128
        for texture, where in ((self.atlas.stroma, tissue & ~dense), (self.atlas.dense, tissue & dense)):
            if where.any():
                fill_band(texture, y0, scratch)
                _copy_where(scratch, where, out)
        gain = self.layout.sample_gain(y0, out.shape[0])
        result = cv2.multiply(out, gain, dst=out, scale=1.0 / 128.0)
        if result is not out:
            out[...] = result


def _copy_where(src: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    """``out[mask] = src[mask]`` for ``(h, w, 3)`` images and an ``(h, w)`` boolean mask.

    OpenCV's masked copy is ~50x faster than ``np.copyto(..., where=mask[..., None])`` (0.5 ms against
    28 ms for a 240 × 12000 band), which is most of the level-0 rendering time.
    """
    result = cv2.copyTo(src, mask.view(np.uint8), out)
    if result is not out:  # OpenCV had to allocate (e.g. a layout it cannot wrap): copy back
        out[...] = result
