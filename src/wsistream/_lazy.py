"""Lazy package exports: heavy stages (torch, transformers) load on first use of a name, not at import."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    namespace: dict[str, Any],
    renamed: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` serving ``exports`` (name → submodule of ``package``).

    A resolved name is stored in ``namespace`` so the import happens once. ``renamed`` maps old
    public names to their new ones: the old name still resolves, with a ``DeprecationWarning``
    each time (it is never cached, so every use is reported), and is not listed by ``__dir__``.
    """
    renamed = dict(renamed or {})

    def __getattr__(name: str) -> Any:
        if name in renamed:
            new = renamed[name]
            warnings.warn(
                f"{package}.{name} is renamed {new}; the old name will be removed", DeprecationWarning, stacklevel=2
            )
            return __getattr__(new)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
