"""Public names imported on first use (PEP 562), for packages whose modules import torch:
napari lists plugins and opens files, and ``nmsg --help`` builds its options, without
waiting seconds for it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], sources: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name of ``sources`` is imported
    from its module (relative to ``package``) when first asked for, then kept in
    ``namespace`` (the package's globals), where later lookups find it directly."""

    def getattr_(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name], package), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *sources})

    return getattr_, dir_
