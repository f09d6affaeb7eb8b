"""Recognise object-storage URLs and expand prefixes, globs and list files into slide URLs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from wsistream.errors import RemoteStorageError
from wsistream.storage.faults import translate_error


class _Filesystems(Protocol):
    """What listing needs of :class:`~wsistream.storage.config.StorageConfig` (named, not imported: config uses us)."""

    def filesystem(self, url: str) -> Any:
        """The fsspec filesystem for ``url``."""
        ...


#: URL schemes read through fsspec (``gcs://`` is fsspec's alias of ``gs://``).
URL_SCHEMES = ("s3", "gs", "gcs", "http", "https")


def is_url(path: object) -> bool:
    """Whether ``path`` is a string naming an object in storage (``s3://``, ``gs://``, ``https://``...)."""
    if not isinstance(path, str) or "://" not in path:
        return False
    return path.split("://", 1)[0].lower() in URL_SCHEMES


def url_backend_name(paths: Iterable[object]) -> str | None:
    """``"tiffslide"`` when any of ``paths`` is a URL, else ``None`` (keep the caller's default reader).

    OpenSlide reads local files only (``docs/storage.md``); the CLIs (``extract``, ``validate``,
    ``preview``) use this when no ``--backend`` is named, so a URL cohort works without one.
    """
    return "tiffslide" if any(is_url(p) for p in paths) else None


def protocol_of(url: str) -> str:
    """The fsspec protocol of ``url`` (``"s3"``, ``"gs"``, ``"https"``...)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise ValueError(
            f"{url!r} is not an object-storage URL; pass one of {', '.join(s + '://' for s in URL_SCHEMES)}"
        )
    return "gs" if scheme == "gcs" else scheme


def _with_scheme(url: str, path: str) -> str:
    """Put the URL's scheme back on a listed ``bucket/key``."""
    scheme = url.split("://", 1)[0]
    return path if "://" in path else f"{scheme}://{path}"


def expand_url(url: str, storage: _Filesystems, extensions: tuple[str, ...]) -> list[str]:
    """Slide URLs named by ``url``: a glob, a prefix (``.../``, listed recursively), a list file, or one object.

    A prefix keeps only keys ending in ``extensions``; results are sorted so the stream order never
    depends on the listing order.  ``https://`` URLs cannot be listed: they name one object (or a
    ``.txt``/``.lst`` list of URLs).  An object that does not exist is kept (opening it records a
    ``RemoteNotFoundError`` in the stream), as missing local files are.
    """
    protocol = protocol_of(url)
    lower = url.lower()
    try:
        if lower.endswith((".txt", ".lst")):
            fs = storage.filesystem(url)
            text = fs.cat_file(url).decode()
            return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if protocol in ("http", "https"):
            return [url]
        if any(ch in url.split("://", 1)[1] for ch in "*?["):
            fs = storage.filesystem(url)
            return sorted(_with_scheme(url, p) for p in fs.glob(url))
        if url.endswith("/"):
            fs = storage.filesystem(url)
            found = fs.find(url)
            return sorted(_with_scheme(url, p) for p in found if p.lower().endswith(extensions))
    except RemoteStorageError:
        raise
    except Exception as exc:
        raise translate_error(url, "listing", exc) from exc
    return [url]
