"""Lazy package exports (PEP 562): a package names its public entry points without
importing their modules until one is used, so a light module of the package (the store's
layout, the truth reader) can be imported without loading numba or the rest."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """The module `__getattr__` of `package`: name → attribute of the module `exports[name]`."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
