"""Every value of each method preset against the reference file and line it comes from.

``SLP`` = JunboShen/slide-level-pretraining at commit 8acd96a; ``V2NEW`` = ``SLP dinov2_with_new_settings``;
``V2DEF`` = ``SLP dinov2/configs/ssl_default_config.yaml`` (= facebookresearch/dinov2's, the base the slide
yaml overrides); ``LNC`` = ``SLP dino/slide_encoder/torchscale/model/LongNetConfig.py``. Lines were read with
``git show 8acd96a:<file> | cat -n``. The reference's per-epoch values over its 10 epochs become fractions
of ``steps`` (1 epoch = 0.1).
"""

from __future__ import annotations

import pytest

from wsistream.slide_ssl.presets import method_preset

# (attribute path, expected, where the reference sets it)
_SHARED_ENCODER = [
    ("encoder.in_dim", 1536, "SLP dino/run_main.sh:37 INPUT_DIM=1536 (run_dinov2.sh:17)"),
    ("encoder.dim", 768, "SLP dino/run_main.sh:38 LATENT_DIM=768"),
    ("encoder.depth", 12, "LNC LongNet_12_layers_768_dim encoder_layers=12"),
    ("encoder.heads", 16, "LNC LongNet_12_layers_768_dim encoder_attention_heads=16"),
    ("encoder.ffn_dim", 3072, "LNC LongNet_12_layers_768_dim encoder_ffn_embed_dim=3072"),
    ("encoder.dilations", (1, 2, 4, 8, 16), "LNC LongNet_12_layers_768_dim dilated_ratio"),
    ("encoder.segment_lengths", (1024, 2048, 4096, 8192, 16384), "get_optimal_segment_length, MAX_WSI_SIZE=32768"),
    ("encoder.dropout", 0.1, "SLP dino/run_main.sh:41 DROPOUT=0.1 (run_dinov2.sh:21)"),
    ("encoder.drop_path", 0.0, "SLP dino/run_main.sh:42 DROP_PATH_RATE=0.0"),
    ("crops.n_local", 8, "SLP dino/run_main.sh:22 LOCAL_CROPS_NUMBER=8 (run_dinov2.sh:8)"),
    ("crops.max_tiles", 8192, "SLP dino/run_main.sh:35 MAX_TILES=8192 (run_dinov2.sh:16)"),
    ("batch_size", 1, "SLP dino/run_main.sh:15; dinov2/configs/train/slide_encoder.yaml:2 batch_size_per_gpu=1"),
    ("seed", 0, "SLP dino/params.py:77 --seed 0; V2DEF:66"),
    ("objective.student_temp", 0.1, "SLP dino/main.py:255; dinov2/loss/dino_clstoken_loss.py:16"),
    ("objective.center_momentum", 0.9, "SLP dino/main.py:256; dinov2/loss/dino_clstoken_loss.py:17"),
    ("objective.head_nlayers", 3, "SLP dino/vision_transformer.py:258 DINOHead nlayers=3; V2DEF:47"),
    ("objective.head_hidden_dim", 2048, "SLP dino/vision_transformer.py:258 hidden_dim=2048; V2DEF:48"),
    ("objective.head_bottleneck_dim", 256, "SLP dino/vision_transformer.py:258 bottleneck_dim=256; V2DEF:46"),
    ("objective.out_dim", 8192, "SLP dino/run_main.sh:4; dinov2/configs/train/slide_encoder.yaml:13; V2NEW yaml:18"),
    ("optim.min_lr", 1e-6, "SLP dino/run_main.sh:20; dinov2 slide_encoder.yaml:23; V2NEW yaml:29"),
    ("optim.weight_decay", 0.04, "SLP dino/run_main.sh:12; dinov2 slide_encoder.yaml:18; V2NEW yaml:24"),
    ("optim.clip_grad", 3.0, "SLP dino/run_main.sh:14; dinov2 slide_encoder.yaml:24; V2NEW yaml:30"),
    ("optim.freeze_last_layer_frac", 0.1, "1 of 10 epochs: run_main.sh:16,17; dinov2 yaml:17,25; V2NEW yaml:23,31"),
    ("optim.betas", (0.9, 0.999), "V2DEF:105-106 adamw_beta1/2 (torch AdamW defaults in dino/main.py)"),
]

PRESETS: dict[str, list[tuple[str, object, str]]] = {
    "dino": [
        *_SHARED_ENCODER,
        ("crops.mode", "coords", "SLP dino/datasets/slide_dataset.py get_crop over coordinates"),
        ("crops.global_scale", 0.95, "SLP dino/run_main.sh:23 GLOBAL_CROPS_SCALE=0.95"),
        ("crops.local_scale", 0.5, "SLP dino/run_main.sh:24 LOCAL_CROPS_SCALE=0.5"),
        ("crops.equalize", False, "SLP dino/datasets/slide_dataset.py: crops keep their own lengths"),
        ("objective.norm_last_layer", True, "SLP dino/run_main.sh:5 NORM_LAST_LAYER=True"),
        ("objective.momentum_teacher", 0.996, "SLP dino/run_main.sh:6 MOMENTUM_TEACHER=0.996"),
        ("objective.final_momentum_teacher", 1.0, "SLP dino/main.py:133 cosine_scheduler(momentum_teacher, 1, ...)"),
        ("objective.warmup_teacher_temp", 0.04, "SLP dino/run_main.sh:8"),
        ("objective.teacher_temp", 0.04, "SLP dino/run_main.sh:9"),
        ("objective.teacher_temp_warmup_frac", 0.0, "SLP dino/run_main.sh:10 WARMUP_TEACHER_TEMP_EPOCHS=0"),
        ("objective.ibot_weight", 0.0, "DINO has no iBOT term (dino/main.py DINOLoss only)"),
        ("objective.koleo_weight", 0.0, "DINO has no KoLeo term"),
        ("objective.teacher_dropout", True, "SLP dino/main.py: teacher built like the student, never .eval()"),
        ("optim.base_lr", 5e-4, "SLP dino/run_main.sh:18 LR=0.0005"),
        ("optim.lr_scaling", "linear_256", "SLP dino/main.py:122 lr * batch / 256"),
        ("optim.warmup_frac", 0.1, "SLP dino/run_main.sh:19 WARMUP_EPOCHS=1 of EPOCHS=10"),
        ("optim.weight_decay_end", 0.4, "SLP dino/run_main.sh:13 WEIGHT_DECAY_END=0.4"),
        ("optim.clip_mode", "per_param", "SLP dino/main.py:221 utils.clip_gradients (dino/utils.py:143)"),
        ("optim.input_proj_lr_mult", 1.0, "dino/main.py: one lr for all parameters"),
        ("optim.grad_accum", 1, "SLP dino/main.py steps every iteration; --gc (params.py:96) is never read"),
    ],
    "dinov2": [
        *_SHARED_ENCODER,
        ("crops.mode", "coords", "SLP dinov2/data/slide_dataset.py crops over coordinates"),
        ("crops.global_scale", 1.0, "SLP run_dinov2.sh:9 GLOBAL_CROPS_SCALE=1.0"),
        ("crops.local_scale", 0.5, "SLP run_dinov2.sh:10 LOCAL_CROPS_SCALE=0.5"),
        ("crops.equalize", True, "SLP dinov2/data/slide_dataset.py pad_to_min"),
        ("objective.norm_last_layer", False, "DINOv2 DINOHead weight norm is trainable (dinov2/layers/dino_head.py)"),
        ("objective.momentum_teacher", 0.992, "V2DEF:87"),
        ("objective.final_momentum_teacher", 1.0, "V2DEF:88"),
        ("objective.warmup_teacher_temp", 0.04, "V2DEF:89"),
        ("objective.teacher_temp", 0.07, "V2DEF:90"),
        ("objective.teacher_temp_warmup_frac", 0.3, "SLP dinov2/configs/train/slide_encoder.yaml:10 (3 of 10)"),
        ("objective.ibot_weight", 1.0, "V2DEF:51"),
        ("objective.ibot_separate_head", False, "SLP dinov2/configs/train/slide_encoder.yaml:7"),
        ("objective.mask_probability", 0.5, "V2DEF:52"),
        ("objective.mask_ratio", (0.1, 0.5), "V2DEF:53-55"),
        ("objective.koleo_weight", 0.0, "SLP dinov2/configs/train/slide_encoder.yaml:12"),
        ("objective.teacher_dropout", False, "SLP dinov2/train/ssl_meta_arch.py SSLMetaArch.train: teacher.eval()"),
        ("optim.base_lr", 2e-4, "SLP dinov2/configs/train/slide_encoder.yaml:20"),
        ("optim.lr_scaling", "sqrt_1024", "SLP dinov2/configs/train/slide_encoder.yaml:26"),
        ("optim.warmup_frac", 0.1, "SLP dinov2/configs/train/slide_encoder.yaml:22 (1 of 10 epochs)"),
        ("optim.weight_decay_end", 0.2, "SLP dinov2/configs/train/slide_encoder.yaml:19"),
        ("optim.clip_mode", "global", "SLP dinov2/train/train.py:315-316 clip_grad_norm_ per student module"),
        ("optim.input_proj_lr_mult", 0.2, "SLP dinov2/configs/train/slide_encoder.yaml:27"),
        ("optim.grad_accum", 1, "SLP dinov2/train/train.py:301-317 zero_grad + step every iteration"),
    ],
    "dinov2-grid": [
        *_SHARED_ENCODER,
        ("crops.mode", "grid", "V2NEW dinov2/data/slide_dataset.py compact square grid"),
        ("crops.global_scale", 0.875, "V2NEW run_dinov2.sh:9 GLOBAL_CROPS_SCALE=0.875"),
        ("crops.local_scale", 0.375, "V2NEW run_dinov2.sh:10 LOCAL_CROPS_SCALE=0.375"),
        ("crops.equalize", True, "V2NEW dinov2/data/slide_dataset.py pad_to_min"),
        ("objective.norm_last_layer", False, "DINOv2 DINOHead weight norm is trainable"),
        ("objective.momentum_teacher", 0.992, "V2DEF:87 (not overridden)"),
        ("objective.final_momentum_teacher", 1.0, "V2DEF:88"),
        ("objective.warmup_teacher_temp", 0.04, "V2DEF:89"),
        ("objective.teacher_temp", 0.07, "V2DEF:90"),
        ("objective.teacher_temp_warmup_frac", 0.0, "V2NEW dinov2/configs/train/slide_encoder.yaml:15"),
        ("objective.ibot_weight", 1.0, "V2DEF:51"),
        ("objective.ibot_separate_head", True, "V2NEW slide_encoder.yaml:7"),
        ("objective.ibot_out_dim", 65536, "V2NEW slide_encoder.yaml:8"),
        ("objective.mask_probability", 0.5, "V2NEW slide_encoder.yaml:10"),
        ("objective.mask_ratio", (0.1, 0.5), "V2NEW slide_encoder.yaml:11-13"),
        ("objective.koleo_weight", 0.0, "V2NEW slide_encoder.yaml:17"),
        ("objective.teacher_dropout", False, "V2NEW dinov2/train/ssl_meta_arch.py SSLMetaArch.train: teacher.eval()"),
        ("optim.base_lr", 4e-3, "V2NEW slide_encoder.yaml:26"),
        ("optim.lr_scaling", "sqrt_1024", "V2NEW slide_encoder.yaml:32"),
        ("optim.warmup_frac", 0.0, "V2NEW slide_encoder.yaml:28"),
        ("optim.weight_decay_end", 0.2, "V2NEW slide_encoder.yaml:25"),
        ("optim.clip_mode", "global", "V2NEW dinov2/train/train.py:293-294 clip_grad_norm_ per student module"),
        ("optim.input_proj_lr_mult", 0.2, "V2NEW slide_encoder.yaml:33"),
        ("optim.grad_accum", 32, "V2NEW run_dinov2.sh:21 GC=32; dinov2/train/train.py:276-296; ssl_meta_arch.py:386"),
    ],
}


def _get(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_preset_matches_the_reference_table(method):
    cfg = method_preset(method)
    wrong = [
        f"{attr} = {_get(cfg, attr)!r}, reference {want!r} ({where})"
        for attr, want, where in PRESETS[method]
        if _get(cfg, attr) != pytest.approx(want) and _get(cfg, attr) != want
    ]
    assert not wrong, "\n".join(wrong)
    # local cap int(max_tiles * local_scale**2) in both slide_dataset.py files
    assert cfg.crops.local_cap == int(8192 * cfg.crops.local_scale**2) == {"dinov2-grid": 1152}.get(method, 2048)


def test_table_covers_every_method_setting():
    """A new preset field has to be added to the table (with its citation) to pass."""
    cfg = method_preset("dino")
    fields = {
        f"{part}.{name}"
        for part in ("crops", "objective", "optim")
        for name in type(getattr(cfg, part)).__dataclass_fields__
    }
    wsistream_rules = {
        "crops.local_max_tiles", "crops.grid_positions", "crops.min_tiles", "crops.max_tries",
        "crops.position_shift", "objective.dino_weight", "optim.scale_with_accumulation",
    }  # fmt: skip
    for method, table in PRESETS.items():
        covered = {attr for attr, _, _ in table}
        missing = fields - covered - wsistream_rules
        if method == "dino":  # DINO has no iBOT head / masks
            missing -= {"objective.ibot_out_dim", "objective.ibot_separate_head", "objective.mask_probability",
                        "objective.mask_ratio"}  # fmt: skip
        if method == "dinov2":
            missing -= {"objective.ibot_out_dim"}  # shared head: the iBOT prototypes are the DINO head's
        assert not missing, (method, sorted(missing))
