r"""Write synthetic slides in the Aperio SVS layout that OpenSlide and TiffSlide both recognise.

Layout (copied from ``CMU-1-Small-Region.svs`` and the shared ``synthetic-40x.svs``):

* page 0: level 0, tiled, JPEG; ImageDescription ``Aperio Image Library v12.0.15 \r\nWxH [0,0 WxH]
  (TSxTS) JPEG/RGB Q=80|AppMag = 40|MPP = 0.2520|…`` — OpenSlide's ``aperio`` vendor test is that the
  first description starts with ``Aperio``; MPP and AppMag become ``openslide.mpp-x`` and
  ``openslide.objective-power``;
* page 1: the thumbnail, **stripped** (16 rows per strip), ``WxH -> twxth``; tifffile's SVS parser takes
  page 1 as the thumbnail unconditionally, so it must exist even for a one-level slide;
* pages 2…: the lower levels, tiled, in increasing downsample, NewSubfileType 0 (tifffile stops at a page
  flagged "reduced"). No label or macro image.

Tiles are abbreviated JPEG streams with a shared ``JPEGTables`` tag (see :mod:`._jpeg`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import tifffile

from wsistream.synthetic._jpeg import AbbreviatedJpegEncoder
from wsistream.synthetic._layout import make_layout
from wsistream.synthetic._pyramid import AreaDownsampler
from wsistream.synthetic._render import Level0Renderer
from wsistream.synthetic._texture import make_atlas
from wsistream.synthetic._validate import SlideSpec, validate_spec

_HEADER = "Aperio Image Library v12.0.15 "
#: Aperio thumbnails fit a 1024 × 768 box (``synthetic-40x.svs``: 8000 × 6000 -> 1024 × 768).
_THUMBNAIL_BOX = (1024, 768)
_THUMBNAIL_ROWS_PER_STRIP = 16
#: µm/px that sizes nuclei when the slide declares no MPP (the default 40x value: the cached atlas is shared).
_FALLBACK_TEXTURE_MPP = 0.252
#: Classic TIFF offsets are 32-bit; switch to BigTIFF when the JPEG data could come near 4 GiB.
_BIGTIFF_RAW_BYTES = 5 * 2**30


def write_aperio_svs(
    path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    mpp: float | None = 0.252,
    app_mag: float | None = 40,
    downsamples: Sequence[int] = (1, 4, 16),
    tile_size: int = 240,
    quality: int = 80,
    background_only: bool = False,
    seed: int = 0,
    tissue_blobs: int = 4,
    photometric: Literal["rgb", "ycbcr"] = "rgb",
    subsampling: tuple[int, int] = (1, 1),
    mpp_text: str | None = None,
    corrupt_tile: tuple[int, int] | None = None,
    bigtiff: bool | None = None,
) -> Path:
    """Write a pyramidal, tiled, JPEG-compressed Aperio SVS with H&E-like synthetic tissue.

    Level 0 is generated band by band and never held whole, so a 40000 × 30000 slide needs a few hundred
    MB (mostly the lower levels) and is written in well under two minutes on one core. The file is
    written to a temporary name next to ``path`` and renamed into place, so a crash never leaves a
    truncated slide that looks complete.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (parent directory must exist). Spaces and non-ASCII characters are fine.
    width, height : int
        Level-0 size in pixels.
    mpp : float or None
        µm per pixel written as ``MPP``; the Aperio 40x default 0.252 is the value of the shared
        ``synthetic-40x.svs``. ``None`` omits the key (slides without a resolution exist and readers must
        refuse or fall back explicitly). Also sets the physical size of nuclei and fibres.
    app_mag : float or None
        Objective power written as ``AppMag`` (``openslide.objective-power``); ``None`` omits it.
    downsamples : sequence of int
        Pyramid levels as integer factors, starting with 1 and strictly increasing. Level *k* is
        ``floor(width / ds) × floor(height / ds)`` (as Aperio does), so OpenSlide reports exactly ``ds``
        when ``ds`` divides both sides. ``(1,)`` writes a one-level slide.
    tile_size : int
        Tile edge in pixels, a multiple of 16 (TIFF rule); Aperio uses 240.
    quality : int
        JPEG quality, 1–100.
    background_only : bool
        Write glass only (background and faint noise, no tissue): tissue detectors must find nothing.
    seed : int
        Everything random (layout and textures) derives from it; same arguments give identical pixels.
    tissue_blobs : int
        Number of tissue bumps drawn; neighbouring ones may merge. Tissue covers ~30–46 % of the slide.
    photometric : {"rgb", "ycbcr"}
        ``"rgb"``: Aperio "JPEG/RGB" tiles (no colour transform and no marker saying so — the decoder trap
        of real SVS files). ``"ycbcr"``: standard YCbCr JPEG tiles (``PhotometricInterpretation = 6``).
    subsampling : tuple of int
        Chroma subsampling for ``"ycbcr"``: ``(1, 1)`` = 4:4:4, ``(2, 2)`` = 4:2:0.
    mpp_text : str or None
        Raw ``MPP`` value written verbatim instead of ``mpp`` (fault tests: ``"0"``, ``"nan"``, ``"abc"``).
    corrupt_tile : tuple of int or None
        ``(column, row)`` of a level-0 tile whose bytes are replaced by garbage of the same length: the
        slide opens, reading that tile raises (``openslide.OpenSlideError``; note that an OpenSlide handle
        stays in the error state afterwards), other tiles and levels read fine.
    bigtiff : bool or None
        Force or forbid BigTIFF; ``None`` picks BigTIFF only when the raw pixels exceed 5 GiB (JPEG data
        could then near the 4 GiB limit of classic TIFF, which real Aperio files use).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import openslide
    >>> from wsistream.synthetic import write_aperio_svs
    >>> p = write_aperio_svs(tmp_path / "s.svs", width=4096, height=3072, seed=1)  # doctest: +SKIP
    >>> openslide.OpenSlide(p).level_downsamples  # doctest: +SKIP
    (1.0, 4.0, 16.0)
    """
    spec = validate_spec(
        width=width,
        height=height,
        mpp=mpp,
        app_mag=app_mag,
        downsamples=downsamples,
        tile_size=tile_size,
        quality=quality,
        tissue_blobs=tissue_blobs,
        photometric=photometric,
        subsampling=subsampling,
        mpp_text=mpp_text,
        corrupt_tile=corrupt_tile,
    )
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _write(partial, spec, background_only=background_only, seed=seed, bigtiff=bigtiff, stem=path.stem)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _write(path: Path, spec: SlideSpec, *, background_only: bool, seed: int, bigtiff: bool | None, stem: str) -> None:
    """Render and write every page of the slide described by ``spec`` to ``path``."""
    width, height = spec.width, spec.height
    renderer = _renderer(spec, background_only=background_only, seed=seed)
    encoder = AbbreviatedJpegEncoder(quality=spec.quality, photometric=spec.photometric, subsampling=spec.subsampling)
    levels = [AreaDownsampler((width, height), ds) for ds in spec.downsamples[1:]]
    thumb_size = _thumbnail_size(width, height)
    thumb_source = _thumbnail_source(levels, (width, height), thumb_size)
    accumulators = levels if thumb_source in levels else [*levels, thumb_source]

    kv = _key_values(spec, stem=stem, seed=seed)
    colour = "RGB" if spec.photometric == "rgb" else "YCbCr"
    ts = spec.tile_size
    geometry = f"{width}x{height} [0,0 {width}x{height}] ({ts}x{ts})"
    first = f"{_HEADER}\r\n{geometry} JPEG/{colour} Q={spec.quality}|{kv}"
    if bigtiff is None:
        raw = width * height * 3 * sum(1.0 / ds**2 for ds in spec.downsamples)
        bigtiff = raw > _BIGTIFF_RAW_BYTES
    page_args = _page_args(spec, encoder)

    def level0_tiles() -> Iterator[bytes]:
        for y0, band in renderer.bands():
            valid = band[: min(ts, height - y0)]
            for acc in accumulators:
                acc.push(valid)
            row = y0 // ts
            for col in range(renderer.tiles_across):
                data = encoder.encode(band[:, col * ts : (col + 1) * ts])
                if spec.corrupt_tile == (col, row):
                    data = _garbage(len(data))
                yield data

    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        tif.write(level0_tiles(), shape=(height, width, 3), tile=(ts, ts), description=first, **page_args)
        if not all(acc.complete for acc in accumulators):
            raise RuntimeError("pyramid accumulation ended early; level 0 bands were not all produced")
        thumb = cv2.resize(thumb_source.image, thumb_size, interpolation=cv2.INTER_AREA)
        tif.write(
            _strips(encoder, thumb, _THUMBNAIL_ROWS_PER_STRIP),
            shape=thumb.shape,
            rowsperstrip=_THUMBNAIL_ROWS_PER_STRIP,
            description=f"{_HEADER}\r\n{width}x{height} -> {thumb_size[0]}x{thumb_size[1]} - |{kv}",
            **page_args,
        )
        for level in levels:
            lw, lh = level.size
            tif.write(
                _tiles(encoder, level.image, ts),
                shape=level.image.shape,
                tile=(ts, ts),
                description=f"{_HEADER}\r\n{width}x{height} -> {lw}x{lh} - |{kv}",
                **page_args,
            )


def _renderer(spec: SlideSpec, *, background_only: bool, seed: int) -> Level0Renderer:
    """The level-0 renderer of ``spec``: a tissue layout and a texture atlas, each from its own child seed."""
    layout_seq, texture_seq = np.random.SeedSequence(seed).spawn(2)
    layout = make_layout(
        np.random.default_rng(layout_seq),
        width=spec.width,
        height=spec.height,
        blobs=spec.tissue_blobs,
        background_only=background_only,
    )
    texture_mpp = spec.mpp if spec.mpp is not None else _FALLBACK_TEXTURE_MPP
    atlas = make_atlas(int(texture_seq.generate_state(1)[0]), texture_mpp)
    return Level0Renderer(layout, atlas, spec.tile_size)


def _page_args(spec: SlideSpec, encoder: AbbreviatedJpegEncoder) -> dict[str, Any]:
    """TiffWriter.write arguments shared by every page (pre-encoded JPEG, no tifffile metadata)."""
    return {
        "dtype": np.uint8,
        "photometric": "rgb",
        "compression": "jpeg",
        # With pre-encoded bytes tifffile only uses these to write the PhotometricInterpretation and
        # YCbCrSubSampling tags (and ReferenceBlackWhite for YCbCr).
        "compressionargs": {"outcolorspace": "RGB" if spec.photometric == "rgb" else "YCBCR"},
        "subsampling": spec.subsampling,
        "jpegtables": encoder.tables,
        "metadata": None,
        "software": False,
    }


def _format_number(value: float) -> str:
    """Shortest text that round-trips ``value`` (``40`` not ``40.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _key_values(spec: SlideSpec, *, stem: str, seed: int) -> str:
    """Build the ``key = value|…`` tail of every ImageDescription, in ``synthetic-40x.svs`` order."""
    items: list[str] = []
    if spec.app_mag is not None:
        items.append(f"AppMag = {_format_number(spec.app_mag)}")
    if spec.mpp_text is not None:
        items.append(f"MPP = {spec.mpp_text}")
    elif spec.mpp is not None:
        # Aperio writes 4 decimals; keep them when lossless so the text looks like a scanner's.
        text = f"{spec.mpp:.4f}" if float(f"{spec.mpp:.4f}") == spec.mpp else repr(float(spec.mpp))
        items.append(f"MPP = {text}")
    items += [
        "StripeWidth = 2040",
        "ScanScope ID = WSISTREAM",
        # TIFF ASCII fields are 7-bit: non-ASCII file names are written with '?' in their place.
        f"Filename = {stem.replace('|', '_').encode('ascii', 'replace').decode('ascii')}",
        "Date = 01/01/25",
        "Time = 00:00:00",
        f"Parmset = wsistream.synthetic seed {seed}",
        f"OriginalWidth = {spec.width}",
        f"OriginalHeight = {spec.height}",
    ]
    return "|".join(items)


def _thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """``(w, h)`` fitting the Aperio thumbnail box, never enlarged."""
    scale = min(1.0, _THUMBNAIL_BOX[0] / width, _THUMBNAIL_BOX[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _thumbnail_source(
    levels: list[AreaDownsampler], level0_size: tuple[int, int], thumb_size: tuple[int, int]
) -> AreaDownsampler:
    """Pick the coarsest accumulated level at least as large as the thumbnail, or add one for it."""
    for level in sorted(levels, key=lambda lv: -lv.downsample):
        if level.size[0] >= thumb_size[0] and level.size[1] >= thumb_size[1]:
            return level
    factor = max(1, math.floor(min(level0_size[0] / thumb_size[0], level0_size[1] / thumb_size[1])))
    return AreaDownsampler(level0_size, factor)


def _tiles(encoder: AbbreviatedJpegEncoder, image: np.ndarray, ts: int) -> Iterator[bytes]:
    """Encode ``image`` tile by tile in TIFF order; edge tiles are padded by replicating the last pixel."""
    rows, cols = image.shape[:2]
    for y in range(0, rows, ts):
        for x in range(0, cols, ts):
            tile = image[y : y + ts, x : x + ts]
            if tile.shape[:2] != (ts, ts):
                tile = np.pad(tile, ((0, ts - tile.shape[0]), (0, ts - tile.shape[1]), (0, 0)), mode="edge")
            yield encoder.encode(tile)


def _strips(encoder: AbbreviatedJpegEncoder, image: np.ndarray, rows_per_strip: int) -> Iterator[bytes]:
    """Encode ``image`` strip by strip (the last strip holds the remaining rows only)."""
    for y in range(0, image.shape[0], rows_per_strip):
        yield encoder.encode(image[y : y + rows_per_strip])


def _garbage(length: int) -> bytes:
    """Bytes that no JPEG decoder accepts (no SOI marker), of the corrupted tile's length."""
    return (b"\xde\xad\xbe\xef" * (length // 4 + 1))[:length]
