"""Slides in object storage (``s3://``, ``gs://``, ``https://``) through fsspec.

:class:`StorageConfig` says how to reach them (storage options, never logged; timeouts; retries;
caches); :func:`expand_url` lists prefixes, globs and list files; :class:`RemoteByteSource` does
bounded, retried, coalesced ranged reads (``s3://`` through presigned URLs and urllib3 by default,
:mod:`~wsistream.storage.presigned`); :func:`open_remote` opens a slide for
:class:`~wsistream.backends.TiffSlideBackend` (which reads URLs; OpenSlide cannot).  See
``docs/storage.md``.  ``urls`` and ``config`` import nothing heavy; the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsistream._lazy import lazy_exports
from wsistream.storage.config import DEFAULT_CACHE_DIR, StorageConfig
from wsistream.storage.urls import URL_SCHEMES, expand_url, is_url, protocol_of

_LAZY = {
    "RemoteByteSource": "source",
    "translate_error": "faults",
    "RemoteSlideHandle": "slide",
    "open_remote": "slide",
    "DirectoryEntry": "dircache",
    "load_entry": "dircache",
    "save_entry": "dircache",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:
    from wsistream.storage.dircache import DirectoryEntry, load_entry, save_entry
    from wsistream.storage.faults import translate_error
    from wsistream.storage.slide import RemoteSlideHandle, open_remote
    from wsistream.storage.source import RemoteByteSource

__all__ = [
    "DEFAULT_CACHE_DIR",
    "URL_SCHEMES",
    "DirectoryEntry",
    "RemoteByteSource",
    "RemoteSlideHandle",
    "StorageConfig",
    "expand_url",
    "is_url",
    "load_entry",
    "open_remote",
    "protocol_of",
    "save_entry",
    "translate_error",
]
