"""Component specs as users write them: ``"opticam:max_iter=20,lr=0.1"`` or ``(name, options[, label])``.

Shared by :func:`xai_bridge.evaluate` and the benchmark runner, so both read a spec the same way.

>>> parse_spec("opticam:max_iter=20,lr=0.1", "explainers")
('opticam', {'max_iter': 20, 'lr': 0.1}, None)
"""

from __future__ import annotations

import ast
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["parse_spec"]


def parse_spec(spec: Any, what: str) -> tuple[str, dict[str, Any], str | None]:
    """``"opticam:max_iter=20,lr=0.1"`` / ``(name, options[, label])`` → ``(name, options, label)``."""
    if isinstance(spec, str):
        name, _, rest = spec.partition(":")
        options: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip().isidentifier():
                raise InvalidArgumentError(
                    f"{what}: {spec!r} has option {pair!r}; "
                    "expected NAME:KEY=VALUE,KEY=VALUE (e.g. opticam:max_iter=20)"
                )
            try:
                options[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                options[key.strip()] = value.strip()
        return name.strip(), options, None
    if (
        isinstance(spec, (tuple, list))
        and len(spec) in (2, 3)
        and isinstance(spec[0], str)
        and isinstance(spec[1], dict)
    ):
        return spec[0], dict(spec[1]), (spec[2] if len(spec) == 3 else None)
    raise InvalidArgumentError(
        f"{what}: expected 'name', 'name:key=value,...', (name, options) or (name, options, label); got {spec!r}"
    )
