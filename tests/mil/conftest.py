"""Synthetic slide cohorts with a planted signal, on disk and in memory (test helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsistream.features.formats import SlideFeatures, write_h5, write_histossl


def synth_slides(
    n_patients: int = 40,
    d: int = 8,
    task: str = "binary",
    signal: float = 2.0,
    seed: int = 0,
    two_slide_every: int = 4,
    n_classes: int = 3,
):
    """Return ([(slide_id, SlideFeatures)], {slide_id: (patient_id, label)}).

    binary: label 1 slides carry +signal on dims 0..3 in half their tiles.
    multiclass: class c shifts dims 2c, 2c+1 in half the tiles.
    survival: a latent risk z ~ N(0,1) shifts dims 0..3 by z*signal/2 in half the
    tiles; time ~ Exp(rate exp(2z)), partly censored; label = +t (event) / -t (censored).
    Every ``two_slide_every``-th patient has two slides (same label).
    """
    rng = np.random.default_rng(seed)
    slides, labels = [], {}
    for p in range(n_patients):
        pid = f"P{p:03d}"
        if task == "binary":
            y, shift = p % 2, np.r_[np.full(4, signal * (p % 2)), np.zeros(d - 4)]
        elif task == "multiclass":
            y = p % n_classes
            shift = np.zeros(d)
            shift[2 * y : 2 * y + 2] = signal
        else:
            z = rng.normal()
            shift = np.r_[np.full(4, z * signal / 2), np.zeros(d - 4)]
            t = rng.exponential(1.0 / np.exp(2 * z)) + 1e-3
            c = rng.exponential(3.0)
            y = float(t) if t <= c else -float(c)
        for s in range(2 if p % two_slide_every == 0 else 1):
            n = int(rng.integers(20, 40))
            f = rng.normal(size=(n, d)).astype(np.float32)
            f[: n // 2] += shift.astype(np.float32)
            coords = np.c_[np.full(n, 15), rng.integers(0, 50, size=(n, 2))].astype(np.float32)
            sid = f"{pid}-S{s}"
            slides.append((sid, SlideFeatures(sid, f, coords)))
            labels[sid] = (pid, y)
    return slides, labels


def write_cohort(root: Path, slides, labels, h5_every: int = 0, label_column: str = "label") -> tuple[Path, Path]:
    """Write slides as HistoSSL folders (every ``h5_every``-th as .h5) and a labels CSV."""
    feat_dir = root / "features"
    for i, (sid, sf) in enumerate(slides):
        if h5_every and i % h5_every == 0:
            write_h5(feat_dir / f"{sid}.h5", sf.features, sf.coords[:, 1:], level=15)
        else:
            write_histossl(feat_dir / sid, sf.features, sf.coords)
    rows = [{"slide_id": s, "patient_id": p, label_column: y} for s, (p, y) in labels.items()]
    csv = root / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return feat_dir, csv


@pytest.fixture
def synth():
    """The :func:`synth_slides` builder."""
    return synth_slides


@pytest.fixture
def cohort_writer():
    """The :func:`write_cohort` writer."""
    return write_cohort


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run faster single-threaded on a shared CPU; restore the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
