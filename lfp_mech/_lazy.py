"""Lazy re-exports: a package names its public API without importing heavy libraries.

Stage packages re-export their core (which imports torch, TransformerLens, SAE-Lens, TRL: seconds
each) lazily, so that reading a config, ``lfp-mech --help`` and config errors stay fast::

    from lfp_mech._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(__name__, {"train_policy": "grpo", "RLHFConfig": "config"})
    __all__ = [...]

``lfp_mech.rlhf.train_policy`` then imports ``lfp_mech.rlhf.grpo`` on first use.
"""

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` serving ``name -> package.<module>.name``.

    ``exports`` maps a public name to the module (relative to ``package``, or absolute when it
    starts with ``lfp_mech.``) that defines it.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 (module protocol)
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        target = module if module.startswith("lfp_mech.") else f"{package}.{module}"
        value = getattr(importlib.import_module(target), name)
        setattr(sys.modules[package], name, value)  # cache: later lookups skip this function
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
