"""The on-disk mask cache of :class:`~wsistream.tissue.model.ModelTissueDetector` and the weight hashes in its key.

A cached mask is an ``.npz`` holding the mask, its level-0 downsample, the cache key and the
slide path; it is written atomically and read back only under the same key, so a changed slide,
setting or weights file is recomputed instead of served stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from wsistream.tissue.base import TissueMask

logger = logging.getLogger("wsistream")


def weights_stat(path: str) -> tuple[int, int]:
    """Size and mtime of the weights file: a change means the file is re-hashed and the model reloaded."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ModelTissueDetector weights file {path} does not exist (or is not a file)")
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(model: Any) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_mask(path: Path, key: str) -> TissueMask | None:
    """The cached mask, or ``None`` when absent, unreadable or for another key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            ds = data["downsample"]
            return TissueMask(data["mask"].astype(bool), float(ds[0]), float(ds[1]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # not ours, or damaged
        logger.warning("wsistream: ignoring unreadable mask cache %s (%s); recomputing", path, exc)
        return None


def save_mask(path: Path, key: str, mask: TissueMask, slide_path: str) -> None:
    """Write atomically (temp file + ``os.replace``): readers never see a partial file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            ds = np.array([mask.downsample_x, mask.downsample_y])
            np.savez_compressed(fh, mask=mask.mask, downsample=ds, key=np.array(key), slide=np.array(slide_path))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shared cohort cache must be readable
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        logger.warning("wsistream: cannot write mask cache %s (%s); it will be recomputed next time", path, exc)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
