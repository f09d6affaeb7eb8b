from __future__ import annotations

import pickle

import pytest

from wsistream.transforms import ComposeTransforms, GaussianBlur, RandomHorizontalFlip
from wsistream.views import RandomResizedCrop, ViewConfig, validate_views


def seed_views():
    # the seed snippets, verbatim
    from wsistream.views import RandomResizedCrop, ViewConfig

    return [
        ViewConfig(name="global", crop=RandomResizedCrop(size=224, scale=(0.32, 1.0)), count=2),
        ViewConfig(name="local", crop=RandomResizedCrop(size=96, scale=(0.05, 0.32)), count=8),
    ]


def test_seed_snippets_and_names():
    g, loc = seed_views()
    assert g.view_names() == ["global_0", "global_1"]
    assert loc.view_names() == [f"local_{i}" for i in range(8)]
    assert (g.size, loc.size) == (224, 96)
    assert validate_views([g, loc]) == (g, loc)


def test_count_one_is_still_suffixed_and_offset_continues_numbering():
    assert ViewConfig("raw").view_names() == ["raw_0"]
    assert ViewConfig("raw").size is None
    assert ViewConfig("global", count=1, index_offset=1).view_names() == ["global_1"]
    assert ViewConfig("x", count=3, index_offset=2).view_names() == ["x_2", "x_3", "x_4"]
    validate_views([ViewConfig("global"), ViewConfig("global", index_offset=1)])


def test_transform_sequences_are_composed_and_configs_hashable_and_picklable():
    v = ViewConfig("g", RandomResizedCrop(32), [RandomHorizontalFlip(), GaussianBlur()])
    assert isinstance(v.transforms, ComposeTransforms) and len(v.transforms) == 2
    single = GaussianBlur()
    assert ViewConfig("g", transforms=single).transforms is single
    assert ViewConfig("g", transforms=[]).transforms is None
    hash(v)
    assert pickle.loads(pickle.dumps(v)) == v


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "view name must be a non-empty string"),
        ({"name": "glo bal"}, "view name must be"),
        ({"name": 3}, "view name must be"),
        ({"name": "g", "count": 0}, "count must be an int >= 1"),
        ({"name": "g", "count": 2.0}, "count must be an int >= 1"),
        ({"name": "g", "index_offset": -1}, "index_offset must be an int >= 0"),
        ({"name": "g", "mpp_override": 0.0}, "mpp_override must be a positive"),
        ({"name": "g", "mpp_override": float("nan")}, "mpp_override must be a positive"),
        ({"name": "g", "crop": GaussianBlur()}, "crop must be a Crop"),
        ({"name": "g", "transforms": "flip"}, "transforms must be a PatchTransform"),
        ({"name": "g", "transforms": [lambda im, rng: im]}, "not a PatchTransform"),
    ],
)
def test_viewconfig_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewConfig(**kwargs)


def test_validate_views_errors():
    with pytest.raises(ValueError, match="views is empty"):
        validate_views([])
    with pytest.raises(ValueError, match=r"duplicate view key 'global_1'.*index_offset"):
        validate_views([ViewConfig("global", count=2), ViewConfig("global", index_offset=1)])
    with pytest.raises(ValueError, match="not a ViewConfig"):
        validate_views([ViewConfig("a"), {"name": "b"}])
    with pytest.raises(ValueError, match="sequence of ViewConfig"):
        validate_views("global")
    assert validate_views(ViewConfig("a")) == (ViewConfig("a"),)
