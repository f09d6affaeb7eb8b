"""One registry per kind of component: a name (and its aliases) → a factory, and the libraries it needs.

Pattern: kaiko-ai/eva ``eva/core/utils/registry.py`` (a key → factory map, ``ValueError`` on a
duplicate key) and ``eva/vision/data/wsi/backends/__init__.py::wsi_backend`` (an optional library
checked with ``importlib.util.find_spec`` and reported with an install hint). Two changes:

* built-in entries name their factory as a ``"package.module:attribute"`` string, imported on first
  use, so the command line lists its choices (``--help``, ``--model``, ``--encoder``) without
  importing torch, transformers or a slide library — and so this module imports none of the
  modules it names (the registry and the model zoo stay out of each other's import graph);
* a missing library raises :class:`MissingDependencyError` once, when the entry is loaded, instead
  of one failure per slide later.

The five registries below are the only place the built-in names are written: :data:`BACKENDS`,
:data:`TISSUE_DETECTORS`, :data:`ENCODERS`, :data:`MIL_MODELS`, :data:`RECIPES`.

Example::

    >>> from wsistream.registry import MIL_MODELS
    >>> MIL_MODELS.canonical("HIPT-MIL")
    'hipt'
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class MissingDependencyError(ImportError):
    """A component needs a Python package that is not installed; the message says how to install it.

    An ``ImportError`` and not a :class:`~wsistream.errors.WsiStreamError`: it concerns the
    environment, not a slide, so a stream does not record it per slide — it stops at the first one.
    """

    def __init__(self, component: str, module: str | None = None, install: str = "") -> None:
        if module is None:  # one-argument form: a DataLoader worker re-raising the error as cls(msg)
            super().__init__(component)
            self.component, self.module, self.install = "", "", ""
            return
        hint = install or f"pip install {module}"
        message = f"{component} needs the Python package {module!r}, which is not installed: {hint}"
        super().__init__(message, name=module)
        self.component, self.module, self.install = component, module, hint

    def __reduce__(self) -> tuple[Any, ...]:  # keep the three fields across process boundaries
        return (type(self), (self.component, self.module, self.install))


def missing_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """The top-level packages of ``modules`` that cannot be imported (no import is run)."""
    return tuple(m for m in modules if importlib.util.find_spec(m.partition(".")[0]) is None)


def require(modules: tuple[str, ...], *, component: str, install: str = "") -> None:
    """Raise :class:`MissingDependencyError` for the first of ``modules`` that is not installed."""
    absent = missing_modules(modules)
    if absent:
        raise MissingDependencyError(component, absent[0], install)


def extra_hint(extra: str) -> str:
    """The install hint of a ``pyproject.toml`` extra: ``pip install 'wsistream[extra]'``."""
    return f"pip install 'wsistream[{extra}]'"


def _key(name: str) -> str:
    """Lookup key: case, ``-`` and ``_`` do not matter (``HIPT-MIL``, ``hipt_mil``, ``hiptmil``)."""
    return name.lower().replace("-", "").replace("_", "")


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Parameters
    ----------
    name : str
        Canonical name (what the CLI shows and feature files record).
    target : str or callable
        The factory, or ``"package.module:attribute"`` naming it (imported on first :meth:`load`).
    aliases : tuple of str
        Other names accepted for it.
    requires : tuple of str
        Python packages the factory imports; checked before it is loaded.
    install : str
        How to install them (shown in :class:`MissingDependencyError`).
    """

    name: str
    target: str | Callable[..., Any]
    aliases: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    install: str = ""

    def __post_init__(self) -> None:
        for label in (self.name, *self.aliases):
            if not _key(label) or any(ch.isspace() for ch in label):
                raise ValueError(f"name {label!r}: pass a non-empty name without spaces")
        if isinstance(self.target, str) and (self.target.count(":") != 1 or "" in self.target.split(":")):
            raise ValueError(f"target={self.target!r} for {self.name!r}: pass 'package.module:attribute'")
        if not isinstance(self.target, str) and not callable(self.target):
            raise TypeError(f"target for {self.name!r} must be callable or 'module:attribute', got {self.target!r}")

    def is_available(self) -> bool:
        """Whether every package in :attr:`requires` is installed."""
        return not missing_modules(self.requires)

    def load(self, kind: str) -> Callable[..., Any]:
        """The factory; raises :class:`MissingDependencyError` when a required package is absent."""
        require(self.requires, component=f"{kind} {self.name!r}", install=self.install)
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a library the module imports, not the module itself
            if exc.name is None or exc.name == module or exc.name.split(".")[0] == "wsistream":
                raise
            raise MissingDependencyError(f"{kind} {self.name!r}", exc.name, self.install) from exc
        factory: Callable[..., Any] = getattr(imported, attribute)
        return factory


class Registry:
    """Names → :class:`Entry`, for one kind of component (``"backend"``, ``"MIL model"``...).

    Parameters
    ----------
    kind : str
        What the entries are, for messages: ``unknown {kind} 'x': pass one of ...``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._keys: dict[str, str] = {}  # _key(name or alias) -> canonical name

    def register(
        self,
        name: str,
        target: str | Callable[..., Any],
        *,
        aliases: tuple[str, ...] = (),
        requires: tuple[str, ...] = (),
        install: str = "",
    ) -> Entry:
        """Add an entry; a name or alias already taken (by another target) is a ``ValueError``.

        Registering the same target under the same name again is a no-op (a module imported twice).
        """
        entry = Entry(name, target, aliases, requires, install)
        old = self._entries.get(self._keys.get(_key(name), ""))
        if old is not None and old.name == name and old.target == target:
            return old
        for label in (name, *aliases):
            if _key(label) in self._keys:
                raise ValueError(f"{self.kind} name {label!r} is already registered (as {self._keys[_key(label)]!r})")
        self._entries[name] = entry
        self._keys.update({_key(label): name for label in (name, *aliases)})
        return entry

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; ``ValueError`` listing the names otherwise."""
        found = self._keys.get(_key(name))
        if found is None:
            raise ValueError(f"unknown {self.kind} {name!r}: pass one of {', '.join(self.names())}")
        return found

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` of ``name`` (or an alias)."""
        return self._entries[self.canonical(name)]

    def load(self, name: str) -> Callable[..., Any]:
        """The factory of ``name``, its libraries checked (:class:`MissingDependencyError`)."""
        return self.entry(name).load(self.kind)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``load(name)(*args, **kwargs)``."""
        return self.load(name)(*args, **kwargs)

    def names(self) -> tuple[str, ...]:
        """Canonical names in registration order."""
        return tuple(self._entries)

    def available(self) -> tuple[str, ...]:
        """Canonical names whose libraries are installed."""
        return tuple(n for n, e in self._entries.items() if e.is_available())

    def aliases(self) -> dict[str, str]:
        """Alias → canonical name."""
        return {a: e.name for e in self._entries.values() for a in e.aliases}

    def help(self) -> str:
        """One line for a CLI option: ``a, b, c`` plus the aliases."""
        text = ", ".join(self.names())
        aliases = self.aliases()
        if aliases:
            text += " (also " + ", ".join(f"{a} = {n}" for a, n in aliases.items()) + ")"
        return text

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


#: Slide readers (:class:`wsistream.backends.SlideBackend` subclasses); ``create(name)`` → a backend.
#: ``requires``/``install`` repeat the classes' own attributes (``SlideBackend.open`` checks them
#: for backends built directly); ``tests/test_registry.py`` holds the two equal.
BACKENDS = Registry("backend")
BACKENDS.register(
    "openslide",
    "wsistream.backends.openslide:OpenSlideBackend",
    requires=("openslide",),
    install="pip install openslide-python openslide-bin",
)
BACKENDS.register(
    "tiffslide",
    "wsistream.backends.tiffslide:TiffSlideBackend",
    requires=("tiffslide",),
    install="pip install tiffslide",
)

#: Tissue detectors built from a name alone, with their reference defaults (GeoJSON, model and
#: combined detectors take files or other detectors and are built in code).
TISSUE_DETECTORS = Registry("tissue detector")
TISSUE_DETECTORS.register("otsu", "wsistream.tissue.otsu:OtsuTissueDetector")
TISSUE_DETECTORS.register("hsv", "wsistream.tissue.hsv:HSVTissueDetector")
TISSUE_DETECTORS.register("clam", "wsistream.tissue.clam:CLAMTissueDetector")

_HF = ("torch", "transformers", "safetensors")
#: Tile encoders: ``factory(weights, **kwargs)`` → :class:`wsistream.features.Encoder` (local weights only).
ENCODERS = Registry("encoder")
ENCODERS.register("phikon", "wsistream.features.phikon:phikon", requires=_HF, install=extra_hint("features"))
ENCODERS.register("phikon-v2", "wsistream.features.phikon:phikon_v2", requires=_HF, install=extra_hint("features"))
ENCODERS.register("ibot", "wsistream.features.ibot:ibot", requires=_HF, install=extra_hint("features"))
ENCODERS.register(
    "dinov2", "wsistream.features.vit_checkpoints:dinov2", requires=("torch",), install=extra_hint("features")
)
ENCODERS.register(
    "timm-vit", "wsistream.features.vit_checkpoints:timm_vit", requires=("torch",), install=extra_hint("features")
)

_MIL = extra_hint("mil")
#: HistoSSLscaling MIL models (``conf/slide_level_task/cross_validation/model/*.yaml``):
#: ``factory(in_features=d, out_features=k, **config)`` → ``torch.nn.Module``.
MIL_MODELS = Registry("MIL model")
MIL_MODELS.register(
    "meanpool", "wsistream.mil.meanpool:MeanPool", aliases=("meanpooling",), requires=("torch",), install=_MIL
)
MIL_MODELS.register("chowder", "wsistream.mil.chowder:Chowder", requires=("torch",), install=_MIL)
MIL_MODELS.register("abmil", "wsistream.mil.abmil:ABMIL", requires=("torch",), install=_MIL)
MIL_MODELS.register("dsmil", "wsistream.mil.dsmil:DSMIL", requires=("torch",), install=_MIL)
MIL_MODELS.register("transmil", "wsistream.mil.transmil:TransMIL", requires=("torch",), install=_MIL)
MIL_MODELS.register("hipt", "wsistream.mil.hiptmil:HIPTMIL", aliases=("hiptmil",), requires=("torch",), install=_MIL)

#: Paper recipes (``wsistream.recipes``): each entry is a :class:`~wsistream.recipes.Recipe`, a
#: pipeline factory that carries its deviation table; ``create(name, slide_paths, **overrides)`` →
#: a ``PatchPipeline``. Recipes of your own: ``wsistream.recipes.register(Recipe(...))``.
RECIPES = Registry("recipe")
RECIPES.register("phikon-v2", "wsistream.recipes.published:PHIKON_V2")
RECIPES.register("phikon", "wsistream.recipes.published:PHIKON")
RECIPES.register("gpfm", "wsistream.recipes.published:GPFM")
