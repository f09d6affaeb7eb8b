"""Tile encoders: the :class:`Encoder` wrapper, and loading by name from a *local* weights path.

The names live in :data:`wsistream.registry.ENCODERS`; the loaders live in the model files
(:mod:`~wsistream.features.phikon`, :mod:`~wsistream.features.ibot`,
:mod:`~wsistream.features.vit_checkpoints`), which import this module and are not imported by it.

Every encoder maps a batch of uint8 RGB tiles (B, H, W, 3) to (B, d) float
features. Preprocessing runs on the model's device: ``x / 255``, ImageNet
mean/std normalisation, and a resize only when the tiles are not already the
model's input size (224 tiles are never resized).

Sources
-------
* Phikon model card (``owkin/phikon``): ``ViTModel.from_pretrained(..., add_pooling_layer=False)``,
  feature = ``outputs.last_hidden_state[:, 0, :]`` (768-d).
* Phikon-v2 model card (``owkin/phikon-v2``): ``AutoModel`` = ``Dinov2Model``, CLS of
  ``last_hidden_state`` (1024-d).
* HistoSSLscaling ``rl_benchmarks/constants.py``: ``IMAGENET_MEAN = (0.485, 0.456, 0.406)``,
  ``IMAGENET_STD = (0.229, 0.224, 0.225)``; ``iBOTViT.transform`` = ``ToTensor`` + ``Normalize``, no resize.

Nothing is ever downloaded: Hugging Face folders are loaded with ``local_files_only=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsistream.features.errors import CheckpointKeyError, EncoderLoadError
from wsistream.registry import ENCODERS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: ``forward(model, pixels)`` → (B, d); pixels are normalised float (B, 3, S, S).
ForwardFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
#: ``transform(tiles)`` → normalised float (B, 3, S, S) from uint8 (B, H, W, 3) on the device.
DeviceTransform = Callable[[torch.Tensor], torch.Tensor]
EncoderFactory = Callable[..., "Encoder"]

_HF_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def normalize_tiles(
    tiles: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    size: int = 224,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, size, size), ``(x / 255 - mean) / std`` (torchvision order).

    The resize (bicubic, antialiased) runs only when ``H, W != size``. The
    layout change happens on the uint8 tensor (a channels-last result needs no
    copy at all), and the arithmetic is in place.
    """
    if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"tiles must be uint8 (B, H, W, 3), got {tuple(tiles.shape)} {tiles.dtype}")
    x = tiles.permute(0, 3, 1, 2).contiguous(memory_format=memory_format).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        x = x.contiguous(memory_format=memory_format)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def hf_cls_token(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """CLS token of ``last_hidden_state`` (after the final LayerNorm) of a Hugging Face vision model."""
    cls_token: torch.Tensor = model(pixel_values=pixels).last_hidden_state[:, 0]
    return cls_token


def _call_module(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    features: torch.Tensor = model(pixels)
    return features


@dataclass(frozen=True, eq=False)
class Encoder:
    """A model plus what it needs to turn uint8 tiles into features.

    Parameters
    ----------
    name : str
        Short name (written into feature files).
    model : nn.Module
        The network; put in eval mode with gradients off.
    dim : int
        Feature dimension d.
    input_size : int
        Side of the model input; tiles of another size are resized on the device.
    mean, std : tuple of 3 floats
        Normalisation after ``x / 255`` (ImageNet by default).
    forward : callable, optional
        ``forward(model, pixels) → (B, d)``; default ``model(pixels)``.
    transform : callable, optional
        Replaces the default preprocessing: uint8 (B, H, W, 3) on the device → model input.
    source : str
        Where the weights came from (for logs and file attributes).
    """

    name: str
    model: nn.Module
    dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    forward: ForwardFn = _call_module
    transform: DeviceTransform | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.input_size < 1:
            raise ValueError(f"input_size must be >= 1 pixel, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={self.mean}, std={self.std}")
        self.model.eval().requires_grad_(False)

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        *,
        name: str = "custom",
        dim: int | None = None,
        input_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        forward: ForwardFn | None = None,
        transform: DeviceTransform | None = None,
    ) -> Encoder:
        """Wrap any user module; ``dim`` is found by one forward of a zero tile when not given."""
        fwd = forward or _call_module
        if dim is None:
            model.eval()
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            probe = torch.zeros(1, input_size, input_size, 3, dtype=torch.uint8, device=device)
            pixels = transform(probe) if transform else normalize_tiles(probe, mean, std, input_size)
            with torch.inference_mode():
                out = fwd(model, pixels)
            if out.ndim != 2:
                raise ValueError(f"the module returns shape {tuple(out.shape)}; an encoder must return (B, d)")
            dim = int(out.shape[1])
        return cls(name, model, dim, input_size, mean, std, fwd, transform, source="<module>")

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter (CPU for parameter-less modules)."""
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def preprocess(
        self, tiles: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        """uint8 (B, H, W, 3) → model input in ``memory_format``, on the tiles' device."""
        if self.transform is not None:
            return self.transform(tiles).contiguous(memory_format=memory_format)
        return normalize_tiles(tiles, self.mean, self.std, self.input_size, memory_format)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """Features (B, d) of uint8 tiles (no autocast, no grad bookkeeping change)."""
        out = self.forward(self.model, self.preprocess(tiles))
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise ValueError(f"encoder {self.name!r} returned shape {tuple(out.shape)}, expected (B, {self.dim})")
        return out


def register(
    name: str, *, requires: tuple[str, ...] = ("torch",), install: str = ""
) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register ``factory(weights, **kwargs) → Encoder`` under ``name`` (used by ``--encoder``).

    The entry goes to :data:`wsistream.registry.ENCODERS`, where the built-in encoders are listed;
    a name already taken by another factory is a ``ValueError``.

    Example::

        @register("my-vit", requires=("torch", "transformers"))
        def my_vit(weights):
            ...
    """

    def deco(factory: EncoderFactory) -> EncoderFactory:
        ENCODERS.register(name, factory, requires=requires, install=install)
        return factory

    return deco


def available_encoders() -> tuple[str, ...]:
    """Return the registered encoder names, sorted."""
    return tuple(sorted(ENCODERS.names()))


def load_encoder(name: str, weights: str | os.PathLike[str], **kwargs: Any) -> Encoder:
    """Load encoder ``name`` from a local ``weights`` path.

    Raises
    ------
    ValueError
        Unknown encoder name (the message lists the registered ones).
    MissingDependencyError
        A library the encoder needs (transformers, safetensors) is not installed; the message
        says ``pip install 'wsistream[features]'``.
    EncoderLoadError
        Missing weights, wrong architecture, or missing/unexpected parameters.
    """
    encoder: Encoder = ENCODERS.create(name, weights, **kwargs)
    return encoder


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging

    hf_logging: Any = logging  # its functions are untyped

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def load_hf_model(
    weights: str | os.PathLike[str],
    model_cls: type,
    model_type: str,
    *,
    ignore_unexpected: tuple[str, ...] = ("pooler.",),
    **kwargs: Any,
) -> nn.Module:
    """Load a Hugging Face model from a local folder, failing on any missing or unexpected parameter.

    ``ignore_unexpected`` lists key prefixes that may be in the file but not in
    the model (Phikon's file holds the pooler that ``add_pooling_layer=False`` drops).
    """
    path = Path(weights)
    what = f"a {model_type} checkpoint folder (config.json + model.safetensors); nothing is downloaded"
    if not path.exists():
        raise EncoderLoadError(str(path), f"weights path does not exist; pass {what}")
    if not path.is_dir():
        raise EncoderLoadError(str(path), f"is a file; pass {what}")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EncoderLoadError(str(path), f"no config.json in the folder; pass {what}")
    try:
        found_type = json.loads(cfg_path.read_text()).get("model_type")
    except (ValueError, OSError) as exc:
        raise EncoderLoadError(str(cfg_path), f"cannot read config.json ({exc})") from exc
    if found_type != model_type:
        raise EncoderLoadError(
            str(path),
            f"config.json declares model_type={found_type!r} but this encoder is a {model_type!r} "
            f"({model_cls.__name__}); wrong architecture for these weights",
        )
    if not any((path / f).is_file() for f in _HF_WEIGHT_FILES):
        raise EncoderLoadError(str(path), f"no weights file ({' / '.join(_HF_WEIGHT_FILES[:2])}) in the folder")
    with _quiet_transformers():
        try:
            hf_cls: Any = model_cls
            model, info = hf_cls.from_pretrained(path, local_files_only=True, output_loading_info=True, **kwargs)
        except Exception as exc:  # transformers raises OSError/RuntimeError/ValueError variously
            raise EncoderLoadError(
                str(path), f"cannot load {model_cls.__name__} ({type(exc).__name__}: {exc})"
            ) from exc
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(k for k in info.get("unexpected_keys") or () if not k.startswith(ignore_unexpected))
    if missing or unexpected:
        raise CheckpointKeyError(str(path), missing, unexpected, hint=f"expected a {model_cls.__name__} checkpoint")
    mismatched = info.get("mismatched_keys") or ()
    if mismatched:
        raise EncoderLoadError(str(path), f"parameters with mismatched shapes: {sorted(map(str, mismatched))}")
    loaded: nn.Module = model.float().eval().requires_grad_(False)
    return loaded


def hf_encoder(name: str, model: nn.Module, weights: str | os.PathLike[str]) -> Encoder:
    """An :class:`Encoder` of a Hugging Face vision model: its input size and width, CLS-token feature."""
    config: Any = model.config
    size = config.image_size
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    return Encoder(name, model, int(config.hidden_size), size, forward=hf_cls_token, source=os.fspath(weights))
