"""Exact resume through StatefulDataLoader: views, cycling, epoch boundaries, a fresh process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch_helpers import digest, grid_pipeline, random_pipeline, small_views

from wsistream.torch import MonitoredLoader, WsiStreamDataset, make_loader

HERE = Path(__file__).parent


def _loader(pipeline, workers=2, **kw):
    return make_loader(WsiStreamDataset(pipeline), batch_size=8, num_workers=workers, **kw)


def _take(loader, n):
    it = iter(loader)
    return [digest(next(it)) for _ in range(n)]


@pytest.mark.parametrize(("workers", "rendering"), [(0, "cpu"), (2, "cpu"), (2, "device")])
def test_resume_after_k_batches_with_views_and_cycling(cohort, workers, rendering):
    # cycle=True, random crops and flips; "device": the view plans must resume exactly too
    pipeline = random_pipeline(cohort[:4], views=small_views(), view_rendering=rendering)
    reference = _take(_loader(pipeline, workers), 14)
    for k in (1, 6):
        loader = _loader(pipeline, workers)
        head = _take(loader, k)
        state = loader.state_dict()
        del loader
        resumed = _loader(pipeline, workers)
        resumed.load_state_dict(state)
        assert head + _take(resumed, 14 - k) == reference


@pytest.mark.parametrize("persistent", [False, True])
def test_resume_across_an_epoch_boundary(cohort, persistent):
    pipeline = grid_pipeline(cohort[:4])  # finite epochs, reshuffled by set_epoch

    def run(stop=None, state=None, first_epoch=0):
        """Digests of epochs first_epoch..1; with ``stop``, also the state after that many batches."""
        ds = WsiStreamDataset(pipeline)
        loader = make_loader(ds, batch_size=8, num_workers=2, persistent_workers=persistent)
        if state is not None:
            loader.load_state_dict(state)
        out, saved = [], None
        for epoch in range(first_epoch, 2):
            ds.set_epoch(epoch)
            for batch in loader:
                out.append(digest(batch))
                if len(out) == stop:
                    saved = loader.state_dict()
            if stop == ("end", epoch):
                saved = loader.state_dict()  # after the epoch's StopIteration
        return out, saved

    reference, _ = run()
    per_epoch = len(reference) // 2
    assert reference[:per_epoch] != reference[per_epoch:]
    # mid epoch 0; after its last batch (resumes into epoch 0, which then ends); after its end; mid epoch 1
    stops = [(per_epoch, 0), (per_epoch + 2, 1)] if persistent else [(3, 0), (("end", 0), 1)]
    for stop, resume_epoch in stops:
        _, state = run(stop=stop)
        done = per_epoch if stop == ("end", 0) else stop
        tail, _ = run(state=state, first_epoch=resume_epoch)
        assert reference[:done] + tail == reference, stop


def test_resume_in_a_fresh_process(cohort, tmp_path):
    pipeline = random_pipeline(cohort[:4], views=small_views())
    reference = _take(_loader(pipeline), 10)
    loader = _loader(pipeline)
    head = _take(loader, 4)
    torch.save(loader.state_dict(), tmp_path / "loader.pt")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HERE)!r})
        import torch
        from torch_helpers import digest, random_pipeline, small_views
        from wsistream.torch import MonitoredLoader, WsiStreamDataset, make_loader
        slides = {cohort[:4]!r}
        loader = make_loader(WsiStreamDataset(random_pipeline(slides, views=small_views())), batch_size=8,
                             num_workers=2)
        loader.load_state_dict(torch.load({str(tmp_path / "loader.pt")!r}, weights_only=False))
        it = iter(loader)
        print(json.dumps([digest(next(it)) for _ in range(6)]))
    """)
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert head + json.loads(out.stdout.strip().splitlines()[-1]) == reference


def test_checkpoint_is_small_and_does_not_grow_with_the_slide_count(cohort, tmp_path):
    many = []
    for i in range(2000):
        link = tmp_path / f"s{i:04d}.svs"
        link.symlink_to(cohort[i % 4])
        many.append(str(link))
    sizes = {}
    for name, slides in (("8", cohort), ("2000", many)):
        loader = _loader(random_pipeline(slides))
        _take(loader, 5)
        state = loader.state_dict()
        sizes[name] = len(pickle.dumps(state))
        dataset_states = [w["dataset_state"] for w in state["_snapshot"]["_worker_snapshots"].values()]
        assert all(set(s) >= {"seed", "epoch", "stream"} for s in dataset_states)
    assert sizes["2000"] < 4096
    assert abs(sizes["2000"] - sizes["8"]) < 64, sizes


def test_a_checkpoint_from_another_configuration_is_refused(cohort):
    loader = _loader(random_pipeline(cohort[:4], seed=1))
    _take(loader, 2)
    state = MonitoredLoader(loader).state_dict()
    for other, match in (
        (_loader(random_pipeline(cohort[:4], seed=2)), "checkpoint does not match this loader: seed"),
        (_loader(random_pipeline(cohort[:3], seed=1)), "checkpoint does not match this loader: slides"),
        (_loader(random_pipeline(cohort[:4], seed=1), workers=1), "holds 2 worker states.*num_workers=1"),
        (_loader(random_pipeline(cohort[:4], seed=1), workers=0), "num_workers=0"),
    ):
        with pytest.raises(ValueError, match=match):  # in the main process, before any worker starts
            MonitoredLoader(other).load_state_dict(state)
    # without the monitor, the worker (here: the main process) refuses it at the first batch
    single = _loader(random_pipeline(cohort[:4], seed=1), workers=0)
    _take(single, 1)
    state = single.state_dict()
    other = _loader(random_pipeline(cohort[:4], seed=2), workers=0)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="checkpoint does not match this loader: seed"):
        next(iter(other))
