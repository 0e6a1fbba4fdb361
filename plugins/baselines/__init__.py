"""Built-in plugin: baseline maps that look at no model — sanity cases for the metrics.

* ``fakecam``: ones everywhere but a 0 at the top-left pixel (Poppi et al. 2021). Masking
  with it keeps the image, so it scores a near-perfect Average Drop and ~0 Average Gain.
* ``random``: uniform ``[0,1)`` noise, reproducible: the map depends only on ``seed`` and
  the image's pixels, so an image gets the same map alone or in any batch.
* ``center-gaussian``: ``exp(−(dx² + dy²) / (2σ²))`` around the image centre, with ``dx``,
  ``dy`` the offsets of pixel centres in units of the image width / height.

None of them needs gradients. This module only registers (cheap to import); the classes
live in :mod:`xai_bridge_builtins.baselines.explainers` (also importable from here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xai_bridge import hookimpl
from xai_bridge.lazy import lazy_factory, lazy_getattr

__getattr__ = lazy_getattr(__name__, "xai_bridge_builtins.baselines.explainers")


def _factory(class_name: str) -> Callable[..., Any]:
    return lazy_factory("xai_bridge_builtins.baselines.explainers", class_name)


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    register(
        "fakecam",
        _factory("FakeCAM"),
        aliases=("fake-cam",),
        family="baseline",
        description="Fake-CAM: ones with the top-left pixel 0; near-perfect AD, ~0 AG (Poppi et al. 2021).",
    )
    register(
        "random",
        _factory("RandomMap"),
        aliases=("random-map",),
        family="baseline",
        description="Uniform random map, reproducible per (seed, image); the Δ-metrics' reference scores ~0.",
    )
    register(
        "center-gaussian",
        _factory("CenterGaussian"),
        aliases=("centre-gaussian", "center-bias"),
        family="baseline",
        description="Gaussian bump at the image centre (option sigma, fraction of the side): the centre-bias baseline.",
    )
