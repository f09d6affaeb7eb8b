"""Abbreviated JPEG tiles with shared tables, as Aperio and libtiff write them.

libjpeg-turbo (through imagecodecs) writes complete, self-describing JPEG streams: each one repeats the
quantisation and Huffman tables and carries a JFIF (YCbCr) or Adobe (RGB) marker. A TIFF written by a
scanner does neither: the tables live once in the ``JPEGTables`` tag and every tile is an *abbreviated*
stream (SOI, SOF, SOS, entropy-coded data, EOI). Aperio's "JPEG/RGB" tiles go one step further: they are
coded without the RGB→YCbCr transform, carry no marker that says so, and number their components 0, 1, 2,
so decoders that guess the colour space from markers (OpenCV, Pillow) decode them as YCbCr and get the
colours wrong (``NOTES.md``: PSNR 12 dB). This module reproduces those streams byte-layout for
byte-layout, so that readers built on this package meet the real trap in tests.
"""

from __future__ import annotations

from typing import Literal

import imagecodecs
import numpy as np

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOF0 = 0xC0
_DHT = 0xC4
_DQT = 0xDB
_SOS = 0xDA
_APP0, _APP15 = 0xE0, 0xEF

#: Component ids of Aperio "JPEG/RGB" tiles (``CMU-1-Small-Region.svs``: SOF0 ids 0, 1, 2, all tables 0).
_APERIO_RGB_IDS = bytes((0, 1, 2))


def _segments(stream: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split a baseline JPEG stream into its header segments and the scan.

    Parameters
    ----------
    stream : bytes
        A complete JPEG stream starting with SOI.

    Returns
    -------
    segments : list of (int, bytes)
        ``(marker, payload)`` for every segment between SOI and SOS, payload without the length field.
    scan : bytes
        Everything after the SOS marker: its length field, its payload, the entropy-coded data and EOI.
    """
    if stream[:2] != _SOI:
        raise ValueError(f"not a JPEG stream: starts with {stream[:2]!r}")
    pos = 2
    segments: list[tuple[int, bytes]] = []
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}, got {stream[pos]:#04x}")
        marker = stream[pos + 1]
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if marker == _SOS:
            return segments, stream[pos + 2 :]
        segments.append((marker, stream[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG stream has no SOS segment")


def _segment(marker: int, payload: bytes) -> bytes:
    """Serialise one marker segment (marker, big-endian length including itself, payload)."""
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


class AbbreviatedJpegEncoder:
    """Encode RGB tiles to abbreviated JPEG streams that share one ``JPEGTables`` blob.

    Parameters
    ----------
    quality : int
        libjpeg quality (1–100). Aperio writes Q=70–90; the shared synthetic slides use 80.
    photometric : {"rgb", "ycbcr"}
        ``"rgb"`` codes R, G, B directly (no colour transform, one luminance table set for all three
        components, component ids 0/1/2, no JFIF/Adobe marker) exactly like Aperio "JPEG/RGB" tiles; the
        TIFF must then say ``PhotometricInterpretation = RGB``. ``"ycbcr"`` is the libtiff-style YCbCr
        coding (ids 1/2/3, separate chroma tables) for ``PhotometricInterpretation = YCbCr``.
    subsampling : tuple of int
        Chroma subsampling ``(horizontal, vertical)`` for ``"ycbcr"``: ``(1, 1)`` is 4:4:4, ``(2, 2)`` is
        4:2:0. Must be ``(1, 1)`` for ``"rgb"`` (there is no chroma to subsample).

    Attributes
    ----------
    tables : bytes
        SOI + DQT + DHT + EOI, the value of the TIFF ``JPEGTables`` tag. Abbreviated tiles decode after
        splicing: ``tables[:-2] + tile[2:]``.
    """

    def __init__(
        self,
        *,
        quality: int,
        photometric: Literal["rgb", "ycbcr"],
        subsampling: tuple[int, int] = (1, 1),
    ) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        if photometric == "rgb" and tuple(subsampling) != (1, 1):
            raise ValueError(f"subsampling={subsampling!r} needs photometric='ycbcr'; RGB tiles have no chroma")
        if tuple(subsampling) not in {(1, 1), (2, 1), (2, 2)}:
            raise ValueError(f"subsampling must be (1, 1), (2, 1) or (2, 2), got {subsampling!r}")
        self.quality = quality
        self.photometric = photometric
        self.subsampling = (int(subsampling[0]), int(subsampling[1]))
        # libjpeg's standard (non-optimised) Huffman tables and quality-scaled quantisation tables do not
        # depend on the pixels, so encoding any block yields the tables every later tile will repeat.
        probe = self._encode_full(np.full((16, 16, 3), 128, np.uint8))
        segments, _ = _segments(probe)
        self._table_bytes = b"".join(_segment(m, p) for m, p in segments if m in (_DQT, _DHT))
        self.tables = _SOI + self._table_bytes + _EOI

    def _encode_full(self, tile: np.ndarray) -> bytes:
        """Encode a complete JPEG stream with libjpeg-turbo (tables and markers included)."""
        if self.photometric == "rgb":
            return bytes(imagecodecs.jpeg8_encode(tile, self.quality, colorspace="RGB", outcolorspace="RGB"))
        return bytes(
            imagecodecs.jpeg8_encode(
                tile,
                self.quality,
                colorspace="RGB",
                outcolorspace="YCbCr",
                subsampling=self.subsampling,
                optimize=False,
            )
        )

    def encode(self, tile: np.ndarray) -> bytes:
        """Return the abbreviated stream of one ``(h, w, 3)`` uint8 RGB tile.

        Raises
        ------
        RuntimeError
            If libjpeg emitted tables that differ from :attr:`tables` (the tiles would then need their
            own tables, which abbreviated streams cannot carry).
        """
        segments, scan = _segments(self._encode_full(np.ascontiguousarray(tile)))
        tables = b"".join(_segment(m, p) for m, p in segments if m in (_DQT, _DHT))
        if tables != self._table_bytes:
            raise RuntimeError("libjpeg emitted per-tile tables; cannot write abbreviated JPEG tiles")
        header = bytearray(_SOI)
        for marker, payload in segments:
            if marker in (_DQT, _DHT) or _APP0 <= marker <= _APP15:
                continue  # tables go to JPEGTables; JFIF/Adobe markers are dropped, as libtiff does
            if marker == _SOF0 and self.photometric == "rgb":
                payload = _renumber_sof(payload)
            header += _segment(marker, payload)
        if self.photometric == "rgb":
            scan = _renumber_sos(scan)
        return bytes(header) + bytes((0xFF, _SOS)) + scan


def _renumber_sof(payload: bytes) -> bytes:
    """Give the three SOF components Aperio's ids 0, 1, 2 (libjpeg writes 'R', 'G', 'B')."""
    out = bytearray(payload)
    ncomp = out[5]
    for i in range(ncomp):
        out[6 + 3 * i] = _APERIO_RGB_IDS[i]
    return bytes(out)


def _renumber_sos(scan: bytes) -> bytes:
    """Rewrite the component selectors of the SOS header to match :func:`_renumber_sof`.

    ``scan`` starts with the SOS length field; the selectors follow the component count.
    """
    out = bytearray(scan)
    ncomp = out[2]
    for i in range(ncomp):
        out[3 + 2 * i] = _APERIO_RGB_IDS[i]
    return bytes(out)
