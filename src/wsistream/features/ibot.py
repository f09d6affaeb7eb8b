"""Convert an ``rl_benchmarks`` iBOT checkpoint into a Hugging Face ``ViTModel``.

HistoSSLscaling (``rl_benchmarks/models/feature_extractors/ibot_vit.py``) builds
``vit_base(patch_size=16, num_classes=0, use_mean_pooling=False)`` (DINO/iBOT
``VisionTransformer``, ``qkv_bias=True``, ``LayerNorm(eps=1e-6)``), loads
``torch.load(path)["teacher"]`` after ``k.replace("module.", "")`` and
``k.replace("backbone.", "")``, and takes ``get_intermediate_layers(x, 1)[0][:, 0]``:
the CLS token after the final norm. That is exactly ``ViTModel(...,
add_pooling_layer=False)(x).last_hidden_state[:, 0]`` once the weights are
renamed, which is how Phikon (the same network) is published.

Key mapping (iBOT → Hugging Face checkpoint names, as in ``owkin/phikon``)::

    cls_token, pos_embed               → embeddings.cls_token, embeddings.position_embeddings
    patch_embed.proj.{weight,bias}     → embeddings.patch_embeddings.projection.{weight,bias}
    blocks.i.norm1 / norm2             → encoder.layer.i.layernorm_before / layernorm_after
    blocks.i.attn.qkv                  → encoder.layer.i.attention.attention.{query,key,value} (dim 0 in 3)
    blocks.i.attn.proj                 → encoder.layer.i.attention.output.dense
    blocks.i.mlp.fc1 / fc2             → encoder.layer.i.intermediate.dense / output.dense
    norm                               → layernorm

The checkpoint's projection head (``head.*``; the "unexpected keys" message of
the HistoSSLscaling README) is dropped; any other missing or unexpected key is
an error that lists them.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from wsistream.features.encoders import Encoder, hf_encoder, load_hf_model
from wsistream.features.errors import CheckpointKeyError, EncoderLoadError

if TYPE_CHECKING:
    from transformers import ViTConfig

#: Checkpoint keys that are not part of the backbone and are dropped: the iBOT/DINO projection head
#: (``head.mlp.*``, ``head.last_layer*``) and the student's mask token.
IGNORED_PREFIXES = ("head.",)
IGNORED_KEYS = ("masked_embed",)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def read_ibot_checkpoint(
    path: str | os.PathLike[str], *, encoder: str | None = "teacher", trusted: bool = False
) -> dict[str, torch.Tensor]:
    """Read the backbone state dict of an iBOT checkpoint, prefixes stripped as ``rl_benchmarks`` does.

    Parameters
    ----------
    path : path-like
        ``.pth`` file.
    encoder : str or None
        Entry of the checkpoint to use (``"teacher"``, the HistoSSLscaling
        recommendation, or ``"student"``); ``None`` for a bare state dict.
    trusted : bool
        Allow arbitrary pickled objects (``torch.load(weights_only=False)``); only for files you trust.
    """
    p = Path(path)
    if not p.exists():
        raise EncoderLoadError(str(p), "iBOT checkpoint file does not exist")
    if not p.is_file():
        raise EncoderLoadError(str(p), "is a folder; the iBOT encoder loads a .pth checkpoint file")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        raise EncoderLoadError(
            str(p),
            "torch.load(weights_only=True) refused the file: it is not a torch checkpoint, or it holds Python "
            f"objects besides tensors ({' '.join(detail.split())[:200]}); if you trust the file, pass trusted=True",
        ) from exc
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        raise EncoderLoadError(str(p), f"cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc
    if encoder is not None:
        if not isinstance(ckpt, dict) or encoder not in ckpt:
            keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
            raise EncoderLoadError(
                str(p),
                f"no {encoder!r} entry (top-level keys: {keys}); pass encoder=None for a bare state dict",
            )
        ckpt = ckpt[encoder]
    if not isinstance(ckpt, dict):
        raise EncoderLoadError(str(p), f"expected a state dict, found {type(ckpt).__name__}")
    return {str(k).replace("module.", "").replace("backbone.", ""): v for k, v in ckpt.items() if torch.is_tensor(v)}


def ibot_vit_config(
    state: dict[str, torch.Tensor],
    *,
    num_heads: int | None = None,
    layer_norm_eps: float = 1e-6,
    path: str | None = None,
) -> ViTConfig:
    """Build the ``ViTConfig`` of a backbone state dict (sizes read from the tensors).

    ``num_heads`` cannot be read from weights; the default ``dim // 64`` is
    right for DINO/iBOT ViT-S/B/L (6/12/16 heads).
    """
    from transformers import ViTConfig

    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"]
    absent = [k for k in need if k not in state]
    if absent:
        raise CheckpointKeyError(path, absent, [], hint="not a DINO/iBOT VisionTransformer backbone")
    dim = int(state["cls_token"].shape[-1])
    proj = state["patch_embed.proj.weight"]
    patch = int(proj.shape[-1])
    n_patches = int(state["pos_embed"].shape[1]) - 1
    grid = math.isqrt(n_patches)
    if grid * grid != n_patches:
        raise EncoderLoadError(path, f"pos_embed has {n_patches} patch positions, not a square grid")
    heads = num_heads or dim // 64
    if heads < 1 or dim % heads:
        raise EncoderLoadError(path, f"embedding dim {dim} is not divisible by num_heads={heads}; pass num_heads")
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    return ViTConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=layer_norm_eps,
        image_size=grid * patch,
        patch_size=patch,
        num_channels=int(proj.shape[1]),
        qkv_bias="blocks.0.attn.qkv.bias" in state,
    )


def ibot_to_hf_state_dict(
    state: dict[str, torch.Tensor], config: ViTConfig, *, path: str | None = None
) -> dict[str, torch.Tensor]:
    """Rename (and split ``qkv``) an iBOT backbone state dict into Hugging Face ``ViTModel`` names.

    Raises
    ------
    CheckpointKeyError
        Some backbone keys are missing or some keys have no place in the model (all listed).
    """
    d, bias = config.hidden_size, config.qkv_bias
    plan: dict[str, str | tuple[str, int]] = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    for i in range(config.num_hidden_layers):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for wb in ("weight", "bias"):
            plan[f"{src}norm1.{wb}"] = f"{dst}layernorm_before.{wb}"
            plan[f"{src}norm2.{wb}"] = f"{dst}layernorm_after.{wb}"
            plan[f"{src}attn.proj.{wb}"] = f"{dst}attention.output.dense.{wb}"
            plan[f"{src}mlp.fc1.{wb}"] = f"{dst}intermediate.dense.{wb}"
            plan[f"{src}mlp.fc2.{wb}"] = f"{dst}output.dense.{wb}"
        for wb in ("weight", "bias") if bias else ("weight",):
            plan[f"{src}attn.qkv.{wb}"] = (f"{dst}attention.attention.{{}}.{wb}", 0)
    present = set(state)
    missing = sorted(set(plan) - present)
    unexpected = sorted(k for k in present - set(plan) if not k.startswith(IGNORED_PREFIXES) and k not in IGNORED_KEYS)
    if missing or unexpected:
        hint = ""
        if any(".gamma_" in k or k.startswith("fc_norm") for k in unexpected):
            hint = "LayerScale (gamma_1/gamma_2) and mean-pooling fc_norm have no ViTModel equivalent"
        raise CheckpointKeyError(path, missing, unexpected, hint=hint or "not an iBOT ViT backbone of this depth")
    out: dict[str, torch.Tensor] = {}
    for key, target in plan.items():
        tensor = state[key].detach().to(torch.float32)
        if isinstance(target, tuple):
            if tensor.shape[0] != 3 * d:
                raise EncoderLoadError(path, f"{key} has shape {tuple(tensor.shape)}, expected first dim {3 * d}")
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
                out[target[0].format(name)] = part.clone().contiguous()
        else:
            out[target] = tensor.clone().contiguous()
    return out


def convert_ibot_checkpoint(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    encoder: str | None = "teacher",
    num_heads: int | None = None,
    trusted: bool = False,
) -> Path:
    """Write the checkpoint as a Hugging Face folder (``config.json`` + ``model.safetensors``).

    The folder loads with ``ViTModel.from_pretrained(out_dir, add_pooling_layer=False)``
    or ``load_encoder("phikon", out_dir)``. Written under a temporary name and renamed.
    """
    from safetensors.torch import save_file

    state = read_ibot_checkpoint(path, encoder=encoder, trusted=trusted)
    config = ibot_vit_config(state, num_heads=num_heads, path=os.fspath(path))
    converted = ibot_to_hf_state_dict(state, config, path=os.fspath(path))
    target = Path(out_dir)
    if target.exists() and any(target.iterdir()):
        raise EncoderLoadError(str(target), "output folder exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        config.save_pretrained(tmp)
        save_file(converted, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_ibot_vit(
    path: str | os.PathLike[str],
    *,
    encoder: str | None = "teacher",
    num_heads: int | None = None,
    trusted: bool = False,
) -> nn.Module:
    """Hugging Face ``ViTModel`` (no pooler) holding the converted iBOT backbone, in eval mode."""
    from transformers import ViTModel

    with tempfile.TemporaryDirectory(prefix="wsistream-ibot-") as tmp:
        folder = convert_ibot_checkpoint(path, Path(tmp) / "hf", encoder=encoder, num_heads=num_heads, trusted=trusted)
        try:
            return load_hf_model(folder, ViTModel, "vit", add_pooling_layer=False)
        except EncoderLoadError as exc:  # name the user's file, not our temporary folder
            raise EncoderLoadError(os.fspath(path), f"after conversion: {exc.reason}") from exc


def ibot(
    weights: str | os.PathLike[str],
    *,
    encoder: str | None = "teacher",
    num_heads: int | None = None,
    trusted: bool = False,
) -> Encoder:
    """Encoder ``ibot``: an ``rl_benchmarks`` iBOT checkpoint (``.pth``) as a Hugging Face ``ViTModel``.

    See :func:`load_ibot_vit`; the forward path is the one of :func:`wsistream.features.phikon.phikon`.
    """
    model = load_ibot_vit(weights, encoder=encoder, num_heads=num_heads, trusted=trusted)
    return hf_encoder("ibot", model, weights)
