"""Slide cohorts for slide-level SSL: tile grid indices, validation and recorded skips.

Grid rule (what the encoder's position embedding and the crops use):

- HistoSSLscaling ``features.npy``: ``x, y`` are already DeepZoom tile addresses and are used as they are.
- ``.h5`` (level-0 pixel ``x, y``): ``grid = floor(xy / step)`` with ``step`` in level-0 pixels taken from,
  in order, the ``tile_size`` argument, the attribute ``patch_size_level0``, or ``patch_size × downsample``
  (``downsample`` from the attribute ``downsample``/``patch_downsample``/``level_downsample``, else 1, i.e.
  ``patch_size`` is taken to be level-0 pixels). Without any of those the step is inferred as the
  smallest positive gap between distinct x (or y) values. This generalises the reference's
  ``floor(coords / 256)`` (``LongNetViT.coords_to_pos``, SLP ``dino/slide_encoder/slide_encoder.py``).

Tokens are ordered row-major (by grid ``y``, then ``x``) whatever the file order, so a LongNet segment
is a horizontal band of the slide. ``order="file"`` keeps the file's order instead, as the reference
feeds its encoder (``SlideEncoder`` in reference mode needs it to reproduce released encoders' outputs).

Input rules: a tile with a non-finite feature or coordinate is dropped (recorded); a slide is skipped
(recorded, never raised mid-training) when it cannot be read, has no coordinates, has all tiles on one
grid cell, has fewer than ``min_tiles`` usable tiles, or has a feature dimension other than the cohort's
(the most common one, or ``input_dim`` when given). A cohort with no usable slide raises
:class:`~wsistream.errors.NoUsableSlidesError`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from wsistream.errors import NoUsableSlidesError
from wsistream.features.formats import FeatureFileError, SlideFeatures, read_features
from wsistream.pipeline.paths import SLIDE_EXTENSIONS

_DOWNSAMPLE_KEYS = ("downsample", "patch_downsample", "level_downsample")
#: Suffixes a slide id may carry: a feature file's, or a slide file's (the one list of ``pipeline.paths``).
_ID_SUFFIXES = (".h5", ".hdf5", ".npy", ".pt", *SLIDE_EXTENSIONS)


def slide_key(slide_id: str) -> str:
    """``slide_id`` without a feature / slide file suffix, so ``TCGA-X.h5``, ``TCGA-X.svs`` and ``TCGA-X`` match.

    SLP's exclude CSV lists bare ids and appends ``.h5`` before comparing with file names
    (``dino/datasets/slide_dataset.py`` l.28-35); comparing suffix-free keys covers both spellings.
    """
    name = str(slide_id).strip()
    for suffix in _ID_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_slide_ids(spec: str | os.PathLike[str] | Iterable[str]) -> set[str]:
    """Slide keys (:func:`slide_key`) from a CSV with a ``slide_id`` column, a text file, or a list.

    ``spec`` is a path to a ``.csv`` whose header has ``slide_id`` (what SLP's ``--exclude_data_path``
    reads: ``pd.read_csv(path)['slide_id']``), a path to a text file with one id per line, a
    comma-separated string of ids, or an iterable of ids. Raises ``ValueError`` naming the file when a
    CSV has no ``slide_id`` column.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return {slide_key(s) for s in spec if str(s).strip()}
    path = Path(spec)
    if not path.is_file():
        return {slide_key(s) for s in str(spec).split(",") if s.strip()}
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "slide_id" not in reader.fieldnames:
                raise ValueError(f"{path}: no 'slide_id' column; pass a CSV whose header has slide_id")
            return {slide_key(r["slide_id"]) for r in reader if (r["slide_id"] or "").strip()}
    lines = path.read_text().splitlines()
    return {slide_key(s) for s in lines if s.strip() and not s.startswith("#")}


@dataclass(frozen=True)
class SkipRecord:
    """A slide, some of its tiles, or a training step left out, and why."""

    slide: str
    reason: str
    action: Literal["skipped", "dropped_tiles", "step_skipped", "excluded"] = "skipped"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class SlideTokens:
    """One slide ready for cropping: finite features and integer grid indices, row-major (or file) order."""

    slide_id: str
    features: np.ndarray  # (N, d) float32
    grid: np.ndarray  # (N, 2) int64 (x, y)

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return int(self.features.shape[0])


class _Skip(Exception):
    pass


def _min_gap(values: np.ndarray) -> float:
    u = np.unique(values)
    gaps = np.diff(u)
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if gaps.size else 0.0


def tile_grid(sf: SlideFeatures, tile_size: float | None = None) -> tuple[np.ndarray, str]:
    """Integer tile grid indices ``(x, y)`` of a slide's tiles and a sentence naming the rule used.

    See the module docstring for the rule. Raises ``ValueError`` when no step can be found.
    """
    xy = sf.coords[:, 1:3].astype(np.float64)
    if sf.attrs.get("layout") == "histossl":
        return np.rint(xy).astype(np.int64), "x, y are HistoSSL DeepZoom tile addresses"
    attrs = sf.attrs
    if tile_size is not None:
        step, how = float(tile_size), f"tile_size={tile_size} (argument)"
    elif "patch_size_level0" in attrs:
        step, how = float(attrs["patch_size_level0"]), f"patch_size_level0={attrs['patch_size_level0']}"
    elif "patch_size" in attrs:
        key = next((k for k in _DOWNSAMPLE_KEYS if k in attrs), None)
        down = float(attrs[key]) if key else 1.0
        step = float(attrs["patch_size"]) * down
        how = f"patch_size={attrs['patch_size']} x {key or 'downsample'}={down:g}"
    else:
        gaps = [g for g in (_min_gap(xy[:, 0]), _min_gap(xy[:, 1])) if g > 0]
        if not gaps:
            raise ValueError("cannot infer the tile step: all tiles share one coordinate; pass tile_size")
        step, how = min(gaps), f"inferred smallest coordinate gap {min(gaps):g} px"
    if step <= 0:
        raise ValueError(f"tile step {step} must be > 0; pass tile_size")
    return np.floor(xy / step + 1e-6).astype(np.int64), f"floor(level-0 xy / {step:g}) from {how}"


def _npy_has_coordinates(path: Path, sf: SlideFeatures) -> str | None:
    """Reason why a ``features.npy`` does not carry coordinates, or None."""
    coords_file = path.parent / "coords.npy" if path.is_file() else path / "coords.npy"
    if coords_file.exists():
        try:
            c = np.load(coords_file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            return f"coords.npy unreadable ({exc})"
        if c.shape != sf.coords.shape or not np.allclose(c, sf.coords, equal_nan=True):
            return "features.npy columns 0-2 do not match coords.npy; the file holds no coordinates"
        return None
    head = sf.coords[np.isfinite(sf.coords).all(1)]
    if head.size and (not np.allclose(head, np.rint(head)) or (head < 0).any()):
        return "features.npy has no coordinate columns (columns 0-2 are not integer tile addresses)"
    return None


TileOrder = Literal["row_major", "file"]


def _prepare(
    sf: SlideFeatures, path: Path, min_tiles: int, tile_size: float | None, order: TileOrder = "row_major"
) -> tuple[SlideTokens, list[SkipRecord]]:
    notes: list[SkipRecord] = []
    if sf.attrs.get("layout") == "histossl":
        reason = _npy_has_coordinates(path, sf)
        if reason:
            raise _Skip(reason)
    n = sf.n_tiles
    if n == 0:
        raise _Skip("no tiles")
    ok = np.isfinite(sf.features).all(1) & np.isfinite(sf.coords).all(1)
    if not ok.all():
        bad = int(n - ok.sum())
        if bad == n:
            raise _Skip(f"all {n} tiles have non-finite features or coordinates")
        notes.append(SkipRecord(sf.slide_id, f"dropped {bad} of {n} tiles with non-finite values", "dropped_tiles"))
        sf = SlideFeatures(sf.slide_id, sf.features[ok], sf.coords[ok], sf.attrs)
    if sf.n_tiles < min_tiles:
        raise _Skip(f"{sf.n_tiles} usable tiles < min_tiles={min_tiles}; pass a lower min_tiles to keep it")
    if len(np.unique(sf.coords[:, 1:3], axis=0)) == 1:
        raise _Skip("all tiles share one position: coordinates are missing or constant")
    try:
        grid, _ = tile_grid(sf, tile_size)
    except ValueError as exc:
        raise _Skip(f"no usable coordinates: {exc}") from exc
    if len(np.unique(grid, axis=0)) == 1:
        raise _Skip("all tiles fall on one grid cell: coordinates are missing or constant")
    idx = np.lexsort((grid[:, 0], grid[:, 1])) if order == "row_major" else np.arange(len(grid))
    feats = np.ascontiguousarray(sf.features[idx], dtype=np.float32)
    return SlideTokens(sf.slide_id, feats, np.ascontiguousarray(grid[idx])), notes


def feature_paths(root: str | os.PathLike[str]) -> list[Path]:
    """``**/features.npy`` and ``**/*.h5`` under ``root``, sorted (as ``iter_feature_dir``)."""
    base = Path(root)
    if not base.is_dir():
        raise FeatureFileError(
            str(base), "feature directory not found; pass the folder holding .h5 / features.npy files"
        )
    return sorted([*base.rglob("features.npy"), *base.rglob("*.h5")])


def _read(path: Path) -> SlideFeatures:
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                if "coords" not in fh:
                    raise FeatureFileError(
                        str(path), "no 'coords' dataset: slide SSL needs tile coordinates; re-extract with coordinates"
                    )
        except OSError as exc:
            raise FeatureFileError(str(path), f"cannot read .h5 ({exc})") from exc
    return read_features(path)


@dataclass
class SlideTokenCohort:
    """Validated slides of a feature folder; see the module docstring for the rules.

    Build with :meth:`scan`; ``load(i)`` returns the i-th usable slide.
    """

    paths: list[Path]
    slide_ids: list[str]
    n_tiles: list[int]
    dim: int
    skips: list[SkipRecord] = field(default_factory=list)
    min_tiles: int = 16
    tile_size: float | None = None
    _cache: dict[int, SlideTokens] | None = None
    order: TileOrder = "row_major"

    @classmethod
    def scan(
        cls,
        root: str | os.PathLike[str],
        *,
        min_tiles: int = 16,
        input_dim: int | None = None,
        tile_size: float | None = None,
        preload: bool = True,
        order: TileOrder = "row_major",
    ) -> SlideTokenCohort:
        """Read and validate every slide under ``root`` once; keep them in memory when ``preload``.

        ``order``: tokens row-major (default) or in the file's order (``"file"``, what reference mode needs).
        """
        if min_tiles < 1:
            raise ValueError(f"min_tiles must be >= 1, got {min_tiles}")
        if order not in ("row_major", "file"):
            raise ValueError(f"order={order!r}; pass 'row_major' or 'file'")
        skips: list[SkipRecord] = []
        kept: list[tuple[Path, SlideTokens]] = []
        for p in feature_paths(root):
            try:
                tokens, notes = _prepare(_read(p), p, min_tiles, tile_size, order)
            except FeatureFileError as exc:
                skips.append(SkipRecord(str(p), exc.reason))
                continue
            except _Skip as exc:
                skips.append(SkipRecord(str(p), str(exc)))
                continue
            skips.extend(notes)
            kept.append((p, tokens))
        dims = Counter(t.features.shape[1] for _, t in kept)
        dim = int(input_dim) if input_dim is not None else (dims.most_common(1)[0][0] if dims else 0)
        usable = []
        for p, t in kept:
            if t.features.shape[1] != dim:
                why = "input_dim" if input_dim is not None else "the cohort's most common dimension"
                skips.append(SkipRecord(str(p), f"feature dimension {t.features.shape[1]} != {dim} ({why})"))
            else:
                usable.append((p, t))
        if not usable:
            raise NoUsableSlidesError([f"{s.slide}: {s.reason}" for s in skips] or [f"{root}: no feature files"])
        cache = {i: t for i, (_, t) in enumerate(usable)} if preload else None
        return cls(
            paths=[p for p, _ in usable],
            slide_ids=[t.slide_id for _, t in usable],
            n_tiles=[t.n_tiles for _, t in usable],
            dim=dim,
            skips=skips,
            min_tiles=min_tiles,
            tile_size=tile_size,
            _cache=cache,
            order=order,
        )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> SlideTokenCohort:
        """The cohort restricted to ``indices``, in that order (held in memory)."""
        idx = [int(i) for i in indices]
        return SlideTokenCohort(
            paths=[self.paths[i] for i in idx],
            slide_ids=[self.slide_ids[i] for i in idx],
            n_tiles=[self.n_tiles[i] for i in idx],
            dim=self.dim,
            skips=list(self.skips),
            min_tiles=self.min_tiles,
            tile_size=self.tile_size,
            _cache={j: self.load(i) for j, i in enumerate(idx)},
            order=self.order,
        )

    def without(self, slide_ids: Collection[str]) -> SlideTokenCohort:
        """The cohort minus the slides whose :func:`slide_key` is in ``slide_ids`` (recorded as ``excluded``).

        Raises :class:`~wsistream.errors.NoUsableSlidesError` when nothing is left.
        """
        drop = {slide_key(s) for s in slide_ids}
        keep = [i for i, s in enumerate(self.slide_ids) if slide_key(s) not in drop]
        excluded = [
            SkipRecord(str(self.paths[i]), "excluded: listed as an evaluation slide (exclude list)", "excluded")
            for i in range(len(self)) if slide_key(self.slide_ids[i]) in drop
        ]  # fmt: skip
        if not keep:
            raise NoUsableSlidesError([f"{r.slide}: {r.reason}" for r in excluded])
        cache = None if self._cache is None else {j: self._cache[i] for j, i in enumerate(keep)}
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in keep],
            slide_ids=[self.slide_ids[i] for i in keep],
            n_tiles=[self.n_tiles[i] for i in keep],
            skips=[*self.skips, *excluded],
            _cache=cache,
        )

    def load(self, i: int) -> SlideTokens:
        """The i-th usable slide; re-reads the file unless preloaded (may raise ``FeatureFileError``)."""
        if self._cache is not None:
            return self._cache[i]
        p = self.paths[i]
        try:
            tokens, _ = _prepare(_read(p), p, self.min_tiles, self.tile_size, self.order)
        except _Skip as exc:
            raise FeatureFileError(str(p), f"slide changed since the scan: {exc}") from exc
        if tokens.features.shape[1] != self.dim:
            raise FeatureFileError(str(p), f"feature dimension changed to {tokens.features.shape[1]} since the scan")
        return tokens
