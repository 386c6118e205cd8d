"""Packages whose public names are imported on first use (PEP 562).

``wearline`` mounts every stage's commands at start-up, which imports each stage's package. A package that imported
its whole surface there (scikit-learn, SciPy, skops, FastAPI, NumPy) made every command start seconds later,
``wearline ingest`` restarting on a backlog included.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``homes`` maps each public name to the module defining it."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:  # noqa: N807 (the module hook's name)
        try:
            home = homes[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value  # once imported, a plain module attribute
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(homes)  # the public surface, as ``__all__`` should list it

    return __getattr__, __dir__
