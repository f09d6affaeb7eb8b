"""The one registry: names and aliases, unknown names, and a missing library reported once with its hint."""

from __future__ import annotations

import pickle
import re
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from wsistream.backends import OpenSlideBackend, SlideBackend, SlideHandle, TiffSlideBackend
from wsistream.errors import NoUsableSlidesError
from wsistream.pipeline import PatchPipeline
from wsistream.registry import (
    BACKENDS,
    ENCODERS,
    MIL_MODELS,
    RECIPES,
    TISSUE_DETECTORS,
    MissingDependencyError,
    Registry,
)
from wsistream.sampling import RandomSampler

ALL = {
    "backend": BACKENDS,
    "tissue detector": TISSUE_DETECTORS,
    "encoder": ENCODERS,
    "MIL model": MIL_MODELS,
    "recipe": RECIPES,
}
ABSENT = "wsistream_test_absent_library"  # a package that is not installed anywhere


@pytest.mark.parametrize("kind", sorted(ALL))
def test_unknown_name_lists_the_valid_names(kind):
    registry = ALL[kind]
    with pytest.raises(ValueError, match=rf"unknown {kind} 'nope': pass one of ") as info:
        registry.create("nope")
    listed = str(info.value).split("pass one of ")[1].split(", ")
    assert listed == list(registry.names()) and len(listed) >= 2


def test_aliases_resolve_to_one_canonical_name():
    assert MIL_MODELS.canonical("HIPT-MIL") == MIL_MODELS.canonical("hipt_mil") == "hipt"
    assert MIL_MODELS.canonical("mean_pool") == MIL_MODELS.canonical("MeanPooling") == "meanpool"
    assert ENCODERS.canonical("Phikon_V2") == "phikon-v2"
    assert MIL_MODELS.aliases() == {"meanpooling": "meanpool", "hiptmil": "hipt"}
    from wsistream.mil import HIPTMIL, build_model

    assert type(build_model("HIPT-MIL", 8)) is HIPTMIL


def test_every_entry_loads_and_the_builtins_build_from_their_name():
    for registry in ALL.values():
        for name in registry.names():
            assert callable(registry.load(name)), (registry.kind, name)
    assert isinstance(BACKENDS.create("tiffslide"), TiffSlideBackend)
    assert type(TISSUE_DETECTORS.create("clam")).__name__ == "CLAMTissueDetector"


def test_backend_entries_declare_what_the_classes_check():
    for name in BACKENDS.names():
        entry, cls = BACKENDS.entry(name), BACKENDS.load(name)
        assert cls.name == name and entry.requires == (cls.requires,) and entry.install == cls.install
        assert cls.is_available()


def test_duplicate_names_and_aliases_are_refused():
    reg = Registry("widget")
    reg.register("a-b", dict, aliases=("ab2",))
    assert reg.register("a-b", dict) is reg.entry("AB")  # the same target again: a no-op
    with pytest.raises(ValueError, match=r"widget name 'A_B' is already registered \(as 'a-b'\)"):
        reg.register("A_B", list)
    with pytest.raises(ValueError, match="'ab2' is already registered"):
        reg.register("c", list, aliases=("ab2",))
    for bad in ("no_colon", "module:", ":attribute"):
        with pytest.raises(ValueError, match=r"pass 'package\.module:attribute'"):
            reg.register("d", bad)
    assert reg.names() == ("a-b",)


def test_missing_requirement_is_one_named_error_with_the_install_hint():
    reg = Registry("encoder")
    reg.register("needs-absent", "wsistream.features.phikon:phikon", requires=("torch", ABSENT), install="pip x")
    assert reg.available() == () and not reg.entry("needs-absent").is_available()
    with pytest.raises(MissingDependencyError) as info:
        reg.create("needs-absent", "/weights")
    expected = f"encoder 'needs-absent' needs the Python package '{ABSENT}', which is not installed: pip x"
    assert str(info.value) == expected
    assert info.value.name == ABSENT and isinstance(info.value, ImportError)


def test_entry_whose_module_import_fails_names_the_missing_library(tmp_path, monkeypatch):
    (tmp_path / "wsistream_test_plugin.py").write_text(f"import {ABSENT}\n\ndef make():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("tissue detector")
    reg.register("plugin", "wsistream_test_plugin:make", install="pip install 'wsistream[plugin]'")
    with pytest.raises(MissingDependencyError, match=re.escape(f"'{ABSENT}', which is not installed: pip install")):
        reg.create("plugin")


def test_missing_dependency_error_survives_pickling_and_the_one_argument_form():
    err = MissingDependencyError("backend 'x'", ABSENT, "pip install y")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.module == ABSENT and back.install == "pip install y"
    assert str(MissingDependencyError("Caught it in DataLoader worker")) == "Caught it in DataLoader worker"


class _AbsentLibraryBackend(SlideBackend):
    """A real backend whose library is not installed (what a machine without OpenSlide looks like)."""

    name: ClassVar[str] = "absent"
    requires: ClassVar[str] = ABSENT
    install: ClassVar[str] = f"pip install {ABSENT}"

    def _open(self, slide_path: str) -> SlideHandle:
        raise AssertionError("never reached: open() checks the library first")


def test_stream_with_a_missing_backend_library_stops_once_with_the_hint(cmu_svs, synthetic_40x_svs, written_20x):
    slides = [cmu_svs, synthetic_40x_svs, written_20x]
    pipe = PatchPipeline(
        slide_paths=slides,
        backend=_AbsentLibraryBackend(),
        sampler=RandomSampler(patch_size=64, target_mpp=1.0, tissue_threshold=0.5),
    )
    with pytest.raises(MissingDependencyError, match=rf"backend 'absent' needs .*pip install {ABSENT}"):
        next(iter(pipe))
    assert pipe.stats.slides_failed == 0  # not one failure record per slide
    # the same slides with an installed reader stream (the error was the library, not the files)
    ok = PatchPipeline(slide_paths=slides, backend=OpenSlideBackend(), sampler=pipe.sampler)
    assert next(iter(ok)).image.shape == (64, 64, 3)
    assert not issubclass(MissingDependencyError, NoUsableSlidesError)


def test_validate_with_a_missing_backend_library_stops_before_any_slide(cmu_svs, synthetic_40x_svs):
    from wsistream.qc.validate import validate_cohort

    pipe = PatchPipeline(
        slide_paths=[cmu_svs],
        backend=_AbsentLibraryBackend(),
        sampler=RandomSampler(patch_size=64, target_mpp=1.0, tissue_threshold=0.5),
    )
    with pytest.raises(MissingDependencyError, match=rf"pip install {ABSENT}"):
        validate_cohort([cmu_svs, synthetic_40x_svs], pipe, workers=0)
    rows = validate_cohort([cmu_svs], PatchPipeline(slide_paths=[cmu_svs], sampler=pipe.sampler), workers=0)
    assert [r["opens"] for r in rows] == [True]


def test_cli_choices_come_from_the_registry(tmp_path):
    from wsistream.cli.main import app

    runner = CliRunner()
    flat = lambda text: " ".join(text.replace("│", " ").split())  # noqa: E731 - rich boxes and wraps the help
    assert MIL_MODELS.help() in flat(runner.invoke(app, ["mil-cv", "--help"]).output)
    builtin = ", ".join(n for n in ENCODERS.names() if isinstance(ENCODERS.entry(n).target, str))  # not tests' own
    assert f"Registered encoder: {builtin}" in flat(runner.invoke(app, ["extract", "--help"]).output)
    assert TISSUE_DETECTORS.help() in flat(runner.invoke(app, ["tissue", "--help"]).output)
    res = runner.invoke(app, ["tissue", str(tmp_path), "--out", str(tmp_path), "--detector", "nope"])
    assert res.exit_code == 2 and "unknown tissue detector 'nope': pass one of otsu, hsv, clam" in flat(res.output)


def test_recipes_are_registry_entries_that_build_their_pipeline(cmu_svs, monkeypatch):
    from wsistream.recipes import DeviationRow, Recipe, get_recipe, list_recipes, register

    for table in ("_entries", "_keys"):  # the recipe registered below leaves with the test
        monkeypatch.setattr(RECIPES, table, dict(getattr(RECIPES, table)))

    assert [r.name for r in list_recipes()] == sorted(RECIPES.names()) == ["gpfm", "phikon", "phikon-v2"]
    assert get_recipe("Phikon_V2") is get_recipe("phikon-v2") is RECIPES.load("PHIKON-V2")
    pipe = RECIPES.create("phikon-v2", [cmu_svs], pool_size=2)
    assert isinstance(pipe, PatchPipeline) and pipe.pool_size == 2
    mine = Recipe(
        name="house-test-recipe",
        citation="none",
        summary="a test recipe",
        build=lambda slides, **kw: PatchPipeline(slide_paths=slides, sampler=RandomSampler(), **kw),
        rows=(DeviationRow("all", "-", "-", "Different"),),
    )
    assert register(mine) is mine and get_recipe("house_test_recipe") is mine
    with pytest.raises(ValueError, match="recipe name 'phikon' is already registered"):
        register(Recipe("phikon", "c", "s", mine.build, ()))
