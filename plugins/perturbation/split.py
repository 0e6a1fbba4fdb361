"""Run a classifier from one layer's output onward: the tail of the model after a target layer.

Ablation-CAM changes the target layer's activations and needs only what follows. A model is
traced with :mod:`torch.fx`, tracing into the modules that contain the target layer only (every
other module is one opaque call, so blocks with Python control flow do not matter), and the
nodes that depend on the layer's output become a new module ``tail(activations) → logits``. The
split is refused, with the reason, when the trace fails, the layer runs more than once, or the
rest of the network needs another value computed before the layer (a residual branch around it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn


class _Tracer(fx.Tracer):
    def __init__(self, target: nn.Module, ancestors: set[int]) -> None:
        super().__init__()
        self.target, self.ancestors = target, ancestors

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is self.target or id(m) not in self.ancestors


def tail_after(model: nn.Module, layer: nn.Module) -> tuple[nn.Module | None, str]:
    """``(tail, "")`` with ``tail(layer's output) == model(x)``, or ``(None, reason)`` when it cannot be split.

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()
    >>> x = torch.rand(1, 3, 5, 5); _ = net(x)
    >>> tail, why = tail_after(net, net[1])
    >>> bool(torch.allclose(tail(net[:2](x)), net(x))), why
    (True, '')
    """
    names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
    if id(layer) not in names:
        return None, "the layer is not a module of the model"
    target_name = names[id(layer)]
    ancestors = {id(model)}
    parts = target_name.split(".")
    for i in range(1, len(parts)):
        ancestors.add(id(model.get_submodule(".".join(parts[:i]))))
    try:
        graph = _Tracer(layer, ancestors).trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "use full passes"
        return None, f"torch.fx cannot trace the model's forward ({type(exc).__name__}: {str(exc)[:120]})"
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == target_name]
    if len(calls) != 1:
        return None, f"the layer runs {len(calls)} times in the traced forward pass"
    start = calls[0]
    downstream: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op != "output" and any(a is start or a in downstream for a in node.all_input_nodes):
            downstream.add(node)
    output = next(n for n in graph.nodes if n.op == "output")
    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start: tail.placeholder("activations")}
    for node in graph.nodes:
        if node in downstream or node is output:
            for arg in node.all_input_nodes:
                if arg in env:
                    continue
                if arg.op == "get_attr":
                    env[arg] = tail.node_copy(arg, lambda a: env[a])
                else:
                    return None, f"the rest of the network also reads {arg.name!r}, computed before the layer"
            env[node] = tail.node_copy(node, lambda a: env[a])
    tail.lint()
    return fx.GraphModule(model, tail), ""


class ReplacedLayer(nn.Module):
    """The fallback tail: the whole model on one image, with the layer's output replaced by the input.

    ``forward(activations)`` runs ``model(image repeated)`` with a forward hook returning
    ``activations`` from the layer: every layer before it is recomputed (what the toolkits do).
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.model, self.layer = model, layer
        self.image: torch.Tensor | None = None

    def forward(self, activations: torch.Tensor) -> Any:
        assert self.image is not None
        handle = self.layer.register_forward_hook(lambda _m, _i, _o: activations)
        try:
            return self.model(self.image.expand(activations.shape[0], *self.image.shape[1:]))
        finally:
            handle.remove()
