"""Packages whose names load on first use, so that importing one imports none of its modules (and no torch).

`vitkit train --help` reads the recipe's dataclasses from `vitkit.training.config`, `vitkit.data.config` and
`vitkit.models.config`; importing those submodules runs their packages' `__init__`, which therefore must not
import the packages' torch modules. Each such package lists its names under `if TYPE_CHECKING:` (for readers and
type checkers) and hands the same table to `lazy_package`, which looks a name up in its module when first asked.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyPackage(types.ModuleType):
    """A package module whose public names are imported from their modules on first access (PEP 562's idea)."""

    _exports: dict[str, str]  # name -> the module that defines it

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("_exports", {}).get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # A name that is also a submodule's (`vitkit.inference.evaluate`, the function and its module): importing
        # the submodule binds the module on the package; the package's name stays the function, as an eager
        # `from .evaluate import evaluate` left it.
        if isinstance(value, types.ModuleType) and value.__name__ == self.__dict__.get("_exports", {}).get(name):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self._exports})


def lazy_package(package: str, modules: dict[str, tuple[str, ...]]) -> None:
    """Make `package` load each of its names (`modules`: module -> the names it defines) when first used."""
    module = sys.modules[package]
    module.__class__ = LazyPackage
    module._exports = {name: source for source, names in modules.items() for name in names}
