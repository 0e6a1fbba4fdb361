"""DeepMaps against a per-layer computation written here, its layer sets, its single pass and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import xai_bridge as xb
from xai_bridge.testing import check_explainer_contract

RESNET18_LAYERS = [
    "relu",
    "layer1.0",
    "layer1.1",
    "layer2.0",
    "layer2.1",
    "layer3.0",
    "layer3.1",
    "layer4.0",
    "layer4.1",
]


def per_layer_reference(model, images, targets, names, normalize=True):
    """Σ_l bilinear(minmax(|Σ_φ x^l ∂f_c/∂x^l|)), one forward and one autograd.grad per layer and image."""
    total = torch.zeros(images.shape[0], *images.shape[-2:])
    for b in range(images.shape[0]):
        for name in names:
            module = model.get_submodule(name)
            kept = []
            handle = module.register_forward_hook(lambda m, i, o, kept=kept: kept.append(o))
            with torch.enable_grad():
                logit = model(images[b : b + 1].clone().requires_grad_(True))[0, targets[b]]
            handle.remove()
            (grad,) = torch.autograd.grad(logit, kept[0])
            a = (kept[0] * grad).sum(1).abs()[0].detach()
            if normalize:
                a = (a - a.min()) / (a.max() - a.min())
            total[b] += F.interpolate(a[None, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return total


@pytest.mark.parametrize("normalize", ["layer", "none"])
def test_equals_a_per_layer_computation(tiny_resnet, small_images, normalize):
    targets = [1, 5, 9]
    out = xb.get_explainer("deepmaps", tiny_resnet, normalize=normalize).explanation(small_images, target=targets)
    assert out.info["layers"] == RESNET18_LAYERS
    expected = per_layer_reference(tiny_resnet, small_images, targets, RESNET18_LAYERS, normalize=normalize == "layer")
    assert torch.allclose(out.maps, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    if normalize == "layer":
        assert 1.0 < out.maps.max() <= len(RESNET18_LAYERS) + 1e-4  # each layer adds a map in [0, 1]


def test_explicit_layers_option(tiny_resnet, small_images):
    chosen = ["layer2.1", "layer4.0"]
    maps = xb.get_explainer("deepmaps", tiny_resnet, layers=chosen).explain(small_images, target=2)
    assert torch.allclose(maps, per_layer_reference(tiny_resnet, small_images, [2, 2, 2], chosen), atol=1e-5)
    by_module = xb.get_explainer(
        "deepmaps", tiny_resnet, layers=[tiny_resnet.layer2[1], tiny_resnet.layer4[0]]
    ).explain(small_images, target=2)
    assert torch.equal(maps, by_module)


def test_default_layer_sets():
    from xai_bridge_builtins.deepmaps import default_layers

    with torch.device("meta"):  # names only: no weights allocated
        resnet50, vgg16 = torchvision.models.resnet50(), torchvision.models.vgg16()
    names = default_layers(resnet50)
    assert len(names) == 17 and names[0] == "relu" and names[-1] == "layer4.2"  # the paper's 17 for ResNet-50
    vgg = default_layers(vgg16)
    assert len(vgg) == 13 and all(isinstance(vgg16.get_submodule(n), nn.ReLU) for n in vgg)


def test_default_model_contract_and_layers(model, photos):
    images, _ = photos
    maps = check_explainer_contract("deepmaps", model, images[:2])
    e = xb.get_explainer("deepmaps", model)
    assert [n for n, _ in e.layers] == ["stem"] + [f"blocks.{i}" for i in range(16)]
    assert maps.min() >= 0 and maps.max() <= 17 + 1e-4


def test_one_forward_and_one_backward(tiny_resnet, small_images, monkeypatch):
    e = xb.get_explainer("deepmaps", tiny_resnet)
    forwards, grads = [], []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grads.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: pytest.fail("DeepMaps called backward()"))
    handle = tiny_resnet.register_forward_hook(lambda m, i, o: forwards.append(1))
    try:
        e.attribute(small_images, torch.tensor([0, 1, 2]))
    finally:
        handle.remove()
    assert (len(forwards), len(grads)) == (1, 1)


def test_errors_name_the_problem(tiny_resnet):
    with pytest.raises(ValueError, match=r"no default layer set for a Sequential; pass layers="):
        xb.get_explainer("deepmaps", nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)).eval())
    with pytest.raises(ValueError, match="layer4.9"):
        xb.get_explainer("deepmaps", tiny_resnet, layers=["layer4.9"])
    with pytest.raises(ValueError, match="non-empty list"):
        xb.get_explainer("deepmaps", tiny_resnet, layers="layer4")
    with pytest.raises(ValueError, match="normalize"):
        xb.get_explainer("deepmaps", tiny_resnet, normalize="softmax")

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match="'conv' ran 2 times"):
        xb.get_explainer("deepmaps", Twice().eval(), layers=["conv"]).explain(torch.rand(1, 3, 8, 8))
