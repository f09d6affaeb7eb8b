"""A slot for a learned tissue segmenter: your torch model, run at a stated µm/px, masks cached on disk.

Phikon-v2 (Filiot et al., 2024) segments tissue with "an in-house
bi-directional U-Net ... at 2.5× magnification. This model is not
open-sourced" (``shared/seeds/000_*.txt``).  Rather than a silent heuristic
substitute, :class:`ModelTissueDetector` runs a network the way such a
segmenter runs: on the whole slide resampled to one µm/px (default 4 µm/px ≈
2.5×, i.e. 40× at 0.25 µm/px divided by 16), in tiles of bounded memory.  Masks are cached as ``.npz`` keyed by the
slide file (path, size, mtime), its µm/px, the settings and a SHA-256 of the
weights, so a cohort is segmented once and every later stream, process or
worker reads them without even loading the model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from wsistream.errors import MissingMppError, ResolutionUnavailableError
from wsistream.tissue.base import TissueDetector, TissueMask
from wsistream.tissue.model_cache import file_sha256, load_mask, save_mask, state_sha256, weights_stat

if TYPE_CHECKING:
    import torch

    from wsistream.backends.base import SlideHandle
    from wsistream.types import SlideProperties

_CACHE_VERSION = 1  # bump when a cached mask's meaning changes: old files are then ignored
_READ_CHUNK = 4096  # longest side (read-level pixels) of one chunk of the read at input_mpp
_LEVEL_TOLERANCE = 0.02  # a level this much coarser still counts, as in sampling.plan (Aperio ds 16.003)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: Settings that change the mask (``batch_size``, ``device``, ``cache_dir`` do not).
_KEY_FIELDS = ("input_mpp", "threshold", "activation", "tissue_class", "imagenet_norm", "tile_size", "tile_overlap")


@dataclass(frozen=True, repr=False)
class ModelTissueDetector(TissueDetector):
    """Tissue mask from a user segmentation network run at ``input_mpp`` µm/px.

    Model contract: ``model(x)`` maps float32 ``x`` of shape N×3×T×T (``T =
    tile_size``, ``N = min(batch_size, tiles)``; RGB in [0, 1], or
    ImageNet-normalised with ``imagenet_norm=True``) to N×C×h×w scores, h×w =
    T×T or smaller (a downsampling FCN; resized bilinearly to T×T).  A dict
    output (torchvision segmenters) gives ``["out"]``, a tuple its first item.
    Tissue probability: ``sigmoid`` of channel 0 (C = 1) or ``tissue_class``,
    ``softmax`` over C ≥ 2 at ``tissue_class``, or the scores as they are
    (``activation="none"``); above ``threshold`` is tissue.

    Parameters
    ----------
    model : torch.nn.Module, callable or None
        The network, or a zero-argument factory (a class or module-level
        function: it pickles by reference, ``spawn`` workers build their own).
        ``None``: ``weights`` is a whole model, ``torch.export`` (``.pt2``) or TorchScript.
    weights : str or Path, optional
        Local state dict (``torch.save(model.state_dict(), path)``, or a checkpoint
        with a ``"state_dict"`` entry), loaded into ``model`` in place, once per
        process, by ``torch.load(weights, map_location="cpu", weights_only=True)``.
    input_mpp : float
        µm/px at which the slide is segmented. Default 4.0 ≈ 2.5×, Phikon-v2's U-Net.
    threshold : float
        Probability above which a cell is tissue. Default 0.5.
    activation, tissue_class
        How scores become probabilities (see above); ``tissue_class`` defaults to 1.
    imagenet_norm : bool
        Normalise inputs with the ImageNet mean/std. Default False.
    tile_size, tile_overlap : int
        Every input is a T×T tile (white glass beyond the slide): bounded memory,
        static shapes.  Neighbours share ``tile_overlap`` context pixels and only
        tile centres are kept, so there are no seams. Default 1024, 64.
    batch_size : int
        Tiles per forward pass (the last batch is padded to the same N). Default 4.
    device : str
        Inference device (``"cpu"``, ``"cuda"``); not part of the cache key.
    cache_dir : str or Path, optional
        Folder of cached masks (``None``: no disk cache).
    """

    model: torch.nn.Module | Callable[[], torch.nn.Module] | None = None
    weights: str | os.PathLike[str] | None = None
    input_mpp: float = 4.0
    threshold: float = 0.5
    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    tissue_class: int = 1
    imagenet_norm: bool = False
    tile_size: int = 1024
    tile_overlap: int = 64
    batch_size: int = 4
    device: str = "cpu"
    cache_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if self.model is None and self.weights is None:
            raise ValueError("pass model= (an nn.Module or a factory) and/or weights= (a local state dict path)")
        if self.model is not None and not callable(self.model):
            raise TypeError(f"model must be a torch.nn.Module or a factory returning one, got {type(self.model)}")
        for name in ("weights", "cache_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        if self.weights is not None:
            weights_stat(os.fspath(self.weights))  # fail now, in the main process, not in a worker
        for ok, message in (
            (math.isfinite(self.input_mpp) and self.input_mpp > 0, "input_mpp: pass a µm/px > 0 (4.0 ≈ 2.5x)"),
            (0.0 <= self.threshold <= 1.0, "threshold: pass a probability in [0, 1]"),
            (self.activation in ("sigmoid", "softmax", "none"), "activation: pass 'sigmoid', 'softmax' or 'none'"),
            (self.tissue_class >= 0, "tissue_class: pass a channel index >= 0"),
            (
                self.tile_size >= 8 and 0 <= self.tile_overlap <= self.tile_size - 8,
                "tile_overlap/tile_size: pass tile_size >= 8 and 0 <= tile_overlap <= tile_size - 8",
            ),
            (self.batch_size >= 1, "batch_size: pass >= 1"),
        ):
            if not ok:
                raise ValueError(f"{message}; got {self!r}")

    def __repr__(self) -> str:
        """Short and stable (the pipeline's in-memory cache key): the model by name, never its tensors."""
        rest = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "model")
        return f"ModelTissueDetector(model={_callable_name(self.model)}, {rest})"

    def __getstate__(self) -> dict[str, Any]:
        """Configuration only: the loaded model and hashes are rebuilt lazily in each process."""
        return {k: v for k, v in self.__dict__.items() if k != "_runtime"}

    def _rt(self) -> dict[str, Any]:
        """Per-process runtime state (loaded model, fingerprint); reset after a fork."""
        rt = self.__dict__.get("_runtime")
        if rt is None or rt["pid"] != os.getpid():
            rt = {"pid": os.getpid()}
            object.__setattr__(self, "_runtime", rt)
        return rt

    def fingerprint(self) -> str:
        """SHA-256 of the weights file (or of the state dict); a changed file is re-hashed and reloaded."""
        rt = self._rt()
        if self.weights is not None:
            stat = weights_stat(os.fspath(self.weights))
            if rt.get("weights_stat") != stat:
                rt.pop("model", None)
                rt["fingerprint"] = file_sha256(os.fspath(self.weights))
                rt["weights_stat"] = stat
        elif "fingerprint" not in rt:
            rt["fingerprint"] = state_sha256(self._model())
        return str(rt["fingerprint"])

    def cache_key(self, slide_path: str, mpp: float) -> str:
        """Hex SHA-256 of the slide file identity, its resolved µm/px, the settings and the weights."""
        st = os.stat(slide_path)
        slide = [os.path.realpath(slide_path), st.st_size, st.st_mtime_ns, float(mpp)]
        config = {k: getattr(self, k) for k in _KEY_FIELDS}
        payload = [_CACHE_VERSION, slide, _callable_name(self.model), self.fingerprint(), config]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def cache_path(self, slide_path: str, mpp: float, key: str | None = None) -> Path | None:
        """The ``.npz`` holding this slide's mask (``None`` without ``cache_dir``)."""
        if self.cache_dir is None:
            return None
        key = key if key is not None else self.cache_key(slide_path, mpp)
        stem = re.sub(r"[^\w.-]", "_", Path(slide_path).name)[:80]
        return Path(self.cache_dir) / f"{stem}.{key[:32]}.npz"

    def detect_slide(self, handle: SlideHandle, props: SlideProperties, max_side: int) -> TissueMask:
        """Mask at ``input_mpp`` (``max_side`` unused), from ``cache_dir`` when there.

        Raises :class:`~wsistream.errors.MissingMppError` when the slide has no
        µm/px, :class:`~wsistream.errors.ResolutionUnavailableError` when its
        level 0 is coarser than ``input_mpp``.
        """
        path, raw = props.slide_path, getattr(handle, "raw_mpp", None)
        if props.mpp_level0 is None:
            why = f"ModelTissueDetector reads slides at input_mpp={self.input_mpp} µm/px; this one states none"
            raise MissingMppError(path, f"{why} (raw {raw!r}): pass mpp_overrides= or mpp_fallback= to the pipeline")
        key = self.cache_key(path, props.mpp_level0) if self.cache_dir is not None else ""
        cache = self.cache_path(path, props.mpp_level0, key)
        if cache is not None and (hit := load_mask(cache, key)) is not None:
            return hit
        image, (dsx, dsy) = read_at_mpp(handle, props, self.input_mpp)
        mask = TissueMask(self.predict(image) > self.threshold, dsx, dsy)
        if cache is not None:
            save_mask(cache, key, mask, path)
        return mask

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Run the model on ``overview`` as given: no resampling to ``input_mpp``, no cache."""
        return TissueMask(self.predict(overview) > self.threshold, float(downsample[0]), float(downsample[1]))

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Tissue probability (float32 H×W) of a uint8 H×W×3 RGB image, tile by tile."""
        import torch

        model = self._model()
        h, w = image.shape[:2]
        size, step, half = self.tile_size, self.tile_size - self.tile_overlap, self.tile_overlap // 2
        starts = [(y, x) for y in range(0, h, step) for x in range(0, w, step)]
        probs = np.empty((h, w), np.float32)
        with torch.inference_mode():
            for b in range(0, len(starts), self.batch_size):
                batch = starts[b : b + self.batch_size]
                tiles = np.full((min(self.batch_size, len(starts)), size, size, 3), 255, np.uint8)  # glass
                for k, (y, x) in enumerate(batch):
                    ty, tx = y - half, x - half
                    y0, x0, y1, x1 = max(0, ty), max(0, tx), min(h, ty + size), min(w, tx + size)
                    tiles[k, y0 - ty : y1 - ty, x0 - tx : x1 - tx] = image[y0:y1, x0:x1]
                out = self._forward(model, tiles)
                for k, (y, x) in enumerate(batch):
                    y1, x1 = min(h, y + step), min(w, x + step)
                    probs[y:y1, x:x1] = out[k, half : half + y1 - y, half : half + x1 - x]
        return probs

    def _forward(self, model: Callable[[Any], Any], tiles: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(tiles).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if self.imagenet_norm:
            mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        out = model(x)
        if isinstance(out, Mapping):
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        n, size = tiles.shape[0], tiles.shape[1]
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != n:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the model must map N×3×H×W to N×C×h×w scores; got {got} for N={n}")
        channels = out.shape[1]
        channel = 0 if channels == 1 and self.activation != "softmax" else self.tissue_class
        if channel >= channels:
            raise ValueError(f"tissue_class={self.tissue_class} is not one of the model's {channels} channels")
        out = out.float()
        if tuple(out.shape[-2:]) != (size, size):
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
        if self.activation == "softmax":
            out = out.softmax(dim=1)
        elif self.activation == "sigmoid":
            out = out.sigmoid()
        return out[:, channel].cpu().numpy()

    def _model(self) -> Callable[[Any], Any]:
        """The network, loaded once per process (and again if the weights file changes)."""
        rt = self._rt()
        if self.weights is not None:
            self.fingerprint()
        if "model" not in rt:
            rt["model"] = self._load()
        model: Callable[[Any], Any] = rt["model"]
        return model

    def _load(self) -> Any:
        import torch

        name = _callable_name(self.model)
        weights = os.fspath(self.weights) if self.weights is not None else ""  # validated: a model or weights
        if self.model is None and weights.endswith(".pt2"):
            return torch.export.load(weights).module().to(self.device)  # exported graphs reject .eval()
        if self.model is None:
            model = torch.jit.load(weights, map_location="cpu")  # type: ignore[no-untyped-call]
        else:
            model = self.model if isinstance(self.model, torch.nn.Module) else self.model()
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"model factory {name} returned {type(model).__name__}, not a torch.nn.Module")
            if self.weights is not None:
                try:
                    state = torch.load(self.weights, map_location="cpu", weights_only=True)
                    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
                        state = state["state_dict"]
                except Exception as exc:
                    raise RuntimeError(f"{self.weights}: not a state dict torch.load(weights_only=True) reads") from exc
                try:
                    model.load_state_dict(state)
                except (RuntimeError, TypeError, AttributeError) as exc:
                    raise RuntimeError(f"{self.weights}: the weights do not fit {name}: {exc}") from exc
        return model.eval().to(self.device)


def read_at_mpp(
    handle: SlideHandle, props: SlideProperties, target_mpp: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """The slide area-resampled to ``target_mpp``: uint8 H×W×3 and level-0 pixels per output pixel (x, y).

    Reads the coarsest level not coarser than ``target_mpp`` (2 % tolerance, as ``plan_read``) in
    chunks of at most 4096², each area-resized into place: ``round(width0 / d) × round(height0 / d)``
    pixels, ``d = target_mpp / mpp``.
    """
    if props.mpp_level0 is None:
        raise MissingMppError(props.slide_path, f"reading at {target_mpp} µm/px needs the slide's µm/px")
    d = target_mpp / props.mpp_level0
    if d < 1.0 - _LEVEL_TOLERANCE:
        raise ResolutionUnavailableError(
            props.slide_path,
            f"input_mpp={target_mpp} µm/px is finer than level 0 ({props.mpp_level0} µm/px); "
            f"pass input_mpp >= {props.mpp_level0}",
        )
    width0, height0 = props.level0_width, props.level0_height
    out_w, out_h = max(1, round(width0 / d)), max(1, round(height0 / d))
    dsx, dsy = width0 / out_w, height0 / out_h
    candidates = [i for i, ds in enumerate(props.level_downsamples) if ds <= d * (1 + _LEVEL_TOLERANCE)]
    level = max(candidates, key=lambda i: props.level_downsamples[i])
    level_w, level_h = props.level_dimensions[level]
    lds = props.level_downsamples[level]
    image = np.empty((out_h, out_w, 3), np.uint8)
    for cy in range(0, level_h, _READ_CHUNK):
        for cx in range(0, level_w, _READ_CHUNK):
            cw, ch = min(_READ_CHUNK, level_w - cx), min(_READ_CHUNK, level_h - cy)
            ox0, oy0 = round(cx * lds / dsx), round(cy * lds / dsy)
            ox1 = out_w if cx + cw >= level_w else min(out_w, round((cx + cw) * lds / dsx))
            oy1 = out_h if cy + ch >= level_h else min(out_h, round((cy + ch) * lds / dsy))
            if ox1 <= ox0 or oy1 <= oy0:
                continue
            chunk = handle.read_region(round(cx * lds), round(cy * lds), level, (cw, ch))
            image[oy0:oy1, ox0:ox1] = cv2.resize(chunk, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
    return image, (dsx, dsy)


def _callable_name(obj: object) -> str:
    """Short stable name: a factory's qualified name, else the class of a module instance."""
    if isinstance(obj, functools.partial):
        return f"partial({_callable_name(obj.func)})"
    return "None" if obj is None else str(getattr(obj, "__qualname__", type(obj).__qualname__))
