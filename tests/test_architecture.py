"""The shape of the code: the host knows no method by name, and its modules import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xai_bridge as xb

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "xai_bridge"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, wherever the import statement is (function bodies too),
    except under ``if TYPE_CHECKING:`` (no run-time edge)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def _host_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(HOST.rglob("*.py"))}


def test_no_host_module_imports_a_builtin_plugin():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in HOST.rglob("*.py")
        for line, target in _imports(path)
        if target.split(".")[0] == "xai_bridge_builtins"
    ]
    assert offenders == [], "the host loads built-ins only through the entry-point group:\n" + "\n".join(offenders)


def test_no_host_module_names_a_builtin_method():
    from xai_bridge.engine.requests import Curve
    from xai_bridge.protocols import PRESETS

    builtin = {
        label
        for spec in [*xb.list_explainers(), *xb.list_metrics()]
        if spec.provider.builtin
        for label in (spec.name, *spec.aliases)
    }
    assert {"gradcam", "average_gain", "opticam"} <= builtin  # the check is live
    # The host's own vocabulary that happens to equal a built-in's name or alias: the engine's curve kinds
    # ("deletion", "insertion") and the protocol presets named after the papers' evaluations.
    # And the toolkits' own argument values that xai_bridge.accelerate reads (Quantus's order="random").
    vocabulary = set(Curve.__dataclass_fields__["kind"].type.split("'")[1::2]) | set(PRESETS) | {"random"}
    offenders = []
    for path in sorted(HOST.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if node.value in builtin and node.value not in vocabulary:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert offenders == [], "the host must not name built-in methods (move the choice into a plugin):\n" + "\n".join(
        offenders
    )


def test_host_modules_import_each_other_without_cycles():
    modules = _host_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, target in _imports(path):
            while target and target not in modules:  # `from .x import f` → module x
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and target != "xai_bridge":
                graph[name].add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in (ROOT / "plugins").glob("*/__init__.py")))
def test_builtin_subpackage_inits_only_register(path):
    """A subpackage's ``__init__`` imports no torch at module level (listing plugins stays cheap)."""
    tree = ast.parse((ROOT / path).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    heavy = [ast.unparse(n) for n in top if any(x in ast.unparse(n) for x in ("torch", "numpy", "captum", "quantus"))]
    assert heavy == []


TOOLKITS = ("quantus", "pytorch_grad_cam")


def _module_level_imports(path: Path) -> list[tuple[int, str]]:
    """The modules ``path`` imports when it is imported: top-level statements, and those nested in top-level
    ``try``/``if``/``with`` blocks (not function or class bodies)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str]] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, (ast.Try, ast.If, ast.With)):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    pending += child.body if isinstance(child, ast.ExceptHandler) else [child]
    return found


def test_only_the_toolkit_bridges_import_a_toolkit_at_module_level():
    """Quantus and pytorch-grad-cam are imported at module level only by ``accelerate/`` and ``adapters/``: the
    planners, the engine and the registered metrics run without them."""
    bridges = (HOST / "accelerate", HOST / "adapters")
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted([*HOST.rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])
        if not any(path.is_relative_to(b) for b in bridges)
        for line, target in _module_level_imports(path)
        if target.split(".")[0] in TOOLKITS
    ]
    assert offenders == [], "a toolkit imported outside accelerate/ and adapters/:\n" + "\n".join(offenders)
    assert _module_level_imports(HOST / "accelerate" / "_quantus.py"), "the check is live"
    assert any(t == "quantus" for _, t in _module_level_imports(HOST / "accelerate" / "_quantus.py"))


def test_the_engine_imports_no_toolkit_anywhere():
    """The planners (``engine/plans.py``) and the rest of the engine import no toolkit, not even in a function."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((HOST / "engine").rglob("*.py"))
        for line, target in _imports(path)
        if target.split(".")[0] in (*TOOLKITS, "captum")
    ]
    assert offenders == [], "\n".join(offenders)
