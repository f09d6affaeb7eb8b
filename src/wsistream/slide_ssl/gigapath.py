"""Prov-GigaPath slide-encoder weights (a local ``slide_encoder.pth``) as a reference-mode :class:`SlideEncoder`.

The checkpoint holds ``{"model": state_dict}`` of prov-gigapath ``gigapath/slide_encoder.py``
``LongNetViT`` (``create_model`` reads ``torch.load(path)["model"]``), whose torchscale encoder names
its tensors as ``gigapath/torchscale/architecture/encoder.py``, ``component/multihead_attention.py`` and
``component/feedforward_network.py`` do. Mapping to :class:`~wsistream.slide_ssl.encoder.SlideEncoder`:

=====================================================  ======================================
reference key                                          ours
=====================================================  ======================================
``patch_embed.proj.{weight,bias}``                     ``input_proj``
``cls_token``                                          ``cls_token``
``mask_token`` (SLP dinov2 backbones only)             ``mask_token`` (else zeros, unused)
``encoder.layers.N.self_attn_layer_norm``              ``layers.N.attn_norm``
``encoder.layers.N.self_attn.{q,k,v,out}_proj``        ``layers.N.attn.{q,k,v,out}_proj``
``encoder.layers.N.self_attn.inner_attn_ln``           ``layers.N.attn.inner_norm``
``encoder.layers.N.final_layer_norm``                  ``layers.N.ffn_norm``
``encoder.layers.N.ffn.fc1`` / ``fc2``                 ``layers.N.fc1`` / ``fc2``
``encoder.layers.N.ffn.ffn_layernorm``                 ``layers.N.ffn_inner_norm``
``encoder.layer_norm``                                 ``encoder_norm``
``norm``                                               ``norm``
=====================================================  ======================================

``pos_embed`` is a non-persistent buffer in the current code; a checkpoint that still carries it has it
checked against :func:`~wsistream.slide_ssl.encoder.reference_sincos_2d` (a mismatch means another
position layout) and dropped. Sizes (``in_dim``, ``dim``, ``depth``, ``ffn_dim``, ``subln``) are read from
the tensors; what the tensors cannot tell is an argument with prov-gigapath's value as default.
Nothing is downloaded: ``path`` must be a local file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from wsistream.features.errors import CheckpointKeyError, EncoderLoadError
from wsistream.slide_ssl.config import EncoderConfig, segment_lengths_for
from wsistream.slide_ssl.encoder import SlideEncoder, reference_sincos_2d

GIGAPATH_SEGMENT_LENGTHS: tuple[int, ...] = segment_lengths_for(max_wsi_size=262144, tile_size=256)
"""Segments of the released model: ``get_optimal_segment_length`` with LongNetViT's ``max_wsi_size=262144``."""

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "self_attn_layer_norm.": "attn_norm.",
    "self_attn.q_proj.": "attn.q_proj.",
    "self_attn.k_proj.": "attn.k_proj.",
    "self_attn.v_proj.": "attn.v_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
    "self_attn.inner_attn_ln.": "attn.inner_norm.",
    "final_layer_norm.": "ffn_norm.",
    "ffn.fc1.": "fc1.",
    "ffn.fc2.": "fc2.",
    "ffn.ffn_layernorm.": "ffn_inner_norm.",
}
_TOP = {
    "patch_embed.proj.": "input_proj.",
    "encoder.layer_norm.": "encoder_norm.",
    "norm.": "norm.",
}
_TOP_EXACT = {"cls_token": "cls_token", "mask_token": "mask_token"}


def gigapath_key(key: str) -> str | None:
    """Our parameter name for a ``LongNetViT`` state-dict key, or None when it has no counterpart."""
    if key in _TOP_EXACT:
        return _TOP_EXACT[key]
    m = _LAYER.match(key)
    if m:
        n, rest = m.groups()
        for theirs, ours in _LAYER_PARTS.items():
            if rest.startswith(theirs):
                return f"layers.{n}.{ours}{rest[len(theirs) :]}"
        return None
    for theirs, ours in _TOP.items():
        if key.startswith(theirs) and key.count(".") == theirs.count("."):
            return ours + key[len(theirs) :]
    return None


def _their_key(ours: str) -> str:
    """The ``LongNetViT`` key that :func:`gigapath_key` maps to ``ours`` (for naming missing keys)."""
    if ours in _TOP_EXACT.values():
        return ours
    m = re.match(r"^layers\.(\d+)\.(.+)$", ours)
    if m:
        n, rest = m.groups()
        theirs = next(t for t, o in _LAYER_PARTS.items() if rest.startswith(o))
        return f"encoder.layers.{n}.{theirs}{rest[len(_LAYER_PARTS[theirs]) :]}"
    theirs = next(t for t, o in _TOP.items() if ours.startswith(o))
    return theirs + ours[len(_TOP[theirs]) :]


def _read_state_dict(path: Path, checkpoint_key: str | None, trusted: bool) -> dict[str, torch.Tensor]:
    """The LongNetViT tensors of ``path`` under ``checkpoint_key`` (default ``"model"`` if present), prefix removed."""
    if not path.is_file():
        raise EncoderLoadError(str(path), "checkpoint file does not exist; pass a local slide_encoder.pth")
    try:
        obj: object = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:  # pickle and zip errors vary
        hint = "" if trusted else "; a file holding other Python objects needs trusted=True"
        raise EncoderLoadError(str(path), f"cannot read the checkpoint ({type(exc).__name__}: {exc}){hint}") from exc
    if isinstance(obj, dict):
        key = checkpoint_key if checkpoint_key is not None else ("model" if "model" in obj else None)
        if key is not None:
            if not isinstance(obj.get(key), dict):
                keys = sorted(map(str, obj))
                raise EncoderLoadError(str(path), f"no state dict under {key!r}; pass checkpoint_key (keys: {keys})")
            obj = obj[key]
    if not isinstance(obj, dict):
        raise EncoderLoadError(str(path), f"expected a state dict, found {type(obj).__name__}")
    anchor = next((k for k in obj if str(k).endswith("patch_embed.proj.weight")), None)
    if anchor is None:
        raise EncoderLoadError(str(path), "no 'patch_embed.proj.weight': not a LongNetViT slide-encoder state dict")
    prefix = str(anchor)[: -len("patch_embed.proj.weight")]  # e.g. "backbone." or "module.backbone." (SLP)
    return {k[len(prefix) :]: v for k, v in obj.items() if str(k).startswith(prefix) and isinstance(v, torch.Tensor)}


def _sizes(sd: dict[str, torch.Tensor], source: str) -> tuple[int, int, int, int, bool]:
    """``(in_dim, dim, depth, ffn_dim, subln)`` read from the tensors."""
    layers = [int(m.group(1)) for k in sd if (m := _LAYER.match(k))]
    if not layers or "encoder.layers.0.ffn.fc1.weight" not in sd:
        raise CheckpointKeyError(source, ["encoder.layers.0.ffn.fc1.weight"], [], hint="not a LongNetViT state dict")
    proj = sd["patch_embed.proj.weight"]
    ffn_dim = int(sd["encoder.layers.0.ffn.fc1.weight"].shape[0])
    subln = "encoder.layers.0.self_attn.inner_attn_ln.weight" in sd
    return int(proj.shape[1]), int(proj.shape[0]), 1 + max(layers), ffn_dim, subln


def load_gigapath_slide_encoder(
    path: str | os.PathLike[str],
    *,
    heads: int = 16,
    segment_lengths: Sequence[int] = GIGAPATH_SEGMENT_LENGTHS,
    dilations: Sequence[int] = (1, 2, 4, 8, 16),
    slide_ngrids: int = 1000,
    dropout: float = 0.1,
    drop_path: float = 0.1,
    checkpoint_key: str | None = None,
    trusted: bool = False,
) -> SlideEncoder:
    """A reference-mode :class:`SlideEncoder` holding a local Prov-GigaPath slide-encoder checkpoint (eval mode).

    Parameters
    ----------
    path : str or os.PathLike
        ``slide_encoder.pth`` (``{"model": state_dict}``), a bare ``LongNetViT`` state dict, or a training
        checkpoint whose backbone sits under ``checkpoint_key`` (e.g. SLP's ``"teacher"``; a key prefix such
        as ``backbone.`` is found from ``patch_embed.proj.weight`` and removed, keys outside it ignored).
    heads : int
        Attention heads (not visible in the tensors): 16 in every LongNetConfig.py entry the released
        encoders use (``LongNet_12_layers_768_dim``).
    segment_lengths, dilations : sequence of int
        The released model's ``get_optimal_segment_length(262144, 256)`` and LongNet.py's
        ``dilated_ratio`` default; SLP's runs use ``segment_lengths_for(32768, 256)``.
    slide_ngrids : int
        ``LongNetViT`` default 1000 (the position-table side).
    dropout, drop_path : float
        Used only in training mode (fine-tuning): prov-gigapath ``finetune/params.py`` defaults.
    checkpoint_key : str, optional
        Top-level key of the state dict; default ``"model"`` when present, else the file itself.
    trusted : bool
        Allow pickled Python objects beside the tensors (``torch.load(weights_only=False)``); only for
        files you trust.

    Raises
    ------
    EncoderLoadError
        Missing, unreadable or foreign file.
    CheckpointKeyError
        Keys with no counterpart here or parameters the file lacks (both listed), or a ``pos_embed``
        that is not the reference's sin-cos table.

    Examples
    --------
    >>> enc = load_gigapath_slide_encoder("slide_encoder.pth")  # doctest: +SKIP
    >>> out = enc(tile_embeddings, grid, layers=(-1,))  # grid = floor(level-0 xy / 256)  # doctest: +SKIP
    """
    source = str(path)
    sd = _read_state_dict(Path(path), checkpoint_key, trusted)
    in_dim, dim, depth, ffn_dim, subln = _sizes(sd, source)
    try:
        cfg = EncoderConfig(
            in_dim=in_dim,
            dim=dim,
            depth=depth,
            ffn_dim=ffn_dim,
            subln=subln,
            heads=heads,
            segment_lengths=tuple(segment_lengths),
            dilations=tuple(dilations),
            slide_ngrids=slide_ngrids,
            dropout=dropout,
            drop_path=drop_path,
            mode="reference",
        )
    except ValueError as exc:
        raise EncoderLoadError(source, f"the checkpoint does not make an encoder: {exc}") from exc
    _check_pos_embed(sd.pop("pos_embed", None), cfg, source)
    enc = SlideEncoder(cfg)
    own = enc.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in sd.items():
        ours = gigapath_key(key)
        if ours is None or ours not in own:
            unexpected.append(key)
        else:
            mapped[ours] = value
    missing = [_their_key(k) for k in own if k not in mapped and k != "mask_token"]
    if missing or unexpected:
        raise CheckpointKeyError(source, missing, unexpected, hint="expected prov-gigapath LongNetViT keys")
    bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise EncoderLoadError(source, f"tensor shapes differ (pass heads/dims to match): {'; '.join(bad)}")
    enc.load_state_dict(mapped, strict=False)
    return enc.eval()


def _check_pos_embed(table: torch.Tensor | None, cfg: EncoderConfig, source: str) -> None:
    """A stored ``pos_embed`` must be the reference's table (CLS row of zeros, then ``slide_ngrids ** 2`` rows)."""
    if table is None:
        return
    g = cfg.slide_ngrids
    rows = table.reshape(-1, table.shape[-1])
    if rows.shape != (g * g + 1, cfg.dim):
        raise CheckpointKeyError(source, [], [f"pos_embed {tuple(table.shape)} (not {g * g + 1} x {cfg.dim})"])
    probe = torch.tensor([[0, 0], [0, g - 1], [g - 1, 0], [g // 2, g // 3]])
    expected = reference_sincos_2d(probe, cfg.dim, g).float()
    got = rows[1 + probe[:, 0] * g + probe[:, 1]].float()
    if not (torch.allclose(got, expected, atol=1e-5) and bool((rows[0] == 0).all())):
        raise CheckpointKeyError(source, [], ["pos_embed (not the reference's sin-cos table)"])
