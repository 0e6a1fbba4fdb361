"""Built-in plugin: perturbation explainers on the engine's executor.

RISE (Petsiuk, Das & Saenko 2018), Score-CAM (Wang et al. 2020), Ablation-CAM (Desai &
Ramaswamy 2020) and Occlusion (Zeiler & Fergus 2014). Their masked inputs do not depend on the
class, so each explains several classes per image (``target="top5"`` or ``B×k``) from one set
of forward passes, built on the device a block at a time and sent through one
:class:`~xai_bridge.engine.Executor`.

Registration only; the classes live beside this module (``rise``, ``scorecam``,
``ablationcam``, ``occlusion``) and are importable from here too
(``from xai_bridge_builtins.perturbation import RISE``).

Extremal Perturbation (Fong, Patrick & Vedaldi 2019, module ``extremal``) is registered here too
but runs TorchRay's own per-image optimisation loop (an optional extra), not the executor.
"""

from __future__ import annotations

from collections.abc import Callable

from xai_bridge import hookimpl
from xai_bridge.lazy import lazy_factory

_MODULES = {
    "RISE": "rise",
    "ScoreCAM": "scorecam",
    "AblationCAM": "ablationcam",
    "Occlusion": "occlusion",
    "ExtremalPerturbation": "extremal",
}


def __getattr__(name: str) -> object:  # PEP 562: the classes on first use
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    register(
        "rise",
        lazy_factory(f"{__name__}.rise", "RISE"),
        family="perturbation",
        description=(
            "RISE: mean of random soft masks weighted by the class probability of the masked image "
            "(Petsiuk, Das & Saenko 2018)."
        ),
    )
    register(
        "scorecam",
        lazy_factory(f"{__name__}.scorecam", "ScoreCAM"),
        aliases=("score-cam",),
        family="cam",
        needs_layer=True,
        description="Score-CAM: weights = softmax of the score of the image masked by each channel (Wang et al. 2020).",
    )
    register(
        "ablationcam",
        lazy_factory(f"{__name__}.ablationcam", "AblationCAM"),
        aliases=("ablation-cam",),
        family="cam",
        needs_layer=True,
        description=(
            "Ablation-CAM: weights = relative score drop when each channel is ablated, the rest of the network "
            "only (Desai & Ramaswamy 2020)."
        ),
    )
    register(
        "occlusion",
        lazy_factory(f"{__name__}.occlusion", "Occlusion"),
        family="perturbation",
        description="Occlusion: score drop when a sliding window is replaced by the baseline (Zeiler & Fergus 2014).",
    )
    register(
        "extremal-perturbation",
        lazy_factory(f"{__name__}.extremal", "ExtremalPerturbation"),
        aliases=("extremal",),
        family="optimisation",
        description=(
            "Extremal Perturbation: TorchRay's optimised smooth mask of a given area that keeps the class score "
            "(Fong, Patrick & Vedaldi 2019); needs the 'torchray' extra."
        ),
    )
