"""Model names used by the CLI and the nested cross-validation, with their reference defaults."""

from __future__ import annotations

from typing import Any

from torch import nn

from wsistream.mil.abmil import ABMIL
from wsistream.mil.chowder import Chowder
from wsistream.mil.dsmil import DSMIL
from wsistream.mil.hiptmil import HIPTMIL
from wsistream.mil.meanpool import MeanPool
from wsistream.mil.transmil import TransMIL

#: name -> class. Constructor defaults equal the HistoSSLscaling paper configs
#: (``conf/slide_level_task/cross_validation/model/*.yaml``).
MODELS: dict[str, type[nn.Module]] = {
    "meanpool": MeanPool,
    "chowder": Chowder,
    "abmil": ABMIL,
    "dsmil": DSMIL,
    "transmil": TransMIL,
    "hipt": HIPTMIL,
}

#: Models whose reference implementation has a flaw with a ``corrected`` option.
CORRECTABLE = frozenset({"dsmil", "transmil", "hipt"})

#: Reference batch size per model (HIPT-MIL runs one slide at a time).
DEFAULT_BATCH_SIZE: dict[str, int] = {name: (1 if name == "hipt" else 16) for name in MODELS}


def build_model(
    name: str, in_features: int, out_features: int = 1, corrected: bool = False, **overrides: Any
) -> nn.Module:
    """Instantiate a MIL model by name with the reference configuration.

    Parameters
    ----------
    name : str
        One of ``meanpool, chowder, abmil, dsmil, transmil, hipt``.
    in_features : int
        Tile feature dimension d.
    out_features : int
        Logits: 1 for binary and survival tasks, C for C-class tasks.
    corrected : bool
        Use the corrected variant (``dsmil``, ``transmil``, ``hipt``); the
        other models have no reference flaw and ignore it.
    **overrides
        Constructor arguments replacing the reference values.
    """
    key = canonical_model_name(name)
    if in_features < 1 or out_features < 1:
        raise ValueError(f"in_features={in_features}, out_features={out_features}: both must be >= 1")
    kwargs = dict(overrides)
    if key in CORRECTABLE:
        kwargs["corrected"] = corrected
    return MODELS[key](in_features=in_features, out_features=out_features, **kwargs)


def canonical_model_name(name: str) -> str:
    """Normalise a user-given model name (``HIPT-MIL`` -> ``hipt``) or raise ``ValueError``."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"meanpooling": "meanpool", "hiptmil": "hipt"}.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: pass one of {sorted(MODELS)}")
    return key
