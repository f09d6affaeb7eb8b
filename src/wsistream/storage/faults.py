"""Library exceptions of a storage request (fsspec, aiobotocore, aiohttp) as the named remote errors.

Its own module so that listing (:mod:`~wsistream.storage.urls`) and reading
(:mod:`~wsistream.storage.source`) name failures the same way without importing each other.
"""

from __future__ import annotations

from wsistream.errors import (
    RemoteAccessDeniedError,
    RemoteNotFoundError,
    RemoteObjectChangedError,
    RemoteStorageError,
)


def translate_error(url: str, what: str, exc: BaseException) -> RemoteStorageError:
    """The :class:`RemoteStorageError` subclass for a library exception (404, 403, ETag change, other)."""
    exc = underlying(exc)
    text = f"{type(exc).__name__}: {exc}"
    status = _status(exc)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return RemoteNotFoundError(url, f"{what}: object does not exist (404; {text})")
    if isinstance(exc, PermissionError) or status in (401, 403):
        return RemoteAccessDeniedError(url, f"{what}: access denied (403; check the credentials; {text})")
    if type(exc).__name__ == "FileExpired" or status == 412 or "PreconditionFailed" in str(exc):
        return RemoteObjectChangedError(url, f"{what}: the object changed while it was read (ETag mismatch; {text})")
    return RemoteStorageError(url, f"{what}: {text}")


def underlying(exc: BaseException) -> BaseException:
    """What happened, looking through fsspec's blanket "not found".

    fsspec's HTTP filesystem turns *any* failure of its metadata request (TLS, refused
    connection, timeout, 5xx) into ``FileNotFoundError(url) from exc``; only a cause that is a 404
    itself makes it "not found", else the cause is what happened (and is retried).
    """
    cause = exc.__cause__
    if type(exc) is FileNotFoundError and isinstance(cause, Exception) and _status(cause) != 404:
        return cause
    return exc


def _status(exc: BaseException) -> object:
    """The HTTP status a library exception carries (aiohttp ``status``, gcsfs ``code``), if any."""
    return getattr(exc, "status", None) or getattr(exc, "code", None)
