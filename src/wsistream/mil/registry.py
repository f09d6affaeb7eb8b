"""The MIL models of :data:`wsistream.registry.MIL_MODELS` as classes, with their reference defaults.

The names (and aliases, ``HIPT-MIL`` → ``hipt``) are written once, in :mod:`wsistream.registry`;
what this module adds is read from the classes themselves: whether a model has a ``corrected``
variant (a ``corrected`` constructor argument) and its reference batch size.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from wsistream.mil.hiptmil import HIPTMIL
from wsistream.registry import MIL_MODELS


def _model_class(name: str) -> type[nn.Module]:
    cls = MIL_MODELS.load(name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"MIL model {name!r} must be registered as a torch.nn.Module class, got {cls!r}")
    return cls


#: name -> class, in registration order. Constructor defaults equal the HistoSSLscaling paper
#: configs (``conf/slide_level_task/cross_validation/model/*.yaml``).
MODELS: dict[str, type[nn.Module]] = {name: _model_class(name) for name in MIL_MODELS.names()}

#: Models whose reference implementation has a flaw with a ``corrected`` option.
CORRECTABLE = frozenset(name for name, cls in MODELS.items() if "corrected" in inspect.signature(cls).parameters)

#: Reference batch size per model: 16 slides, except HIPT-MIL, which the reference trains one
#: slide at a time (its attention has no padding mask; ``HIPTMIL`` refuses larger batches).
DEFAULT_BATCH_SIZE: dict[str, int] = {name: (1 if cls is HIPTMIL else 16) for name, cls in MODELS.items()}


def build_model(
    name: str, in_features: int, out_features: int = 1, corrected: bool = False, **overrides: Any
) -> nn.Module:
    """Instantiate a MIL model by name with the reference configuration.

    Parameters
    ----------
    name : str
        A name or alias of :data:`wsistream.registry.MIL_MODELS` (``meanpool``, ``chowder``, ...).
    in_features : int
        Tile feature dimension d.
    out_features : int
        Logits: 1 for binary and survival tasks, C for C-class tasks.
    corrected : bool
        Use the corrected variant (models in :data:`CORRECTABLE`); the other models have no
        reference flaw and ignore it.
    **overrides
        Constructor arguments replacing the reference values.

    Example::

        >>> build_model("abmil", in_features=768).__class__.__name__
        'ABMIL'
    """
    key = canonical_model_name(name)
    if in_features < 1 or out_features < 1:
        raise ValueError(f"in_features={in_features}, out_features={out_features}: both must be >= 1")
    kwargs = dict(overrides)
    if key in CORRECTABLE:
        kwargs["corrected"] = corrected
    return MODELS[key](in_features=in_features, out_features=out_features, **kwargs)


def canonical_model_name(name: str) -> str:
    """Normalise a user-given model name (``HIPT-MIL`` -> ``hipt``) or raise ``ValueError`` listing the names."""
    return MIL_MODELS.canonical(name)
