"""Lazy per-slide tile rows: read only the rows a batch needs from ``features.npy`` or ``.h5``.

A TCGA-size cohort holds ~10k tiles x 768-d float32 per slide (~31 MB); all
tiles of 1000 slides do not fit in RAM, and the HistoSSLscaling reference
never needs them: it memory-maps each ``features.npy``
(``np.load(mmap_mode="r")``) and copies out the rows it keeps
(``rl_benchmarks/utils/features.py``, ``preload_features``). A
:class:`LazyRows` behaves like the ``(N, 3 + d)`` float32 array
``[tile_level, x, y, f...]`` of one slide for what training does with it
(``len``, ``shape``, ``rows[int_index_array]``) and reads those rows from
disk on each access:

* ``.npy`` - a read-only memory map opened for the access and closed after
  it, so the touched pages do not stay in the process's resident set;
* ``.h5`` (CLAM/TRIDENT ``features`` (N, d) or (1, N, d), ``coords`` (N, 2)
  level-0 x/y, ``level``/``patch_level`` attribute, as
  :func:`wsistream.features.formats.read_features` reads them) - an h5py
  row selection (a slice when the rows are contiguous).

``usable`` maps the slide's usable rows to file rows: a prefix of the file
(the first ``n`` rows, the ``histossl`` protocol), or an explicit row list
after NaN tiles were dropped.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wsistream.features.formats import FeatureFileError, feature_file
from wsistream.registry import extra_hint, require

#: Rows read per chunk when a slide is scanned (NaN check): 4096 x 771 float32 ~ 12 MB.
SCAN_CHUNK_ROWS = 4096


class LazyRows(ABC):
    """The ``(n_usable, 3 + d)`` rows of one feature file, read on access.

    Parameters
    ----------
    path : path
        The feature file.
    n_file_rows, n_columns : int
        Rows in the file and ``3 + d``.
    """

    def __init__(self, path: str | os.PathLike[str], n_file_rows: int, n_columns: int) -> None:
        self.path = Path(path)
        self.n_file_rows = int(n_file_rows)
        self.n_columns = int(n_columns)
        self._usable: np.ndarray | None = None  # file row of each usable row; None = prefix
        self._n_usable = self.n_file_rows

    @property
    def shape(self) -> tuple[int, int]:
        """``(usable rows, 3 + d)``."""
        return (self._n_usable, self.n_columns)

    def __len__(self) -> int:
        return self._n_usable

    @property
    def nbytes(self) -> int:
        """Bytes of the usable rows as float32 (what holding them in RAM costs)."""
        return self._n_usable * self.n_columns * 4

    def keep_first(self, n: int | None) -> None:
        """Restrict the usable rows to the first ``n`` (all if ``None``)."""
        if n is not None and n < self._n_usable:
            if self._usable is not None:
                self._usable = self._usable[:n]
            self._n_usable = n

    def keep_rows(self, rows: np.ndarray) -> None:
        """Restrict the usable rows to ``rows`` (indices into the current usable rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        self._usable = rows if self._usable is None else self._usable[rows]
        self._n_usable = len(rows)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (an int array of usable-row indices) as float32, in the order of ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        file_rows = idx if self._usable is None else self._usable[idx]
        order = np.argsort(file_rows, kind="stable")
        wanted = file_rows[order]
        if len(wanted) and wanted[-1] - wanted[0] + 1 == len(wanted):
            data = self._read(slice(int(wanted[0]), int(wanted[-1]) + 1))
        else:
            data = self._read(wanted)
        out = np.empty((len(idx), self.n_columns), dtype=np.float32)
        out[order] = data
        return out

    def chunks(self, chunk_rows: int = SCAN_CHUNK_ROWS) -> Iterator[np.ndarray]:
        """The usable rows in order, ``chunk_rows`` at a time (bounded memory)."""
        for start in range(0, self._n_usable, chunk_rows):
            yield self[np.arange(start, min(start + chunk_rows, self._n_usable))]

    def load(self) -> np.ndarray:
        """All usable rows as one in-memory float32 array."""
        return self[np.arange(self._n_usable)]

    @abstractmethod
    def _read(self, rows: slice | np.ndarray) -> np.ndarray:
        """File rows (a slice or sorted unique indices) as ``(k, 3 + d)`` float32."""


class NpyRows(LazyRows):
    """Rows of a HistoSSLscaling ``features.npy`` ``(N, 3 + d)``, through a per-access memory map."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        mm = self._map(Path(path))
        if mm.ndim != 2 or mm.shape[1] < 4:
            raise FeatureFileError(str(path), f"expected (N, 3 + d) array, got shape {mm.shape}")
        super().__init__(path, mm.shape[0], mm.shape[1])

    @staticmethod
    def _map(path: Path) -> np.ndarray:
        try:
            mm: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
            return mm
        except (ValueError, OSError, EOFError) as exc:
            raise FeatureFileError(str(path), f"cannot read .npy ({exc})") from exc

    def _read(self, rows: slice | np.ndarray) -> np.ndarray:
        mm = self._map(self.path)
        try:
            return np.array(mm[rows], dtype=np.float32)
        finally:
            del mm  # unmaps: the pages leave the resident set


class H5Rows(LazyRows):
    """Rows ``[level, x, y, f...]`` of a CLAM/TRIDENT ``.h5`` through h5py row selections."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        require(("h5py",), component="reading .h5 features", install=extra_hint("mil"))
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                feats, xy = fh["features"], fh["coords"]
                self._batched = feats.ndim == 3 and feats.shape[0] == 1  # CLAM (1, N, d)
                n, d = feats.shape[-2:] if feats.ndim >= 2 else (0, 0)
                if feats.ndim not in (2, 3) or xy.shape != (n, 2):
                    raise FeatureFileError(
                        str(path), f"expected features (N, d) and coords (N, 2), got {feats.shape} and {xy.shape}"
                    )
                attrs = fh.attrs
                self._level = float(attrs.get("level", attrs.get("patch_level", 0)))
        except (OSError, KeyError) as exc:
            raise FeatureFileError(str(path), f"cannot read .h5 ({exc})") from exc
        super().__init__(path, n, 3 + d)

    def _read(self, rows: slice | np.ndarray) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as fh:
            f = fh["features"][0, rows] if self._batched else fh["features"][rows]
            xy = fh["coords"][rows]
        level = np.full((len(xy), 1), self._level, np.float32)
        return np.concatenate([level, np.asarray(xy, np.float32), np.asarray(f, np.float32)], axis=1)


def open_rows(path: str | os.PathLike[str]) -> LazyRows:
    """A :class:`LazyRows` for a ``features.npy``, a slide folder holding one, or an ``.h5`` file."""
    p = feature_file(path)
    if p.suffix == ".npy":
        return NpyRows(p)
    if p.suffix in (".h5", ".hdf5"):
        return H5Rows(p)
    raise FeatureFileError(str(p), "unknown feature file type; pass a features.npy, a slide folder or a .h5")
