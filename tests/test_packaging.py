"""A regular wheel install loads every built-in through the entry-point group (not via the source tree)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pluggy

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_loads_builtins_through_entry_points(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("xai_bridge-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    built_ins = sorted(path.parent.name for path in (ROOT / "plugins").glob("*/__init__.py"))
    for name in built_ins:  # every subpackage made it into the wheel (pyproject lists them one by one)
        assert (site / "xai_bridge_builtins" / name / "__init__.py").exists(), name
    assert not (site / "plugins").exists(), "the plugins/ folder must not install as a top-level 'plugins' package"
    shutil.copytree(Path(pluggy.__file__).parent, site / "pluggy")
    code = (
        "import sys, json; sys.path[:0] = [sys.argv[1]]; import xai_bridge as xb; "
        "print(json.dumps({s.name: [s.provider.plugin, s.provider.distribution, xb.__file__] "
        "for s in xb.list_explainers()}))"
        "; assert not xb.get_host().failures, xb.get_host().failures"
    )
    # -S -I: no site-packages, so neither the editable install nor the source tree is visible.
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code, str(site)], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    found = json.loads(out.stdout)
    assert found["gradcam"][:2] == ["toolkit", "xai-bridge"]
    assert found["gradcam"][2].startswith(str(site))


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = [line for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert len(command) == 1, command
    assert command[0].strip() in readme


def test_the_version_is_defined_once():
    import importlib.metadata

    import xai_bridge

    assert importlib.metadata.version("xai-bridge") == xai_bridge.__version__
    assert 'version = "' not in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]
