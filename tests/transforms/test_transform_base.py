from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import wsistream.transforms as T
from wsistream.transforms import (
    ColorJitter,
    ComposeTransforms,
    GaussianBlur,
    HEDJitter,
    MacenkoNormalizer,
    PatchTransform,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomRotate90,
    RandomSolarize,
    RandomVerticalFlip,
    TraceEvent,
)

SRC = Path(T.__file__).resolve().parents[1]


@dataclass(frozen=True)
class AddConst(PatchTransform):
    value: int

    def __call__(self, image, rng):
        return (image.astype(np.int16) + self.value).clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Double(PatchTransform):
    def __call__(self, image, rng):
        return (image.astype(np.int16) * 2).clip(0, 255).astype(np.uint8)


def all_transforms():
    return [
        RandomHorizontalFlip(p=0.5),
        RandomVerticalFlip(p=0.5),
        RandomRotate90(p=1.0),
        ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
        RandomGrayscale(p=0.2),
        GaussianBlur(p=0.5),
        RandomSolarize(threshold=128, p=0.2),
        HEDJitter(sigma=0.05),
        MacenkoNormalizer(),
    ]


def test_compose_applies_in_order():
    img = np.full((4, 4, 3), 10, np.uint8)
    rng = np.random.default_rng(0)
    assert ComposeTransforms([AddConst(5), Double()])(img, rng)[0, 0, 0] == 30
    assert ComposeTransforms([Double(), AddConst(5)])(img, rng)[0, 0, 0] == 25
    c = ComposeTransforms([AddConst(1)])
    assert isinstance(c.transforms, tuple) and len(c) == 1
    hash(c)  # frozen and hashable


def test_compose_rejects_non_transforms():
    with pytest.raises(ValueError, match="not a PatchTransform"):
        ComposeTransforms([AddConst(1), lambda im, rng: im])


def test_default_trace_is_opaque():
    events: list[TraceEvent] = []
    ComposeTransforms([AddConst(1)]).trace_call(np.zeros((2, 2, 3), np.uint8), np.random.default_rng(0), events)
    assert events == [TraceEvent("AddConst", None, None)]


@pytest.mark.parametrize("t", all_transforms(), ids=lambda t: type(t).__name__)
def test_trace_call_matches_call_and_rng_stream(t, he_patch):
    for seed in range(5):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        events: list[TraceEvent] = []
        a = t(he_patch, r1)
        b = t.trace_call(he_patch, r2, events)
        np.testing.assert_array_equal(a, b)
        assert r1.random() == r2.random()  # same number of draws
        assert len(events) == 1 and events[0].op == type(t).__name__
        assert events[0].fired is (events[0].params is not None)


@pytest.mark.parametrize("t", all_transforms(), ids=lambda t: type(t).__name__)
def test_uint8_rgb_out_input_untouched_and_deterministic(t, he_patch):
    before = he_patch.copy()
    outs = [t(he_patch, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(he_patch, before)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].dtype == np.uint8 and outs[0].ndim == 3 and outs[0].shape[2] == 3


@pytest.mark.parametrize("t", all_transforms(), ids=lambda t: type(t).__name__)
def test_accepts_flipped_and_rotated_views(t, he_patch):
    for view in (he_patch[:, ::-1], np.rot90(he_patch), he_patch[10:70, 5:90]):
        ref = t(np.ascontiguousarray(view), np.random.default_rng(3))
        np.testing.assert_array_equal(t(view, np.random.default_rng(3)), ref)


@pytest.mark.parametrize("t", all_transforms(), ids=lambda t: type(t).__name__)
def test_no_global_random_state(t, he_patch):
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    for seed in range(3):
        t(he_patch, np.random.default_rng(seed))
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_sources_use_no_global_rng():
    pattern = re.compile(r"np\.random\.(?!Generator\b|default_rng\b)\w+|cv2\.setRNGSeed|^\s*import random\b", re.M)
    for pkg in ("transforms", "views"):
        for path in (SRC / pkg).glob("*.py"):
            hits = pattern.findall(path.read_text())
            assert not hits, f"{path.name} uses global RNG: {hits}"


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_probability_raises(p):
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        RandomHorizontalFlip(p=p)


def test_zero_and_one_probability(he_patch):
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert RandomSolarize(p=0.0).sample(rng) is None
        assert RandomSolarize(p=1.0).sample(rng) is True


@pytest.mark.parametrize("t", all_transforms(), ids=lambda t: type(t).__name__)
def test_picklable_for_worker_processes(t, he_patch):
    import pickle

    clone = pickle.loads(pickle.dumps(t))
    assert clone == t
    np.testing.assert_array_equal(clone(he_patch, np.random.default_rng(2)), t(he_patch, np.random.default_rng(2)))


def test_fast_uniform_is_numpys_uniform_bit_for_bit():
    from wsistream.transforms.base import uniform

    a, b = np.random.default_rng(11), np.random.default_rng(11)
    for low, high in [(0.32, 1.0), (-0.1, 0.1), (0.1, 2.0), (-0.2876820724517809, 0.28768207245178085)]:
        for _ in range(500):
            assert uniform(a, low, high) == float(b.uniform(low, high))
    assert a.random() == b.random()
