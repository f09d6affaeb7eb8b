"""MonitoredLoader, benchmark_throughput, and flat worker memory over many slides."""

from __future__ import annotations

import logging
import os

from torch_helpers import grid_pipeline, random_pipeline

from wsistream.backends import OpenSlideBackend
from wsistream.torch import MonitoredLoader, WsiStreamDataset, benchmark_throughput, make_loader

MiB = 2**20


def test_monitored_loader_reports_and_checkpoints(cohort, caplog):
    ds = WsiStreamDataset(grid_pipeline(cohort[:4]))
    monitor = MonitoredLoader(make_loader(ds, batch_size=8, num_workers=2), log_every_s=1e-6)
    with caplog.at_level(logging.INFO, logger="wsistream"):
        it = iter(monitor)
        for _ in range(3):
            next(it)
    stats = monitor.stats()
    assert stats["batches"] == 3 and stats["patches"] == 24
    assert stats["patches_per_s"] > 0 and 0 <= stats["wait_fraction"] <= 1 and stats["wait_s"] > 0
    assert stats["slides_opened"] >= 2 and stats["slides_failed"] == 0
    assert set(stats["worker_rss_bytes"]) == {0, 1} and stats["max_worker_rss_bytes"] > 50 * MiB
    assert any("patches/s" in r.getMessage() for r in caplog.records)
    state = monitor.state_dict()
    rest = sum(b["image"].shape[0] for b in it)
    resumed = MonitoredLoader(
        make_loader(WsiStreamDataset(grid_pipeline(cohort[:4])), batch_size=8, num_workers=2), log_every_s=None
    )
    resumed.load_state_dict(state)
    assert sum(b["image"].shape[0] for b in resumed) == rest
    assert resumed.stats()["patches"] == 24 + rest


def test_progress_bar(cohort, capsys):
    loader = make_loader(WsiStreamDataset(grid_pipeline(cohort[:1])), batch_size=8)
    monitor = MonitoredLoader(loader, progress=True, total=3, log_every_s=None)
    assert sum(1 for _ in monitor) >= 3
    assert "patches/s" in capsys.readouterr().err


def test_benchmark_throughput_one_and_two_workers(cohort):
    results = {
        w: benchmark_throughput(random_pipeline(cohort[:4]), num_workers=w, n_batches=8, batch_size=16) for w in (1, 2)
    }
    for w, r in results.items():
        assert r["num_workers"] == w and r["batches"] == 8 and r["patches"] == 128
        assert r["patches_per_s"] > 0 and r["startup_s"] > 0 and r["slides_failed"] == 0
        assert len(r["worker_rss_bytes"]) == w
        assert r["main_cpu_fraction"] > 0  # the consumer's own cost: receiving and unpacking the batches
        # the whole box's busy cores over the same window: at least the workers' decoding, at most every core
        assert r["box_cpus"] == os.cpu_count()
        assert r["main_cpu_fraction"] < r["box_busy_cores"] <= r["box_cpus"] * 1.05


def test_worker_rss_stays_flat_over_many_slides(cohort, tmp_path):
    # 120 slide files (links to four distinct slides, so each is opened anew) through a pool of two,
    # four patches per visit: the worker opens and retires 120 slides. After the warm-up (OpenSlide's
    # shared 8 MiB tile cache filling, the 4-mask LRU, allocator arenas), RSS measured 0.2 MiB of
    # growth over the next 90 slides; a leak of one tissue mask + overview per slide (~270 KB) grows
    # it by ~24 MiB. The 3 MiB bound catches any per-slide leak above ~35 KB.
    slides = []
    for i in range(120):
        link = tmp_path / f"s{i:03d}.svs"
        link.symlink_to(cohort[i % 4])
        slides.append(str(link))
    pipeline = random_pipeline(
        slides,
        cycle=False,
        patches_per_slide=4,
        pool_size=2,
        tissue_mask_cache_size=4,
        backend=OpenSlideBackend(cache_bytes=8 * MiB),
    )
    monitor = MonitoredLoader(make_loader(WsiStreamDataset(pipeline), batch_size=16, num_workers=1), log_every_s=None)
    after_warmup = None
    for _ in monitor:
        worker = monitor.workers[0]
        if after_warmup is None and worker.slides_opened >= 30:
            after_warmup = worker.rss_bytes
    final = monitor.workers[0]
    assert final.slides_opened == 120 and final.patches == 480
    growth = final.rss_bytes - after_warmup
    assert growth < 3 * MiB, f"worker RSS grew {growth / MiB:.1f} MiB over 90 slides"
