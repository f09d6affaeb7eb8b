"""Frozen configuration objects for slide-level SSL (the per-method presets are in :mod:`.presets`).

Every default cites the file it comes from. Abbreviations used below:

- ``SLP`` = JunboShen/slide-level-pretraining;
- ``SLP dino/run_main.sh``, ``SLP dino/params.py``, ``SLP dino/datasets/slide_dataset.py``;
- ``SLP dinov2/configs/train/slide_encoder.yaml`` and ``SLP run_dinov2.sh`` (the ``dinov2`` method);
- ``SLP dinov2_with_new_settings/...`` (the ``dinov2-grid`` method);
- ``DINOv2 ssl_default_config.yaml`` = facebookresearch/dinov2 ``dinov2/configs/ssl_default_config.yaml``
  (also vendored as ``SLP dinov2/configs/ssl_default_config.yaml``), the base the slide yaml overrides;
- ``LongNetConfig.py`` = ``SLP dino/slide_encoder/torchscale/model/LongNetConfig.py`` (= prov-gigapath
  ``gigapath/torchscale/model/LongNetConfig.py``), entry ``LongNet_12_layers_768_dim``.

Schedules are expressed in optimizer steps; the reference's per-epoch values
(10 epochs) become fractions of the run (1 epoch = 0.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Method = Literal["dino", "dinov2", "dinov2-grid"]
METHODS: tuple[str, ...] = ("dino", "dinov2", "dinov2-grid")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def segment_lengths_for(max_wsi_size: int = 32768, tile_size: int = 256, branches: int = 5) -> tuple[int, ...]:
    """LongNet segment lengths ``2**linspace(10, log2((max_wsi_size // tile_size)**2), branches)``.

    Reference: ``LongNetViT.get_optimal_segment_length`` in SLP ``dino/slide_encoder/slide_encoder.py``
    (prov-gigapath ``gigapath/slide_encoder.py``). With SLP's ``MAX_WSI_SIZE=32768`` (run_main.sh) this is
    ``(1024, 2048, 4096, 8192, 16384)``; with prov-gigapath's default 262144 it is
    ``(1024, 5792, 32768, 185363, 1048576)``.
    """
    max_seq = (max_wsi_size // tile_size) ** 2
    exps = np.linspace(np.log2(1024), int(np.log2(max_seq)), branches)
    return tuple(int(v) for v in np.power(2, exps).astype(int))


@dataclass(frozen=True)
class EncoderConfig:
    """LongNet slide encoder.

    Defaults: ``in_dim=1536``, ``dim=768`` (SLP run_main.sh ``INPUT_DIM``/``LATENT_DIM``); ``depth=12``,
    ``heads=16``, ``ffn_dim=3072``, ``dilations=(1, 2, 4, 8, 16)`` (LongNetConfig.py ``LongNet_12_layers_768_dim``);
    ``segment_lengths`` from :func:`segment_lengths_for` (32768-px WSI, 256-px tiles); ``dropout=0.1``,
    ``drop_path=0.0`` (run_main.sh ``DROPOUT``/``DROP_PATH_RATE``); ``attn_dropout=0`` and ``subln=True``
    (torchscale ``architecture/config.py`` defaults); LayerNorm eps 1e-6 (``slide_enc12l768d``).
    ``checkpoint_layers=True`` recomputes each layer's activations in the backward pass
    (``torch.utils.checkpoint``, RNG state preserved so dropout masks repeat): activation memory of one
    layer instead of ``depth`` layers, for about one extra forward of compute (torchscale's
    ``checkpoint_activations``; off by default as in the reference runs).

    ``mode="reference"`` reproduces the released encoders' numerics (prov-gigapath
    ``gigapath/slide_encoder.py`` ``LongNetViT`` over ``gigapath/torchscale``; the same files in SLP
    ``dino/slide_encoder``), where the default deliberately differs (see :mod:`.encoder` and
    ``docs/slide_ssl.md``): position embedding with ``y`` in the first half and the flat index
    ``x * slide_ngrids + y`` wrapping at ``slide_ngrids`` (``coords_to_pos`` + ``get_2d_sincos_pos_embed``);
    the torchscale encoder's own final LayerNorm before the outer one; dropout ``dropout`` on the input
    tokens (torchscale ``Encoder.forward_embedding``); the zero padding of dilated-attention segments
    attended, not masked (flash-attention path); padded tokens zeroed at the input and not masked.
    ``layer_eps`` is the eps of every LayerNorm but the outer final one (``eps``); ``None`` means the
    mode's value: ``eps`` by default, 1e-5 in reference mode (torchscale ``EncoderConfig.layernorm_eps``,
    which LongNetConfig.py never overrides). ``slide_ngrids`` (LongNetViT's default 1000) is read in
    reference mode only. ``grid_stem`` (wsistream's, not the references'; 0 = off): kernel size of a
    convolution over the tile grid added to the projected tile embeddings (:class:`~.encoder.GridStem`), a
    relative, translation-equivariant view of each tile's neighbours that sin-cos positions lack at init;
    ``absolute_positions=False`` drops the sin-cos embedding (positions then reach the encoder only through
    the stem, so where a slide lies on the glass, or where a crop lies on the slide, is invisible).
    """

    in_dim: int = 1536
    dim: int = 768
    depth: int = 12
    heads: int = 16
    ffn_dim: int = 3072
    segment_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    dropout: float = 0.1
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    subln: bool = True
    eps: float = 1e-6
    checkpoint_layers: bool = False
    mode: Literal["default", "reference"] = "default"
    layer_eps: float | None = None
    slide_ngrids: int = 1000
    grid_stem: int = 0
    absolute_positions: bool = True

    def __post_init__(self) -> None:
        _check(self.mode in ("default", "reference"), f"mode={self.mode!r}; pass 'default' or 'reference'")
        _check(
            self.grid_stem == 0 or (self.grid_stem > 0 and self.grid_stem % 2 == 1),
            f"grid_stem={self.grid_stem}; pass 0 (off) or an odd kernel size",
        )
        _check(self.eps > 0 and (self.layer_eps is None or self.layer_eps > 0), "eps and layer_eps must be > 0")
        _check(self.slide_ngrids >= 1, f"slide_ngrids must be >= 1, got {self.slide_ngrids}")
        object.__setattr__(self, "segment_lengths", tuple(int(s) for s in self.segment_lengths))
        object.__setattr__(self, "dilations", tuple(int(r) for r in self.dilations))
        for name in ("in_dim", "dim", "depth", "heads", "ffn_dim"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.dim % self.heads == 0, f"dim={self.dim} must be divisible by heads={self.heads}; pass another dim")
        _check(self.dim % 4 == 0, f"dim={self.dim} must be a multiple of 4 (2-D sin-cos position embedding)")
        _check(
            len(self.segment_lengths) == len(self.dilations) >= 1,
            f"segment_lengths={self.segment_lengths} and dilations={self.dilations} need one entry per branch",
        )
        _check(
            min(self.segment_lengths) >= 1 and min(self.dilations) >= 1, "segment lengths and dilations must be >= 1"
        )
        for s, r in zip(self.segment_lengths, self.dilations, strict=True):
            _check(s >= r, f"segment length {s} is shorter than its dilation {r}; pass segment >= dilation")
        for name in ("dropout", "attn_dropout", "drop_path"):
            _check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def reference(self) -> bool:
        """True in ``mode="reference"``."""
        return self.mode == "reference"

    @property
    def inner_eps(self) -> float:
        """Eps of every LayerNorm but the outer final one: ``layer_eps``, else the mode's value.

        Resolved here rather than in ``__post_init__`` so that ``dataclasses.replace(cfg, mode=...)`` of a
        config with ``layer_eps=None`` takes the new mode's value.
        """
        if self.layer_eps is not None:
            return float(self.layer_eps)
        return 1e-5 if self.reference else float(self.eps)


@dataclass(frozen=True)
class CropConfig:
    """Coordinate crops (two global, ``n_local`` local).

    ``mode="coords"``: square boxes over the slide's sorted unique grid x / y values (SLP
    ``dino/datasets/slide_dataset.py`` ``get_crop``); ``mode="grid"``: tiles laid row-major on a compact
    ``side = isqrt(min(N, cap))`` square first (SLP ``dinov2_with_new_settings/dinov2/data/slide_dataset.py``).
    ``local_max_tiles=None`` means ``int(max_tiles * local_scale**2)`` (both slide_dataset.py files).
    ``equalize=True`` subsamples the crops of a group to the group's shortest (``pad_to_min``, SLP dinov2).
    ``grid_positions``: positions the encoder sees in grid mode, ``"original"`` tile-grid positions
    (what the reference returns) or ``"compact"`` square-grid positions.
    ``min_tiles`` and ``max_tries`` are wsistream's rule for tiny slides and empty crops (see :mod:`.crops`).
    ``position_shift`` (wsistream's, not the references'; 0 = off, their behaviour): every crop's positions
    are translated by its own ``(dx, dy)``, uniform in ``0 .. position_shift`` grid units, so that two crops of
    a slide do not share where the slide lies on the glass and the objective cannot match them by it.
    """

    mode: Literal["coords", "grid"] = "coords"
    global_scale: float = 0.95
    local_scale: float = 0.5
    n_local: int = 8
    max_tiles: int = 8192
    local_max_tiles: int | None = None
    equalize: bool = False
    grid_positions: Literal["original", "compact"] = "original"
    min_tiles: int = 16
    max_tries: int = 10
    position_shift: int = 0

    def __post_init__(self) -> None:
        _check(self.mode in ("coords", "grid"), f"mode={self.mode!r}; pass 'coords' or 'grid'")
        _check(
            self.grid_positions in ("original", "compact"),
            f"grid_positions={self.grid_positions!r}; pass 'original' or 'compact'",
        )
        for name in ("global_scale", "local_scale"):
            _check(0.0 < getattr(self, name) <= 1.0, f"{name} must be in (0, 1], got {getattr(self, name)}")
        _check(self.n_local >= 0, f"n_local must be >= 0, got {self.n_local}")
        _check(self.max_tiles >= 1, f"max_tiles must be >= 1, got {self.max_tiles}")
        _check(self.local_cap >= 1, f"local_max_tiles resolves to {self.local_cap}; pass local_max_tiles >= 1")
        _check(self.min_tiles >= 1, f"min_tiles must be >= 1, got {self.min_tiles}")
        _check(self.max_tries >= 1, f"max_tries must be >= 1, got {self.max_tries}")
        _check(self.position_shift >= 0, f"position_shift must be >= 0 (0 = off), got {self.position_shift}")

    @property
    def local_cap(self) -> int:
        """Token cap of a local crop."""
        if self.local_max_tiles is not None:
            return int(self.local_max_tiles)
        return int(self.max_tiles * self.local_scale * self.local_scale)


@dataclass(frozen=True)
class ObjectiveConfig:
    """DINO / DINOv2 (iBOT, KoLeo) heads, losses and teacher.

    DINO preset: ``out_dim=8192`` (run_main.sh ``OUT_DIM``), head 3 layers / hidden 2048 / bottleneck 256
    (SLP ``dino/vision_transformer.py`` ``DINOHead``), ``norm_last_layer=True``, teacher temperature 0.04
    without warm-up, momentum 0.996 (run_main.sh), student temperature 0.1 and centre momentum 0.9
    (``DINOLoss`` in SLP ``dino/main.py``). DINOv2 additions: iBOT weight 1, mask probability 0.5, ratio
    (0.1, 0.5), shared head, teacher temperature 0.04 -> 0.07, momentum 0.992 (DINOv2 ssl_default_config.yaml).

    ``teacher_dropout``: whether the teacher runs in train mode, i.e. with the encoder's dropout. DINO preset
    ``True``: SLP ``dino/main.py`` builds the teacher as it builds the student, ``slide_enc12l768d(**vars(args))``
    with ``--dropout`` (run_main.sh ``DROPOUT=0.1``), and never puts it in eval mode (facebookresearch/dino
    ``main_dino.py`` does the same, but its teacher ViT has no dropout). DINOv2 presets ``False``:
    ``SSLMetaArch.train`` calls ``self.teacher.eval()`` (SLP ``dinov2/train/ssl_meta_arch.py``).
    """

    out_dim: int = 8192
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    center_momentum: float = 0.9
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_frac: float = 0.0
    momentum_teacher: float = 0.996
    final_momentum_teacher: float = 1.0
    dino_weight: float = 1.0
    ibot_weight: float = 0.0
    ibot_separate_head: bool = False
    ibot_out_dim: int = 8192
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    koleo_weight: float = 0.0
    teacher_dropout: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_ratio", tuple(float(v) for v in self.mask_ratio))
        for name in ("out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_nlayers", "ibot_out_dim"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            _check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        _check(0.0 <= self.teacher_temp_warmup_frac <= 1.0, "teacher_temp_warmup_frac must be in [0, 1]")
        _check(
            0.0 <= self.momentum_teacher <= self.final_momentum_teacher <= 1.0,
            "need 0 <= momentum_teacher <= final_momentum_teacher <= 1",
        )
        _check(0.0 <= self.center_momentum < 1.0, f"center_momentum must be in [0, 1), got {self.center_momentum}")
        _check(self.dino_weight >= 0 and self.ibot_weight >= 0 and self.koleo_weight >= 0, "loss weights must be >= 0")
        _check(self.dino_weight + self.ibot_weight > 0, "dino_weight and ibot_weight are both 0; pass a positive one")
        _check(len(self.mask_ratio) == 2, f"mask_ratio={self.mask_ratio}; pass a (lo, hi) pair")
        lo, hi = self.mask_ratio
        _check(0.0 <= lo <= hi <= 1.0, f"mask_ratio={self.mask_ratio}; pass (lo, hi) with 0 <= lo <= hi <= 1")
        _check(0.0 <= self.mask_probability <= 1.0, f"mask_probability must be in [0, 1], got {self.mask_probability}")
        if self.ibot_weight > 0:
            _check(
                hi > 0 and self.mask_probability > 0,
                "ibot_weight > 0 needs a positive mask_ratio and mask_probability (dinov2 ssl_meta_arch.py asserts)",
            )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and schedules.

    DINO preset (run_main.sh): lr 5e-4 at batch 256, linear scaling, min 1e-6, warm-up 1 of 10 epochs,
    weight decay 0.04 -> 0.4 cosine, clip 3 per parameter (``utils.clip_gradients``), last layer frozen
    for the first epoch, no gradient accumulation (``dino/main.py`` never reads ``--gc``).
    DINOv2 presets: base lr at batch 1024 with ``sqrt_wrt_1024`` scaling, weight decay 0.04 -> 0.2,
    global-norm clip 3, input projection lr x0.2 (``patch_embed_lr_mult``). Gradient accumulation: the
    ``dinov2`` reference steps after every slide (SLP ``dinov2/train/train.py`` l.301-317 zeroes and steps
    each iteration; its ``--gc`` is parsed but unused), only ``dinov2_with_new_settings`` accumulates
    ``gc=32`` (its ``train.py`` l.276-296 steps every ``cfg.gc`` iterations, ``ssl_meta_arch.py`` l.386
    divides the loss by it) -- the seed lists accumulation as one of that variant's changes.
    ``scale_with_accumulation=False`` follows the reference: the lr scaling batch is
    ``batch_size * world_size``, not counting accumulation.
    """

    base_lr: float = 5e-4
    lr_scaling: Literal["linear_256", "sqrt_1024", "none"] = "linear_256"
    scale_with_accumulation: bool = False
    min_lr: float = 1e-6
    warmup_frac: float = 0.1
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    clip_mode: Literal["per_param", "global"] = "per_param"
    freeze_last_layer_frac: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    input_proj_lr_mult: float = 1.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _check(self.base_lr > 0 and self.min_lr >= 0, "base_lr must be > 0 and min_lr >= 0")
        _check(
            self.lr_scaling in ("linear_256", "sqrt_1024", "none"),
            f"lr_scaling={self.lr_scaling!r}; pass 'linear_256', 'sqrt_1024' or 'none'",
        )
        _check(self.clip_mode in ("per_param", "global"), f"clip_mode={self.clip_mode!r}; pass 'per_param' or 'global'")
        for name in ("warmup_frac", "freeze_last_layer_frac"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1], got {getattr(self, name)}")
        _check(self.weight_decay >= 0 and self.weight_decay_end >= 0, "weight decays must be >= 0")
        _check(self.clip_grad >= 0, f"clip_grad must be >= 0 (0 disables), got {self.clip_grad}")
        _check(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        _check(self.input_proj_lr_mult > 0, "input_proj_lr_mult must be > 0")

    def scaled_lr(self, batch: int) -> float:
        """Peak lr for ``batch`` samples per optimizer step (DINO ``lr * B / 256``; DINOv2 ``lr * sqrt(B / 1024)``)."""
        if self.lr_scaling == "linear_256":
            return self.base_lr * batch / 256.0
        if self.lr_scaling == "sqrt_1024":
            return self.base_lr * float(np.sqrt(batch / 1024.0))
        return self.base_lr


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. ``steps`` counts optimizer steps; ``batch_size`` slides per micro-batch and rank.

    ``batch_size=1`` is SLP's ``BATCH_SIZE_PER_GPU=1``; ``seed=0`` (params.py).
    ``precision``: ``"auto"`` = bf16 autocast on GPU, fp32 on CPU; ``"fp16"`` = float16 autocast with a
    dynamic loss scaler, as the references train (SLP ``dino/run_main.sh`` l.11 ``USE_FP16=True`` and
    ``dino/main.py`` l.116-118 ``GradScaler``; ``dinov2/configs/train/slide_encoder.yaml`` l.33
    ``grad_scaler: true``): gradients are unscaled before clipping and a step with inf / NaN gradients
    is skipped by the scaler.
    """

    method: Method = "dino"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 1
    seed: int = 0
    checkpoint_every: int = 100
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    def __post_init__(self) -> None:
        _check(self.method in METHODS, f"method={self.method!r}; pass one of {', '.join(METHODS)}")
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _check(
            self.precision in ("auto", "fp32", "bf16", "fp16"),
            f"precision={self.precision!r}; pass 'auto', 'fp32', 'bf16' or 'fp16'",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            method=d["method"],
            encoder=EncoderConfig(**d["encoder"]),
            crops=CropConfig(**d["crops"]),
            objective=ObjectiveConfig(**d["objective"]),
            optim=OptimConfig(**d["optim"]),
            **{k: d[k] for k in ("steps", "batch_size", "seed", "checkpoint_every", "precision")},
        )
