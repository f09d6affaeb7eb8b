"""One root exception, one subclass per reason a slide cannot be used.

Every error names the slide it concerns (``.slide_path``) and says why, so a
failure record from a worker three days into a run is actionable on its own.
Messages are built in ``__init__`` (as ``openslide.OpenSlideVersionError``
does) so that every raise site produces the same shape of message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class WsiStreamError(Exception):
    """Root of every error wsistream raises about a slide or its data."""

    def __init__(self, slide_path: str | None, reason: str | None = None) -> None:
        if reason is None:  # one-argument form, e.g. torch's DataLoader re-raising a worker error as cls(msg)
            slide_path, reason = None, str(slide_path)
        self.slide_path = slide_path
        self.reason = reason
        where = f"{slide_path}: " if slide_path is not None else ""
        super().__init__(f"{where}{reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep (slide_path, reason) across process boundaries
        return (_rebuild_error, (type(self), self.slide_path, self.reason))


def _rebuild_error(cls: type[WsiStreamError], slide_path: str | None, reason: str) -> WsiStreamError:
    err = WsiStreamError.__new__(cls)
    WsiStreamError.__init__(err, slide_path, reason)
    return err


class SlideNotFoundError(WsiStreamError):
    """The slide file does not exist."""


class SlideOpenError(WsiStreamError):
    """The file exists but no backend can open it as a slide."""


class TileDecodeError(WsiStreamError):
    """The slide opened, but a region of it cannot be decoded."""


class MissingMppError(WsiStreamError):
    """A physical resolution was asked for, and the slide has no usable µm/px."""


class ResolutionUnavailableError(WsiStreamError):
    """The requested µm/px is finer than the slide's level 0 (it would need upsampling)."""


class NoTissueError(WsiStreamError):
    """The tissue detector found no tissue, or no patch position meets the tissue threshold."""


class SlideTooSmallError(WsiStreamError):
    """The slide (at the read level) is smaller than one patch footprint."""


class SamplingExhaustedError(WsiStreamError):
    """``max_retries`` candidate positions in a row failed the tissue check."""


class NoUsableSlidesError(WsiStreamError):
    """Every slide of a stream failed; raised instead of spinning forever."""

    def __init__(self, failures: Sequence[object] | str) -> None:
        if isinstance(failures, str):  # re-raised from a DataLoader worker as cls(msg)
            self.failures = []
            WsiStreamError.__init__(self, None, failures)
            return
        self.failures = list(failures)
        lines = "\n".join(f"  - {f}" for f in self.failures[:50])
        more = f"\n  ... and {len(self.failures) - 50} more" if len(self.failures) > 50 else ""
        super().__init__(None, f"no usable slides: all {len(self.failures)} failed:\n{lines}{more}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (NoUsableSlidesError, (self.failures,))


class RemoteStorageError(WsiStreamError):
    """Object storage (``s3://``, ``gs://``, ``https://``) failed after the bounded retries.

    Timeouts, connection resets, server errors and truncated responses; the
    reason names the request and the last cause.  A stream records it, skips the
    slide and continues; the slide is tried again in a later epoch.
    """


class RemoteObjectChangedError(RemoteStorageError):
    """The object's ETag or size changed while it was being read (re-uploaded mid-stream)."""


class RemoteNotFoundError(RemoteStorageError, SlideNotFoundError):
    """The object (or its bucket) does not exist (HTTP 404); permanent like a missing file."""


class RemoteAccessDeniedError(RemoteStorageError, SlideOpenError):
    """The credentials may not read the object (HTTP 401/403); permanent like an unreadable file."""
