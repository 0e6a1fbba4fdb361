"""The embedded default model, the photos, target resolution and layer resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import xai_bridge as xb
from xai_bridge.layers import find_layer, vit_tokens_to_grid
from xai_bridge.models import load_efficientnet_lite0_package_model
from xai_bridge.targets import resolve_targets


def test_default_model_equals_the_package_model_on_its_own_preprocessing(model, photos):
    images, _ = photos
    net = load_efficientnet_lite0_package_model()
    with torch.no_grad():
        ours = model(images[:3])
        theirs = net((255 * images[:3] - 127) / 128)
    torch.testing.assert_close(ours, theirs)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)


def test_default_model_gives_sensible_top5_on_the_photos(model, photos):
    images, names = photos
    classes = xb.imagenet_classes()
    with torch.no_grad():
        top5 = model(images).topk(5).indices
    top = {n: [classes[i] for i in row] for n, row in zip(names, top5.tolist(), strict=False)}
    assert any("cat" in c.lower() or c in {"Egyptian Mau"} for c in top["chelsea"]), top["chelsea"]
    assert {"tabby cat", "Egyptian Mau"} & set(top["chelsea"])
    assert "espresso" in top["coffee"]
    assert {"moped", "motor scooter"} & set(top["motorcycle_left"])
    assert "daisy" in top["flower"]
    assert "military uniform" in top["grace_hopper"]


def test_sample_images_shape_range_and_names(photos):
    images, names = photos
    assert images.shape == (9, 3, 224, 224) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert names[:2] == ["astronaut", "chelsea"] and len(set(names)) == 9
    sub, sub_names = xb.sample_images(["coffee"], size=96)
    assert sub.shape == (1, 3, 96, 96) and sub_names == ["coffee"]
    with pytest.raises(ValueError, match="no embedded photo called 'cofee'.*'coffee'"):
        xb.sample_images(["cofee"])


def test_imagenet_classes_in_standard_order():
    classes = xb.imagenet_classes()
    assert len(classes) == 1000 and classes[0] == "tench" and classes[281] == "tabby cat"


@pytest.mark.parametrize(
    "target, expected",
    [
        (None, [2, 0]),
        (5, [5, 5]),
        ("tabby cat", [281, 281]),
        (["tench", 1], [0, 1]),
        (torch.tensor([4, 9]), [4, 9]),
        (torch.tensor(3), [3, 3]),
    ],
)
def test_resolve_targets_forms(target, expected):
    logits = torch.zeros(2, 1000)
    logits[0, 2] = logits[1, 0] = 1.0
    assert resolve_targets(target, 2, logits=logits).tolist() == expected


@pytest.mark.parametrize(
    "target, error, message",
    [
        (1000, ValueError, r"class 1000 is out of range; the model has 1000 classes"),
        (-1, ValueError, "class -1 is out of range"),
        ("tabby kat", ValueError, "Close matches: 'tabby cat'"),
        ([1, 2, 3], ValueError, "got 3 classes for 2 images"),
        (1.5, TypeError, "expected None, an int"),
        (torch.tensor([0.5, 1.0]), TypeError, "floating-point"),
    ],
)
def test_resolve_targets_errors(target, error, message):
    with pytest.raises(error, match=message):
        resolve_targets(target, 2, logits=torch.zeros(2, 1000))


def test_class_name_needs_class_names_for_a_non_imagenet_model():
    with pytest.raises(ValueError, match="pass class_names"):
        resolve_targets("cat", 1, num_classes=10)
    assert resolve_targets("dog", 1, num_classes=3, class_names=["cat", "dog", "bird"]).tolist() == [1]


def test_explainer_refuses_training_mode_and_bad_images(tiny_resnet):
    explainer = xb.get_explainer("gradcam", tiny_resnet)
    with pytest.raises(ValueError, match="add a batch dimension"):
        explainer.explain(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        explainer.explain(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    tiny_resnet.train()
    try:
        with pytest.raises(ValueError, match=r"training mode.*model.eval\(\)"):
            explainer.explain(torch.rand(1, 3, 32, 32))
    finally:
        tiny_resnet.eval()


@pytest.mark.parametrize(
    "factory, expected",
    [
        (lambda: torchvision.models.resnet18(), "layer4.1"),
        (lambda: torchvision.models.vgg11(), "features.19"),
        (lambda: torchvision.models.convnext_tiny(), "features.7"),
        (lambda: torchvision.models.densenet121(), "features.norm5"),
        (lambda: torchvision.models.mobilenet_v3_small(), "features.12"),
        (lambda: torchvision.models.mobilenet_v2(), "features.18"),
    ],
)
def test_target_layer_per_architecture(factory, expected):
    net = factory().eval()
    assert find_layer(net).name == expected


def test_default_model_layer_is_the_head(model):
    layer = find_layer(model)
    assert layer.name == "head" and layer.module is model.head


def test_vit_layer_and_token_reshape():
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    layer = find_layer(vit)
    assert layer.name == "encoder.layers.1.ln_1" and layer.reshape is vit_tokens_to_grid
    tokens = torch.arange(2 * 17 * 16, dtype=torch.float32).reshape(2, 17, 16)
    grid = vit_tokens_to_grid(tokens)
    assert grid.shape == (2, 16, 4, 4)
    assert torch.equal(grid[1, :, 0, 1], tokens[1, 2])  # patch token 1 (after CLS) sits at row 0, column 1
    maps = xb.get_explainer("gradcam", vit).explain(torch.rand(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32)


def test_explicit_layer_wins_and_unknown_names_list_close_matches(tiny_resnet):
    assert xb.get_explainer("gradcam", tiny_resnet, layer="layer3").target_layer.name == "layer3"
    assert xb.get_explainer("gradcam", tiny_resnet, layer="layer4[-1]").layer is tiny_resnet.layer4[1]
    assert xb.get_explainer("gradcam", tiny_resnet, layer=tiny_resnet.layer2).target_layer.name == "layer2"
    with pytest.raises(ValueError, match=r"'layer5' is not a module.*Close matches: layer4, layer3"):
        xb.get_explainer("gradcam", tiny_resnet, layer="layer5")
    with pytest.raises(ValueError, match="not part of the model"):
        xb.get_explainer("gradcam", tiny_resnet, layer=torch.nn.Conv2d(1, 1, 1))


def test_maps_follow_the_input_resolution_and_raw_is_kept(model, photos):
    images, _ = photos
    explanation = xb.get_explainer("gradcam", model).explanation(images[:2])
    assert explanation.maps.shape == (2, 224, 224) and explanation.raw.shape == (2, 7, 7)
    assert np.isclose(float(explanation.probabilities[0]), float(explanation.logits.softmax(-1).max(-1).values[0]))
