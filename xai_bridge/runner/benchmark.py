"""``run_benchmark``: one process, or sharded across ``torchrun`` ranks; both end in :func:`~.finish.finish`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..results import Results
from . import distributed
from .finish import finish
from .run import BenchmarkConfig, Plan, RunInfo
from .store import Store


def run_benchmark(config: BenchmarkConfig | None = None, **overrides: Any) -> Results:
    """Run (or resume) a benchmark and write its report; returns every stored result of the configuration.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the batches are sharded across ranks and the
    merged results are returned on every rank; only rank 0 writes the store and the report.
    See :class:`BenchmarkConfig` for the settings; keyword ``overrides`` replace its fields.
    """
    import dataclasses

    config = (
        dataclasses.replace(config or BenchmarkConfig(), **overrides) if overrides else (config or BenchmarkConfig())
    )
    for field_name in ("explainers", "metrics"):
        if not getattr(config, field_name):
            raise InvalidArgumentError(
                f"{field_name}: none given; name at least one (see `xai-bridge plugins`), "
                f"e.g. BenchmarkConfig(explainers=[...], metrics=[...])"
            )
    start = time.time()
    ctx = distributed.context(config.device)
    try:
        plan = Plan(config, device=ctx.device)
        info = RunInfo(plan.config_hash, world_size=ctx.world_size)
        main_path = Path(config.store)
        if ctx.world_size == 1:
            with Store(main_path) as store:
                store.register_config(plan.config_hash, plan.settings)
                store.set_directions(plan.config_hash, plan.directions)
                done = store.done_keys(plan.config_hash)
                skipped = set(store.skipped(plan.config_hash))
                work = [(i, b, plan.pending(b, done, skipped)) for i, b in enumerate(plan.batches)]
                plan.run_units(store, [w for w in work if w[2]], skipped, info)
                return finish(plan, store, info, start)
        return distributed.run_sharded(plan, ctx, main_path, info, start)
    finally:
        ctx.close()
