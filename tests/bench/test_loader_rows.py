"""The DataLoader rows of ``wsistream bench``: loader scaling beside the plain 2-process scaling of the same run."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from wsistream.bench.loader import loader_scaling


def test_loader_rows_carry_the_process_ceiling(written_20x, written_40x):
    rows = {r["row"]: r for r in loader_scaling([written_20x, written_40x], n_batches=2, batch_size=4)}
    assert set(rows) == {
        "1 process(es), no DataLoader",
        "2 process(es), no DataLoader",
        "1 worker(s), steady state",
        "1 worker(s), max worker RSS",
        "2 worker(s), steady state",
        "2 worker(s), max worker RSS",
    }
    one, two = rows["1 process(es), no DataLoader"], rows["2 process(es), no DataLoader"]
    assert one["value"] > 0 and two["value"] > 0
    assert two["scaling"] == pytest.approx(two["value"] / one["value"], rel=1e-2)
    loader = rows["2 worker(s), steady state"]
    assert loader["vs_process_scaling"] == pytest.approx(loader["scaling"] / two["scaling"], rel=1e-9)
    assert all(r["main_cpu_fraction"] > 0 for r in (loader, rows["1 worker(s), steady state"]))
