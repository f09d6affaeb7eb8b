"""Tile linear-evaluation presets of the HistoSSLscaling paper: NCT-CRC and Camelyon17-WILDS.

Reference: ``tools/tile_level_tasks/linear_evaluation.py``,
``rl_benchmarks/utils/linear_evaluation.py`` (``build_datasets``,
``remove_labels``), ``rl_benchmarks/datasets/tiles_classification/``:

* ``nct-crc`` - train on NCT-CRC-HE-100K-NONORM, test on NCT-CRC-VAL-HE-7K;
  labels from the class folders; the background class ``BACK`` is removed
  (``remove_labels(class_index=1)``), leaving the 8 classes
  ADI, DEB, LYM, MUC, MUS, NORM, STR, TUM.
* ``camelyon17-wilds`` - one feature folder for all patches; the split is by
  hospital (``center`` of WILDS ``metadata.csv``): train on centers 0, 3, 4
  (``TRAIN``), test on center 1 (``VALID``, what the reference's linear
  evaluation scores); center 2 is the WILDS ``TEST`` split
  (``test_centers=(2,)``). Tile id ``patch_patient_{patient:03d}_node_{node}_x_{x}_y_{y}``,
  label ``tumor`` (0 = Normal, 1 = Tumor).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from wsistream.eval.tiles import TileDataset, TileDatasetError, load_tile_dataset


@dataclass(frozen=True)
class TilePreset:
    """A named tile-classification benchmark: excluded class and expected class names."""

    name: str
    class_names: tuple[str, ...]
    exclude_class: str | None
    description: str


PRESETS: dict[str, TilePreset] = {
    p.name: p
    for p in (
        TilePreset(
            "nct-crc",
            ("ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"),
            "BACK",
            "NCT-CRC-HE-100K-NONORM -> NCT-CRC-VAL-HE-7K, background class BACK removed",
        ),
        TilePreset(
            "camelyon17-wilds",
            ("Normal", "Tumor"),
            None,
            "Camelyon17-WILDS split by hospital: train centers 0, 3, 4; test center 1 (VALID)",
        ),
    )
}
#: Camelyon17-WILDS hospitals of the reference's ``TRAIN`` and ``VALID`` splits (``TEST`` is center 2).
WILDS_TRAIN_CENTERS: tuple[int, ...] = (0, 3, 4)
WILDS_TEST_CENTERS: tuple[int, ...] = (1,)
_WILDS_COLUMNS = ("patient", "node", "x_coord", "y_coord", "tumor", "center")


def get_preset(name: str) -> TilePreset:
    """The preset called ``name``; raises ``ValueError`` naming the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset={name!r}: pass one of {tuple(PRESETS)}") from None


def check_preset_classes(preset: TilePreset, dataset: TileDataset, where: str) -> None:
    """Raise :class:`TileDatasetError` if ``dataset``'s classes are not the preset's."""
    if dataset.class_names != preset.class_names:
        raise TileDatasetError(
            where,
            f"preset {preset.name} expects classes {list(preset.class_names)}, found {list(dataset.class_names)}; "
            "check the labels, or drop --preset and pass --exclude-class yourself",
        )


def wilds_center_labels(metadata_csv: str | os.PathLike[str], centers: Sequence[int]) -> dict[str, str]:
    """``{tile_id: "Normal" | "Tumor"}`` for the patches of ``centers`` in WILDS ``metadata.csv``."""
    import pandas as pd

    try:
        df = pd.read_csv(metadata_csv)
    except (OSError, ValueError) as exc:
        raise TileDatasetError(str(metadata_csv), f"cannot read the WILDS metadata CSV ({exc})") from exc
    missing = [c for c in _WILDS_COLUMNS if c not in df.columns]
    if missing:
        raise TileDatasetError(
            str(metadata_csv), f"WILDS metadata lacks column(s) {missing}; it has {list(df.columns)}"
        )
    df = df[df["center"].isin(list(centers))]
    if df.empty:
        raise TileDatasetError(str(metadata_csv), f"no patch of centers {list(centers)}; WILDS centers are 0-4")
    names = ("Normal", "Tumor")
    return {
        f"patch_patient_{int(p):03d}_node_{int(n)}_x_{int(x)}_y_{int(y)}": names[int(t)]
        for p, n, x, y, t in df[["patient", "node", "x_coord", "y_coord", "tumor"]].itertuples(index=False)
    }


def camelyon17_wilds_datasets(
    features_dir: str | os.PathLike[str],
    metadata_csv: str | os.PathLike[str],
    *,
    train_centers: Sequence[int] = WILDS_TRAIN_CENTERS,
    test_centers: Sequence[int] = WILDS_TEST_CENTERS,
    test_features_dir: str | os.PathLike[str] | None = None,
) -> tuple[TileDataset, TileDataset]:
    """Train and test :class:`TileDataset` of a Camelyon17-WILDS feature folder, split by center.

    ``test_features_dir`` (default ``features_dir``) holds the test patches'
    features when they were extracted into another folder.
    """
    overlap = sorted(set(train_centers) & set(test_centers))
    if overlap:
        raise ValueError(f"centers {overlap} are in both train and test; pass disjoint train_centers/test_centers")
    names = PRESETS["camelyon17-wilds"].class_names
    out = []
    folders = (features_dir, test_features_dir if test_features_dir is not None else features_dir)
    for folder, centers in zip(folders, (train_centers, test_centers), strict=True):
        labels = wilds_center_labels(metadata_csv, centers)
        ds = load_tile_dataset(folder, labels, class_names=names)
        if "no label" in ds.dropped:  # say why: the other centers' patches are not in this split
            ds.dropped[f"not in centers {list(centers)} (or not in the metadata)"] = ds.dropped.pop("no label")
        out.append(ds)
    return out[0], out[1]
