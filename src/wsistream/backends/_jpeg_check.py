"""Structural check of a JPEG tile stream before decoding (what libjpeg only warns about)."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

_SOI, _EOI, _SOS, _DRI = 0xD8, 0xD9, 0xDA, 0xDD
_BASELINE_SOF = (0xC0, 0xC1)
#: A 0xFF in entropy-coded data that is not the stuffed byte pair 0xFF00: a marker (or fill).
_FF_NOT_STUFFED = re.compile(rb"\xff[^\x00]")
_ALL_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class JpegTileError(RuntimeError):
    """A JPEG tile of the slide is corrupt or does not match its TIFF page."""


class _Frame(NamedTuple):
    """What the tile's own SOF says."""

    width: int
    height: int
    components: int
    precision: int
    baseline: bool
    mcus: int  # number of MCUs of the (interleaved) scan
    restart_interval: int  # MCUs per restart interval from a DRI in the tile, 0 if none


def _parse_header(data: bytes, restart_interval: int) -> tuple[_Frame, int]:
    """Walk the marker segments up to the first SOS; return the frame and the scan's first byte."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise JpegTileError(f"not a JPEG stream (starts with {data[:4].hex() or 'nothing'})")
    pos = 2
    frame: tuple[int, ...] | None = None
    sampling: list[tuple[int, int]] = []
    while True:
        if pos + 4 > n:
            raise JpegTileError("JPEG stream ends inside its header (no SOS)")
        if data[pos] != 0xFF:
            raise JpegTileError(f"JPEG marker expected at byte {pos}, found {data[pos]:#04x}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (_EOI, _SOI) or 0xD0 <= marker <= 0xD7:
            raise JpegTileError(f"unexpected marker 0xff{marker:02x} in the JPEG header")
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > n:
            raise JpegTileError(f"JPEG segment 0xff{marker:02x} at byte {pos} runs past the end of the tile")
        if marker in _ALL_SOF:
            body = data[pos + 4 : pos + 2 + length]
            if len(body) < 6:
                raise JpegTileError("truncated SOF segment")
            ncomp = body[5]
            if len(body) < 6 + 3 * ncomp or ncomp == 0:
                raise JpegTileError("truncated SOF segment")
            sampling = [(body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(ncomp)]
            frame = (marker, body[0], (body[1] << 8) | body[2], (body[3] << 8) | body[4], ncomp)
        elif marker == _DRI and length >= 4:
            restart_interval = (data[pos + 4] << 8) | data[pos + 5]
        elif marker == _SOS:
            if frame is None:
                raise JpegTileError("JPEG stream has SOS before SOF")
            sof, precision, height, width, ncomp = frame
            hmax = max(h for h, _ in sampling) or 1
            vmax = max(v for _, v in sampling) or 1
            mcus = math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
            return (
                _Frame(width, height, ncomp, precision, sof in _BASELINE_SOF, mcus, restart_interval),
                pos + 2 + length,
            )
        pos += 2 + length


def _restart_interval_of(tables: bytes | None) -> int:
    """A DRI stored in ``JPEGTables`` applies to every tile (0 if none)."""
    if not tables:
        return 0
    pos = tables.find(b"\xff\xdd\x00\x04")
    return (tables[pos + 4] << 8) | tables[pos + 5] if pos >= 0 and pos + 6 <= len(tables) else 0


def check_jpeg_stream(data: bytes, *, width: int, height: int, restart_interval: int = 0) -> int:
    """Raise :class:`JpegTileError` unless ``data`` is a structurally complete JPEG tile of ``width`` × ``height``.

    Checks: SOI, header segments inside the data, a frame of the expected size with 3 components of
    8 bits, and, for baseline streams, that the entropy-coded segment contains no marker but the
    restart markers (in sequence and as many as the restart interval implies) and is closed by EOI.

    libjpeg merely *warns* on truncated data and on markers inside the scan (it fills the rest of the
    tile with flat colour), and ``imagecodecs`` ignores warnings where OpenSlide treats them as errors;
    this check closes that gap for truncation and for garbage containing marker bytes.  Damage that
    keeps the stream well formed (flipped bits, zero runs inside the scan) desynchronises the Huffman
    decoder; when that makes it run out of data early, :meth:`JpegTileReader.decode_raw` sees the
    grey tail libjpeg leaves; otherwise libjpeg decodes silently wrong pixels, as OpenSlide does too.

    Returns
    -------
    int
        Offset of the EOI marker that ends the (first) scan.
    """
    frame, scan = _parse_header(data, restart_interval)
    if (frame.width, frame.height) != (width, height):
        raise JpegTileError(f"JPEG frame is {frame.width}x{frame.height}, the TIFF tile is {width}x{height}")
    if frame.components != 3 or frame.precision != 8:
        raise JpegTileError(f"JPEG frame has {frame.components} components of {frame.precision} bits, expected 3 x 8")
    if frame.baseline and not frame.restart_interval:
        # Common case, in C: the first 0xFF that is not a stuffed 0xFF00 is the EOI.
        first = _FF_NOT_STUFFED.search(data, scan)
        if first is not None and data[first.start() + 1] == _EOI:
            return first.start()
    # Precise scan: fill bytes, restart markers, progressive streams, or an error to name.
    body = np.frombuffer(data, np.uint8, offset=scan)
    ff = np.flatnonzero(body == 0xFF)
    ff = ff[ff < body.size - 1]
    follow = body[ff + 1]
    eoi = np.flatnonzero(follow == _EOI)
    if eoi.size == 0:
        raise JpegTileError("JPEG tile is truncated (no EOI marker)")
    end = int(eoi[0])
    eoi_offset = scan + int(ff[end])
    if not frame.baseline:
        return eoi_offset  # progressive/lossless: DHT/SOS segments between scans are legal markers
    follow = follow[:end]
    is_rst = (follow >= 0xD0) & (follow <= 0xD7)
    bad = (follow != 0x00) & (follow != 0xFF) & ~is_rst
    if bad.any():
        at = scan + int(ff[int(np.flatnonzero(bad)[0])])
        raise JpegTileError(f"corrupt JPEG data: marker 0xff{int(follow[bad][0]):02x} inside the scan at byte {at}")
    if frame.restart_interval:
        rst = follow[is_rst].astype(np.intp) - 0xD0
        expected = max(0, math.ceil(frame.mcus / frame.restart_interval) - 1)
        if rst.size != expected or (rst.size and not np.array_equal(rst, np.arange(rst.size) % 8)):
            raise JpegTileError(
                f"corrupt JPEG data: {rst.size} restart markers out of sequence or count (expected {expected})"
            )
    elif is_rst.any():
        raise JpegTileError("corrupt JPEG data: restart marker without a restart interval")
    return eoi_offset


#: Entropy-coded filler spliced before the EOI to test whether the decoder needed more data.
_FILLER = b"\x55" * 4096


def _grey_tail(tile: np.ndarray) -> bool:
    """Whether the last 8×8 block of a tile is exactly (128, 128, 128), libjpeg's fill for MCUs without data."""
    return bool((tile[-8:, -8:] == 128).all())
