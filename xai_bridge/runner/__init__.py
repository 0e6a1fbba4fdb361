"""``xai-bridge benchmark``: explainers × metrics over a data set, stored as it goes, with a report.

* :mod:`~xai_bridge.runner.run` — :func:`run_benchmark` and :class:`BenchmarkConfig`;
* :mod:`~xai_bridge.runner.store` — the resumable SQLite store;
* :mod:`~xai_bridge.runner.data` — embedded photos, ImageFolder trees, list files;
* :mod:`~xai_bridge.runner.report` — ``report.md`` / ``report.html`` with figures;
* :mod:`~xai_bridge.runner.distributed` — sharding across ``torchrun`` ranks;
* :mod:`~xai_bridge.runner.cli` — the ``benchmark`` sub-command and ``run_demo``.

>>> from xai_bridge.runner import BenchmarkConfig
>>> BenchmarkConfig().explainers[:2]
('gradcam', 'gradcam++')
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BenchmarkConfig": "xai_bridge.runner.run",
    "run_benchmark": "xai_bridge.runner.run",
    "Store": "xai_bridge.runner.store",
    "open_source": "xai_bridge.runner.data",
    "write_report": "xai_bridge.runner.report",
    "run_demo": "xai_bridge.runner.cli",
    "add_benchmark_parser": "xai_bridge.runner.cli",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xai_bridge.runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
