"""Cluster extraction: ranks from torchrun/SLURM, lock files, and concurrent workers one of which is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsistream.features import DeepZoomTiling, ExtractionConfig, extract_cohort, iter_feature_dir, read_features
from wsistream.features.claims import ClaimConfig, SlideClaims, cluster_rank_world

_RANK_VARS = ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "8", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (3, 8)),  # torchrun wins
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, (2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3)),
        (  # array task 1 of 3, srun task 1 of 2 -> rank 3 of 6
            {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"},
            (3, 6),
        ),
    ],
)
def test_ranks_from_the_launcher(monkeypatch, env, expected):
    for var in (*_RANK_VARS, "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cluster_rank_world() == expected
    assert cluster_rank_world(1, 2) == (1, 2)  # explicit --rank/--world-size win


def test_rank_errors():
    with pytest.raises(ValueError, match="pass both"):
        cluster_rank_world(1, None)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        cluster_rank_world(2, 2)
    with pytest.raises(ValueError, match="two heartbeats"):
        ClaimConfig(heartbeat_s=10, stale_s=15)


def test_lock_contention_staleness_and_failure(tmp_path: Path):
    claims = SlideClaims(tmp_path / ".claims", heartbeat_s=0.05, stale_s=1.0)
    first = claims.try_claim("a.svs")
    assert first is not None and first.held()
    assert claims.try_claim("a.svs") is None  # held by a live owner (this process)
    first.release()
    assert not claims.lock_path("a.svs").exists()
    # a lock of a worker on another host: respected while its heartbeat is fresh, taken over once stale
    lock = claims.lock_path("b.svs")
    lock.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "token": "x"}))
    assert claims.try_claim("b.svs") is None
    old = time.time() - 5
    os.utime(lock, (old, old))
    taken = claims.try_claim("b.svs")
    assert taken is not None and json.loads(lock.read_text())["host"] == socket.gethostname()
    # the heartbeat keeps a held lock fresh
    with claims.heartbeat() as held:
        held.append(taken)
        os.utime(lock, (old, old))
        time.sleep(0.3)
        assert time.time() - lock.stat().st_mtime < 1.0
    # a dead process on this host: stale at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims.lock_path("c.svs").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "token": "y"}))
    assert claims.try_claim("c.svs") is not None
    # a failed slide is not retried by other workers
    failing = claims.try_claim("d.svs")
    failing.fail("NoTissueError: d.svs: no tissue")
    assert claims.try_claim("d.svs") is None and "no tissue" in claims.failed_path("d.svs").read_text()


@pytest.fixture(scope="module")
def cluster_slides(tmp_path_factory) -> list[str]:
    from wsistream.synthetic import write_aperio_svs

    root = tmp_path_factory.mktemp("cluster-slides")
    kw = {"width": 1800, "height": 1400, "mpp": 0.5, "app_mag": 20, "downsamples": (1, 4)}
    return [str(write_aperio_svs(root / f"s{i}.svs", seed=i, **kw)) for i in range(5)]


@pytest.fixture(scope="module")
def tiny_dinov2_pth(tmp_path_factory) -> Path:
    """A DINOv2 teacher checkpoint of a 64-d, 2-block ViT (plain torch: workers start without transformers)."""
    from wsistream.features.vit_checkpoints import PlainViT

    model = PlainViT(64, 2, 1, 32, 128, 7, layer_scale=True)
    gen = torch.Generator().manual_seed(0)
    sd = {f"backbone.{k}": torch.randn(v.shape, generator=gen) * 0.2 for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("dinov2") / "teacher_checkpoint.pth"
    torch.save({"teacher": sd}, path)
    return path


def _worker(weights: Path, slides: list[str], out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "wsistream.cli.main", "extract", "--encoder", "dinov2", "--weights", str(weights)]
    for s in slides:
        cmd += ["--slides", s]
    cmd += ["--out", str(out), "--format", "h5", "--tissue-threshold", "0.2", "--batch-size", "4"]
    cmd += ["--num-workers", "0", "--device", "cpu", "--no-progress", "--claim", "--heartbeat", "0.2"]
    cmd += ["--stale-after", "5"]
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _held_locks(worker: subprocess.Popen, root: Path) -> list[str]:
    """Names of the claim locks ``worker`` holds now (it must still be running)."""
    held = []
    for lock in (root / ".claims").glob("*.lock") if (root / ".claims").is_dir() else ():
        try:
            if json.loads(lock.read_text()).get("pid") == worker.pid:
                held.append(lock.name.removesuffix(".lock"))
        except (OSError, ValueError):
            continue
    assert worker.poll() is None, worker.stdout.read().decode()
    return held


def _wait_for_a_lock(worker: subprocess.Popen, root: Path, timeout: float = 120) -> None:
    """Return once ``worker`` holds a claim lock."""
    deadline = time.time() + timeout
    while not _held_locks(worker, root):
        assert time.time() < deadline, "the worker never held a lock"
        time.sleep(0.005)


def _kill_mid_slide(victim: subprocess.Popen, root: Path, timeout: float = 120) -> str:
    """SIGKILL ``victim`` while it holds a lock whose slide has no output yet; return that slide's name."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name in _held_locks(victim, root):
            if not (root / f"{Path(name).stem}.h5").exists():
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                return name
        time.sleep(0.005)
    raise AssertionError("the victim never held a lock")


@pytest.mark.slow
def test_three_workers_one_killed_every_slide_once(tiny_dinov2_pth: Path, cluster_slides: list[str], tmp_path: Path):
    out = tmp_path / "shared"
    root = out / "dinov2" / "default"
    victim = _worker(tiny_dinov2_pth, cluster_slides, out)
    _wait_for_a_lock(victim, root)  # started first: on a loaded machine the others could take every slide
    workers = [_worker(tiny_dinov2_pth, cluster_slides, out), victim, _worker(tiny_dinov2_pth, cluster_slides, out)]
    killed = _kill_mid_slide(victim, root)
    assert (root / ".claims" / f"{killed}.lock").exists()  # it died holding the slide
    workers.append(_worker(tiny_dinov2_pth, cluster_slides, out))  # the restarted job
    for w in (workers[0], workers[2], workers[3]):
        output = w.communicate(timeout=300)[0].decode()
        assert w.returncode == 0, output
    names = sorted(Path(s).stem for s in cluster_slides)
    assert sorted(f.slide_id for f in iter_feature_dir(root)) == names
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]  # no half file
    assert not list((root / ".claims").iterdir())  # every lock released or taken over
    records = [json.loads(line) for m in root.glob("manifest.*.jsonl") for line in m.read_text().splitlines()]
    done = sorted(Path(r["slide"]).stem for r in records if r["status"] == "done")
    assert done == names  # every slide done exactly once, the killed one included

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from wsistream.features import load_encoder

        single = extract_cohort(
            cluster_slides,
            tmp_path / "single",
            load_encoder("dinov2", tiny_dinov2_pth),
            tiling=DeepZoomTiling(tissue_threshold=0.2),
            fmt="h5",
            config=ExtractionConfig(batch_size=4, num_workers=0, device="cpu"),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    for name in names:
        ref, got = read_features(single.root / f"{name}.h5"), read_features(root / f"{name}.h5")
        np.testing.assert_array_equal(got.features, ref.features)
        np.testing.assert_array_equal(got.coords, ref.coords)
