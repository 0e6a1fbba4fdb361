"""Every error the host and the built-in plugins raise derives from XaiBridgeError (one root to catch)."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import xai_bridge.errors as errors

ROOT = Path(__file__).resolve().parents[1]
#: what may be raised without the root: re-raises, "subclass must override", iteration and generator protocol
ALLOWED = {"NotImplementedError", "StopIteration", "StopAsyncIteration", "KeyboardInterrupt", "SystemExit"}
#: documented protocol errors at these sites: a module's ``__getattr__`` (AttributeError), a mapping's
#: ``__getitem__`` (KeyError), the test helpers' assertions, a broken dependency package (RuntimeError)
SITES = {
    ("xai_bridge/metric.py", "KeyError"),
    ("xai_bridge/testing.py", "AssertionError"),
    ("xai_bridge/classes.py", "RuntimeError"),
}


def raised_class(node: ast.Raise) -> str | None:
    """The class name a ``raise`` statement names, or ``None`` for a re-raise of an instance."""
    exc = node.exc
    if exc is None:
        return None  # bare re-raise
    target = exc.func if isinstance(exc, ast.Call) else exc
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    if name is None or not name[:1].isupper():
        return None  # an instance (``raise exc``) or a helper that builds one (``raise _unknown_option(...)``)
    return name


def is_rooted(name: str) -> bool:
    cls = getattr(errors, name, None)
    return isinstance(cls, type) and issubclass(cls, errors.XaiBridgeError)


def offenders() -> list[str]:
    out = []
    for folder in ("xai_bridge", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), rel)
            # a module's or class's ``__getattr__`` raises AttributeError by Python's protocol
            protocol = {
                id(n)
                for f in ast.walk(tree)
                if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
                for n in ast.walk(f)
                if isinstance(n, ast.Raise) and raised_class(n) == "AttributeError"
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Raise) and id(node) not in protocol:
                    name = raised_class(node)
                    if name is None or name in ALLOWED or is_rooted(name) or (rel, name) in SITES:
                        continue
                    out.append(f"{rel}:{node.lineno}: raise {name}")
    return out


def test_the_walk_sees_a_bare_value_error():
    tree = ast.parse("def f():\n    raise ValueError('x')\n")
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.Raise)]
    assert raised_class(node) == "ValueError" and not is_rooted("ValueError") and hasattr(builtins, "ValueError")
    assert is_rooted("InvalidArgumentError") and issubclass(errors.InvalidArgumentError, ValueError)


def test_host_and_builtin_plugins_raise_only_rooted_errors():
    found = offenders()
    assert not found, "raise xai_bridge.errors types (InvalidArgumentError, InvalidTypeError, ...):\n" + "\n".join(
        found
    )
