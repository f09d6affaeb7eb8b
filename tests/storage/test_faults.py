"""Network faults are bad input: bounded retries, then a named error naming the URL; never a hang."""

from __future__ import annotations

import time

import numpy as np
import pytest

from wsistream.backends import TiffSlideBackend
from wsistream.errors import (
    RemoteAccessDeniedError,
    RemoteNotFoundError,
    RemoteObjectChangedError,
    RemoteStorageError,
    SlideNotFoundError,
    SlideOpenError,
)


def _open(storage, url):
    return TiffSlideBackend(storage=storage).open(url)


@pytest.mark.parametrize("kind", ["reset", "503", "truncate", "stall"])
def test_a_transient_fault_is_retried_and_the_pixels_are_right(s3_slides, storage, proxy, kind):
    local, url = s3_slides["CMU-1-Small-Region.svs"]
    expected = TiffSlideBackend().open(local).read_region(700, 900, 0, (224, 224))
    with _open(storage, url) as handle:
        proxy.inject(kind, 1)
        start = time.monotonic()
        np.testing.assert_array_equal(handle.read_region(700, 900, 0, (224, 224)), expected)
        assert time.monotonic() - start < storage.timeout_s + 1.5  # a stall costs one timeout, not the stall


@pytest.mark.parametrize("kind", ["reset", "503", "truncate"])
def test_a_persistent_fault_raises_a_named_error_after_bounded_retries(s3_slides, storage, proxy, kind):
    _, url = s3_slides["CMU-1-Small-Region.svs"]
    with _open(storage, url) as handle:
        before = proxy.requests
        proxy.inject(kind, 100)
        with pytest.raises(RemoteStorageError, match=r"s3://slides/cohort/CMU-1-Small-Region.svs: .*after 3 attempts"):
            handle.read_region(1200, 100, 0, (224, 224))
        # at most 2 tile rows x 3 attempts; aiohttp re-sends an idempotent request once when a reused
        # keep-alive connection drops, so a reset can count twice
        assert proxy.requests - before <= 2 * 2 * (storage.retries + 1)


def test_a_stalled_server_times_out_and_never_hangs(s3_slides, storage, proxy):
    _, url = s3_slides["CMU-1-Small-Region.svs"]
    with _open(storage, url) as handle:
        proxy.inject("stall", 100)
        start = time.monotonic()
        with pytest.raises(RemoteStorageError, match=r"no answer within timeout_s=1\.0 s"):
            handle.read_region(1500, 1500, 0, (100, 100))
        elapsed = time.monotonic() - start
    assert elapsed < (storage.retries + 1) * storage.timeout_s + 1.0


def test_missing_object_and_denied_access_are_permanent_named_errors(s3_slides, storage, proxy):
    with pytest.raises(RemoteNotFoundError, match=r"cohort/absent\.svs: open: object does not exist") as info:
        _open(storage, "s3://slides/cohort/absent.svs")
    assert isinstance(info.value, SlideNotFoundError)  # a stream marks it dead like a missing file
    _, url = s3_slides["CMU-1-Small-Region.svs"]
    proxy.inject("403", 1, ranged_only=False)
    with pytest.raises(RemoteAccessDeniedError, match="access denied") as info:
        _open(storage, url)
    assert isinstance(info.value, SlideOpenError)
    assert proxy.requests  # and nothing was retried: the next open works
    _open(storage, url).close()


def test_an_object_replaced_while_streaming_fails_instead_of_mixing_versions(s3_server, cmu_svs, storage):
    with open(cmu_svs, "rb") as fh:
        data = fh.read()
    url = s3_server.put("changing/slide.svs", data)
    with _open(storage, url) as handle:
        handle.read_region(0, 0, 0, (224, 224))
        s3_server.put("changing/slide.svs", data[:-1] + b"\x00")  # same size, new ETag
        with pytest.raises(RemoteObjectChangedError, match=r"changing/slide.svs: .*changed while it was read"):
            handle.read_region(1000, 1000, 0, (224, 224))


def test_a_truncated_object_is_refused_at_open(s3_server, cmu_svs, storage):
    with open(cmu_svs, "rb") as fh:
        url = s3_server.put("broken/truncated.svs", fh.read()[:300_000])
    with pytest.raises(SlideOpenError, match=r"broken/truncated\.svs: tiffslide cannot open it"):
        _open(storage, url)
