"""Keep a plugin cheap to import: its registration module names classes it imports only when used.

A plugin's registration module is imported when xai-bridge lists plugins, so it should not
import torch. These two helpers give it the names of its implementation module on demand:

* :func:`lazy_factory` — a ``register(...)`` factory that imports the class when called (its
  ``lazy_target()`` imports and returns the class, for a caller that reads its options);
* :func:`lazy_getattr` — a module ``__getattr__`` (PEP 562) that forwards names to the
  implementation module on first access, so ``from my_plugin import MyExplainer`` still works.

>>> factory = lazy_factory("collections", "OrderedDict")
>>> dict(factory(a=1)), factory.lazy_target().__name__
({'a': 1}, 'OrderedDict')
>>> __getattr__ = lazy_getattr("my_plugin", "collections")
>>> __getattr__("Counter").__name__
'Counter'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_factory(module: str, attribute: str) -> Callable[..., Any]:
    """``factory(*args, **options)`` that imports ``module.attribute`` at call time and calls it."""

    def resolve() -> Any:
        return getattr(importlib.import_module(module), attribute)

    def factory(*args: Any, **options: Any) -> Any:
        return resolve()(*args, **options)

    factory.__qualname__ = factory.__name__ = f"make_{attribute}"
    factory.__doc__ = f"{module}.{attribute}(*args, **options), imported on first use."
    factory.lazy_target = resolve  # type: ignore[attr-defined]  # what it stands for, to read its signature
    return factory


def lazy_getattr(package: str, module: str) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` for ``package`` that finds missing names in ``module`` (imported then)."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        if name.startswith("__"):  # dunder lookups (pluggy, pickle, doctest) must not import the module
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return getattr(importlib.import_module(module), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
