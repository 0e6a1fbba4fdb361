"""The docstring examples of the built-in plugins run, imported under their installed name.

``--doctest-modules`` collects ``xai_bridge/`` by path, which is its import name. The built-ins live
in ``plugins/`` but install as ``xai_bridge_builtins``: collected by path they would be imported a
second time as ``plugins.*``, with classes that are not the installed ones. So they run here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import xai_bridge_builtins


def _modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(xai_bridge_builtins.__path__, prefix="xai_bridge_builtins.")
    )


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_of(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (output above)"
