"""Slides read from a loopback S3 server give the local file's pixels, with few requests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.errors import SlideOpenError
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.storage import StorageConfig, is_url


def test_is_url():
    assert is_url("s3://b/k.svs") and is_url("gs://b/k") and is_url("https://h/x.svs")
    assert not is_url("/data/x.svs") and not is_url("file.svs") and not is_url("ftp://h/x")


def test_prefix_glob_and_list_files(s3_slides, s3_server, storage, tmp_path, cmu_svs):
    urls = sorted(url for _, url in s3_slides.values())
    assert resolve_slide_paths("s3://slides/cohort/", storage) == urls
    assert resolve_slide_paths("s3://slides/cohort/*.svs", storage) == [u for u in urls if u.endswith(".svs")]
    assert resolve_slide_paths("s3://slides/nothing-here/", storage) == []
    mixed = tmp_path / "slides.txt"
    mixed.write_text(f"# cohort\n{cmu_svs}\n{urls[0]}\n")
    assert resolve_slide_paths(str(mixed), storage) == [cmu_svs, urls[0]]
    remote_list = s3_server.put("lists/two.txt", f"{urls[1]}\n{cmu_svs}\n".encode())
    assert resolve_slide_paths(remote_list, storage) == [urls[1], cmu_svs]


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "synthetic-40x.svs"])
def test_fast_path_pixels_equal_the_local_file(s3_slides, storage, name):
    local, url = s3_slides[name]
    with TiffSlideBackend(storage=storage).open(url) as remote, TiffSlideBackend().open(local) as here:
        assert remote.uses_fast_tiles
        assert remote.properties.level_dimensions == here.properties.level_dimensions
        assert remote.properties.mpp_level0 == here.properties.mpp_level0
        assert remote.properties.vendor == here.properties.vendor
        rng = np.random.default_rng(0)
        for level in range(remote.properties.level_count):
            w, h = remote.properties.level_dimensions[level]
            ds = remote.properties.level_downsamples[level]
            for _ in range(3):
                x, y = int(rng.integers(0, max(1, w - 300))), int(rng.integers(0, max(1, h - 300)))
                args = (round(x * ds), round(y * ds), level, (300, 300))
                np.testing.assert_array_equal(remote.read_region(*args), here.read_region(*args))


def test_tiffslide_path_for_files_the_fast_path_refuses(s3_slides, storage):
    local, url = s3_slides["test3-DAPI-2.ndpi"]
    with TiffSlideBackend(storage=storage).open(url) as remote, TiffSlideBackend().open(local) as here:
        assert not remote.uses_fast_tiles
        np.testing.assert_array_equal(
            remote.read_region(100, 200, 0, (256, 256)), here.read_region(100, 200, 0, (256, 256))
        )


def test_reopen_uses_the_directory_cache_and_coalesces_tile_rows(s3_slides, storage, proxy):
    _, url = s3_slides["CMU-1-Small-Region.svs"]
    backend = TiffSlideBackend(storage=dataclasses.replace(storage, readahead_tiles=0))
    with backend.open(url) as first:
        walk_requests = first.source.requests
    assert walk_requests >= 2  # metadata + at least one block of directories
    with backend.open(url) as again:
        assert again.source.requests == 1  # the metadata request only: no IFD walk
        before = proxy.ranged_requests
        # 240-px tiles: a 400x100 region inside one tile row covers 2-3 adjacent tiles -> one request
        again.read_region(250, 10, 0, (400, 100))
        assert proxy.ranged_requests - before == 1
        tiles = again._fast.levels[0]
        assert again.source.bytes_read <= 1.3 * int(tiles.bytecounts[1:4].sum()) + 16 * 1024


def test_readahead_serves_the_next_tiles_of_the_row_without_a_request(s3_slides, storage, proxy):
    local, url = s3_slides["CMU-1-Small-Region.svs"]
    storage = dataclasses.replace(storage, readahead_tiles=2)
    with TiffSlideBackend(storage=storage).open(url) as remote, TiffSlideBackend().open(local) as here:
        before, bytes_before = proxy.ranged_requests, remote.source.bytes_read
        remote.read_region(250, 10, 0, (400, 100))  # tiles 1-2 of row 0, and 0 + 3-4 read ahead: one request
        assert proxy.ranged_requests - before == 1
        tiles = remote._fast.levels[0]
        assert remote.source.bytes_read - bytes_before == int(tiles.bytecounts[0:5].sum())
        # tiles 3-4 of row 0 were read ahead: no request, and the pixels are the local file's
        args = (720, 0, 0, (400, 200))
        np.testing.assert_array_equal(remote.read_region(*args), here.read_region(*args))
        assert proxy.ranged_requests - before == 1
        remote.read_region(1200, 0, 0, (200, 200))  # tile 5 was not: a request
        assert proxy.ranged_requests - before == 2


def test_openslide_refuses_urls_clearly(s3_slides):
    _, url = s3_slides["CMU-1-Small-Region.svs"]
    with pytest.raises(SlideOpenError, match="reads local files only; pass backend=TiffSlideBackend"):
        OpenSlideBackend().open(url)


def test_storage_options_are_never_shown():
    config = StorageConfig(options={"s3": {"key": "AKIA-SECRET-ID", "secret": "very-secret"}})
    assert "very-secret" not in repr(config) and "AKIA-SECRET-ID" not in repr(config)
    assert "key" in repr(config)
    with pytest.raises(ValueError, match="map a protocol"):
        StorageConfig(options={"endpoint_url": "http://x"})


def test_prefetched_tiles_are_read_without_a_new_request(s3_slides, storage, proxy):
    local, url = s3_slides["synthetic-40x.svs"]
    with TiffSlideBackend(storage=storage).open(url) as remote, TiffSlideBackend().open(local) as here:
        assert remote.prefetches and not here.prefetches
        remote.prefetch_region(2000, 1500, 0, (448, 448))
        remote.read_region(0, 0, 0, (16, 16))  # another read meanwhile
        for future in list(remote.source._prefetched.values()):
            future.result(timeout=5)
        before = proxy.ranged_requests
        np.testing.assert_array_equal(
            remote.read_region(2000, 1500, 0, (448, 448)), here.read_region(2000, 1500, 0, (448, 448))
        )
        assert proxy.ranged_requests == before


def test_a_damaged_directory_cache_entry_is_walked_again(s3_slides, storage, tmp_path):
    import pathlib

    _, url = s3_slides["CMU-1-Small-Region.svs"]
    backend = TiffSlideBackend(storage=storage)
    backend.open(url).close()
    (entry,) = pathlib.Path(storage.resolved_cache_dir).rglob("*.pkl")
    entry.write_bytes(b"not a pickle")
    with backend.open(url) as handle:
        assert handle.uses_fast_tiles and handle.source.requests > 1  # walked again
    with backend.open(url) as handle:
        assert handle.source.requests == 1  # and cached again


def test_preopened_slides_open_and_give_their_overview_without_a_round_trip(s3_slides, storage, proxy):
    from wsistream.errors import RemoteNotFoundError

    local, url = s3_slides["synthetic-40x.svs"]
    absent = "s3://slides/cohort/absent.svs"
    backend = TiffSlideBackend(storage=storage)
    backend.preopen([url, absent], overview_side=512)
    with backend.open(url) as remote, TiffSlideBackend().open(local) as here:  # waits for the background open
        before = proxy.requests
        overview, downsample = remote.read_overview(512)
        assert proxy.requests == before  # the overview level was fetched by the pre-open
        expected, expected_ds = here.read_overview(512)
        np.testing.assert_array_equal(overview, expected)
        assert downsample == expected_ds
    with pytest.raises(RemoteNotFoundError, match=r"absent\.svs"):  # the background open's error, raised here
        backend.open(absent)
