"""docs/extending-the-engine.md: each worked example runs as shown (its own asserts check its values)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending-the-engine.md"


def _example(section: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```\n", body, flags=re.S)
    assert len(blocks) == 1, f"{section}: expected one python example"
    return blocks[0]


@pytest.mark.parametrize("section", ["A new planner", "A newly accelerated toolkit metric"])
def test_worked_example_runs_as_shown(section):
    code = _example(section)
    assert "assert " in code  # each example checks its own values
    exec(compile(code, f"{PAGE.name}:{section}", "exec", dont_inherit=True), {"__name__": "docs_example"})
