"""S3 ranged reads through presigned URLs (the default) and through s3fs give the same pixels and errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wsistream.backends import TiffSlideBackend
from wsistream.errors import RemoteAccessDeniedError, RemoteStorageError
from wsistream.storage import StorageConfig


def _region(storage, url):
    with TiffSlideBackend(storage=storage).open(url) as handle:
        return handle.read_region(700, 900, 0, (224, 224))


def test_both_clients_read_the_local_pixels_and_bound_their_retries(s3_slides, storage, proxy):
    local, url = s3_slides["CMU-1-Small-Region.svs"]
    expected = TiffSlideBackend().open(local).read_region(700, 900, 0, (224, 224))
    assert storage.s3_reads == "presigned"
    for reads in ("presigned", "fsspec"):
        config = dataclasses.replace(storage, s3_reads=reads, cache_dir="")
        np.testing.assert_array_equal(_region(config, url), expected)
        with TiffSlideBackend(storage=config).open(url) as handle:
            before = proxy.requests
            proxy.inject("reset", 100)
            with pytest.raises(RemoteStorageError, match=r"CMU-1-Small-Region\.svs: .*after 3 attempts"):
                handle.read_region(1200, 100, 0, (224, 224))
            proxy.clear()
            assert proxy.requests - before <= 2 * 2 * (config.retries + 1)


def test_a_refused_signature_is_renewed_once_then_access_is_denied(s3_slides, storage, proxy):
    local, url = s3_slides["CMU-1-Small-Region.svs"]
    expected = TiffSlideBackend().open(local).read_region(1200, 100, 0, (224, 224))
    with TiffSlideBackend(storage=storage).open(url) as handle:
        proxy.inject("403", 1)  # e.g. the URL outlived its temporary credentials
        np.testing.assert_array_equal(handle.read_region(1200, 100, 0, (224, 224)), expected)
        before = proxy.requests
        proxy.inject("403", 100)
        with pytest.raises(RemoteAccessDeniedError, match=r"CMU-1-Small-Region\.svs: .*access denied"):
            handle.read_region(100, 1300, 0, (224, 224))
        assert proxy.requests - before <= 2 * 2  # per tile row: the request and its re-signed one, no retries


def test_s3_reads_is_validated():
    with pytest.raises(ValueError, match="s3_reads='boto'; pass 'presigned'"):
        StorageConfig(s3_reads="boto")


def test_presigned_mode_reads_tiles_through_signed_urls_and_fsspec_mode_does_not(s3_slides, storage, proxy):
    _, url = s3_slides["CMU-1-Small-Region.svs"]
    proxy.inject("503", 1000, key="X-Amz-Signature=")  # only query-signed (presigned) GETs fail
    with pytest.raises(RemoteStorageError, match="after 3 attempts"):
        _region(dataclasses.replace(storage, cache_dir=""), url)
    _region(dataclasses.replace(storage, s3_reads="fsspec", cache_dir=""), url)  # header-signed: unaffected
