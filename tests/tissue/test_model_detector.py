"""ModelTissueDetector: a user network run at a stated µm/px, masks cached on disk."""

from __future__ import annotations

import itertools
import os
import pickle
import re
import shutil
import warnings

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from wsistream.backends import OpenSlideBackend  # noqa: E402
from wsistream.errors import MissingMppError, ResolutionUnavailableError  # noqa: E402
from wsistream.pipeline import PatchPipeline  # noqa: E402
from wsistream.sampling import RandomSampler  # noqa: E402
from wsistream.tissue import OtsuTissueDetector  # noqa: E402
from wsistream.tissue.model import ModelTissueDetector, read_at_mpp  # noqa: E402


class PixelNet(nn.Module):
    """Per-pixel MLP (1×1 convolutions): learns "saturated = tissue" from colours."""

    builds = 0
    calls = 0

    def __init__(self) -> None:
        super().__init__()
        PixelNet.builds += 1
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        PixelNet.calls += 1
        return self.net(x)


class TwoClass(nn.Module):
    """Softmax head over (background, tissue) with a dict output, as torchvision segmenters return."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logit = self.inner(x)
        return {"out": torch.cat([-logit / 2, logit / 2], dim=1)}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # two shared cores: torch's intra-op pool spin-waits under contention and gets ~100× slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(seed: int = 0, steps: int = 200) -> PixelNet:
    """Fit PixelNet to HSV saturation > 25 on noisy H&E / glass colours (~1 s)."""
    rng = np.random.default_rng(seed)
    palette = np.array(
        [[242, 242, 242], [250, 250, 250], [225, 215, 225], [235, 160, 210], [200, 120, 190], [120, 80, 170]]
    )
    noisy = palette[rng.integers(0, len(palette), 4000)] + rng.normal(0, 15, (4000, 3))
    pixels = np.clip(noisy, 0, 255).astype(np.uint8)
    labels = cv2.cvtColor(pixels[None], cv2.COLOR_RGB2HSV)[0, :, 1] > 25
    x = torch.from_numpy(pixels.T.astype(np.float32) / 255).reshape(1, 3, 1, -1).contiguous()
    y = torch.from_numpy(labels.astype(np.float32)).reshape(1, 1, 1, -1)
    torch.manual_seed(seed)
    model = PixelNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("weights") / "pixelnet.pt"
    torch.save(_train().state_dict(), path)
    return str(path)


def _detect(detector: ModelTissueDetector, slide: str):
    with OpenSlideBackend().open(slide) as handle:
        return detector.detect_slide(handle, handle.properties, 2048)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_mask_agrees_with_otsu_at_input_mpp(weights, written_20x):
    mask = _detect(ModelTissueDetector(PixelNet, weights=weights, input_mpp=4.0, tile_size=128), written_20x)
    assert mask.mask.shape == (300, 375)  # 3000×2400 at 0.5 µm/px read at 4 µm/px
    assert (mask.downsample_x, mask.downsample_y) == (8.0, 8.0)
    otsu = _detect(OtsuTissueDetector(), written_20x)
    resized = cv2.resize(otsu.mask.astype(np.uint8), mask.mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
    assert _iou(mask.mask, resized.astype(bool)) > 0.8


def test_reads_the_coarsest_level_not_coarser_than_input_mpp(written_20x):
    levels = []
    with OpenSlideBackend().open(written_20x) as handle:  # 0.5 µm/px, levels 1 and 4 (2 µm/px)
        read = handle.read_region
        handle.read_region = lambda *a, **k: levels.append(a[2]) or read(*a, **k)
        exact, ds = read_at_mpp(handle, handle.properties, 2.0)  # level 1 as it is
        assert ds == (4.0, 4.0) and np.array_equal(exact, read(0, 0, 1, (750, 600)))
        half, ds = read_at_mpp(handle, handle.properties, 4.0)  # level 1, area-resampled
        assert ds == (8.0, 8.0) and half.shape == (300, 375, 3) and levels == [1, 1]
        fine, ds = read_at_mpp(handle, handle.properties, 1.0)
        assert levels[-1] == 0 and ds == (2.0, 2.0) and fine.shape == (1200, 1500, 3)
        with pytest.raises(ResolutionUnavailableError, match=r"input_mpp >= 0\.5"):
            read_at_mpp(handle, handle.properties, 0.25)


def test_blank_slide_gives_an_empty_mask(weights, blank_slide):
    assert _detect(ModelTissueDetector(PixelNet, weights=weights), blank_slide).is_empty


def test_disk_cache_is_reused_without_loading_the_model(weights, written_20x, tmp_path):
    first = ModelTissueDetector(PixelNet, weights=weights, cache_dir=tmp_path)
    calls = PixelNet.calls
    computed = _detect(first, written_20x)
    assert PixelNet.calls > calls
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]  # one mask, no temp files left
    with OpenSlideBackend().open(written_20x) as handle:
        assert first.cache_path(written_20x, handle.properties.mpp_level0).exists()
    # a fresh copy, as a DataLoader worker under spawn receives it
    other = pickle.loads(pickle.dumps(ModelTissueDetector(PixelNet, weights=weights, cache_dir=tmp_path)))
    calls, builds = PixelNet.calls, PixelNet.builds
    cached = _detect(other, written_20x)
    assert (PixelNet.calls, PixelNet.builds) == (calls, builds)
    assert np.array_equal(cached.mask, computed.mask) and cached.downsample_x == computed.downsample_x


def test_unreadable_cache_file_is_recomputed(weights, written_20x, tmp_path):
    detector = ModelTissueDetector(PixelNet, weights=weights, cache_dir=tmp_path)
    path = detector.cache_path(written_20x, 0.5)
    path.write_bytes(b"not a zip")
    assert not _detect(detector, written_20x).is_empty
    with np.load(path) as data:
        assert data["mask"].any()


def test_cache_key_follows_weights_slide_and_settings(weights, written_20x, tmp_path):
    detector = ModelTissueDetector(PixelNet, weights=weights)
    key = detector.cache_key(written_20x, 0.5)
    moved = shutil.copy(weights, tmp_path / "same-bytes.pt")
    assert ModelTissueDetector(PixelNet, weights=moved, device="cpu", batch_size=1).cache_key(written_20x, 0.5) == key
    retrained = tmp_path / "retrained.pt"
    torch.save(_train(seed=1, steps=20).state_dict(), retrained)
    assert ModelTissueDetector(PixelNet, weights=retrained).cache_key(written_20x, 0.5) != key
    assert ModelTissueDetector(PixelNet, weights=weights, threshold=0.7).cache_key(written_20x, 0.5) != key
    assert detector.cache_key(written_20x, 0.25) != key  # an mpp override changes what is read
    slide = shutil.copy(written_20x, tmp_path / "slide.svs")
    before = detector.cache_key(slide, 0.5)
    os.utime(slide, ns=(1, 1))
    assert detector.cache_key(slide, 0.5) != before
    # overwriting the weights under a live detector re-hashes them and reloads the model
    live = ModelTissueDetector(
        PixelNet, weights=shutil.copy(weights, tmp_path / "live.pt"), tile_size=64, tile_overlap=16
    )
    old_key, old_probs = live.cache_key(written_20x, 0.5), live.predict(np.full((8, 8, 3), 200, np.uint8))
    shutil.copy(retrained, live.weights)
    os.utime(live.weights, ns=(10**9, 10**9))
    assert live.cache_key(written_20x, 0.5) != old_key
    assert not np.allclose(live.predict(np.full((8, 8, 3), 200, np.uint8)), old_probs)


def test_missing_or_bad_weights_name_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "unet.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        ModelTissueDetector(PixelNet, weights=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(RuntimeError, match=re.escape(str(garbage))):
        ModelTissueDetector(PixelNet, weights=garbage).predict(np.zeros((4, 4, 3), np.uint8))
    wrong = tmp_path / "wrong.pt"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(RuntimeError, match="do not fit PixelNet"):
        ModelTissueDetector(PixelNet, weights=wrong).predict(np.zeros((4, 4, 3), np.uint8))


def test_slide_without_mpp_raises_missing_mpp(weights, no_mpp_slide):
    with pytest.raises(MissingMppError, match="mpp_overrides") as info:
        _detect(ModelTissueDetector(PixelNet, weights=weights), no_mpp_slide)
    assert info.value.slide_path == no_mpp_slide


def test_streams_inside_patch_pipeline(weights, written_20x, tmp_path):
    detector = ModelTissueDetector(PixelNet, weights=weights, cache_dir=tmp_path)
    pipeline = PatchPipeline(
        slide_paths=[written_20x],
        tissue_detector=detector,
        sampler=RandomSampler(patch_size=64, target_mpp=1.0),
        seed=3,
    )
    patches = list(itertools.islice(iter(pipeline), 12))
    assert len(patches) == 12 and not pipeline.failures
    mask = np.load(next(tmp_path.glob("*.npz")))["mask"]
    for patch in patches:
        assert patch.image.shape == (64, 64, 3)
        c = patch.coordinate
        cx, cy = (c.x0 + c.read_size // 2) // 8, (c.y0 + c.read_size // 2) // 8  # centre in mask cells
        assert mask[max(0, cy - 1) : cy + 2, max(0, cx - 1) : cx + 2].any()


def test_pickles_small_and_repr_is_short_and_stable(weights):
    detector = ModelTissueDetector(PixelNet, weights=weights, tile_size=64, tile_overlap=16, cache_dir="/tmp/masks")
    detector.predict(np.full((16, 16, 3), 230, np.uint8))  # model now loaded in this process
    blob = pickle.dumps(detector)
    assert len(blob) < 1000  # configuration only, no tensors
    copy = pickle.loads(blob)
    assert (
        repr(copy)
        == repr(detector)
        == repr(ModelTissueDetector(PixelNet, weights=weights, tile_size=64, tile_overlap=16, cache_dir="/tmp/masks"))
    )
    assert repr(detector).startswith("ModelTissueDetector(model=PixelNet, weights=")
    assert "tensor" not in repr(detector).lower() and len(repr(detector)) < 400
    assert np.array_equal(
        copy.predict(np.full((16, 16, 3), 230, np.uint8)), detector.predict(np.full((16, 16, 3), 230, np.uint8))
    )
    instance = ModelTissueDetector(_train(steps=1), tile_size=64, tile_overlap=16)  # an nn.Module instance pickles too
    assert "model=PixelNet," in repr(instance) and pickle.loads(pickle.dumps(instance)).model is not None


def test_tiling_is_seamless_outputs_are_resized_and_inputs_normalised():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 1, 3, padding=1)  # 1-pixel receptive-field margin: needs overlap >= 2
    image = np.random.default_rng(0).integers(0, 256, (70, 101, 3), dtype=np.uint8)
    whole = ModelTissueDetector(conv, tile_size=256, tile_overlap=4).predict(image)
    tiled = ModelTissueDetector(conv, tile_size=24, tile_overlap=4, batch_size=3).predict(image)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    coarse = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 1, 1))  # an FCN with output stride 4
    mask = ModelTissueDetector(coarse, tile_size=32, tile_overlap=0).detect(image, (16.0, 16.0))
    assert mask.mask.shape == (70, 101) and mask.downsample_x == 16.0
    red = nn.Conv2d(3, 1, 1, bias=False)  # passes the red input through, to see the normalisation
    red.weight.data[:] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    white = np.full((4, 4, 3), 255, np.uint8)
    raw = ModelTissueDetector(red, activation="none", tile_size=8, tile_overlap=0)
    assert np.allclose(raw.predict(white), 1.0)
    imagenet = ModelTissueDetector(red, activation="none", imagenet_norm=True, tile_size=8, tile_overlap=0)
    assert np.allclose(imagenet.predict(white), (1 - 0.485) / 0.229)


def test_whole_model_archives_with_softmax_dict_head(weights, tmp_path):
    inner = PixelNet()
    inner.load_state_dict(torch.load(weights, weights_only=True))
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    expected = ModelTissueDetector(PixelNet, weights=weights, tile_size=32, tile_overlap=0).predict(image)
    exported = tmp_path / "segmenter.pt2"  # torch.export, static shapes: batch_size × 3 × tile_size²
    torch.export.save(torch.export.export(TwoClass(inner), (torch.rand(2, 3, 32, 32),)), exported)
    softmax = ModelTissueDetector(weights=exported, activation="softmax", tile_size=32, tile_overlap=0, batch_size=2)
    np.testing.assert_allclose(softmax.predict(image), expected, atol=1e-5)  # softmax(-l/2, l/2)[1] = sigmoid(l)
    scripted = tmp_path / "segmenter.ts"  # TorchScript (deprecated by torch, still common for U-Nets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(inner.net, torch.rand(1, 3, 8, 8)), scripted)
        np.testing.assert_allclose(
            ModelTissueDetector(weights=scripted, tile_size=32, tile_overlap=0).predict(image), expected, atol=1e-5
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "pass model="),
        ({"model": PixelNet, "tissue_class": -1}, "tissue_class"),
        ({"model": PixelNet, "input_mpp": 0.0}, "input_mpp"),
        ({"model": PixelNet, "threshold": 1.5}, "threshold"),
        ({"model": PixelNet, "activation": "relu"}, "activation"),
        ({"model": PixelNet, "tile_size": 64, "tile_overlap": 60}, "tile_overlap"),
        ({"model": PixelNet, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_configuration_raises_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelTissueDetector(**kwargs)


def test_combined_detector_runs_a_model_member_at_its_mpp_with_its_cache(weights, written_20x, tmp_path):
    """Inside CombinedTissueDetector the model still reads at input_mpp and caches on disk."""
    from wsistream.tissue import CombinedTissueDetector

    model = ModelTissueDetector(PixelNet, weights=weights, input_mpp=4.0, tile_size=128, cache_dir=tmp_path)
    combined = CombinedTissueDetector([OtsuTissueDetector(), model], mode="and")
    got = _detect(combined, written_20x)
    alone = _detect(model, written_20x)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]  # the member's disk cache was used
    otsu = _detect(OtsuTissueDetector(), written_20x)
    finest = min((otsu, alone), key=lambda m: m.downsample_x)
    assert got.mask.shape == finest.mask.shape and got.downsample_x == finest.downsample_x
    assert got.mask.sum() <= finest.mask.sum()  # an intersection
    assert _iou(got.mask, finest.mask) > 0.7
    union = _detect(CombinedTissueDetector([OtsuTissueDetector(), model], mode="or"), written_20x)
    assert union.mask.sum() >= finest.mask.sum() and (union.mask | got.mask).sum() == union.mask.sum()


def test_process_mask_cache_keeps_masks_of_different_mpp_apart(weights, written_20x):
    """Pipelines of one process share the mask cache; a model detector at another µm/px gets its own mask."""
    detector = ModelTissueDetector(PixelNet, weights=weights, input_mpp=4.0, tile_size=128)
    masks = []
    for mpp in (0.5, 1.0):
        pipe = PatchPipeline(
            slide_paths=[written_20x],
            sampler=RandomSampler(patch_size=32),
            tissue_detector=detector,
            mpp_overrides={written_20x: mpp},
        )
        with OpenSlideBackend().open(written_20x) as handle:
            masks.append(pipe.tissue_mask(handle, pipe.mpp_policy.apply(handle.properties)))
    # 4 µm/px is 8 level-0 px at 0.5 µm/px and 4 at 1.0 µm/px
    assert (masks[0].downsample_x, masks[1].downsample_x) == (8.0, 4.0)
