"""The adapters, exercised through each toolkit's own code paths (Captum, pytorch-grad-cam, Quantus)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import xai_bridge as xb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def images64():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def forward_hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# -- Captum -----------------------------------------------------------------------------------


def test_attribution_is_a_captum_attribution_shaped_like_the_inputs(tiny_resnet, images64):
    from captum.attr import Attribution

    from xai_bridge.adapters.captum import as_attribution

    attr = as_attribution("gradcam", tiny_resnet)
    assert isinstance(attr, Attribution) and attr.forward_func is tiny_resnet
    maps = xb.get_explainer("gradcam", tiny_resnet).explain(images64, target=[3, 5])
    out = attr.attribute(images64, target=torch.tensor([3, 5]))
    assert out.shape == images64.shape
    for c in range(3):  # the map in every channel
        torch.testing.assert_close(out[:, c], maps)
    kept = as_attribution("gradcam", tiny_resnet, keepdim=True).attribute((images64,), target=[3, 5])
    assert isinstance(kept, tuple) and kept[0].shape == (2, 1, 64, 64)
    torch.testing.assert_close(kept[0][:, 0], maps)


def test_noise_tunnel_smoothgrad_equals_the_hand_average(tiny_resnet, images64):
    from captum.attr import NoiseTunnel

    from xai_bridge.adapters.captum import as_attribution

    n, sigma, targets = 3, 0.1, torch.tensor([3, 5])
    torch.manual_seed(11)
    smoothed = NoiseTunnel(as_attribution("gradcam", tiny_resnet)).attribute(
        images64, nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=targets
    )
    # The same noise, drawn as Captum draws it (one normal tensor, samples of an image contiguous).
    torch.manual_seed(11)
    noise = torch.normal(0, torch.tensor(sigma).repeat((2 * n, 3, 64, 64)))
    noisy = images64.repeat_interleave(n, dim=0) + noise
    maps = xb.get_explainer("gradcam", tiny_resnet).explain(noisy, target=targets.repeat_interleave(n))
    expected = maps.view(2, n, 64, 64).mean(1)
    assert smoothed.shape == images64.shape
    torch.testing.assert_close(smoothed[:, 0], expected, rtol=1e-5, atol=1e-6)
    clean = xb.get_explainer("gradcam", tiny_resnet).explain(images64, target=targets)
    assert not torch.allclose(smoothed[:, 0], clean, atol=1e-3), (
        "the noise changed nothing: the test would not see a wrong average"
    )


def test_captum_metrics_call_the_attribution_under_no_grad(tiny_resnet, images64):
    from captum.metrics import infidelity, sensitivity_max

    from xai_bridge.adapters.captum import as_attribution

    attr = as_attribution("gradcam", tiny_resnet)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.03
        return noise, inputs - noise

    torch.manual_seed(0)
    with torch.no_grad():
        attributions = attr.attribute(images64, target=3)
    inf = infidelity(tiny_resnet, perturb, images64, attributions, target=3, n_perturb_samples=4)
    assert inf.shape == (2,) and torch.isfinite(inf).all()
    sens = sensitivity_max(attr.attribute, images64, target=3, n_perturb_samples=3, perturb_radius=0.05)
    assert sens.shape == (2,) and torch.isfinite(sens).all() and (sens > 0).all()
    # Known answer: Fake-CAM ignores the image, so its maximal sensitivity is exactly 0.
    fake = sensitivity_max(as_attribution("fakecam", tiny_resnet).attribute, images64, target=3, n_perturb_samples=3)
    assert torch.equal(fake, torch.zeros(2))


def test_additional_forward_args_reach_the_model(tiny_resnet, images64):
    from xai_bridge.adapters.captum import as_attribution

    class WithBias(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, bias):
            return self.net(x) + bias

    wrapped = WithBias(tiny_resnet).eval()
    bias = torch.zeros(10)
    bias[7] = 1e4  # class 7 becomes everyone's prediction
    out = as_attribution("gradcam", wrapped, layer="net.layer4").attribute(images64, additional_forward_args=(bias,))
    expected = xb.get_explainer("gradcam", tiny_resnet).explain(images64, target=7)
    torch.testing.assert_close(out[:, 0], expected)
    assert tiny_resnet(images64).argmax(1).ne(7).any(), (
        "the bias must change the explained class for this test to mean anything"
    )


def test_visualize_image_attr_draws_the_attribution(tiny_resnet, images64):
    import matplotlib

    matplotlib.use("Agg")
    from captum.attr import visualization as viz

    from xai_bridge.adapters.captum import as_attribution

    attr = as_attribution("deepmaps", tiny_resnet).attribute(images64[:1], target=2)
    _fig, ax = viz.visualize_image_attr(
        attr[0].permute(1, 2, 0).numpy(),
        images64[0].permute(1, 2, 0).numpy(),
        method="blended_heat_map",
        sign="absolute_value",
        use_pyplot=False,
    )
    shown = ax.images[-1].get_array()
    assert shown.shape == (64, 64)
    # Captum sums channels and divides by a top percentile: the drawn heat map orders pixels as our map does.
    ours = xb.get_explainer("deepmaps", tiny_resnet).explain(images64[:1], target=2)[0].numpy()
    top = np.unravel_index(np.argmax(ours), ours.shape)
    assert np.isclose(float(np.asarray(shown)[top]), float(np.asarray(shown).max()))


def test_captum_adapter_bad_input(tiny_resnet, images64):
    from xai_bridge.adapters.captum import as_attribution

    explainer = xb.get_explainer("fakecam", tiny_resnet)
    assert as_attribution(explainer).explainer is explainer
    with pytest.raises(TypeError, match="options"):
        as_attribution(explainer, layer="layer4")
    with pytest.raises(TypeError, match="target"):
        as_attribution("fakecam", tiny_resnet).attribute(images64, target=(0, 1))
    with pytest.raises(ValueError, match="inputs"):
        as_attribution("fakecam", tiny_resnet).attribute((images64, images64))
    with pytest.raises(xb.UnknownNameError, match="gradcam"):
        as_attribution("gradcamm", tiny_resnet)


# -- pytorch-grad-cam -------------------------------------------------------------------------


def test_cam_equals_grad_cam_and_our_normalised_map(tiny_resnet, images64):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xai_bridge.adapters.gradcam import as_cam
    from xai_bridge.engine.maps import normalize_maps

    hooks = forward_hook_count(tiny_resnet)
    targets = [ClassifierOutputTarget(3), ClassifierOutputTarget(5)]
    cam = as_cam("gradcam", tiny_resnet)
    assert isinstance(cam, BaseCAM) and cam.target_layers == [tiny_resnet.layer4[-1]]
    ours = cam(input_tensor=images64, targets=targets)
    assert ours.dtype == np.float32 and ours.shape == (2, 64, 64) and ours.min() >= 0 and ours.max() <= 1
    with GradCAM(model=tiny_resnet, target_layers=[tiny_resnet.layer4[-1]]) as native:
        theirs = native(input_tensor=images64, targets=targets)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # Any explainer: our map, min-max normalised; targets=None explains the prediction.
    deep = as_cam("deepmaps", tiny_resnet)(input_tensor=images64, targets=None)
    predicted = tiny_resnet(images64).argmax(1)
    expected = normalize_maps(xb.get_explainer("deepmaps", tiny_resnet).explain(images64, target=predicted))
    np.testing.assert_allclose(deep, expected.numpy(), atol=1e-6)
    assert forward_hook_count(tiny_resnet) == hooks, "the CAM left hooks on the model"


def test_grad_cam_metrics_and_overlay_take_our_cams(tiny_resnet, images64):
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xai_bridge.adapters.gradcam import as_cam

    targets = [ClassifierOutputTarget(3)] * 2
    cams = as_cam("gradcam", tiny_resnet)(input_tensor=images64, targets=targets)
    road = ROADMostRelevantFirst(percentile=80)(images64, cams, targets, tiny_resnet)
    change = CamMultImageConfidenceChange()(images64, cams, targets, tiny_resnet)
    assert road.shape == (2,) and np.isfinite(road).all()
    # Hand-worked: the change of the class-3 logit when the image is multiplied by the cam.
    with torch.no_grad():
        before = tiny_resnet(images64)[:, 3]
        after = tiny_resnet(images64 * torch.from_numpy(cams)[:, None])[:, 3]
    np.testing.assert_allclose(change, (after - before).numpy(), rtol=1e-4, atol=1e-5)
    overlay = show_cam_on_image(images64[0].permute(1, 2, 0).numpy(), cams[0], use_rgb=True)
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8


def test_cam_targets_and_smoothing(tiny_resnet, images64):
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
        SoftmaxOutputTarget,
    )

    from xai_bridge.adapters.gradcam import as_cam

    cam = as_cam("gradcam", tiny_resnet)
    by_softmax = cam(input_tensor=images64, targets=[ClassifierOutputSoftmaxTarget(4)] * 2)
    np.testing.assert_array_equal(by_softmax, cam(input_tensor=images64, targets=[ClassifierOutputTarget(4)] * 2))
    assert cam(input_tensor=images64, targets=[ClassifierOutputTarget(4)] * 2, aug_smooth=True).shape == (2, 64, 64)
    with pytest.raises(TypeError, match=r"targets\[0\]"):
        cam(input_tensor=images64, targets=[SoftmaxOutputTarget()] * 2)
    with pytest.raises(ValueError, match="targets: 1 targets for 2 images"):
        cam(input_tensor=images64, targets=[ClassifierOutputTarget(4)])
    with pytest.raises(ValueError, match="eigen_smooth"):
        cam(input_tensor=images64, targets=None, eigen_smooth=True)


# -- Quantus ----------------------------------------------------------------------------------


def test_quantus_evaluate_with_our_explain_func_equals_precomputed_attributions(tiny_resnet, images64):
    import quantus

    from xai_bridge.adapters.quantus import explain_func

    x, y = images64.numpy(), np.array([3, 5])
    results = quantus.evaluate(
        metrics={"Sparseness": quantus.Sparseness(disable_warnings=True)},
        xai_methods={"deepmaps": explain_func, "gradcam": explain_func},
        model=tiny_resnet,
        x_batch=x,
        y_batch=y,
        explain_func_kwargs={},
    )
    for name in ("deepmaps", "gradcam"):
        a_batch = xb.get_explainer(name, tiny_resnet).explain(images64, target=torch.tensor(y))[:, None].numpy()
        direct = quantus.Sparseness(disable_warnings=True)(model=tiny_resnet, x_batch=x, y_batch=y, a_batch=a_batch)
        np.testing.assert_allclose(results[name]["Sparseness"], direct, rtol=1e-6)
    assert results["deepmaps"]["Sparseness"] != results["gradcam"]["Sparseness"]


def test_quantus_metrics_that_re_explain_call_our_explain_func(tiny_resnet, images64):
    import quantus

    from xai_bridge.adapters.quantus import explain_func

    x, y = images64.numpy(), np.array([3, 5])
    scores = quantus.RandomLogit(num_classes=10, seed=1, disable_warnings=True)(
        model=tiny_resnet, x_batch=x, y_batch=y, explain_func=explain_func, explain_func_kwargs={"method": "gradcam"}
    )
    assert len(scores) == 2 and np.isfinite(scores).all()
    # Same metric on Fake-CAM: the maps do not depend on the class, so the similarity is perfect.
    fake = quantus.RandomLogit(num_classes=10, seed=1, disable_warnings=True)(
        model=tiny_resnet, x_batch=x, y_batch=y, explain_func=explain_func, explain_func_kwargs={"method": "fakecam"}
    )
    np.testing.assert_allclose(fake, 1.0)
    assert np.all(np.asarray(scores) < 1.0)


def test_explain_func_layouts_devices_and_keys(tiny_resnet, images64):
    from xai_bridge.adapters.quantus import explain_func

    x, y = images64.numpy(), np.array([3, 5])
    first = explain_func(tiny_resnet, x, y, method="gradcam", device="cpu", xai_lib="captum")
    assert first.shape == (2, 1, 64, 64) and first.dtype == np.float32
    last = explain_func(tiny_resnet, x.transpose(0, 2, 3, 1), y, method="gradcam", channel_first=False)
    inferred = explain_func(tiny_resnet, x.transpose(0, 2, 3, 1), y, method="gradcam")
    np.testing.assert_array_equal(first, last)
    np.testing.assert_array_equal(first, inferred)
    # explainer= wins over method= (quantus.evaluate sets method to the xai_methods key).
    np.testing.assert_array_equal(explain_func(tiny_resnet, x, y, method="Display name", explainer="gradcam"), first)
    with pytest.raises(ValueError, match="explain_func_kwargs"):
        explain_func(tiny_resnet, x, y)
    with pytest.raises(ValueError, match="softmax"):
        explain_func(tiny_resnet, x, y, method="gradcam", softmax=True)
    with pytest.raises(ValueError, match="targets: 3 classes for 2 images"):
        explain_func(tiny_resnet, x, np.array([1, 2, 3]), method="gradcam")
    with pytest.raises(ValueError, match="device"):
        explain_func(tiny_resnet, x, y, method="gradcam", device="nowhere")


def fast_protocol():
    # Coarser removal steps than the default keep n_MoRF cheap in a unit test.
    return xb.get_protocol("default", removal_step=0.05, name="fast")


def test_as_quantus_metric_runs_in_quantus_evaluate_and_equals_evaluate(model, photos):
    import quantus
    from quantus.helpers.enums import ScoreDirection

    from xai_bridge.adapters.quantus import as_quantus_metric, explain_func

    images = photos[0][:2]
    x = images.numpy()
    y = model(images).argmax(1).numpy()
    metrics = {
        "average_gain": as_quantus_metric("average_gain", protocol=fast_protocol()),
        "n_morf": as_quantus_metric("n_morf", protocol=fast_protocol()),
        "delta": as_quantus_metric("delta", metric="average_drop", k=1, protocol=fast_protocol()),
        "Sparseness": quantus.Sparseness(disable_warnings=True),
    }
    assert all(isinstance(m, quantus.Metric) for m in metrics.values())
    assert metrics["n_morf"].score_direction == ScoreDirection.LOWER
    results = quantus.evaluate(
        metrics=metrics,
        xai_methods={"gradcam": explain_func},
        model=model,
        x_batch=x,
        y_batch=y,
        explain_func_kwargs={},
    )
    ours = xb.evaluate(
        model,
        images,
        explainers=["gradcam"],
        protocol=fast_protocol(),
        targets=torch.tensor(y),
        progress=False,
        metrics=["average_gain", "n_morf", xb.get_metric("delta", metric="average_drop", k=1)],
    ).to_frame()
    assert metrics["delta"].name == "delta(average_drop)"
    for name, row_name in (("average_gain", "average_gain"), ("n_morf", "n_morf"), ("delta", "delta(average_drop)")):
        expected = ours[ours.metric == row_name].value.to_numpy()
        assert expected.shape == (2,)
        np.testing.assert_allclose(results["gradcam"][name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(set(np.round(results["gradcam"]["n_morf"], 6))) == 2, "both photos gave the same n_MoRF: a weak check"


def test_as_quantus_metric_localisation_from_masks_or_boxes(tiny_resnet, images64):
    from xai_bridge.adapters.quantus import as_quantus_metric, explain_func
    from xai_bridge.evaluation import score_maps

    x, y = images64.numpy(), np.array([3, 5])
    a = explain_func(tiny_resnet, x, y, method="deepmaps")
    s = np.zeros((2, 1, 64, 64), dtype=np.float32)
    s[0, 0, 8:24, 10:30] = 1
    s[1, 0, 40:60, 2:12] = 1
    s[1, 0, 0:5, 50:64] = 1  # two regions: two boxes
    energy = as_quantus_metric("energy_pointing_game")(model=tiny_resnet, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    boxes = [[[10, 8, 30, 24]], [[2, 40, 12, 60], [50, 0, 64, 5]]]
    expected = score_maps(
        tiny_resnet, images64, torch.from_numpy(a[:, 0]), ["energy_pointing_game"], targets=torch.tensor(y), boxes=boxes
    )
    np.testing.assert_allclose(energy, expected["energy_pointing_game"].numpy(), rtol=1e-6)
    by_boxes = as_quantus_metric("energy_pointing_game")(
        model=tiny_resnet, x_batch=x, y_batch=y, a_batch=a, custom_batch=boxes
    )
    np.testing.assert_allclose(by_boxes, energy)
    with pytest.raises(ValueError, match="s_batch"):
        as_quantus_metric("pointing_game")(model=tiny_resnet, x_batch=x, y_batch=y, a_batch=a)


def test_as_quantus_metric_re_explains_with_the_named_explainer(model, photos):
    from xai_bridge.adapters.quantus import as_quantus_metric, explain_func
    from xai_bridge.evaluation import score_maps

    images = photos[0][:2]
    x, y = images.numpy(), model(images).argmax(1).numpy()
    # ADCC's coherency re-explains the masked images with the explainer named in explain_func_kwargs.
    adcc = as_quantus_metric("adcc")(
        model=model, x_batch=x, y_batch=y, explain_func=explain_func, explain_func_kwargs={"method": "gradcam"}
    )
    explainer = xb.get_explainer("gradcam", model)
    maps = explainer.explain(images, target=torch.tensor(y))
    direct = score_maps(model, images, maps, ["adcc"], targets=torch.tensor(y), explainer=explainer)
    np.testing.assert_allclose(adcc, direct["adcc"].numpy(), rtol=1e-5, atol=1e-6)
    assert np.all((np.asarray(adcc) > 0) & (np.asarray(adcc) <= 100))


# -- Every registered explainer ----------------------------------------------------------------

#: Options that keep the slow methods quick on a 32×32 image.
QUICK = {
    "opticam": {"max_iter": 5},
    "rise": {"n_masks": 20},
    "occlusion": {"sliding_window_shapes": (3, 8, 8), "strides": (3, 8, 8)},
    "integrated-gradients": {"n_steps": 4},
    "smoothgrad": {"nt_samples": 2},
    "ablationcam": {"batch_size": 64},
}


#: The only explainers allowed to refuse the ResNet, and the start of the error each must give.
NOT_FOR_A_RESNET = {
    "castream-attention": "model: castream-attention needs a CA-Stream model",
    "dpnet-cam": "model: dpnet-cam explains a DP-Net",
    "dpnet-part": "model: dpnet-part explains a DP-Net",
    "deeplift": "model: DeepLift needs every activation module",
}


@pytest.mark.parametrize("name", [s.name for s in xb.list_explainers()])
def test_every_explainer_gives_one_map_through_the_three_toolkits(name, tiny_resnet):
    from xai_bridge.adapters.captum import as_attribution
    from xai_bridge.adapters.gradcam import as_cam
    from xai_bridge.adapters.quantus import explain_func
    from xai_bridge.engine.maps import normalize_maps

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    options = QUICK.get(name, {})
    try:
        attr = as_attribution(name, tiny_resnet, **options)
    except ValueError as exc:  # explainers made for other architectures say so, naming the model
        if name not in NOT_FOR_A_RESNET or not str(exc).startswith(NOT_FOR_A_RESNET[name]):
            raise
        pytest.skip(str(exc)[:80])
    torch.manual_seed(0)  # the same noise for stochastic methods (smoothgrad) in each toolkit
    try:
        captum_map = attr.attribute(x, target=1)[:, 0]
    except ValueError as exc:
        if name not in NOT_FOR_A_RESNET or not str(exc).startswith(NOT_FOR_A_RESNET[name]):
            raise
        pytest.skip(str(exc)[:80])
    torch.manual_seed(0)
    cam = as_cam(name, tiny_resnet, **options)(input_tensor=x, targets=[_classifier_target(1)])
    torch.manual_seed(0)
    quantus_map = explain_func(tiny_resnet, x.numpy(), np.array([1]), method=name, **options)
    torch.testing.assert_close(torch.from_numpy(quantus_map[:, 0]), captum_map, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cam, normalize_maps(captum_map, "zeros").numpy(), atol=1e-4)


def _classifier_target(k: int):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return ClassifierOutputTarget(k)


# -- Docs -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("page", ["captum.md", "gradcam.md", "quantus.md"])
def test_docs_examples_run(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, f"docs/{page} has no python examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), namespace)
    DOCS_OUTPUTS[page](namespace, tmp_path)


def _captum_outputs(ns: dict, tmp_path) -> None:
    assert {k: tuple(v.shape) for k, v in ns["attributions"].items()} == dict.fromkeys(
        ("Saliency", "IntegratedGradients", "Opti-CAM", "DeepMaps"), (2, 3, 224, 224)
    )
    assert all(torch.isfinite(v).all() and v.abs().sum() > 0 for v in ns["attributions"].values())
    assert tuple(ns["smooth"].shape) == (2, 3, 224, 224) and torch.isfinite(ns["smooth"]).all()
    assert (tmp_path / "opticam_chelsea.png").stat().st_size > 0


def _gradcam_outputs(ns: dict, tmp_path) -> None:
    grayscale, overlay, cams = ns["grayscale"], ns["overlay"], ns["cams"]
    assert grayscale.shape == (2, 224, 224) and grayscale.min() >= 0 and grayscale.max() <= 1 + 1e-6
    assert overlay.shape == (224, 224, 3) and overlay.dtype == np.uint8
    assert cams.shape == (2, 224, 224) and float(cams.min()) >= 0 and float(cams.max()) == pytest.approx(1.0)
    assert np.isfinite(ns["morf"]).all() and np.isfinite(ns["lerf"]).all() and np.isfinite(ns["change"]).all()


def _quantus_outputs(ns: dict, tmp_path) -> None:
    assert set(ns["results"]) == {"opticam", "gradcam", "fakecam"}
    assert all(set(scores) == {"Sparseness", "RandomLogit"} for scores in ns["results"].values())
    assert len(ns["sparseness"]) == 3 and np.isfinite(np.asarray(ns["sparseness"], dtype=float)).all()
    assert set(ns["wrapped"]) == {"opticam", "gradcam"}
    for scores in ns["wrapped"].values():
        assert set(scores) == {"average_gain", "n_morf", "delta", "FaithfulnessCorrelation"}
        assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in scores.values())
    # "Speed up your existing Quantus / grad-cam evaluation": the accelerated metrics' outputs
    assert np.asarray(ns["pf_scores"]).shape == (2, 3 * 224) and set(ns["accelerated"]["gradcam"]) == {"PF", "RP"}
    assert np.asarray(ns["road_scores"]).shape == (2,) and np.isfinite(ns["road_scores"]).all()
    assert {r["metric"] for r in ns["shared"].rows} == {"region_perturbation", "selectivity"}


DOCS_OUTPUTS = {"captum.md": _captum_outputs, "gradcam.md": _gradcam_outputs, "quantus.md": _quantus_outputs}
