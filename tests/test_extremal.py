"""Extremal Perturbation (Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal Perturbations
and Smooth Masks", ICCV 2019) through TorchRay, an optional extra.

The maps are checked against TorchRay's own ``extremal_perturbation`` run on the same model, image,
class and settings; without TorchRay the explainer raises a PluginError naming the extra.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from xai_bridge.errors import InvalidArgumentError, PluginError
from xai_bridge_builtins.perturbation.extremal import ExtremalPerturbation


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 5)
    ).eval()


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


# small control-point grid so that the 32×32 runs are quick; both sides get the same settings
FAST = {"step": 3, "sigma": 5.0, "max_iter": 20}


@pytest.mark.parametrize(
    ("options", "reward"),
    [({"areas": (0.12,)}, "contrastive_reward"), ({"areas": (0.1, 0.3), "reward_func": "simple"}, "simple_reward")],
)
def test_maps_equal_torchrays_own_masks(options, reward):
    ep_module = pytest.importorskip("torchray.attribution.extremal_perturbation")
    model, images, targets = _model(), _images(), [1, 4]
    torch.manual_seed(7)
    ours = ExtremalPerturbation(model, **FAST, **options).explain(images, target=targets)
    torch.manual_seed(7)
    expected = []
    for i, t in enumerate(targets):
        masks, _ = ep_module.extremal_perturbation(
            model,
            images[i : i + 1],
            t,
            areas=list(options["areas"]),
            max_iter=FAST["max_iter"],
            step=FAST["step"],
            sigma=FAST["sigma"],
            reward_func=getattr(ep_module, reward),
        )
        expected.append(masks.sum(dim=(0, 1)))
    reference = torch.stack(expected)
    assert ours.shape == (2, 32, 32)
    assert (ours - reference).abs().max().item() <= 1e-5
    assert reference.std() > 0.01  # the masks are not flat: the comparison means something


def test_the_models_requires_grad_flags_are_restored():
    pytest.importorskip("torchray")
    model = _model()
    model[0].bias.requires_grad_(False)
    ExtremalPerturbation(model, **{**FAST, "max_iter": 2}).explain(_images(1), target=0)
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True]


def test_without_torchray_the_error_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "torchray" or m.startswith("torchray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchray", None)  # `import torchray` now raises ImportError
    with pytest.raises(PluginError, match=r"xai-bridge\[torchray\]"):
        ExtremalPerturbation(_model())


def test_bad_options_are_named():
    pytest.importorskip("torchray")
    for options, word in [
        ({"areas": (0.0,)}, "areas"),
        ({"max_iter": 0}, "max_iter"),
        ({"reward_func": "best"}, "reward_func"),
        ({"perturbation": "noise"}, "perturbation"),
        ({"variant": "both"}, "variant"),
    ]:
        with pytest.raises((InvalidArgumentError, TypeError), match=word):
            ExtremalPerturbation(_model(), **options)
