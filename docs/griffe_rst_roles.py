"""A griffe extension for the API reference: Sphinx roles in docstrings become Markdown.

The docstrings use reST roles (``:class:`~xai_bridge.protocols.Protocol```, ``:meth:`compute```) so
that ``help()`` reads well; mkdocstrings renders Markdown. This turns each role into inline code
linked to the documented object when there is one (an optional cross-reference: no link, no
warning, when the target is not in the API reference), and a trailing reST ``::`` into ``:``.
Loaded by mkdocs.yml (``extensions: [docs/griffe_rst_roles.py]``); it changes no source.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj):`(~?)([^`<>]+?)`")


def _resolve(obj: Any, name: str) -> str:
    """The full path ``name`` most likely means, seen from ``obj``'s docstring."""
    scopes = []
    node = obj
    while node is not None:
        scopes.append(node)
        node = node.parent
    for scope in scopes:
        try:
            return scope[name].path
        except Exception:  # noqa: BLE001 - not a member of this scope
            continue
    return name


class RstRoles(griffe.Extension):
    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return

        def replace(match: re.Match[str]) -> str:
            short, name = match.group(1) == "~", match.group(2).strip()
            title = name.rsplit(".", 1)[-1] if short else name
            target = _resolve(obj, name)
            return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'

        text = ROLE.sub(replace, docstring.value)
        text = re.sub(r"(?m)(\S)::$", r"\1:", text)
        text = re.sub(r"(?m)^(\s*)::$", r"", text)
        docstring.value = text
