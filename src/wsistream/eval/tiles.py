"""Tile-level feature datasets for linear evaluation.

Reference layout (HistoSSLscaling README, ``tiles_classification``)::

    {features}/{extractor}/{cohort}/tile_features.npy   # (N, d)
    {features}/{extractor}/{cohort}/tile_ids.npy        # (N,) or (N, 1) str

Labels come, as in ``rl_benchmarks/datasets/tiles_classification/nct_crc.py``,
from the class sub-folders of the tile images (``ADI/ADI-AAAFLCLY.tif`` ->
``ADI``, id = file name without extension), or from a CSV ``tile_id,label``,
or from the ids themselves when they are ``class/name`` paths. Classes are
indexed in sorted order (NCT-CRC's ``dict_labels.pkl`` is alphabetical), and
an excluded class (NCT-CRC: ``BACK``) is removed with the indices above it
shifted down (reference ``remove_labels``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsistream.errors import WsiStreamError

_IMAGE_EXTS = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}


class TileDatasetError(WsiStreamError):
    """Tile features or labels cannot be used; names the file or tile and the reason."""


@dataclass(frozen=True, eq=False)
class TileDataset:
    """Tile features with integer labels.

    Attributes
    ----------
    features : np.ndarray
        (N, d) float32.
    labels : np.ndarray
        (N,) int64 class indices into ``class_names``.
    tile_ids : tuple of str
        One id per tile.
    class_names : tuple of str
        Class names in index order.
    dropped : dict
        Reason -> number of tiles left out (unlabelled, excluded class).
    """

    features: np.ndarray
    labels: np.ndarray
    tile_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.labels.shape != (n,) or len(self.tile_ids) != n:
            raise ValueError("features (N, d), labels (N,) and tile_ids must describe the same N tiles")

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def labels_from_class_folders(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{tile_id: class}`` from an image tree ``root/{class}/{tile}.{ext}`` (NCT-CRC layout)."""
    base = Path(root)
    if not base.is_dir():
        raise TileDatasetError(str(base), "class-folder root not found")
    out: dict[str, str] = {}
    for p in sorted(base.glob("*/*")):
        if p.is_file() and p.suffix.lower() in _IMAGE_EXTS:
            out[p.name.split(".")[0]] = p.parent.name
    if not out:
        raise TileDatasetError(str(base), "no images found in class sub-folders (expected root/CLASS/tile.tif)")
    return out


def _read_label_source(
    labels: str | os.PathLike[str] | Mapping[str, object] | None, ids: list[str]
) -> Mapping[str, object]:
    if isinstance(labels, Mapping):
        return {str(k): v for k, v in labels.items()}
    if labels is None:
        if not all("/" in i for i in ids[:100]):
            raise TileDatasetError(
                None,
                "no labels given and tile ids are not 'class/name' paths; pass a CSV or a class-folder root",
            )
        return {i: i.rsplit("/", 2)[-2] for i in ids}
    path = Path(labels)
    if path.is_dir():
        return labels_from_class_folders(path)
    if not path.is_file():
        raise TileDatasetError(str(path), "labels not found; pass a CSV (tile_id,label) or a class-folder root")
    import pandas as pd

    df = pd.read_csv(path, dtype={"tile_id": str})
    if not {"tile_id", "label"} <= set(df.columns):
        raise TileDatasetError(str(path), f"labels CSV needs columns tile_id,label; it has {list(df.columns)}")
    return dict(zip(df["tile_id"], df["label"], strict=True))


def _tile_key(tile_id: str) -> str:
    name = tile_id.rsplit("/", 1)[-1]
    return name.split(".")[0]


def load_tile_dataset(
    features_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | Mapping[str, object] | None = None,
    *,
    class_names: tuple[str, ...] | None = None,
    exclude_class: str | None = None,
) -> TileDataset:
    """Load ``tile_features.npy`` (+ ``tile_ids.npy``) from ``features_dir`` and attach labels.

    Parameters
    ----------
    features_dir : path
        Folder with ``tile_features.npy`` (N, d) and ``tile_ids.npy`` (N,).
    labels : path, mapping or None
        CSV ``tile_id,label``; a class-folder image root; a mapping; or
        ``None`` to read the class from ``class/name`` tile ids. Ids are
        matched as given, then by file stem.
    class_names : tuple of str, optional
        Class order to use (so train and test sets share indices); default
        sorted names found.
    exclude_class : str, optional
        Class to drop (NCT-CRC: ``BACK``); indices above it shift down.
    """
    base = Path(features_dir)
    fpath, ipath = base / "tile_features.npy", base / "tile_ids.npy"
    if not fpath.is_file():
        raise TileDatasetError(str(fpath), "tile_features.npy not found")
    feats = np.load(fpath, allow_pickle=False)
    if feats.ndim != 2:
        raise TileDatasetError(str(fpath), f"expected (N, d) tile features, got shape {feats.shape}")
    if ipath.is_file():
        ids = [str(v) for v in np.load(ipath, allow_pickle=True).reshape(-1)]
        if len(ids) != len(feats):
            raise TileDatasetError(str(ipath), f"{len(ids)} ids for {len(feats)} feature rows")
    else:
        ids = [str(i) for i in range(len(feats))]
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        raise TileDatasetError(ids[int(np.argmax(bad))], f"tile features contain NaN/Inf in {int(bad.sum())} tiles")
    table = _read_label_source(labels, ids)
    stems = {_tile_key(k): v for k, v in table.items()}
    raw = [table.get(i, stems.get(_tile_key(i))) for i in ids]
    keep = np.asarray([r is not None and r == r for r in raw])  # r == r filters NaN
    dropped: dict[str, int] = {}
    if (~keep).any():
        dropped["no label"] = int((~keep).sum())
    names = [str(r) for r, k in zip(raw, keep, strict=True) if k]
    if exclude_class is not None:
        excl = np.asarray([k and str(r) == exclude_class for r, k in zip(raw, keep, strict=True)])
        if excl.any():
            dropped[f"excluded class {exclude_class}"] = int(excl.sum())
        keep &= ~excl
        names = [str(r) for r, k in zip(raw, keep, strict=True) if k]
    order = tuple(c for c in class_names if c != exclude_class) if class_names else tuple(sorted(set(names)))
    unknown = sorted(set(names) - set(order))
    if unknown:
        raise TileDatasetError(str(base), f"labels {unknown[:5]} are not among class_names {list(order)}")
    if not names:
        raise TileDatasetError(str(base), f"no labelled tiles left (dropped: {dropped})")
    index = {c: i for i, c in enumerate(order)}
    return TileDataset(
        features=np.ascontiguousarray(feats[keep], dtype=np.float32),
        labels=np.asarray([index[n] for n in names], dtype=np.int64),
        tile_ids=tuple(i for i, k in zip(ids, keep, strict=True) if k),
        class_names=order,
        dropped=dropped,
    )
