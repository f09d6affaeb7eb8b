"""The published recipes: Phikon, Phikon-v2 and GPFM."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from wsistream.backends import OpenSlideBackend, SlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.recipes.base import DeviationRow, Recipe
from wsistream.sampling import CLAMGridSampler, DeepZoomSampler, GridSampler, RandomSampler
from wsistream.tissue import CLAM_PRESET_PADDING, CLAM_PRESETS, CLAMTissueDetector, OtsuTissueDetector

Slides = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

_RES = "tests/pipeline/test_resolution.py::"
#: ImageNet normalisation happens on the accelerator (``wsistream.torch.GpuNormalizer``), not in the data.
_NORMALIZATION = DeviationRow("Normalization", "ImageNet mean/std", "GPU-side normaliser (wsistream.torch)", "Not data")


def _assemble(
    slide_paths: Slides, recipe: dict[str, Any], backend: SlideBackend | None, seed: int, overrides: dict[str, Any]
) -> PatchPipeline:
    """The recipe's settings, then the caller's overrides (any ``PatchPipeline`` field, e.g. ``tissue_detector=``)."""
    kwargs = {**recipe, "backend": backend or OpenSlideBackend(), "seed": seed, **overrides}
    return PatchPipeline(slide_paths=slide_paths, **kwargs)


def build_phikon_v2(
    slide_paths: Slides,
    *,
    views: bool = False,
    coverage: bool = False,
    blur: Literal["released", "paper"] = "released",
    resize: Literal["pil", "opencv"] = "pil",
    backend: SlideBackend | None = None,
    seed: int = 0,
    **overrides: Any,
) -> PatchPipeline:
    """Phikon-v2 (Filiot et al., 2024): 224-px tiles at 0.5 µm/px with ≥ 60 % tissue.

    ``views=True`` adds DINOv2's multi-crop (2 × 224 global, 8 × 96 local,
    Extended Table 5) with DINOv2's augmentation chain; ``coverage=True``
    streams every qualifying non-overlapping tile once per epoch (the paper's
    offline extraction) instead of random positions.  ``blur="released"``
    (default) blurs global_0 / global_1 / locals with probability 0.0 / 0.9 /
    0.5, as the released DINOv2 code Phikon-v2 was trained with does;
    ``blur="paper"`` uses the stated 1.0 / 0.1 / 0.5.  ``resize="pil"``
    (default) resizes crops as torchvision does on DINOv2's PIL images;
    ``view_rendering="device"`` needs ``resize="opencv"`` (no device kernel
    for Pillow's resampler; the difference is in docs/views.md).
    """
    from wsistream.views import dinov2_multicrop

    if blur not in ("released", "paper"):
        raise ValueError(f"blur={blur!r}; pass 'released' (DINOv2's code: 0.0/0.9/0.5) or 'paper' (1.0/0.1/0.5)")
    if views and resize == "pil" and overrides.get("view_rendering") == "device":
        raise ValueError(
            "view_rendering='device' cannot render Pillow's resize (resize='pil', the paper's); pass "
            "resize='opencv' (measured difference in docs/views.md, 'Resampling') or render views on the CPU"
        )
    if coverage:
        sampler: Any = GridSampler(patch_size=224, target_mpp=0.5, tissue_threshold=0.6, shuffle=True)
        defaults: dict[str, Any] = {"patches_per_slide": -1, "cycle": False}
    else:
        sampler = RandomSampler(patch_size=224, num_patches=-1, target_mpp=0.5, tissue_threshold=0.6)
        defaults = {"patches_per_slide": 100, "cycle": True}
    recipe = {
        "tissue_detector": OtsuTissueDetector(),
        "sampler": sampler,
        "views": dinov2_multicrop(224, 96, released_blur=blur == "released", resize=resize) if views else None,
        "pool_size": 8,
        **defaults,
    }
    return _assemble(slide_paths, recipe, backend, seed, overrides)


def build_phikon(
    slide_paths: Slides, *, backend: SlideBackend | None = None, seed: int = 0, **overrides: Any
) -> PatchPipeline:
    """Phikon (Filiot et al., 2023): the 224-px DeepZoom tiles at 0.5 µm/px (HistoSSLscaling), in a seeded order."""
    recipe = {
        "tissue_detector": OtsuTissueDetector(),
        "sampler": DeepZoomSampler(tile_size=224, target_mpp=0.5, tissue_threshold=0.5, shuffle=True),
        "pool_size": 8,
        "patches_per_slide": -1,
        "cycle": False,
    }
    return _assemble(slide_paths, recipe, backend, seed, overrides)


def build_gpfm(
    slide_paths: Slides,
    *,
    dataset: str = "tcga",
    views: bool = False,
    coverage: bool = False,
    backend: SlideBackend | None = None,
    seed: int = 0,
    **overrides: Any,
) -> PatchPipeline:
    """GPFM (Ma et al., 2024): 512-px patches at native level 0, CLAM segmentation with per-dataset presets.

    ``coverage=True`` streams GPFM's offline extraction: CLAM's per-contour
    grid (:class:`~wsistream.sampling.CLAMGridSampler`) with the preset's
    ``use_padding``, GPFM's one-patch-contour drop and black padding, in a
    seeded order.  ``tcga-clam`` follows mahmoodlab/CLAM (keeps one-patch contours).
    """
    from wsistream.views import dinov2_multicrop

    if coverage:
        key = dataset.lower()
        if key not in CLAM_PRESET_PADDING:
            raise ValueError(f"unknown CLAM preset {dataset!r}; pass one of {sorted(CLAM_PRESET_PADDING)}")
        sampler: Any = CLAMGridSampler(
            patch_size=512,
            use_padding=CLAM_PRESET_PADDING[key],
            min_patches_per_contour=1 if key == "tcga-clam" else 2,
            shuffle=True,
        )
        defaults: dict[str, Any] = {"patches_per_slide": -1, "cycle": False}
    else:
        sampler = RandomSampler(patch_size=512, num_patches=-1, level=0, tissue_criterion="four_pt")
        defaults = {"patches_per_slide": 100, "cycle": True}
    recipe = {
        "tissue_detector": CLAMTissueDetector.preset(dataset),
        "sampler": sampler,
        "views": dinov2_multicrop(global_size=224, local_size=98) if views else None,
        "pool_size": 8,
        **defaults,
    }
    return _assemble(slide_paths, recipe, backend, seed, overrides)


PHIKON_V2 = Recipe(
    name="phikon-v2",
    citation="Filiot et al., Phikon-v2, A large and public feature extractor for biomarker prediction, 2024",
    summary="DINOv2 ViT-L/16 on 456M tiles; 224-px tiles at 20x (0.5 µm/px) with >= 60 % tissue.",
    build=build_phikon_v2,
    rows=(
        DeviationRow(
            "Tissue detection",
            "In-house bi-directional U-Net at 2.5x (not released)",
            "OtsuTissueDetector by default; ModelTissueDetector(input_mpp=4.0) slot for a U-Net (tissue_detector=...)",
            "Unavailable",
            note="weights not public: slot provided, Otsu until you have them",
        ),
        DeviationRow(
            "Tissue threshold",
            "60 % tissue per tile",
            "tissue_threshold=0.6",
            "Exact",
            _RES + "test_tissue_threshold_is_met",
        ),
        DeviationRow(
            "Tile size",
            "224x224",
            "patch_size=224",
            "Exact",
            _RES + "test_40x_slide_at_0p5_mpp_gives_444_level0_pixels_per_224_patch",
        ),
        DeviationRow(
            "Magnification",
            "20x (0.5 µm/px)",
            "target_mpp=0.5: read from the coarsest level not coarser than 0.5 µm/px, then area-resampled "
            "(40x Aperio: level 0, 444 -> 224 px; the 0.228 µm/px NDPI: level 1, 245 -> 224 px)",
            "Exact",
            _RES + "test_40x_slide_at_0p5_mpp_gives_444_level0_pixels_per_224_patch",
            note="a level-1 read differs from resampling level 0 by 0.76 grey levels on average (p99 8, max "
            "33; NDPI, 40 patches) and decodes 4x fewer pixels (benchmarks/read_level_vs_level0.py)",
        ),
        DeviationRow(
            "Extraction",
            "Offline, all non-overlapping tiles",
            "coverage=True: every grid tile once per epoch, seeded order",
            "Exact",
            "tests/pipeline/test_stream.py::test_grid_covers_every_tile_once",
            note="default coverage=False streams random positions",
        ),
        DeviationRow(
            "DINOv2 global crops",
            "2 x 224, scale (0.32, 1.0) (Ext. Table 5)",
            "dinov2_multicrop(224, 96): global_0, global_1",
            "Exact",
            "tests/views/test_dinov2_multicrop.py::test_phikon_v2_recipe_views_fire_as_dinov2",
        ),
        DeviationRow(
            "DINOv2 local crops",
            "8 x 96, scale (0.05, 0.32) (Ext. Table 5)",
            "local_0..local_7, 96 px",
            "Exact",
            "tests/views/test_dinov2_multicrop.py::test_phikon_v2_recipe_views_fire_as_dinov2",
        ),
        DeviationRow(
            "Per-crop augmentations",
            "DINOv2 DataAugmentationDINO (released code): blur applied with p 0.0 / 0.9 / 0.5 on global_0 / "
            "global_1 / locals; the paper states 1.0 / 0.1 / 0.5",
            "blur='released' (default): the chain DINOv2's code builds, same application probabilities; "
            "blur='paper': the stated ones",
            "Exact",
            "tests/views/test_dinov2_multicrop.py::test_phikon_v2_recipe_views_fire_as_dinov2",
            note="ops, order, arguments and measured firing rates vs the chain recorded from DINOv2's code "
            "(b8931f7); pixel arithmetic of the resize and the hue op: next rows",
        ),
        DeviationRow(
            "Crop resize",
            "torchvision RandomResizedCrop on PIL images: Pillow bicubic, antialiased when shrinking",
            "resize='pil' (default): Pillow's crop + resize of the same box, pixel for pixel; "
            "resize='opencv' (fast, the one view_rendering='device' renders) is an explicit option",
            "Exact",
            "tests/views/test_crops.py::test_pil_resize_is_torchvisions_resized_crop_on_pil_images",
            note="resize='opencv' differs by 1.03 / 1.32 grey levels on average (max 21 / 27) on global / local "
            "crops of tissue patches (benchmarks/views_vs_pil.py)",
        ),
        DeviationRow(
            "Hue jitter",
            "torchvision adjust_hue on PIL: Pillow 8-bit HSV, hue += uint8(h * 255)",
            "OpenCV 8-bit HSV (HSV_FULL), hue += round(h * 256)",
            "Approximate",
            note="on CMU tissue patches 31.8 % of values differ from torchvision's PIL path, mean 0.68, p99 6, "
            "max 14 grey levels (benchmarks/views_vs_pil.py); brightness/contrast/saturation match Pillow",
        ),
        _NORMALIZATION,
    ),
)

PHIKON = Recipe(
    name="phikon",
    citation="Filiot et al., Scaling Self-Supervised Learning for Histopathology with Masked Image Modeling, 2023",
    summary="iBOT ViT-B/16 on 40M TCGA tiles: DeepZoom 224-px tiles at 20x, 'all matter' tiles.",
    build=build_phikon,
    rows=(
        DeviationRow(
            "Tiling",
            "DeepZoomGenerator(tile_size=224, overlap=0) at 0.5 µm/px",
            "DeepZoomSampler(224, target_mpp=0.5): get_tile's pixels, (tile_level, col, row) addresses",
            "Exact",
            "tests/sampling/test_deepzoom.py::test_deepzoom_tiles_equal_get_tile",
            note="full tiles only (DeepZoom's smaller border tiles are left out)",
        ),
        DeviationRow(
            "Foreground filter",
            "'all matter' tiles (not specified further)",
            "Otsu, >= 50 % tissue",
            "Unverified",
        ),
        DeviationRow(
            "Tile size",
            "224x224 DeepZoom tiles",
            "tile_size=224",
            "Exact",
            "tests/sampling/test_deepzoom.py::test_deepzoom_tiles_equal_get_tile",
        ),
        DeviationRow(
            "Magnification",
            "20x: the DeepZoom level at 0.5 µm/px",
            "the same DeepZoom level (0.504 µm/px on a 0.252 µm/px scan), recorded per patch",
            "Exact",
            "tests/sampling/test_deepzoom.py::test_deepzoom_level_on_a_40x_slide",
        ),
        DeviationRow("iBOT multi-crop", "not stated in the paper", "none", "Unverified"),
    ),
)

GPFM = Recipe(
    name="gpfm",
    citation="Ma et al., Towards a generalizable pathology foundation model via unified knowledge distillation, 2024",
    summary="512-px patches at native level 0 (resolution deliberately not normalised), CLAM presets per dataset "
    f"({', '.join(sorted(CLAM_PRESETS))}).",
    build=build_gpfm,
    rows=(
        DeviationRow(
            "Tissue detection",
            "CLAM segmentTissue with GPFM's presets (Patching/presets), at seg_level = best level for downsample 64",
            "CLAMTissueDetector.preset(dataset): the same level (GPFM's ImgReader level on single-level slides)",
            "Exact",
            "tests/sampling/test_clam_grid.py::test_clam_grid_equals_clam_coordinates",
            note="presets tcga (GPFM tcga.csv, Otsu), tcga-clam (CLAM tcga.csv), bcnb, dhmc; dhmc's mthresh=6 "
            "is rounded to 7 (GPFM's own code fails on it: cv2.medianBlur needs an odd kernel)",
        ),
        DeviationRow(
            "Tissue threshold",
            "CLAM contour containment (contour_fn four_pt)",
            "contour_fn='four_pt' against each patch's own contour and holes (CLAMGridSampler); "
            "tissue_criterion='four_pt' for random positions",
            "Exact",
            "tests/sampling/test_clam_grid.py::test_clam_grid_equals_clam_coordinates",
        ),
        DeviationRow(
            "Patch size",
            "512x512",
            "patch_size=512",
            "Exact",
            _RES + "test_native_level0_records_real_mpp",
        ),
        DeviationRow(
            "Resolution",
            "Level 0, native (not normalised)",
            "level=0, real µm/px recorded",
            "Exact",
            _RES + "test_native_level0_records_real_mpp",
        ),
        DeviationRow(
            "Extraction",
            "CLAM create_patches_fp.py: per-contour grid from each contour's bounding-box corner, step 512, "
            "edge patches padded (tcga.csv use_padding), contours with one patch dropped",
            "coverage=True: CLAMGridSampler, the same origins once per epoch in a seeded order; out-of-slide "
            "pixels black, as openslide read_region().convert('RGB') gives",
            "Exact",
            "tests/sampling/test_clam_grid.py::test_clam_grid_equals_clam_coordinates",
            note="origins equal those GPFM's/CLAM's own code wrote on every shared slide (fixture); default "
            "coverage=False streams random positions (inside the slide) instead",
        ),
        DeviationRow(
            "Local-global crops",
            "Not enumerated in the paper",
            "DINOv2 defaults, local 98 px (ViT-L/14)",
            "Unverified",
        ),
        _NORMALIZATION,
    ),
)
