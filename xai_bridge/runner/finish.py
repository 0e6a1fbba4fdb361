"""The last step of every benchmark run, single-process or sharded: grid maps, results, report."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..results import Results
from .document import write_report

if TYPE_CHECKING:  # pragma: no cover
    from .run import Plan, RunInfo
    from .store import Store


def finish(plan: Plan, store: Store, info: RunInfo, start: float) -> Results:
    """Store the report's saliency-grid maps, read every result of the configuration back, and write
    the report when the configuration asks for one. Called on the process that holds the merged store
    (the only one, or rank 0)."""
    plan.grid_maps(store)
    info.skipped = store.skipped(plan.config_hash)
    results = plan.results(store)
    info.seconds = time.time() - start
    if plan.config.out is not None:
        write_report(results, plan.config.out, store=store, plan=plan, info=info)
    return results
