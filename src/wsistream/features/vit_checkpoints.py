"""DINOv2-style and timm-style ViT checkpoints from a local file, in plain torch (no ``dinov2`` or ``timm`` import).

What users who pretrain on our stream end up with: a DINOv2 training checkpoint
(``facebookresearch/dinov2`` ``dinov2/train/train.py`` saves ``{"model": ...}``
with ``teacher.backbone.*`` / ``student.backbone.*``; ``eval/.../teacher_checkpoint.pth``
holds ``{"teacher": {"backbone.*"}}``) or a timm ``VisionTransformer`` state dict
(``timm/models/vision_transformer.py``, e.g. UNI's ``pytorch_model.bin``). Both use
the same parameter names — ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.norm1 / attn.qkv / attn.proj / ls1.gamma / norm2 / mlp.fc1 / mlp.fc2 /
ls2.gamma``, ``norm`` — plus registers (``register_tokens`` in DINOv2, ``reg_token``
in timm). :class:`PlainViT` implements that forward pass (pre-norm blocks, fused
qkv, exact GELU, LayerNorm eps 1e-6, LayerScale when present) and returns the CLS
token after the final norm (``x_norm_clstoken`` in DINOv2); a timm checkpoint
with ``fc_norm`` (``global_pool="avg"``) returns the mean patch token through
``fc_norm`` instead, as timm's ``forward_head`` does.

Sizes come from the tensors; heads default to ``dim // 64`` (``num_heads=`` to
override). Loading is strict: a missing or unexpected key (other than the
projection heads and DINOv2's ``mask_token``) raises :class:`CheckpointKeyError`.
SwiGLU MLPs (ViT-g) are not implemented and fail with that list.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsistream.features.encoders import Encoder, register
from wsistream.features.errors import CheckpointKeyError, EncoderLoadError

#: Key prefixes stripped (DDP, DINOv2 wrappers, torch.compile).
_PREFIXES = ("module.", "teacher.", "backbone.", "_orig_mod.")
#: Keys dropped: projection heads and the masked-modelling token, unused for features.
_DROPPED = ("dino_head.", "ibot_head.", "head.", "mask_token")


class _Attn(nn.Module):
    """``attn.qkv`` / ``attn.proj`` of a timm / DINOv2 block."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)


class _Mlp(nn.Module):
    """``mlp.fc1`` / ``mlp.fc2`` of a timm / DINOv2 block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)


class _PatchEmbed(nn.Module):
    """``patch_embed.proj``: the patchifying convolution."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class _Scale(nn.Module):
    """DINOv2 LayerScale (``ls1.gamma``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, layer_scale: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attn(dim)
        self.mlp = _Mlp(dim, hidden)
        self.ls1: _Scale | None = _Scale(dim) if layer_scale else None
        self.ls2: _Scale | None = _Scale(dim) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, d)
        a = self.attn.proj(a)
        x = x + (a if self.ls1 is None else a * self.ls1.gamma)
        m: torch.Tensor = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        return x + (m if self.ls2 is None else m * self.ls2.gamma)


class PlainViT(nn.Module):
    """A DINOv2 / timm ViT with their parameter names; ``forward(pixels) → (B, dim)`` CLS (or pooled) feature."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        patch: int,
        hidden: int,
        grid: int,
        *,
        registers: int = 0,
        register_name: str = "register_tokens",
        class_pos: bool = True,
        layer_scale: bool = False,
        fc_norm: bool = False,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} heads; pass num_heads")
        self.patch, self.grid, self.class_pos, self.register_name = patch, grid, class_pos, register_name
        self.patch_embed = _PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + int(class_pos), dim))
        if registers:
            self.register_parameter(register_name, nn.Parameter(torch.zeros(1, registers, dim)))
        self.blocks = nn.ModuleList(_Block(dim, heads, hidden, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6) if fc_norm else None
        self.n_prefix = 1 + registers

    def _patch_pos(self, h: int, w: int) -> torch.Tensor:
        pos = self.pos_embed[:, int(self.class_pos) :]
        if (h, w) == (self.grid, self.grid):
            return pos
        # DINOv2 ``interpolate_pos_encoding``: bicubic resampling of the position grid
        pos = pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos.float(), size=(h, w), mode="bicubic", align_corners=False).to(pos.dtype)
        return pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features (B, dim) of normalised pixels (B, 3, H, W)."""
        x = self.patch_embed.proj(pixels)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self._patch_pos(h, w)
        cls = self.cls_token.expand(len(x), -1, -1)
        if self.class_pos:
            cls = cls + self.pos_embed[:, :1]
        prefix = [cls]
        if self.n_prefix > 1:
            prefix.append(getattr(self, self.register_name).expand(len(x), -1, -1))
        x = torch.cat([*prefix, x], dim=1)
        for block in self.blocks:
            x = block(x)
        if self.fc_norm is not None:
            pooled: torch.Tensor = self.fc_norm(x[:, self.n_prefix :].mean(dim=1))
            return pooled
        cls_out: torch.Tensor = self.norm(x)[:, 0]
        return cls_out


def read_vit_state_dict(weights: str | os.PathLike[str], *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint file (teacher preferred), prefixes stripped, heads dropped."""
    path = Path(weights)
    if not path.is_file():
        raise EncoderLoadError(str(path), "weights file does not exist; pass a local .pth / .bin / .safetensors")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:  # pickle, zip and safetensors errors vary
        hint = "" if trusted else "; a file holding other Python objects needs trusted=True"
        raise EncoderLoadError(str(path), f"cannot read the checkpoint ({type(exc).__name__}: {exc}){hint}") from exc
    for key in ("teacher", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise EncoderLoadError(str(path), f"expected a state dict, found {type(obj).__name__}")
    if any(k.startswith("teacher.") for k in obj):  # a DINOv2 training checkpoint: keep the teacher
        obj = {k: v for k, v in obj.items() if k.startswith("teacher.")}
    out = {}
    for key, value in obj.items():
        while key.startswith(_PREFIXES):
            key = key[next(len(p) for p in _PREFIXES if key.startswith(p)) :]
        if not key.startswith(_DROPPED) and isinstance(value, torch.Tensor):
            out[key] = value
    return out


def build_vit(sd: dict[str, torch.Tensor], source: str, num_heads: int | None = None) -> PlainViT:
    """A :class:`PlainViT` sized from ``sd`` with ``sd`` loaded strictly."""
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    if absent := [k for k in need if k not in sd]:
        raise CheckpointKeyError(source, absent, [], hint="expected a DINOv2 / timm VisionTransformer checkpoint")
    dim, patch = int(sd["cls_token"].shape[-1]), int(sd["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n_pos = int(sd["pos_embed"].shape[1])
    class_pos = math.isqrt(n_pos - 1) ** 2 == n_pos - 1
    register_name = "reg_token" if "reg_token" in sd else "register_tokens"
    model = PlainViT(
        dim,
        depth,
        num_heads or max(1, dim // 64),
        patch,
        int(sd["blocks.0.mlp.fc1.weight"].shape[0]),
        math.isqrt(n_pos - int(class_pos)),
        registers=int(sd[register_name].shape[1]) if register_name in sd else 0,
        register_name=register_name,
        class_pos=class_pos,
        layer_scale="blocks.0.ls1.gamma" in sd,
        fc_norm="fc_norm.weight" in sd,
    )
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointKeyError(
            source, sorted(result.missing_keys), sorted(result.unexpected_keys), hint="expected a plain ViT (no SwiGLU)"
        )
    return model.float().eval().requires_grad_(False)


def _vit_encoder(name: str, weights: str | os.PathLike[str], num_heads: int | None, trusted: bool) -> Encoder:
    model = build_vit(read_vit_state_dict(weights, trusted=trusted), os.fspath(weights), num_heads)
    size = model.grid * model.patch
    return Encoder(name, model, int(model.cls_token.shape[-1]), size, source=os.fspath(weights))


@register("dinov2")
def dinov2(weights: str | os.PathLike[str], *, num_heads: int | None = None, trusted: bool = False) -> Encoder:
    """A DINOv2 training or teacher checkpoint (``.pth``): CLS token after the final norm."""
    return _vit_encoder("dinov2", weights, num_heads, trusted)


@register("timm-vit")
def timm_vit(weights: str | os.PathLike[str], *, num_heads: int | None = None, trusted: bool = False) -> Encoder:
    """A timm ``VisionTransformer`` state dict (``.bin`` / ``.pth`` / ``.safetensors``): CLS (or ``fc_norm`` mean)."""
    return _vit_encoder("timm-vit", weights, num_heads, trusted)
