"""gs:// against a real GCS emulator on loopback: listing, same patches as local, named errors."""

from __future__ import annotations

import numpy as np
import pytest

from wsistream.backends import TiffSlideBackend
from wsistream.errors import RemoteNotFoundError, RemoteStorageError, SlideNotFoundError
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.storage.loopback import FaultProxy
from wsistream.storage.loopback_http import gcs_options

SVS = ("CMU-1-Small-Region.svs", "synthetic-40x.svs")


@pytest.fixture
def gcs_storage(gcs_server, storage_for):
    return storage_for(gcs_options(gcs_server.endpoint_url))


def test_listing_a_gs_prefix_and_glob(gcs_slides, gcs_storage):
    urls = sorted(url for _, url in gcs_slides.values())
    assert resolve_slide_paths("gs://slides/cohort/", gcs_storage) == urls
    assert resolve_slide_paths("gs://slides/cohort/*.svs", gcs_storage) == [u for u in urls if u.endswith(".svs")]
    assert resolve_slide_paths("gs://slides/nothing-here/", gcs_storage) == []


def test_same_seed_same_patches_from_gs_as_from_a_local_copy(gcs_slides, gcs_storage, seeded):
    local = [gcs_slides[n][0] for n in SVS]
    remote = [gcs_slides[n][1] for n in SVS]
    with TiffSlideBackend(storage=gcs_storage).open(remote[0]) as handle:
        assert handle.uses_fast_tiles  # ranged reads through gcsfs, not a whole-object download
    assert seeded(remote, TiffSlideBackend(storage=gcs_storage)) == seeded(local, TiffSlideBackend())


def test_ndpi_over_gs_reads_through_tiffslide(gcs_slides, gcs_storage):
    local, url = gcs_slides["test3-DAPI-2.ndpi"]
    with TiffSlideBackend(storage=gcs_storage).open(url) as remote, TiffSlideBackend().open(local) as here:
        args = (100, 200, 0, (256, 256))
        np.testing.assert_array_equal(remote.read_region(*args), here.read_region(*args))


def test_a_missing_gs_object_is_a_named_not_found_error(gcs_slides, gcs_storage):
    with pytest.raises(RemoteNotFoundError, match=r"gs://slides/cohort/absent\.svs: open: object does not") as info:
        TiffSlideBackend(storage=gcs_storage).open("gs://slides/cohort/absent.svs")
    assert isinstance(info.value, SlideNotFoundError)


def test_gs_faults_are_retried_by_us_within_the_bound(gcs_slides, gcs_server, storage_for):
    """gcsfs's own 6 attempts with 1-32 s sleeps are off: a 503 costs our attempts only."""
    local, url = gcs_slides["CMU-1-Small-Region.svs"]
    expected = TiffSlideBackend().open(local).read_region(700, 900, 0, (224, 224))
    with FaultProxy(gcs_server.endpoint_url) as proxy:
        storage = storage_for(gcs_options(proxy.endpoint_url))
        with TiffSlideBackend(storage=storage).open(url) as handle:
            proxy.inject("reset", 1)
            np.testing.assert_array_equal(handle.read_region(700, 900, 0, (224, 224)), expected)
            before = proxy.requests
            proxy.inject("503", 100)
            with pytest.raises(RemoteStorageError, match=r"gs://slides/cohort/CMU-1-Small-Region\.svs: .*after 3"):
                handle.read_region(1200, 100, 0, (224, 224))
            assert proxy.requests - before <= 2 * (storage.retries + 1)  # 2 tile rows x our 3 attempts
