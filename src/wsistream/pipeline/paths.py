"""Turn what a user passes as ``slide_paths`` into a sorted list of files."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsistream.storage.urls import expand_url, is_url

if TYPE_CHECKING:
    from wsistream.storage.config import StorageConfig

#: File extensions collected when a directory is given.
SLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".bif",
    ".svslide",
    ".qptiff",
)


def resolve_slide_paths(
    slide_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], storage: StorageConfig | None = None
) -> list[str]:
    """Expand a directory, a glob, a text file of paths (``.txt``/``.lst``), one file, or a list.

    Directories are searched recursively for :data:`SLIDE_EXTENSIONS`;
    results are sorted so the stream order never depends on the filesystem.
    Paths that do not exist are kept: opening them records a
    ``SlideNotFoundError`` in the stream instead of silently dropping them.

    URLs (``s3://bucket/prefix/``, ``s3://bucket/*/x*.svs``, ``gs://...``, ``https://...``) are
    expanded the same way by :func:`wsistream.storage.expand_url` through ``storage`` (default:
    credentials from the environment); a list file (local or remote) may mix local paths and URLs.
    """
    if isinstance(slide_paths, str) and is_url(slide_paths):
        from wsistream.storage.config import StorageConfig

        return expand_url(slide_paths, storage or StorageConfig(), SLIDE_EXTENSIONS)
    if isinstance(slide_paths, (str, os.PathLike)):
        text = os.fspath(slide_paths)
        path = Path(text)
        if path.is_dir():
            return _slides_in(path)
        if path.suffix.lower() in (".txt", ".lst") and path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if any(ch in text for ch in "*?["):
            return sorted(glob.glob(text, recursive=True))
        return [text]
    return [os.fspath(p) for p in slide_paths]


def _slides_in(folder: Path) -> list[str]:
    """Slide files under ``folder`` (recursive), a folder of DICOM ``.dcm`` files counting as one slide.

    A folder holding ``.dcm`` files is a DICOM WSI (OpenSlide 4 reads the series from any one of its
    files): it is listed once, as the folder, and its files are not listed on their own. The given
    folder itself may be such a slide.
    """
    slides, dicom_dirs = [], set()
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        suffix = p.suffix.lower()
        if suffix == ".dcm":
            dicom_dirs.add(str(p.parent))
        elif suffix in SLIDE_EXTENSIONS:
            slides.append(str(p))
    return sorted(slides + list(dicom_dirs))
