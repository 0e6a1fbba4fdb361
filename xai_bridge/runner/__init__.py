"""``xai-bridge benchmark``: explainers × metrics over a data set, stored as it goes, with a report.

* :mod:`~xai_bridge.runner.run` — :class:`BenchmarkConfig` and the :class:`Plan` it becomes;
* :mod:`~xai_bridge.runner.benchmark` — :func:`run_benchmark`, which ends in :func:`~xai_bridge.runner.finish.finish`;
* :mod:`~xai_bridge.runner.store` — the resumable SQLite store;
* :mod:`~xai_bridge.runner.data` — embedded photos, ImageFolder trees, list files;
* :mod:`~xai_bridge.runner.document` — ``report.md`` / ``report.html``, and
  :mod:`~xai_bridge.runner.figures` — the figures they show (statistics: :mod:`xai_bridge.stats`);
* :mod:`~xai_bridge.runner.distributed` — sharding across ``torchrun`` ranks;
* :mod:`~xai_bridge.runner.cli` — the ``benchmark`` sub-command.

>>> from xai_bridge.runner import BenchmarkConfig
>>> BenchmarkConfig(explainers=['gradcam', 'random'], metrics=['average_gain']).protocol
'default'
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BenchmarkConfig": "xai_bridge.runner.run",
    "run_benchmark": "xai_bridge.runner.benchmark",
    "Plan": "xai_bridge.runner.run",
    "finish": "xai_bridge.runner.finish",
    "Store": "xai_bridge.runner.store",
    "open_source": "xai_bridge.runner.data",
    "write_report": "xai_bridge.runner.document",
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
