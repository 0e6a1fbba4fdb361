"""Every toolkit method through xai-bridge equals calling the toolkit directly."""

from __future__ import annotations

import captum.attr
import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import xai_bridge as xb
from xai_bridge.testing import check_explainer_contract
from xai_bridge_builtins.toolkit import CAPTUM_METHODS, GRADCAM_METHODS
from xai_bridge_builtins.toolkit.explainers import reduce_channels

TARGETS = torch.tensor([3, 7, 1])


def _grad_cam_direct(cam_class, model, images, layer):
    layers = [] if cam_class == "FullGrad" else [layer]
    with getattr(pytorch_grad_cam, cam_class)(model=model, target_layers=layers) as cam:
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS])


@pytest.mark.parametrize("name, cam_class", [(m[0], m[1]) for m in GRADCAM_METHODS])
def test_gradcam_methods_equal_pytorch_grad_cam(name, cam_class, tiny_resnet, small_images):
    ours = xb.get_explainer(name, tiny_resnet).explanation(small_images, TARGETS)
    expected = _grad_cam_direct(cam_class, tiny_resnet, small_images, tiny_resnet.layer4[-1])
    # Maps lie in [0, 1]; Score-CAM's float32 sums over 512 masked forward passes differ in the
    # last bits between batchings and BLAS thread counts (seen: 1.6e-6 on CI), hence 1e-5.
    np.testing.assert_allclose(ours.maps.numpy(), expected, atol=1e-5)
    if cam_class != "FullGrad":  # the layer-resolution map is kept (2×2 for layer4 at 64²)
        assert ours.raw is not None and ours.raw.shape == (3, 2, 2)


CAPTUM_CALLS = {
    "Saliency": lambda m, x, t: captum.attr.Saliency(m).attribute(x, target=t),
    "InputXGradient": lambda m, x, t: captum.attr.InputXGradient(m).attribute(x, target=t),
    "IntegratedGradients": lambda m, x, t: captum.attr.IntegratedGradients(m).attribute(
        x, target=t, n_steps=50, internal_batch_size=32
    ),
    "GuidedBackprop": lambda m, x, t: captum.attr.GuidedBackprop(m).attribute(x, target=t),
    "Occlusion": lambda m, x, t: captum.attr.Occlusion(m).attribute(
        x, target=t, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0.0, perturbations_per_eval=64
    ),
}


@pytest.mark.parametrize("name, captum_class", [(m[0], m[1]) for m in CAPTUM_METHODS if m[1] in CAPTUM_CALLS])
def test_captum_methods_equal_captum(name, captum_class, tiny_resnet, small_images):
    ours = xb.get_explainer(name, tiny_resnet).explain(small_images, TARGETS)
    expected = reduce_channels(CAPTUM_CALLS[captum_class](tiny_resnet, small_images.clone(), TARGETS), "sum_of_abs")
    torch.testing.assert_close(ours, expected.detach(), atol=1e-6, rtol=1e-5)


def test_smoothgrad_equals_noise_tunnel_with_the_same_seed(tiny_resnet, small_images):
    torch.manual_seed(5)
    ours = xb.get_explainer("smoothgrad", tiny_resnet, nt_samples=4, stdevs=0.1).explain(small_images, TARGETS)
    torch.manual_seed(5)
    nt = captum.attr.NoiseTunnel(captum.attr.Saliency(tiny_resnet))
    expected = nt.attribute(
        small_images, target=TARGETS, nt_type="smoothgrad", nt_samples=4, stdevs=0.1, nt_samples_batch_size=8
    )
    torch.testing.assert_close(ours, expected.abs().sum(1), atol=1e-6, rtol=1e-5)


def test_layer_gradcam_equals_captum_and_upsamples_bilinearly(tiny_resnet, small_images):
    explanation = xb.get_explainer("layer-gradcam", tiny_resnet).explanation(small_images, TARGETS)
    raw = captum.attr.LayerGradCam(tiny_resnet, tiny_resnet.layer4[-1]).attribute(
        small_images, target=TARGETS, relu_attributions=True
    )
    torch.testing.assert_close(explanation.raw, raw[:, 0].detach())
    up = torch.nn.functional.interpolate(raw.detach(), size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(explanation.maps, up)


@pytest.mark.parametrize("how", ["sum_of_abs", "abs_of_sum", "sum", "max_abs"])
def test_channel_reductions_by_hand(how):
    a = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # B=1, C=3, 1×1
    expected = {"sum_of_abs": 6.0, "abs_of_sum": 0.0, "sum": 0.0, "max_abs": 3.0}[how]
    assert reduce_channels(a, how).item() == expected


def test_unknown_reduction_is_a_clear_error(tiny_resnet):
    with pytest.raises(ValueError, match="reduce: 'mean'"):
        xb.get_explainer("saliency", tiny_resnet, reduce="mean")


@pytest.mark.parametrize("name", ["gradcam", "saliency", "occlusion"])
def test_contract(name, tiny_resnet, small_images):
    options = {"sliding_window_shapes": (3, 32, 32), "strides": (3, 32, 32)} if name == "occlusion" else {}
    check_explainer_contract(name, tiny_resnet, small_images, **options)


def test_gradcam_on_default_model_is_class_discriminative(model, photos):
    """SPEC §5: Grad-CAM on the last block separates classes on real photos.

    The astronaut photo explained as 'space shuttle' vs 'football helmet' gives unrelated maps,
    and the cat photo's cat map peaks on the cat (the centre of the crop)."""
    images, names = photos
    astronaut = images[names.index("astronaut")][None].repeat(2, 1, 1, 1)
    maps = xb.get_explainer("gradcam", model).explain(astronaut, target=["space shuttle", "football helmet"])
    corr = torch.corrcoef(maps.flatten(1))[0, 1]
    assert corr < 0.5, f"maps for two classes nearly identical (r={corr:.2f})"
    cat = images[names.index("chelsea")][None]
    cam = xb.get_explainer("gradcam", model).explain(cat, target="tabby cat")[0]
    centre, border = cam[56:168, 56:168].mean(), torch.cat([cam[:28].flatten(), cam[-28:].flatten()]).mean()
    assert centre > 2 * border


def test_gradients_left_untouched_on_the_model(tiny_resnet, small_images):
    for p in tiny_resnet.parameters():  # direct toolkit calls in other tests leave gradients behind
        p.grad = None
    xb.get_explainer("gradcam", tiny_resnet).explain(small_images)
    xb.get_explainer("integrated-gradients", tiny_resnet, n_steps=4).explain(small_images)
    assert all(p.grad is None for p in tiny_resnet.parameters())


def test_works_under_no_grad(tiny_resnet, small_images):
    explainer = xb.get_explainer("gradcam", tiny_resnet)
    with torch.no_grad():
        maps = explainer.explain(small_images, TARGETS)
    assert maps.abs().sum() > 0
    torch.testing.assert_close(maps, explainer.explain(small_images, TARGETS))  # the same maps as with gradients


class _SingleUseReLUNet(torch.nn.Module):
    """DeepLift needs every non-linearity module used once (ResNet's BasicBlock reuses its ReLU)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()
        )
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def test_deeplift_equals_captum(small_images):
    net = _SingleUseReLUNet().eval()
    ours = xb.get_explainer("deeplift", net).explain(small_images, TARGETS)
    expected = captum.attr.DeepLift(net).attribute(small_images.clone(), target=TARGETS).abs().sum(1)
    torch.testing.assert_close(ours, expected.detach(), atol=1e-6, rtol=1e-5)


def test_deeplift_on_a_model_reusing_relus_explains_the_limitation(tiny_resnet, small_images):
    with pytest.raises(ValueError, match="applies one module more than once"):
        xb.get_explainer("deeplift", tiny_resnet).explain(small_images, TARGETS)
