"""Where the direct JPEG tile path gets its bytes: a local file, or a ranged-read object store.

:class:`ByteSource` is the one seam between the TIFF/JPEG decoding (``_tiff_levels``,
``_jpeg_tiles``) and storage: a size, positional reads, and a batched read of many ranges that a
remote source coalesces into few requests (:class:`wsistream.storage.RemoteByteSource`).
:class:`LocalFileSource` is ``os.pread`` on a descriptor reopened after a fork.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any


class ByteSource(ABC):
    """Random-access bytes of one slide file.  Picklable; a forked child reopens on first use."""

    #: The file or URL, for error messages.
    name: str

    @property
    @abstractmethod
    def size(self) -> int:
        """Length of the file in bytes."""

    @abstractmethod
    def read(self, offset: int, count: int) -> bytes:
        """Exactly ``count`` bytes at ``offset``; fewer is an error (the source raises)."""

    def read_ranges(self, ranges: Sequence[tuple[int, int]], spare: Sequence[tuple[int, int]] = ()) -> list[bytes]:
        """The bytes of each ``(offset, count)``, in order (remote sources coalesce them).

        ``spare``: ranges next to the wanted ones that a remote source may fetch in the same
        requests and keep for later reads (read-ahead); a local file ignores them.
        """
        return [self.read(offset, count) for offset, count in ranges]

    def file(self) -> io.BufferedReader:
        """A read-only, seekable file object over this source (for tifffile / TiffSlide).

        Buffered: tifffile parses NDPI headers wrongly from a raw stream (measured on
        ``test3-DAPI-2.ndpi``), and reads the same as from ``open(path, "rb")`` through a buffer.
        """
        return io.BufferedReader(_SourceFile(self))

    @abstractmethod
    def close(self) -> None:
        """Release the descriptor or connection; idempotent."""


class LocalFileSource(ByteSource):
    """A local file read with ``os.pread`` (seek + read where ``pread`` does not exist)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        self._size = os.path.getsize(self.name)
        self._fd: int | None = None
        self._pid: int | None = None
        self._fh: io.RawIOBase | None = None
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    def _descriptor(self) -> int:
        if self._closed:
            raise ValueError(f"{self.name}: source is closed")
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            # In a forked child the inherited descriptor is left alone (the child may already have
            # closed it and reused the number); a fresh one shares no state with the parent.
            self._fd = os.open(self.name, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = pid
            if not hasattr(os, "pread"):
                self._fh = os.fdopen(self._fd, "rb", buffering=0, closefd=False)
        return self._fd

    def read(self, offset: int, count: int) -> bytes:
        fd = self._descriptor()
        if self._fh is None:
            data = os.pread(fd, count, offset)
        else:
            self._fh.seek(offset)
            data = self._fh.read(count)
        if len(data) != count:
            from wsistream.backends._jpeg_check import JpegTileError

            raise JpegTileError(f"short read: {len(data)} of {count} bytes at offset {offset}")
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid() and not self._closed:
                os.close(self._fd)
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None, "_fh": None}


class _SourceFile(io.RawIOBase):
    """Seekable file view of a :class:`ByteSource` (reads past the end return what is there)."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._pos = 0
        self.name = source.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._source.size - self._pos)
        if count <= 0:
            return 0
        data = self._source.read(self._pos, count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
