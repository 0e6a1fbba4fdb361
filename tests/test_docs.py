"""Documentation stays true to the code: the hooks reference is generated and every hook is tested."""

from __future__ import annotations

from pathlib import Path

from xai_bridge.docgen import hook_names, hooks_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_hooks_reference_is_generated_from_the_docstrings():
    committed = (ROOT / "docs" / "hooks.md").read_text()
    assert committed == hooks_markdown(), "docs/hooks.md is stale: run `python -m xai_bridge.docgen > docs/hooks.md`"


def test_every_hook_is_documented_and_tested():
    from xai_bridge import hookspecs

    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py")
    names = hook_names()
    assert names, "no hooks found"
    for name in names:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 100 and "Example" in doc, f"hook {name} is not documented with an example"
        assert f"def {name}(" in tests, f"hook {name} is not implemented by any test plugin"


def test_metrics_reference_covers_every_builtin_metric_and_preset():
    import xai_bridge as xb
    from xai_bridge.protocols import PRESETS

    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text(encoding="utf-8")
    builtin = [s.name for s in xb.list_metrics() if s.provider.plugin == "metrics"]
    assert builtin, "the built-in metrics plugin registered nothing"
    missing = [name for name in builtin if f"`{name}`" not in text] + [p for p in PRESETS if f"`{p}`" not in text]
    assert not missing, f"docs/metrics.md does not document {missing}"


def test_plugin_tutorial_shows_the_example_plugins_files_as_they_are():
    import re

    example = ROOT / "examples" / "xai-bridge-example-plugin"
    page = (ROOT / "docs" / "plugin-tutorial.md").read_text()
    shown = dict(re.findall(r"\*\*`([^`]+)`\*\*\n\n```\w+\n(.*?)```\n", page, flags=re.S))
    files = sorted(
        str(p.relative_to(example))
        for p in [*example.glob("src/xai_bridge_example/*.py"), *example.glob("tests/*.py"), example / "pyproject.toml"]
    )
    assert sorted(shown) == files, "docs/plugin-tutorial.md must show every file of the example plugin"
    for rel, text in shown.items():
        assert (example / rel).read_text() == text, f"docs/plugin-tutorial.md shows a stale {rel}"


def test_citations_name_papers_not_internal_notes():
    """Docs and sources cite papers by authors and title; "seed 004", "SPEC §2" or "issue 7" mean nothing
    to a reader."""
    import re

    pattern = re.compile(r"seed 00|SPEC §|issue [0-9]")
    files = [*(ROOT / "xai_bridge").rglob("*.py"), *(ROOT / "plugins").rglob("*.py"), *(ROOT / "docs").glob("*.md")]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "cite the paper (authors, title; see docs/credits.md) instead of:\n" + "\n".join(found)
