from __future__ import annotations

import numpy as np
import pytest

from wsistream.transforms import MacenkoNormalizer, estimate_macenko

# Macenko's reference vectors, and another lab's. (Ruifrok's eosin has a red OD so small that pure
# eosin pixels never pass Macenko's "every channel OD >= 0.15" filter.)
H_A, E_A = (0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581)
H_B, E_B = (0.65, 0.72, 0.25), (0.32, 0.80, 0.50)


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def cos(a, b):
    return float(unit(a) @ unit(b))


def test_estimate_recovers_known_stain_vectors(make_he):
    img = make_he(seed=1, h_vec=H_A, e_vec=E_A, e_max=1.3)
    stains = estimate_macenko(img)
    assert stains is not None
    assert cos(stains.stain_matrix[:, 0], H_A) > 0.99
    assert cos(stains.stain_matrix[:, 1], E_A) > 0.99
    np.testing.assert_allclose(np.linalg.norm(stains.stain_matrix, axis=0), 1.0)


def test_normalise_moves_stain_stats_to_reference(make_he):
    source = make_he(seed=2, h_vec=H_B, e_vec=E_B, h_max=0.9, e_max=0.9)
    reference = make_he(seed=3, h_vec=H_A, e_vec=E_A, h_max=1.4, e_max=1.3)
    norm = MacenkoNormalizer().fit(reference)
    out = norm.normalize(source)
    assert out.shape == source.shape and out.dtype == np.uint8

    ref, src, res = (estimate_macenko(x) for x in (reference, source, out))
    for j in range(2):  # stain vectors turn toward the reference's
        assert cos(res.stain_matrix[:, j], ref.stain_matrix[:, j]) > 0.99
        assert cos(res.stain_matrix[:, j], ref.stain_matrix[:, j]) > cos(src.stain_matrix[:, j], ref.stain_matrix[:, j])
    # maximum concentrations move to the reference's
    assert np.all(
        np.abs(res.max_concentrations - ref.max_concentrations)
        < 0.5 * np.abs(src.max_concentrations - ref.max_concentrations)
    )
    # and so does the mean colour
    d_before = np.abs(source.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).sum()
    d_after = np.abs(out.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).sum()
    assert d_after < 0.5 * d_before


def test_fit_returns_new_frozen_normaliser(make_he):
    base = MacenkoNormalizer()
    fitted = base.fit(make_he(seed=4, h_vec=H_A, e_vec=E_A, e_max=1.3))
    assert fitted is not base and fitted != base
    assert base.stain_matrix[0] == (0.5626, 0.2159)  # untouched reference-implementation default
    hash(fitted)
    assert fitted(make_he(seed=5), np.random.default_rng(0)).shape == (128, 128, 3)


def test_blank_image_is_returned_unchanged_and_cannot_be_a_reference():
    blank = np.full((64, 64, 3), 245, np.uint8)
    assert estimate_macenko(blank) is None
    assert MacenkoNormalizer().normalize(blank) is blank
    with pytest.raises(ValueError, match="too little stained tissue"):
        MacenkoNormalizer().fit(blank)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stain_matrix": ((1, 2),)}, "3×2"),
        ({"max_concentrations": (1.0, -1.0)}, "two positive"),
        ({"io": 0}, "io must be > 0"),
        ({"alpha": 60}, "percentile"),
        ({"beta": -1}, "OD threshold"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MacenkoNormalizer(**kwargs)
