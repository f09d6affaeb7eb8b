"""How slides in object storage are reached: fsspec options, timeouts, retries, caches."""

from __future__ import annotations

import inspect
import os
import threading
import types
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wsistream.storage.urls import protocol_of

#: Default location of the directory cache (``$WSISTREAM_CACHE_DIR/remote`` when set).
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "wsistream", "remote")


@dataclass(frozen=True, repr=False)
class StorageConfig:
    """Settings for reading ``s3://``, ``gs://`` and ``https://`` slides; picklable (travels to workers).

    Parameters
    ----------
    options : mapping
        fsspec storage options per protocol, e.g. ``{"s3": {"endpoint_url": ..., "key": ..., "secret": ...}}``.
        They are passed to ``fsspec.filesystem`` and never logged (``repr`` shows only the option names).
        Unset options come from the usual places: ``AWS_*`` variables / ``~/.aws`` for S3, fsspec's
        ``FSSPEC_S3_ENDPOINT_URL``-style variables, application-default credentials for ``gs://``.
    timeout_s : float
        Wall-clock limit of one request (connect + read); a request past it counts as a failed attempt.
    retries : int
        Attempts after the first for a request that timed out, was reset, got a 5xx or a truncated
        body.  403/404 and an ETag change are not retried.
    backoff_s : float
        Wait before retry ``k`` is ``backoff_s * 2**k`` (exponential backoff, as botocore's).
    cache_dir : str, optional
        Where the TIFF directory cache lives (``None``: ``$WSISTREAM_CACHE_DIR/remote`` or
        :data:`DEFAULT_CACHE_DIR`); ``""`` disables it.
    block_bytes : int
        Reads smaller than this (TIFF headers, directories, tag arrays) are served from aligned blocks
        of this size, so an IFD walk costs a few requests instead of hundreds.
    byte_cache_bytes : int
        Capacity of each slide's LRU of such blocks.
    coalesce_gap_bytes : int
        Tile ranges of one read whose gap is at most this many bytes are fetched in one request
        (the gap is read and thrown away).  Tiles of one row of a TIFF tile grid are adjacent.
    max_concurrency : int
        Requests of one batched read sent at once (the rows of a patch), so their latency overlaps.
    readahead_tiles : int
        A request for some tiles of a tile row also fetches up to this many uncached tiles on each
        side of them (same request, no extra round trip) into the slide's stored-tile cache, so a
        later patch nearby needs no request.  Object stores charge per request and per round
        trip, not per byte: s3fs reads ahead 50 MiB blocks by default (``S3FileSystem.default_block_size``);
        4 tiles of ~25 kB each side is far less.  On the bench's 8000² slides (100 patches per
        slide) it takes 1.8 requests per patch to ~0.7 at 1.2× the covered JPEG bytes
        (docs/storage.md); on large slides with spread-out patches it mostly costs bytes: set 0.
    tile_bytes_cache_bytes : int
        Capacity of each slide's LRU of stored (compressed) tile bytes, fetched or read ahead;
        ~8× denser than the decoded-tile cache.
    s3_reads : {"presigned", "fsspec"}
        How ``s3://`` tiles and blocks are fetched once an object is open.  ``"presigned"``: a
        presigned GET URL per object (re-signed at half its hour) read by a keep-alive ``urllib3``
        pool, ~3× less client CPU per request than s3fs/aiobotocore
        (:mod:`~wsistream.storage.presigned`); ``"fsspec"``: s3fs's ranged reads.  Listing,
        opening and metadata use fsspec either way; retries, timeouts, ``If-Match`` and the named
        errors are the same.
    """

    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timeout_s: float = 20.0
    retries: int = 3
    backoff_s: float = 0.2
    cache_dir: str | None = None
    block_bytes: int = 256 * 1024
    byte_cache_bytes: int = 16 * 1024 * 1024
    coalesce_gap_bytes: int = 16 * 1024
    max_concurrency: int = 8
    readahead_tiles: int = 4
    tile_bytes_cache_bytes: int = 16 * 1024 * 1024
    s3_reads: Literal["presigned", "fsspec"] = "presigned"

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping) or not all(isinstance(v, Mapping) for v in self.options.values()):
            raise ValueError('options must map a protocol to its fsspec options, e.g. {"s3": {"endpoint_url": ...}}')
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.retries < 0 or self.backoff_s < 0:
            raise ValueError(f"retries and backoff_s must be >= 0, got {self.retries} and {self.backoff_s}")
        for name in ("block_bytes", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("byte_cache_bytes", "coalesce_gap_bytes", "readahead_tiles", "tile_bytes_cache_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {getattr(self, name)}")
        if self.s3_reads not in ("presigned", "fsspec"):
            raise ValueError(f"s3_reads={self.s3_reads!r}; pass 'presigned' (urllib3) or 'fsspec' (s3fs)")

    def __repr__(self) -> str:  # credentials never reach a log line or a failure record
        names = {proto: sorted(opts) for proto, opts in self.options.items()}
        return (
            f"StorageConfig(options={names} (values hidden), timeout_s={self.timeout_s}, retries={self.retries}, "
            f"cache_dir={self.resolved_cache_dir!r})"
        )

    @property
    def resolved_cache_dir(self) -> str:
        """The directory cache folder (``""``: disabled)."""
        if self.cache_dir is not None:
            return self.cache_dir
        env = os.environ.get("WSISTREAM_CACHE_DIR")
        return os.path.join(env, "remote") if env else DEFAULT_CACHE_DIR

    def filesystem(self, url: str) -> Any:
        """The fsspec filesystem for ``url``'s protocol, with our timeouts and its own retries off.

        Retries are ours (bounded, with backoff, and every attempt under ``timeout_s``), so the
        library's are disabled: s3fs would otherwise retry 5 times and botocore 3-5 more per call,
        gcsfs 6 times with 1-32 s sleeps.
        """
        import fsspec

        _forget_parent_sessions_after_fork()
        protocol = protocol_of(url)
        kwargs = dict(self.options.get(protocol, {}))
        if protocol == "s3":
            config = dict(kwargs.pop("config_kwargs", {}))
            config.setdefault("connect_timeout", self.timeout_s)
            config.setdefault("read_timeout", self.timeout_s)
            config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
            # SigV4 for presigned URLs too (botocore presigns with SigV2 otherwise, which regions
            # opened since 2014 refuse); header-signed requests use SigV4 already
            config.setdefault("signature_version", "s3v4")
            kwargs["config_kwargs"] = config
            fs = fsspec.filesystem(protocol, **kwargs)
            fs.retries = 1  # s3fs's own retry loop (a class attribute, not a constructor option): one attempt
        elif protocol == "gs":
            kwargs.setdefault("requests_timeout", self.timeout_s)
            fs = _gcs_filesystem(kwargs)
        else:
            import aiohttp

            client = dict(kwargs.pop("client_kwargs", {}))
            client.setdefault("timeout", aiohttp.ClientTimeout(total=self.timeout_s))
            kwargs["client_kwargs"] = client
            fs = fsspec.filesystem(protocol, **kwargs)
        return fs


def _gcs_filesystem(kwargs: dict[str, Any]) -> Any:
    """A gcsfs filesystem that sends one request per call, on its JSON API.

    gcsfs retries inside ``GCSFileSystem._request`` (a decorator fixes 6 attempts at class
    definition, with 1-32 s sleeps); the instance's ``_request`` is replaced by the undecorated
    method so our bound holds.  Since gcsfs 2025.x ``gcsfs.GCSFileSystem`` is
    ``ExtendedGcsFileSystem``, which first asks the gRPC storage-control API for each bucket's
    layout; an emulator or private endpoint (``endpoint_url`` or ``STORAGE_EMULATOR_HOST`` set)
    has no such API, the lookup fails after its 60 s deadline and is not cached, so every open
    paid it again.  There we use ``gcsfs.core.GCSFileSystem``, the plain JSON-API client.
    """
    import gcsfs
    import gcsfs.core

    custom_endpoint = kwargs.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default")
    cls = gcsfs.core.GCSFileSystem if custom_endpoint else gcsfs.GCSFileSystem
    fs = cls(**kwargs)
    fs._request = types.MethodType(inspect.unwrap(gcsfs.core.GCSFileSystem._request), fs)
    return fs


_fork_hook = threading.Lock()
_fork_hook_registered = False
#: In a forked child: what the parent's filesystems' finalizers held, kept alive until exit.
_inherited: list[object] = []


def _forget_parent_sessions_after_fork() -> None:
    """Register (once per process) :func:`_detach_inherited_finalizers` to run in forked children."""
    global _fork_hook_registered
    with _fork_hook:
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_detach_inherited_finalizers)
            _fork_hook_registered = True


def _detach_inherited_finalizers() -> None:
    """In a forked child, disarm the parent's filesystems' session finalizers; keep their objects.

    s3fs (and fsspec's HTTP and gcsfs filesystems) register ``weakref.finalize(fs, close_session,
    loop, session)``.  A child of a DataLoader fork inherits those objects but not the event-loop
    thread they belong to; when the garbage collector frees them on the child's *own* loop thread,
    ``close_session`` schedules the close there and aiohttp fails with "attached to a different
    loop" (a traceback at worker exit).  Their sockets are the parent's (closing them, or
    unregistering them from the shared epoll, would disturb the parent), so the child detaches
    those finalizers and keeps the objects referenced until it exits.  fsspec itself drops its
    instance cache in a new process, so the child opens its own session on first use.
    ``weakref.finalize._registry`` is CPython's table of live finalizers (stable since 3.4).
    """
    import asyncio

    registry = getattr(weakref.finalize, "_registry", None)
    if not registry:
        return
    for fin, info in list(registry.items()):
        if any(isinstance(arg, asyncio.AbstractEventLoop) for arg in getattr(info, "args", ())):
            detached = fin.detach()
            if detached is not None:
                _inherited.append(detached)
