"""Synthetic cohorts: the arrangement-only cohort hides its label from every bag-of-tiles method."""

from __future__ import annotations

import numpy as np
import pytest

from wsistream.slide_ssl.data import SlideTokenCohort
from wsistream.slide_ssl.probe import linear_probe, reference_splits
from wsistream.slide_ssl.synthetic import _layout_mask, make_arrangement_cohort

LAYOUTS = ["stripes", "halves", "clusters", "waves", "diagonal"]


@pytest.mark.parametrize("layout", LAYOUTS[:3])
def test_both_labels_put_the_motif_on_the_same_number_of_tiles(layout):
    rng = np.random.default_rng(0)
    for side in (8, 10):
        yy, xx = np.mgrid[0:side, 0:side]
        counts = {
            label: {int(_layout_mask(layout, side, xx.ravel(), yy.ravel(), label, rng).sum()) for _ in range(50)}
            for label in (False, True)
        }
        assert len(counts[False]) == 1 and counts[False] == counts[True], counts


@pytest.mark.parametrize("layout", ["waves", "diagonal"])
def test_waves_cover_half_the_tiles_in_both_labels_and_follow_their_direction_bands(layout):
    # each slide has its own direction, wavelength and phase; the motif count varies from slide to slide, in the
    # same distribution for both labels, about half the tiles
    rng = np.random.default_rng(0)
    side = 10
    yy, xx = np.mgrid[0:side, 0:side]
    grids = {
        label: np.stack([_layout_mask(layout, side, xx.ravel(), yy.ravel(), label, rng) for _ in range(400)])
        for label in (False, True)
    }
    fractions = {label: g.mean(1) for label, g in grids.items()}
    assert abs(fractions[True].mean() - fractions[False].mean()) < 0.02 and abs(fractions[True].mean() - 0.5) < 0.03
    gap = {}  # how often the motif changes from a tile to its right neighbour minus to its lower one
    for label, g in grids.items():
        g = g.reshape(-1, side, side)
        gap[label] = (g[:, :, 1:] != g[:, :, :-1]).mean((1, 2)) - (g[:, 1:, :] != g[:, :-1, :]).mean((1, 2))
    if layout == "waves":  # label 1: more horizontal stripes, so rows change less along x than along y
        assert (gap[True] < 0).all() and (gap[False] > 0).all()
    else:  # diagonal stripes change about as often both ways, axis-aligned ones mostly one way
        assert np.median(abs(gap[True])) < 0.5 * np.median(abs(gap[False])), gap
    with pytest.raises(ValueError, match="pass one of"):
        make_arrangement_cohort("unused", layout="spirals")
    with pytest.raises(ValueError, match="0 < shortest <= longest"):
        make_arrangement_cohort("unused", layout=layout, wavelengths=(5.0, 2.5))


def _pair_similarity(cohort: SlideTokenCohort, i: int) -> tuple[float, float]:
    """Mean dot product of horizontally / vertically adjacent tiles' embeddings (an arrangement oracle)."""
    s = cohort.load(i)
    cell = {(int(x), int(y)): k for k, (x, y) in enumerate(s.grid)}
    sims: list[list[float]] = [[], []]
    for (x, y), k in cell.items():
        for axis, nb in enumerate(((x + 1, y), (x, y + 1))):
            if nb in cell:
                sims[axis].append(float(s.features[k] @ s.features[cell[nb]]))
    return float(np.mean(sims[0])), float(np.mean(sims[1]))


@pytest.mark.parametrize("noise", [1.0, 0.1])  # unique tiles; a two-word vocabulary (background, motif)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_mean_pooling_is_at_chance_while_the_arrangement_decides_the_label(layout, noise, tmp_path):
    from sklearn.metrics import roc_auc_score

    syn = make_arrangement_cohort(tmp_path, n_slides=160, layout=layout, origin_range=0, noise=noise, seed=1)
    cohort = SlideTokenCohort.scan(syn.root)
    y = syn.labels[[syn.slide_ids.index(s) for s in cohort.slide_ids], 0]
    means = np.stack([cohort.load(i).features.mean(0) for i in range(len(cohort))])
    # same tiles in distribution: the mean embedding's norm and its projection on the class-mean difference
    # do not separate the classes, and a linear probe on the mean embedding is at chance
    diff = means[y == 1].mean(0) - means[y == 0].mean(0)
    assert abs(roc_auc_score(y, np.linalg.norm(means, axis=1)) - 0.5) < 0.15
    probe = linear_probe(means, y.astype(float), reference_splits(len(cohort), repeats=10, seed=0))
    assert abs(probe.summary()["auroc_mean"] - 0.5) < 0.12, probe.summary()
    assert np.linalg.norm(diff) < 0.5  # motif strength 3: one class with more motif tiles would show here
    h, v = np.array([_pair_similarity(cohort, i) for i in range(len(cohort))]).T
    # rows / top-bottom halves / horizontal waves: like tiles side by side; diagonal waves: as alike both ways
    oracle = {"clusters": h + v, "diagonal": -abs(h - v)}.get(layout, h - v)
    assert roc_auc_score(y, oracle) > 0.85  # halves differ at one boundary only (0.91 here), the others 0.99+
