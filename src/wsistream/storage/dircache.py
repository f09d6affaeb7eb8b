"""A local cache of each remote slide's TIFF directories, keyed by URL + ETag + size.

Opening a slide from object storage costs an IFD walk: TiffSlide and the fast-tile planner read
every pyramid page's tags and its tile offset/byte-count arrays (about ten ranged requests through
the block cache for an Aperio SVS, more for a 100k-tile 40x scan).  What they learn (the slide
properties and, per level, the page's tile grid, offsets, byte counts and JPEG tables) is stored
here once, so a re-open (the next epoch, another DataLoader worker, the next run) costs one
metadata request.  The key includes the ETag and size: a re-uploaded object is a new entry, never a
stale one.  Entries are small (16 bytes per tile); the folder can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass

from wsistream.backends._tiff_levels import TiffJpegLevel
from wsistream.types import SlideProperties

_VERSION = 1


@dataclass(frozen=True)
class DirectoryEntry:
    """What a re-open needs: the backend's properties and the fast path's level plan."""

    url: str
    etag: str | None
    size: int
    properties: SlideProperties
    raw_mpp: object
    levels: tuple[TiffJpegLevel, ...]


def _entry_path(cache_dir: str, url: str, etag: str | None, size: int) -> str:
    digest = hashlib.sha256(f"v{_VERSION}\n{url}\n{etag}\n{size}".encode()).hexdigest()
    return os.path.join(cache_dir, digest[:2], digest + ".pkl")


def load_entry(cache_dir: str, url: str, etag: str | None, size: int) -> DirectoryEntry | None:
    """The cached entry of this exact object version, or ``None`` (absent, unreadable, other version)."""
    if not cache_dir or etag is None:
        return None
    path = _entry_path(cache_dir, url, etag, size)
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file: drop it, walk the directories again
        _remove_quietly(path)
        return None
    if not isinstance(entry, DirectoryEntry) or (entry.url, entry.etag, entry.size) != (url, etag, size):
        return None
    return entry


def save_entry(cache_dir: str, entry: DirectoryEntry) -> None:
    """Write ``entry`` atomically (a concurrent reader sees the old file or the new, never half)."""
    if not cache_dir or entry.etag is None:
        return
    path = _entry_path(cache_dir, entry.url, entry.etag, entry.size)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(entry, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache disk costs the next open an IFD walk, nothing else
        return


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
