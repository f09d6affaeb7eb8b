"""Ready-made view sets reproducing published SSL recipes."""

from __future__ import annotations

from wsistream.transforms.base import PatchTransform
from wsistream.transforms.blur import GaussianBlur
from wsistream.transforms.color import ColorJitter, RandomGrayscale, RandomSolarize
from wsistream.transforms.geometric import RandomHorizontalFlip
from wsistream.views.config import ViewConfig
from wsistream.views.crops import RandomResizedCrop, Resampler

__all__ = ["dinov2_multicrop"]


def dinov2_multicrop(
    global_size: int = 224,
    local_size: int = 96,
    global_scale: tuple[float, float] = (0.32, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.32),
    n_local: int = 8,
    *,
    released_blur: bool = True,
    resize: Resampler = "pil",
) -> list[ViewConfig]:
    """DINOv2's multi-crop augmentation (``DataAugmentationDINO``) as view configs.

    Reproduces ``dinov2/data/augmentations.py`` (facebookresearch/dinov2,
    commit b8931f7): defaults from ``dinov2/configs/ssl_default_config.yaml``
    (``crops``: sizes 224/96, scales (0.32, 1.0)/(0.05, 0.32), 8 local crops).

    ==========  ===================================================================
    key         chain (in order)
    ==========  ===================================================================
    global_0    RandomResizedCrop(global_size, global_scale, bicubic) [l.46-48],
                HFlip p=0.5 [l.49], ColorJitter(0.4, 0.4, 0.2, 0.1) p=0.8
                [l.65-68], Grayscale p=0.2 [l.69], GaussianBlur(p=1.0) [l.73]
                (applied with 0.0, see ``released_blur``)
    global_1    same crop/flip/colour, GaussianBlur(p=0.1) [l.77] (applied
                with 0.9), Solarize(128) p=0.2 [l.78]
    local_i     RandomResizedCrop(local_size, local_scale, bicubic) [l.55-57],
                HFlip p=0.5, same colour ops, GaussianBlur(p=0.5) [l.82]
    ==========  ===================================================================

    Blur is a 9-tap Gaussian, sigma ~ U(0.1, 2.0) (``dinov2/data/transforms.py``
    l.12-21). Normalisation (``ToTensor`` + ImageNet mean/std, l.85-90) is not
    done here: views stay uint8 and are normalised on the accelerator.

    Parameters
    ----------
    global_size, local_size : int
        Output sides of the global and local crops.
    global_scale, local_scale : (float, float)
        Area-fraction ranges of the two crop kinds.
    n_local : int
        Number of local crops (0 for none).
    released_blur : bool
        DINOv2's ``GaussianBlur`` passes ``1 - p`` to torchvision's
        ``RandomApply``, whose ``p`` is the probability of *applying*, so the
        released code blurs global_0 with probability 0.0, global_1 with 0.9
        and locals with 0.5 (facebookresearch/dinov2 PR #411; dinov3 issue
        #286). ``True`` (default) reproduces what models trained with the
        released code (Phikon-v2, ...) actually saw; ``False`` uses the
        probabilities the paper states (1.0 / 0.1 / 0.5, as DINO and BYOL).
        Both are proven by measured firing rates
        (``tests/views/test_dinov2_multicrop.py``) against the chain DINOv2's
        own code builds (``tests/views/fixtures/dinov2_chain.json``).

    resize : {"pil", "opencv"}
        Crop resampler. ``"pil"`` (default) is what torchvision does to
        DINOv2's PIL images (Pillow bicubic, antialiased), pixel for pixel;
        ``"opencv"`` is faster and is the one ``view_rendering="device"``
        supports (difference measured in docs/views.md, "Resampling").

    Returns
    -------
    list of ViewConfig
        Keys ``global_0``, ``global_1``, ``local_0`` ... ``local_{n_local-1}``.
    """
    if isinstance(n_local, bool) or not isinstance(n_local, int) or n_local < 0:
        raise ValueError(f"n_local must be an int >= 0, got {n_local!r}; DINOv2 uses 8")
    global_crop = RandomResizedCrop(global_size, scale=global_scale, interpolation="bicubic", resize=resize)
    local_crop = RandomResizedCrop(local_size, scale=local_scale, interpolation="bicubic", resize=resize)

    def chain(*extra: PatchTransform) -> tuple[PatchTransform, ...]:
        return (
            RandomHorizontalFlip(p=0.5),
            ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
            RandomGrayscale(p=0.2),
            *extra,
        )

    p_blur = (0.0, 0.9, 0.5) if released_blur else (1.0, 0.1, 0.5)
    views = [
        ViewConfig("global", global_crop, chain(GaussianBlur(p=p_blur[0])), count=1, index_offset=0),
        ViewConfig(
            "global",
            global_crop,
            chain(GaussianBlur(p=p_blur[1]), RandomSolarize(threshold=128, p=0.2)),
            count=1,
            index_offset=1,
        ),
    ]
    if n_local:
        views.append(ViewConfig("local", local_crop, chain(GaussianBlur(p=p_blur[2])), count=n_local))
    return views
