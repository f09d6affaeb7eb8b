"""µm/px of an OME-TIFF from its OME-XML ``Pixels`` ``PhysicalSizeX/Y`` and their units.

OpenSlide reads OME-TIFF as ``generic-tiff`` without a resolution, and TiffSlide
only for some writers; the OME data model (``ome.xsd``, ``Pixels``) stores the
pixel size as ``PhysicalSizeX`` / ``PhysicalSizeY`` with ``PhysicalSizeXUnit`` /
``PhysicalSizeYUnit`` (default ``µm``). Only the first ``Image`` (the full
resolution series) is read.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

#: Micrometres per unit, for the OME ``UnitsLength`` symbols a scanner may write.
_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "μm": 1.0, "micron": 1.0, "nm": 1e-3, "Å": 1e-4, "mm": 1e3, "cm": 1e4, "m": 1e6}
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")


def ome_mpp(slide_path: str | os.PathLike[str]) -> tuple[float, float] | None:
    """``(µm/px x, µm/px y)`` from the OME-XML of a TIFF, ``None`` when absent, unitless or in unknown units."""
    if not os.fspath(slide_path).lower().endswith(_TIFF_SUFFIXES):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(slide_path) as tif:
            xml = tif.ome_metadata
    except (OSError, ValueError, tifffile.TiffFileError):
        return None
    return parse_ome_mpp(xml) if xml else None


def parse_ome_mpp(xml: str) -> tuple[float, float] | None:
    """``(µm/px x, µm/px y)`` of the first ``Image/Pixels`` of an OME-XML document."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in ("X", "Y"):
        value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is None or unit not in _UM_PER_UNIT:
            return None
        try:
            sizes.append(float(value) * _UM_PER_UNIT[unit])
        except ValueError:
            return None
    return sizes[0], sizes[1]
