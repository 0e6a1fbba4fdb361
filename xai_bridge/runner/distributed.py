"""Sharding a benchmark across ``torchrun`` ranks with torch.distributed (gloo on CPU, nccl on GPU).

``torchrun --nproc_per_node N -m xai_bridge benchmark ...`` (or ``--nnodes``/``--rdzv-*``
for several machines) starts N copies; each:

1. sends the rows its shard store kept from an earlier, killed run to rank 0, which
   merges them into the main store and sends every rank the units still to compute;
2. computes the batches ``i`` with ``i % world_size == rank`` (the same fixed batches as a
   single process, so results are identical) into its own shard store
   ``STORE.rank<r>`` next to the main store, a transaction per unit;
3. sends its rows to rank 0, which merges them into the main store (``INSERT OR IGNORE``:
   nothing duplicated), writes the report, and sends the merged results to every rank.

Only collectives move data, so ranks on different machines need no shared file system.

>>> context(None).world_size  # not under torchrun
1
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results import Results
from .finish import finish
from .store import Store

if TYPE_CHECKING:  # pragma: no cover
    from .run import Plan, RunInfo


@dataclass
class Context:
    """This process's place in the run; ``device`` is where its model goes (``None`` = leave it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None
    backend: str | None = None
    initialized_here: bool = False

    def close(self) -> None:
        """Tear down the process group if :func:`context` created it."""
        if self.initialized_here:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.initialized_here = False


def context(device: Any = None) -> Context:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (or use one already joined).

    ``device``: the requested device; under torchrun ``"cuda"`` (or ``None`` with CUDA
    available) becomes ``cuda:LOCAL_RANK`` and the backend nccl; otherwise gloo on CPU.
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world <= 1 and not joined:
        return Context(device=None if device is None else torch.device(device))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = None if device is None else torch.device(device)
    use_cuda = torch.cuda.is_available() and (wanted is None or wanted.type == "cuda")
    resolved = torch.device("cuda", local_rank) if use_cuda else (wanted or torch.device("cpu"))
    if use_cuda:
        torch.cuda.set_device(resolved)
    here = False
    if not joined:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, resolved, dist.get_backend(), here)


def shard_path(main: Path, rank: int) -> Path:
    """The shard store of ``rank`` next to the main store: ``bench.sqlite.rank1``."""
    return main.with_name(f"{main.name}.rank{rank}")


def _remove(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            p.unlink()


def _gather(obj: Any, ctx: Context) -> list[Any] | None:
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def _broadcast(obj: Any, ctx: Context) -> Any:
    import torch.distributed as dist

    box = [obj if ctx.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_sharded(plan: Plan, ctx: Context, main_path: Path, info: RunInfo, start: float) -> Results:
    """Steps 1-3 of the module docstring; returns the merged results on every rank."""
    import torch.distributed as dist

    mine = shard_path(main_path, ctx.rank)
    leftover = None
    if mine.exists():
        with Store(mine) as old:
            leftover = old.dump()
    dumps = _gather(leftover, ctx)
    work = None
    if ctx.rank == 0:
        with Store(main_path) as store:
            store.register_config(plan.config_hash, plan.settings)
            store.set_directions(plan.config_hash, plan.directions)
            for dump in dumps or []:
                if dump:
                    store.load_dump(dump)
            done = store.done_keys(plan.config_hash)
            skipped = set(store.skipped(plan.config_hash))
        work = {
            "skipped": sorted(skipped),
            "units": {
                i: [(e.key, [m.key for m in ms]) for e, ms in plan.pending(b, done, skipped)]
                for i, b in enumerate(plan.batches)
            },
        }
    work = _broadcast(work, ctx)
    _remove(mine)  # rank 0 holds its rows now
    skipped_ids = set(work["skipped"])
    explainers = {e.key: e for e in plan.explainers}
    metrics = {m.key: m for m in plan.metrics}
    units = [
        (i, b, [(explainers[e], [metrics[m] for m in ms]) for e, ms in work["units"].get(i, [])])
        for i, b in enumerate(plan.batches)
        if i % ctx.world_size == ctx.rank
    ]
    with Store(mine) as shard:
        shard.register_config(plan.config_hash, plan.settings)
        plan.run_units(
            shard, [u for u in units if u[2]], skipped_ids, info, label=f" [rank {ctx.rank}/{ctx.world_size}]"
        )
        dump = shard.dump()
    infos = _gather((dump, info.units_total, info.units_computed, info.rows_written, info.failures), ctx)
    results = None
    if ctx.rank == 0:
        with Store(main_path) as store:
            for rank, (part, total, computed, written, failures) in enumerate(infos or []):
                store.load_dump(part)
                if rank:  # rank 0's own counts are in info already
                    info.units_total += total
                    info.units_computed += computed
                    info.rows_written += written
                    info.failures.extend(failures)
            results = finish(plan, store, info, start)
    dist.barrier()
    _remove(mine)  # merged into the main store
    return _broadcast(results, ctx)
