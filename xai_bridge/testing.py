"""Pytest plugin shipped with xai-bridge: fixtures and contract checks for plugin authors.

Installed through the ``pytest11`` entry point, so any project with xai-bridge
installed gets these fixtures without configuration:

* ``xai_bridge_plugin`` — register a plugin object for the duration of one test::

      def test_my_explainer(xai_bridge_plugin):
          xai_bridge_plugin(my_plugin_module)
          assert "my-cam" in [s.name for s in xai_bridge.list_explainers()]

* ``xai_bridge_isolated`` — a fresh plugin host for one test (entry points reloaded).

and functions any plugin author can call in their own tests:

* :func:`check_explainer_contract` — shapes, device, dtype, targets, batching,
  training-mode refusal, no hooks or gradients left on the model.
* :func:`check_metric_contract` — descriptor, one finite value per image, batching,
  determinism, refusal of bad maps and of a model in training mode, model untouched,
  and a working Quantus adapter.

This module must stay cheap to import: pytest loads it in every session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def xai_bridge_isolated() -> Iterator[Any]:
    """A fresh :class:`~xai_bridge.manager.PluginHost` for one test; the previous one is restored after."""
    from xai_bridge import manager

    saved = manager._host
    manager._host = manager.PluginHost()
    try:
        yield manager._host
    finally:
        manager._host = saved


@pytest.fixture
def xai_bridge_plugin() -> Iterator[Callable[..., str]]:
    """Register plugin objects for one test: ``xai_bridge_plugin(obj, name=None) -> name``."""
    from xai_bridge.manager import get_host

    host = get_host()
    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> str:
        registered = host.register(plugin, name=name)
        names.append(registered)
        return registered

    try:
        yield register
    finally:
        for name in reversed(names):
            host.unregister(name)


def _hook_count(model: Any) -> int:
    total = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_full_backward_hooks",
            "_full_backward_pre_hooks",
        ):
            total += len(getattr(m, attr, {}) or {})
    return total


def _snapshot(model: Any) -> tuple[dict[str, Any], list[bool], list[Any], int]:
    """What a component must leave as it was: weights, ``requires_grad``, ``.grad`` and hook count."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    return state, [p.requires_grad for p in params], [p.grad for p in params], _hook_count(model)


def _assert_untouched(name: str, model: Any, snapshot: tuple[dict[str, Any], list[bool], list[Any], int]) -> None:
    import torch

    state, flags, grads, hooks = snapshot
    after = model.state_dict()
    for key, value in state.items():
        assert torch.equal(after[key], value), f"{name}: changed the model's {key}"
    assert [p.requires_grad for p in model.parameters()] == flags, f"{name}: changed requires_grad on the model"
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=False)), (
        f"{name}: left .grad on the model's parameters"
    )
    assert _hook_count(model) == hooks, f"{name}: left hooks on the model"


def check_explainer_contract(name: str, model: Any, images: Any, **options: Any) -> Any:
    """Assert that the explainer ``name`` honours the xai-bridge explainer contract on ``model``.

    Checks: ``explain`` returns a float ``B×H×W`` tensor on the images' device;
    every accepted form of ``target`` (None, int, per-image list, tensor) works and
    an out-of-range class raises ``ValueError``; explaining images one by one gives
    the maps of the batch; a model in training mode is refused; the model's
    parameters, ``requires_grad`` flags, ``.grad`` and hooks are as before.
    Returns the maps of ``images`` for further checks.
    """
    import torch

    import xai_bridge as xb

    snapshot = _snapshot(model)

    explainer = xb.get_explainer(name, model, **options)
    maps = explainer.explain(images)
    b, _, h, w = images.shape
    assert isinstance(maps, torch.Tensor), f"{name}: explain() must return a tensor"
    assert tuple(maps.shape) == (b, h, w), f"{name}: maps have shape {tuple(maps.shape)}, expected {(b, h, w)}"
    assert maps.is_floating_point(), f"{name}: maps must be floating point"
    assert maps.device == images.device, f"{name}: maps on {maps.device}, images on {images.device}"
    assert torch.isfinite(maps).all(), f"{name}: maps contain NaN or inf"

    with torch.no_grad():
        num_classes = model(images[:1]).shape[-1]
    explainer.explain(images, target=0)
    explainer.explain(images, target=[i % num_classes for i in range(b)])
    explainer.explain(images, target=torch.zeros(b, dtype=torch.long, device=images.device))
    try:
        explainer.explain(images, target=num_classes)
    except ValueError:
        pass
    else:  # pragma: no cover - a broken explainer
        raise AssertionError(f"{name}: target={num_classes} (out of range) must raise ValueError")

    if b > 1:
        single = torch.cat([explainer.explain(images[i : i + 1]) for i in range(b)])
        assert torch.allclose(single, maps, atol=1e-4, rtol=1e-3), (
            f"{name}: explaining images one by one differs from the batch"
        )

    model.train()
    try:
        explainer.explain(images)
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError(f"{name}: a model in training mode must be refused")
    finally:
        model.eval()

    _assert_untouched(name, model, snapshot)
    return maps


def _expect_value_error(what: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except ValueError:
        return
    raise AssertionError(f"{what} must raise ValueError")  # pragma: no cover - a broken metric


def check_metric_contract(
    name: str,
    model: Any,
    images: Any,
    maps: Any = None,
    *,
    protocol: Any = None,
    batch_invariant: bool = True,
    atol: float = 1e-5,
    **options: Any,
) -> Any:
    """Assert that the metric ``name`` honours the xai-bridge metric contract on ``model``.

    Checks: the registered descriptor agrees with the metric object (direction, with default
    options; category);
    :func:`xai_bridge.score_maps` gives one finite float per image on the images' device;
    scoring twice gives the same values; scoring the images one at a time gives the
    batch's values (pass ``batch_invariant=False`` for metrics that read other images'
    maps, such as Δσ); maps with NaN or of the wrong shape and a model in training mode
    are refused with ``ValueError``; the model's parameters, ``requires_grad`` flags,
    ``.grad`` and hooks are as before; ``as_quantus_metric(name)`` is a ``quantus.Metric``.
    ``maps`` defaults to a seeded random ``B×H×W`` map. Returns the batch's values.
    """
    import torch

    import xai_bridge as xb
    from xai_bridge.registry import METRIC_CATEGORIES

    spec = xb.metric_spec(name)
    metric = xb.get_metric(name, **options)
    assert isinstance(metric, xb.Metric), (
        f"{name}: the factory returned {type(metric).__name__}, expected a xai_bridge.Metric"
    )
    assert spec.category in METRIC_CATEGORIES, (
        f"{name}: category {spec.category!r} is not one of Quantus's {METRIC_CATEGORIES}"
    )
    if not options:  # options may change the direction (Δσ follows its wrapped metric; AFOC's order)
        assert metric.higher_is_better == spec.higher_is_better, (
            f"{name}: registered higher_is_better={spec.higher_is_better} but the metric object says "
            f"{metric.higher_is_better}"
        )
    b, _, h, w = images.shape
    if maps is None:
        maps = torch.rand(b, h, w, generator=torch.Generator().manual_seed(0)).to(images.device)

    snapshot = _snapshot(model)

    def score(x: Any, s: Any) -> Any:
        return xb.score_maps(model, x, s, [metric], protocol)[metric.name]

    values = score(images, maps)
    assert isinstance(values, torch.Tensor) and values.shape == (b,), (
        f"{name}: expected one value per image, got {getattr(values, 'shape', values)}"
    )
    assert values.is_floating_point() and torch.isfinite(values).all(), (
        f"{name}: values must be finite floats, got {values.tolist()}"
    )
    assert values.device == images.device, f"{name}: values on {values.device}, images on {images.device}"
    torch.testing.assert_close(score(images, maps), values, atol=atol, rtol=0, msg=f"{name}: scoring twice differs")
    if batch_invariant and b > 1:
        single = torch.cat([score(images[i : i + 1], maps[i : i + 1]) for i in range(b)])
        torch.testing.assert_close(
            single, values, atol=atol, rtol=1e-4, msg=f"{name}: scoring images one by one differs from the batch"
        )

    nan_maps = maps.clone()
    nan_maps[0, 0, 0] = float("nan")
    _expect_value_error(f"{name}: maps containing NaN", lambda: score(images, nan_maps))
    _expect_value_error(
        f"{name}: maps of shape {(b, h + 1, w)} for {h}×{w} images",
        lambda: score(images, torch.rand(b, h + 1, w, device=images.device)),
    )
    model.train()
    try:
        _expect_value_error(f"{name}: a model in training mode", lambda: score(images, maps))
    finally:
        model.eval()

    _assert_untouched(name, model, snapshot)

    import quantus

    from xai_bridge.adapters.quantus import as_quantus_metric

    assert isinstance(as_quantus_metric(name, **options), quantus.Metric), (
        f"{name}: as_quantus_metric did not give a quantus.Metric"
    )
    return values
