"""DICOM whole-slide images: a folder of ``.dcm`` files is one slide.

OpenSlide 4 reads a DICOM WSI series when given any one file of it and finds
the other instances (levels, label, overview) in the same folder itself, so the
folder is the slide's name everywhere in wsistream (slide lists, failure
records, feature files) and OpenSlide gets its first ``.dcm`` file.
"""

from __future__ import annotations

import os
from pathlib import Path


def dicom_member(path: str | os.PathLike[str]) -> str | None:
    """The first (sorted) ``.dcm`` file directly inside folder ``path``; ``None`` when it holds none."""
    try:
        names = sorted(p.name for p in Path(path).iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return None
    return str(Path(path) / names[0]) if names else None


def library_path(slide_path: str) -> str:
    """What to hand the slide library: a DICOM folder's first ``.dcm`` file, any other path as it is."""
    if os.path.isdir(slide_path):
        member = dicom_member(slide_path)
        if member is not None:
            return member
    return slide_path
