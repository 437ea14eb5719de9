"""Names of a package imported on first use, so that `magicmotion --help` (which imports every part's
`cli`) does not import torch or diffusers."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """The `__getattr__` and `__dir__` of `package` for the names in `exports` (name -> submodule):
    a name is imported from its submodule on first use and kept in the package.

    In a package's `__init__.py`: `__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)`.
    """

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        module = sys.modules[package]
        return sorted(list(vars(module)) + list(module.__all__))

    return __getattr__, __dir__
