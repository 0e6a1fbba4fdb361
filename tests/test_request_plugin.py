"""A plugin outside the host defines its own perturbation (a request type) and two metrics that share its passes.

The request shuffles the most salient patches among themselves instead of removing them: after
step ``t`` the ``t·step`` highest-ranked ``patch×patch`` cells of an image trade places by a
seeded permutation, so the pixels stay in the image but lose their positions. The host is not
edited: the request implements :class:`xai_bridge.engine.Request` (``key``, ``length``,
``inputs``, ``reduce``), and the engine groups both metrics' requests by their key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

import xai_bridge as xb
from xai_bridge import hookimpl
from xai_bridge.engine import Engine, Executor, Request, RunContext
from xai_bridge.engine.maps import cell_scores
from xai_bridge.metric import Metric


def shuffle_cells(images: torch.Tensor, patch: int, order: torch.Tensor, k: torch.Tensor, seed: int) -> torch.Tensor:
    """``images`` (N×C×H×W, H and W multiples of ``patch``) with the cells ``order[:, :k]`` permuted among themselves.

    The permutation of ``k`` cells is the same for every image (``seed``, ``k``): ``randperm(k)``
    from a generator seeded with ``seed + k``.
    """
    n, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    cells = images.reshape(n, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, -1)
    source = torch.arange(gh * gw, device=images.device).expand(n, -1).clone()
    for i in range(n):  # a handful of cells per image: the test plugin keeps it plain
        kk = int(k[i])
        if kk > 1:
            perm = torch.randperm(kk, generator=torch.Generator().manual_seed(seed + kk)).to(images.device)
            top = order[i, :kk]
            source[i, top] = top[perm]
    moved = cells.gather(1, source[:, :, None].expand_as(cells))
    return moved.reshape(n, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


@dataclass(frozen=True)
class ShuffledPatches(Request):
    """The score after shuffling the ``step``, ``2·step``, … most salient patches; result: ``B×(S+1)`` probabilities."""

    patch: int = 4
    step: int = 2
    seed: int = 0
    stop: float = 1.0  # the fraction of cells at which this request's curve ends (not part of the key)

    @property
    def key(self) -> Any:
        return ("shuffled patches", self.patch, self.step, self.seed)

    def length(self, ctx: RunContext) -> int:
        cells = (ctx.images.shape[-2] // self.patch) * (ctx.images.shape[-1] // self.patch)
        return int(cells * self.stop) // self.step + 1

    def inputs(self, ctx: RunContext, length: int):
        order = ctx.cached(
            ("cell order", self.patch),
            lambda: cell_scores(ctx.maps, self.patch).flatten(1).argsort(dim=1, descending=True, stable=True),
        )
        img = torch.arange(ctx.batch, device=ctx.device).repeat_interleave(length)
        k = torch.arange(length, device=ctx.device).repeat(ctx.batch) * self.step
        return img.numel(), lambda s, e: shuffle_cells(
            ctx.images[img[s:e]], self.patch, order[img[s:e]], k[s:e], self.seed
        )

    def reduce(self, ctx: RunContext, logits: torch.Tensor) -> torch.Tensor:
        return ctx.scores(logits).probs


class ShuffleAUC(Metric):
    """Mean probability over the shuffling curve (lower: the salient patches' arrangement mattered)."""

    name = "shuffle_auc"
    higher_is_better = False
    category = "Faithfulness"

    def requests(self, protocol: Any) -> list[Request]:
        return [ShuffledPatches()]

    def compute(self, ctx: Any) -> torch.Tensor:
        return ctx[ShuffledPatches()].mean(1)


class ShuffleDrop(Metric):
    """Probability lost after shuffling half of the cells: a shorter request on the same sequence (a prefix)."""

    name = "shuffle_drop"
    higher_is_better = True
    category = "Faithfulness"

    def requests(self, protocol: Any) -> list[Request]:
        return [ShuffledPatches(stop=0.5)]

    def compute(self, ctx: Any) -> torch.Tensor:
        curve = ctx[ShuffledPatches(stop=0.5)]
        return curve[:, 0] - curve[:, -1]


class ShufflePlugin:
    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register("shuffle_auc", ShuffleAUC, higher_is_better=False, description=ShuffleAUC.__doc__)
        register("shuffle_drop", ShuffleDrop, higher_is_better=True, description=ShuffleDrop.__doc__)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 5)
    ).eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(2)
    return torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)


def test_shuffle_cells_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)  # four 2×2 cells: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    order = torch.tensor([[3, 0, 1, 2]])
    out = shuffle_cells(x, 2, order, torch.tensor([2]), seed=0)
    perm = torch.randperm(2, generator=torch.Generator().manual_seed(2))
    swapped = perm.tolist() == [1, 0]
    top_left = x[0, 0, 2:, 2:] if swapped else x[0, 0, :2, :2]
    assert torch.equal(out[0, 0, :2, :2], top_left)
    assert torch.equal(out[0, 0, :2, 2:], x[0, 0, :2, 2:]) and torch.equal(out[0, 0, 2:, :2], x[0, 0, 2:, :2])
    assert torch.equal(out.sort().values, x.sort().values)  # shuffled, never removed


def test_a_plugin_request_runs_once_for_both_metrics(data):
    images, maps = data
    model = tiny_model()
    engine = Engine(model, progress=False, compile="eager")
    out = engine.run(images, maps, None, [ShuffledPatches(), ShuffledPatches(stop=0.5)])
    points = 16 // 2 + 1  # 16 cells of 4×4, two per step
    assert out[ShuffledPatches()].shape == (3, points) and out[ShuffledPatches(stop=0.5)].shape == (3, 5)
    assert torch.equal(out[ShuffledPatches(stop=0.5)], out[ShuffledPatches()][:, :5])  # a prefix
    assert engine.forward_samples == 3 + 3 * points  # the unperturbed pass and one shared sequence
    # the values are the model's on the shuffled images, computed here without the engine
    order = cell_scores(maps, 4).flatten(1).argsort(dim=1, descending=True, stable=True)
    for t in (0, 3, points - 1):
        x = shuffle_cells(images, 4, order, torch.full((3,), t * 2), 0)
        with torch.no_grad():
            ref = model(x).softmax(1).gather(1, model(images).argmax(1, keepdim=True))[:, 0]
        assert torch.allclose(out[ShuffledPatches()][:, t], ref, atol=1e-6)


def test_the_plugins_two_metrics_share_their_passes_through_evaluate(data, xai_bridge_plugin):
    images, maps = data
    xai_bridge_plugin(ShufflePlugin(), name="shuffle-test-plugin")
    assert {"shuffle_auc", "shuffle_drop"} <= {m.name for m in xb.list_metrics()}
    model = tiny_model()
    executor = Executor(model, compile="eager", progress=False)
    counted = []
    handle = model.register_forward_hook(lambda m, i, o: counted.append(o.shape[0]))
    try:
        both = xb.evaluate(model, images, [], metrics=["shuffle_auc", "shuffle_drop"], maps={"given": maps})
    finally:
        handle.remove()
    points = 16 // 2 + 1  # 16 cells of 4×4, two per step
    # one image probes the chunk size, then one unperturbed pass and one shuffled sequence for the two metrics
    assert counted[0] == 1 and sum(counted[1:]) == 3 + 3 * points
    frame = both.to_frame()
    assert len(frame) == 6 and set(frame.metric) == {"shuffle_auc", "shuffle_drop"}
    curve = Engine(executor).run(images, maps, None, [ShuffledPatches()])[ShuffledPatches()]
    auc = frame[frame.metric == "shuffle_auc"].sort_values("image").value.to_numpy().copy()
    drop = frame[frame.metric == "shuffle_drop"].sort_values("image").value.to_numpy().copy()
    assert torch.allclose(torch.as_tensor(auc, dtype=torch.float32), curve.mean(1), atol=1e-6)
    assert torch.allclose(torch.as_tensor(drop, dtype=torch.float32), curve[:, 0] - curve[:, 4], atol=1e-6)


def test_the_architecture_pages_request_example_runs_as_shown():
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    block = re.search(r"```python\n(from dataclasses import dataclass\n.*?class NoisyCopies.*?)```", page, re.S)
    assert block, "docs/architecture.md lost its request-type example"
    namespace: dict = {}
    exec(compile(block.group(1), "docs/architecture.md", "exec"), namespace)  # its asserts are the test
    assert namespace["engine"].forward_samples == 12
