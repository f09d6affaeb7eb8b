"""Tile-feature files: HistoSSLscaling ``features.npy`` and CLAM/TRIDENT-style ``.h5``.

Both load into one in-memory object, :class:`SlideFeatures`, which the MIL
benchmark (``wsistream.mil``) and slide-level SSL (``wsistream.slide_ssl``)
consume.

HistoSSLscaling layout (``rl_benchmarks``, ``extract_slide_features.py``)::

    {out}/{extractor}/{cohort}/{slide_id}/features.npy   # (N, 3 + d) = [tile_level, x, y, f...]
    {out}/{extractor}/{cohort}/{slide_id}/coords.npy     # (N, 3)     = [tile_level, x, y]

where ``x, y`` are DeepZoom column/row addresses at ``tile_level``.

CLAM/TRIDENT layout: one ``{slide_id}.h5`` with datasets ``features`` (N, d)
and ``coords`` (N, 2) int64 holding level-0 x/y; the tiling (patch size, its
level-0 side, level, magnifications, µm/px) on ``coords.attrs`` as TRIDENT writes
it (:mod:`wsistream.features.h5_attrs`), everything again on the file root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsistream.errors import WsiStreamError
from wsistream.features.h5_attrs import coords_attrs, features_attrs
from wsistream.registry import extra_hint, require


class FeatureFileError(WsiStreamError):
    """A feature file is missing, truncated, or not of a known layout."""


@dataclass(frozen=True)
class SlideFeatures:
    """Tile features of one slide.

    Attributes
    ----------
    slide_id : str
        Slide identifier (file stem / folder name).
    features : np.ndarray
        (N, d) float32 tile embeddings.
    coords : np.ndarray
        (N, 3) float32 ``[tile_level, x, y]``. For HistoSSLscaling files ``x, y``
        are DeepZoom tile addresses at ``tile_level``; for ``.h5`` files they are
        level-0 pixels and ``tile_level`` is the read level.
    attrs : dict
        File attributes (patch size, level, µm/px, encoder, coordinate frame).
    """

    slide_id: str
    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise FeatureFileError(self.slide_id, f"features must be (N, d), got shape {self.features.shape}")
        if self.coords.shape != (self.features.shape[0], 3):
            raise FeatureFileError(
                self.slide_id,
                f"coords must be (N, 3) with N={self.features.shape[0]}, got shape {self.coords.shape}",
            )

    @property
    def n_tiles(self) -> int:
        """Number of tiles N."""
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return int(self.features.shape[1])

    def as_histossl_array(self) -> np.ndarray:
        """Return the (N, 3 + d) ``[tile_level, x, y, features...]`` array the MIL models take."""
        return np.concatenate([self.coords, self.features], axis=1).astype(np.float32, copy=False)


#: Name of the JSON side-car (encoder, tiling, µm/px...) written next to ``features.npy``.
SIDECAR_NAME = "extraction.json"
#: Temporary files are ``.{name}.tmp-{pid}``: hidden, and matched by no reader glob.
_TMP_MARK = ".tmp-"


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")


def _replace_from(tmp: Path, target: Path) -> None:
    """Flush ``tmp`` to disk, then rename it onto ``target`` (atomic on POSIX)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def _save_npy_atomic(target: Path, arr: np.ndarray) -> None:
    tmp = _atomic_target(target)
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
        _replace_from(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_histossl(
    slide_dir: str | os.PathLike[str],
    features: np.ndarray,
    coords: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``features.npy`` (N, 3+d) and ``coords.npy`` (N, 3) atomically into ``slide_dir``.

    ``coords.npy`` (and, with ``attrs``, the ``extraction.json`` side-car) is
    written first and ``features.npy`` last, each via a temporary file and
    ``os.replace``, so a present ``features.npy`` means the slide is complete.
    """
    out = Path(slide_dir)
    out.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords, dtype=np.float32)
    full = np.concatenate([coords, np.asarray(features, dtype=np.float32)], axis=1)
    _save_npy_atomic(out / "coords.npy", coords)
    if attrs is not None:
        tmp = _atomic_target(out / SIDECAR_NAME)
        try:
            tmp.write_text(json.dumps({k: _jsonable(v) for k, v in attrs.items()}, indent=1, sort_keys=True))
            _replace_from(tmp, out / SIDECAR_NAME)
        finally:
            tmp.unlink(missing_ok=True)
    _save_npy_atomic(out / "features.npy", full)
    return out / "features.npy"


def write_h5(path: str | os.PathLike[str], features: np.ndarray, coords_xy: np.ndarray, **attrs: Any) -> Path:
    """Write a CLAM/TRIDENT-style ``.h5`` (``features`` (N, d), ``coords`` (N, 2) level-0 x/y) atomically.

    The tiling is described on ``coords.attrs`` as TRIDENT writes it and TRIDENT,
    CLAM and TITAN read it (:mod:`wsistream.features.h5_attrs`); every attribute is
    also kept on the file root (our own readers, and older wsistream files).
    ``coords_frame`` is always ``"level0_pixels"``: that is what ``coords`` holds.
    """
    require(("h5py",), component="the .h5 feature format", install=extra_hint("features"))
    import h5py

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_target(target)
    attrs = {**attrs, "coords_frame": "level0_pixels"}
    try:
        with h5py.File(tmp, "w") as fh:
            feats = fh.create_dataset("features", data=np.asarray(features, dtype=np.float32))
            coords = fh.create_dataset("coords", data=np.asarray(coords_xy, dtype=np.int64).reshape(-1, 2))
            for key, value in coords_attrs(attrs, target.stem, target.parent).items():
                coords.attrs[key] = value
            for key, value in features_attrs(attrs, target.stem, target.parent).items():
                feats.attrs[key] = value
            for key, value in attrs.items():
                if value is not None:  # HDF5 attributes cannot hold None
                    fh.attrs[key] = value
        _replace_from(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _attr_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def feature_file(path: str | os.PathLike[str]) -> Path:
    """The feature file ``path`` names: itself, or the ``features.npy`` of a slide folder; it must exist."""
    p = Path(path)
    if p.is_dir():
        p = p / "features.npy"
    if not p.exists():
        raise FeatureFileError(str(p), "feature file not found")
    return p


def read_features(path: str | os.PathLike[str]) -> SlideFeatures:
    """Load a ``features.npy``, a slide folder holding one, or an ``.h5`` file."""
    p = feature_file(path)
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise FeatureFileError(str(p), f"cannot read .npy ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] < 4:
            raise FeatureFileError(str(p), f"expected (N, 3 + d) array, got shape {arr.shape}")
        arr = arr.astype(np.float32, copy=False)
        attrs: dict[str, Any] = {}
        sidecar = p.parent / SIDECAR_NAME
        if sidecar.is_file():
            try:
                attrs = dict(json.loads(sidecar.read_text()))
            except (ValueError, OSError) as exc:
                raise FeatureFileError(str(sidecar), f"cannot read the side-car JSON ({exc})") from exc
        return SlideFeatures(p.parent.name, arr[:, 3:], arr[:, :3], {**attrs, "layout": "histossl"})
    if p.suffix in (".h5", ".hdf5"):
        require(("h5py",), component="the .h5 feature format", install=extra_hint("features"))
        import h5py

        try:
            with h5py.File(p, "r") as fh:
                feats = np.asarray(fh["features"], dtype=np.float32)
                xy = np.asarray(fh["coords"], dtype=np.float32)
                # TRIDENT/CLAM files describe the tiling on ``coords``; ours repeat it on the root
                attrs = {k: _attr_value(v) for k, v in [*fh["coords"].attrs.items(), *fh.attrs.items()]}
        except (OSError, KeyError) as exc:
            raise FeatureFileError(str(p), f"cannot read .h5 ({exc})") from exc
        if feats.ndim == 3 and feats.shape[0] == 1:  # CLAM writes (1, N, d) in some versions
            feats = feats[0]
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise FeatureFileError(str(p), f"coords must be (N, 2) level-0 x/y, got shape {xy.shape}")
        level = float(attrs.get("level", attrs.get("patch_level", 0)))
        coords = np.concatenate([np.full((len(xy), 1), level, np.float32), xy], axis=1)
        return SlideFeatures(p.stem, feats, coords, {"layout": "h5", **attrs})
    raise FeatureFileError(str(p), "unknown feature file type; pass a features.npy, a slide folder or a .h5")


def iter_feature_dir(root: str | os.PathLike[str]) -> Iterator[SlideFeatures]:
    """Yield every slide's features under ``root`` (``**/features.npy`` and ``**/*.h5``), sorted by path."""
    base = Path(root)
    if not base.is_dir():
        raise FeatureFileError(str(base), "feature directory not found")
    paths = sorted([*base.rglob("features.npy"), *base.rglob("*.h5")])
    for p in paths:
        yield read_features(p)


@dataclass(frozen=True)
class TileFeatures:
    """Features of a tile dataset (NCT-CRC-like folders of tile images).

    Attributes
    ----------
    features : np.ndarray
        (N, d) float32 embeddings.
    tile_ids : np.ndarray
        (N,) str: image file names without extension (``rl_benchmarks`` ``image_id``).
    labels : np.ndarray or None
        (N,) str class names (the sub-folder of each image) when written.
    """

    features: np.ndarray
    tile_ids: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.tile_ids.shape != (self.features.shape[0],):
            raise FeatureFileError(
                None,
                f"features (N, d) and tile_ids (N,) disagree: {self.features.shape} vs {self.tile_ids.shape}",
            )


def write_tile_features(
    out_dir: str | os.PathLike[str],
    features: np.ndarray,
    tile_ids: np.ndarray,
    labels: np.ndarray | None = None,
) -> Path:
    """Write ``tile_features.npy`` (N, d) and ``tile_ids.npy`` (N, 1) atomically (HistoSSLscaling layout).

    ``tile_ids.npy`` (and ``tile_labels.npy``) first, ``tile_features.npy``
    last, so a present ``tile_features.npy`` means the dataset is complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(tile_ids).astype(str).reshape(-1, 1)
    _save_npy_atomic(out / "tile_ids.npy", ids)
    if labels is not None:
        _save_npy_atomic(out / "tile_labels.npy", np.asarray(labels).astype(str).reshape(-1, 1))
    _save_npy_atomic(out / "tile_features.npy", np.asarray(features, dtype=np.float32))
    return out / "tile_features.npy"


def read_tile_features(folder: str | os.PathLike[str]) -> TileFeatures:
    """Load ``tile_features.npy`` + ``tile_ids.npy`` (ids of shape (N,) or (N, 1)) from ``folder``."""
    base = Path(folder)
    feats_path, ids_path = base / "tile_features.npy", base / "tile_ids.npy"
    for p in (feats_path, ids_path):
        if not p.is_file():
            raise FeatureFileError(str(p), "tile feature file not found")
    try:
        feats = np.load(feats_path, allow_pickle=False).astype(np.float32, copy=False)
        # rl_benchmarks saves ``image_id.values`` (an object array); ours are unicode
        ids = np.load(ids_path, allow_pickle=True).reshape(-1).astype(str)
        labels_path = base / "tile_labels.npy"
        labels = np.load(labels_path, allow_pickle=False).reshape(-1) if labels_path.is_file() else None
    except (ValueError, OSError, EOFError) as exc:
        raise FeatureFileError(str(base), f"cannot read tile features ({exc})") from exc
    return TileFeatures(feats, ids, labels)
