"""A synthetic cohort whose slide labels depend on spatial patterns of tile embeddings.

Every slide is a rectangle of tiles whose embeddings are unit Gaussian noise.
For label ``k`` two motif vectors ``strength * u_2k`` and ``strength * u_2k+1``
(orthonormal ``u``) may be laid out over the whole slide: pattern A puts the
first on every other *row* (horizontal stripes), pattern B the second on
every other *column* (vertical stripes). Each slide shows A or not and B or
not; its label is ``A xor B`` (stripes of exactly one orientation).

Why this shape: the patterns are visible in every crop, so slide-level SSL
can learn them, while the label is not a linear function of the mean
embedding (the four (A, B) cases sit on a parallelogram, and xor is not
linearly separable on one), so a random-init encoder, which at
initialisation pools tiles almost linearly, gives a linear probe little to
work with. Used by the tests and the docs' quick start.

:func:`make_arrangement_cohort` goes further: its label is not a property of any tile or of the bag of
tiles at all. Every slide is a square of tiles, a fixed number of which carry one motif; the label is how
they are laid out (rows vs columns, horizontal vs vertical halves, 2x2 clumps vs isolated, the direction of a
plane wave). Both classes have the same tiles in distribution -- the same number of motif tiles (for the
waves, the same distribution of it), the same noise -- so anything that pools tiles without their positions
(mean embedding, ABMIL) is at chance; only the spatial arrangement, which every crop shows, tells the classes
apart.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsistream.features.formats import write_h5

LAYOUTS = ("stripes", "halves", "clusters", "waves", "diagonal")
WAVE_WAVELENGTHS = (2.5, 5.0)  # tiles, uniform
# wave directions (degrees) of label 0 / label 1; a direction is drawn within a third of the centres' spacing of
# one centre, so the bands leave a gap as wide as a half band (30 degrees for "waves", 15 for "diagonal")
WAVE_CENTRES = {"waves": ((0.0,), (90.0,)), "diagonal": ((0.0, 90.0), (45.0, 135.0))}


@dataclass(frozen=True)
class SyntheticCohort:
    """Where the files went and the labels (``labels[i]`` belongs to ``slide_ids[i]``)."""

    root: Path
    slide_ids: list[str]
    labels: np.ndarray  # (n_slides, n_labels) int
    label_names: list[str]
    labels_csv: Path


def make_spatial_cohort(
    root: str | os.PathLike[str],
    *,
    n_slides: int = 48,
    dim: int = 16,
    n_labels: int = 1,
    side: tuple[int, int] = (8, 8),
    strength: float = 3.0,
    tile_size: int = 256,
    origin_range: int = 0,
    seed: int = 0,
) -> SyntheticCohort:
    """Write ``n_slides`` ``.h5`` feature files (level-0 coords, ``patch_size`` attribute) and ``labels.csv``.

    Parameters
    ----------
    n_labels : int
        Independent labels, each with its own pair of motifs (needs ``dim >= 2 * n_labels``).
    side : (int, int)
        Range of the slide width / height in tiles.
    strength : float
        Norm of a motif vector (tile noise has unit variance per dimension).
    origin_range : int
        Tissue offset on the glass, drawn from ``0 .. origin_range`` tiles per axis.
    """
    if 2 * n_labels > dim:
        raise ValueError(f"n_labels={n_labels} needs dim >= {2 * n_labels}, got dim={dim}")
    rng = np.random.default_rng(seed)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    balanced = np.arange(n_slides) % 2
    labels = np.stack([rng.permutation(balanced) for _ in range(n_labels)], axis=1)
    ids = []
    for s in range(n_slides):
        w, h = (int(v) for v in rng.integers(side[0], side[1] + 1, size=2))
        yy, xx = np.mgrid[0:h, 0:w]
        gx, gy = xx.ravel(), yy.ravel()
        feats = rng.normal(size=(gx.size, dim))
        for k in range(n_labels):
            a = int(rng.integers(0, 2))
            b = a ^ int(labels[s, k])
            if a:
                feats[gy % 2 == 0] += strength * basis[:, 2 * k]
            if b:
                feats[gx % 2 == 0] += strength * basis[:, 2 * k + 1]
        origin = rng.integers(0, origin_range + 1, size=2)
        coords = (np.stack([gx, gy], 1) + origin) * tile_size
        sid = f"slide_{s:03d}"
        write_h5(out / f"{sid}.h5", feats.astype(np.float32), coords, patch_size=tile_size, level=0)
        ids.append(sid)
    return _write_labels(out, ids, labels, [f"label{k}" for k in range(n_labels)])


def make_arrangement_cohort(
    root: str | os.PathLike[str],
    *,
    n_slides: int = 48,
    dim: int = 16,
    sides: tuple[int, ...] = (8, 10),
    strength: float = 3.0,
    tile_size: int = 256,
    origin_range: int = 32,
    layout: str = "halves",
    noise: float = 1.0,
    wavelengths: tuple[float, float] = WAVE_WAVELENGTHS,
    seed: int = 0,
) -> SyntheticCohort:
    """Write ``n_slides`` ``.h5`` files whose label is a property of the tiles' arrangement only, and ``labels.csv``.

    Slide ``s`` is a ``side x side`` square (``side`` drawn from the even ``sides``) of unit-Gaussian tile
    embeddings; the motif ``strength * u`` (one fixed unit vector) is added to a set of tiles that both labels
    give the same size (for the waves: the same size distribution), so the tile multiset has the same
    distribution in both classes and no bag-of-tiles method (mean pooling, ABMIL without positions) can beat chance:

    ``"stripes"``: every other row (label 1) or column (label 0), random phase, ``side**2 / 2`` tiles;
    ``"halves"``: the top or bottom half (label 1) or the left or right half (label 0);
    ``"clusters"``: about a quarter of the tiles, on whole 2x2 blocks (label 1) or with no two motif tiles
    sharing an edge (label 0);
    ``"waves"`` and ``"diagonal"``: a plane wave, motif where ``cos(2 pi (x cos t + y sin t) / wavelength + phase)
    > 0`` (about half the tiles; the count varies from slide to slide, in the same distribution for both labels),
    wavelength uniform in ``wavelengths`` tiles, phase uniform, direction ``t`` within a band around a label's
    centre (:data:`WAVE_CENTRES`). ``"waves"``: label 1 within 30 degrees of 90 (more horizontal stripes), label
    0 within 30 of 0 (more vertical; the labels are each other's transpose), a 30-degree gap between bands.
    ``"diagonal"``: label 1 within 15 degrees of 45 or 135 (diagonal stripes), label 0 within 15 of 0 or 90
    (axis-aligned), 15-degree gaps. Why waves: every slide has its own continuous arrangement (direction,
    wavelength, phase), so slides are many distinguishable kinds, which DINO's centring needs to form
    prototypes, and the label is a coarse function of it; "diagonal" makes the label an xor of the
    orientation (not a linear function of ``(cos 2t, sin 2t)``), so an encoder that merely sees orientation
    at random init, as one with a grid stem does, does not give a linear probe the label (see
    ``docs/slide_ssl.md``).

    ``origin_range``: tissue offset on the glass, drawn from ``0 .. origin_range`` tiles per axis (so absolute
    grid positions carry no label information; 0 puts every slide's corner at grid (0, 0)).

    ``noise``: standard deviation of the per-tile Gaussian noise. At 1 every tile is unique, so the tiles
    themselves tell two slides apart; small values (0.1) make the tiles a two-word vocabulary (background,
    motif), so that a slide's only signature is its arrangement (and, unless an objective is kept from it,
    where it lies on the glass).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; pass one of {', '.join(map(repr, LAYOUTS))}")
    if any(v < 2 or v % 2 for v in sides):
        raise ValueError(f"sides={sides}: pass even sides >= 2 so both orientations cover the same tile count")
    if not 0 < wavelengths[0] <= wavelengths[1]:
        raise ValueError(f"wavelengths={wavelengths}: pass (shortest, longest) in tiles, 0 < shortest <= longest")
    rng = np.random.default_rng(seed)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    motif = rng.normal(size=dim)
    motif *= strength / np.linalg.norm(motif)
    labels = rng.permutation(np.arange(n_slides) % 2)[:, None]
    ids = []
    for s in range(n_slides):
        side = int(rng.choice(sides))
        yy, xx = np.mgrid[0:side, 0:side]
        gx, gy = xx.ravel(), yy.ravel()
        on = _layout_mask(layout, side, gx, gy, bool(labels[s, 0]), rng, wavelengths)
        feats = noise * rng.normal(size=(gx.size, dim))
        feats[on] += motif
        origin = rng.integers(0, origin_range + 1, size=2)
        coords = (np.stack([gx, gy], 1) + origin) * tile_size
        sid = f"slide_{s:03d}"
        write_h5(out / f"{sid}.h5", feats.astype(np.float32), coords, patch_size=tile_size, level=0)
        ids.append(sid)
    return _write_labels(out, ids, labels, ["rows"])


def _layout_mask(
    layout: str,
    side: int,
    gx: np.ndarray,
    gy: np.ndarray,
    label: bool,
    rng: np.random.Generator,
    wavelengths: tuple[float, float] = WAVE_WAVELENGTHS,
) -> np.ndarray:
    """Which tiles of a ``side x side`` square carry the motif."""
    if layout == "clusters":
        return _clustered(side, rng) if label else _isolated(side, rng)
    if layout in WAVE_CENTRES:
        centres = WAVE_CENTRES[layout]
        half_band = 90.0 / len(centres[0]) / 3
        theta = np.deg2rad(rng.choice(centres[int(label)]) + rng.uniform(-half_band, half_band))
        freq = 2 * np.pi / rng.uniform(*wavelengths)
        phase = rng.uniform(0, 2 * np.pi)
        return np.asarray(np.cos(freq * (gx * np.cos(theta) + gy * np.sin(theta)) + phase) > 0)
    phase = int(rng.integers(0, 2))
    along = gy if label else gx
    if layout == "stripes":
        return np.asarray((along + phase) % 2 == 0)
    return np.asarray((along < side // 2) == bool(phase))


def _cluster_count(side: int) -> int:
    """Motif tiles of a ``clusters`` slide: a quarter of the 2x2 blocks, i.e. about a quarter of the tiles."""
    return 4 * max(1, round((side // 2) ** 2 / 4))


def _clustered(side: int, rng: np.random.Generator) -> np.ndarray:
    """Motif on whole 2x2 blocks of the aligned block lattice (row-major tile order)."""
    blocks = (side // 2) ** 2
    on = np.zeros((side, side), dtype=bool)
    for b in rng.choice(blocks, size=_cluster_count(side) // 4, replace=False):
        by, bx = divmod(int(b), side // 2)
        on[2 * by : 2 * by + 2, 2 * bx : 2 * bx + 2] = True
    return on.ravel()


def _isolated(side: int, rng: np.random.Generator) -> np.ndarray:
    """As many motif tiles as :func:`_clustered`, no two sharing an edge (random sequential placement)."""
    target = _cluster_count(side)
    while True:
        on = np.zeros((side + 2, side + 2), dtype=bool)  # one tile of margin: no bounds checks
        placed = 0
        for c in rng.permutation(side * side):
            y, x = divmod(int(c), side)
            y, x = y + 1, x + 1
            if not (on[y - 1, x] or on[y + 1, x] or on[y, x - 1] or on[y, x + 1]):
                on[y, x] = True
                placed += 1
                if placed == target:
                    return on[1:-1, 1:-1].ravel()


def _write_labels(out: Path, ids: list[str], labels: np.ndarray, names: list[str]) -> SyntheticCohort:
    csv_path = out / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["slide_id", *names])
        for sid, row in zip(ids, labels, strict=True):
            wr.writerow([sid, *row.tolist()])
    return SyntheticCohort(out, ids, labels.astype(int), names, csv_path)
