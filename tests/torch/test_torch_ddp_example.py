"""examples/train_ddp.py under torchrun with 2 CPU processes: killed after a checkpoint, resumed, exact."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsistream.torch import WsiStreamDataset, make_loader

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_ddp.py"
ARGS = [
    "--steps",
    "6",
    "--ckpt-every",
    "2",
    "--batch-size",
    "8",
    "--patch-size",
    "32",
    "--mpp",
    "2.0",
    "--num-workers",
    "1",
    "--log-batches",
]


def _torchrun(out: Path, slides: list[str], *extra: str) -> subprocess.CompletedProcess:
    listing = out.parent / "slides.txt"
    listing.write_text("\n".join(slides) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(EXAMPLE),
        "--out",
        str(out),
        "--slides",
        str(listing),
        *ARGS,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def _example():
    spec = importlib.util.spec_from_file_location("train_ddp_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_torchrun_two_processes_killed_and_resumed_match_an_uninterrupted_run(cohort, tmp_path):
    out = tmp_path / "run"
    killed = _torchrun(out, cohort, "--kill-after-step", "4")
    assert killed.returncode != 0, killed.stdout + killed.stderr  # SIGKILLed after the checkpoint of step 4
    assert (out / "checkpoint.pt").exists()
    resumed = _torchrun(out, cohort, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from step 4" in resumed.stdout and "done: step 6" in resumed.stdout

    # the uninterrupted data stream of each rank, computed here from the example's own pipeline
    example = _example()
    args = example.parse_args(["--out", str(out), *ARGS])
    listing = str(tmp_path / "slides.txt")
    for rank in range(2):
        ds = WsiStreamDataset(example.build_pipeline(args, listing), rank=rank, world_size=2)
        it = iter(make_loader(ds, batch_size=8, num_workers=1))
        expected = [example.batch_digest(next(it)) for _ in range(6)]
        lines = (out / f"batches-rank{rank}.txt").read_text().split("\n")
        steps = [int(line.split()[0]) for line in lines if line]
        digests = [line.split()[1] for line in lines if line]
        assert steps == [1, 2, 3, 4, 5, 6]  # killed run: 1-4, resumed run: 5-6
        assert digests == expected
