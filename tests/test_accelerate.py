"""accelerate(): toolkit metrics on the engine give the toolkit's own numbers, on the real model and photos.

Each test calls the toolkit's metric and the accelerated one on the same inputs (after the same
``np.random.seed`` / ``torch.manual_seed``) and compares: equal within 1e-5 (the float32 noise of
different forward batch sizes is about 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam.metrics.road as gradcam_metrics
import quantus
import torch

import xai_bridge as xb
from xai_bridge.errors import UnsupportedMetricError


@pytest.fixture(scope="module")
def case(model, photos):
    """Two photos, their Grad-CAM maps and predicted classes."""
    images = photos[0][:2]
    maps = xb.get_explainer("gradcam", model).explain(images)
    with torch.no_grad():
        y = model(images).argmax(1)
    return images, maps, y


def _both(metric, model, case, seed=0, **kwargs):
    images, maps, y = case
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    fast = xb.accelerate(metric)
    np.random.seed(seed)
    theirs = metric(**args, **kwargs)
    state = np.random.get_state()[1].copy()
    np.random.seed(seed)
    ours = fast(**args, **kwargs)
    assert np.array_equal(np.random.get_state()[1], state), "NumPy's random state must advance as in the toolkit"
    return np.asarray(theirs, dtype=np.float64), np.asarray(ours, dtype=np.float64), fast


QUANTUS_CASES = {
    "pf-black": lambda: quantus.PixelFlipping(features_in_step=224 * 56, disable_warnings=True),
    "pf-mean-auc": lambda: quantus.PixelFlipping(
        features_in_step=224 * 56, perturb_baseline="mean", return_auc_per_sample=True, disable_warnings=True
    ),
    "pf-uniform-abs": lambda: quantus.PixelFlipping(
        features_in_step=224 * 112,
        perturb_baseline="uniform",
        perturb_func_kwargs={"uniform_low": 0.2, "uniform_high": 0.6},
        abs=True,
        disable_warnings=True,
    ),
    "rp-morf": lambda: quantus.RegionPerturbation(patch_size=56, regions_evaluation=6, disable_warnings=True),
    "rp-lerf-white": lambda: quantus.RegionPerturbation(
        patch_size=56, regions_evaluation=6, order="lerf", perturb_baseline="white", disable_warnings=True
    ),
    "rp-random-mean-padded": lambda: quantus.RegionPerturbation(
        patch_size=60, regions_evaluation=5, order="random", perturb_baseline="mean", disable_warnings=True
    ),
    "selectivity-padded": lambda: quantus.Selectivity(patch_size=75, disable_warnings=True),
    "selectivity-const-aggregate": lambda: quantus.Selectivity(
        patch_size=112, perturb_baseline=0.5, return_aggregate=True, normalise=False, disable_warnings=True
    ),
}


@pytest.mark.parametrize("name", list(QUANTUS_CASES))
def test_quantus_metric_equals_the_toolkit(model, case, name, monkeypatch):
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus's calculate_auc on NumPy 2.4
    metric = QUANTUS_CASES[name]()
    theirs, ours, fast = _both(metric, model, case, seed=7)
    assert isinstance(fast, type(metric)) and isinstance(fast, quantus.Metric)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert fast.forward_samples > 0


def test_toolkit_defect_quantus_auc_calls_np_trapz_absent_from_numpy_2(model, case):
    """Quantus 0.6.0's ``calculate_auc`` calls ``np.trapz`` (removed in NumPy 2.4); the accelerated metric does not.
    When this test fails on the toolkit side, Quantus fixed it: drop the shim in the equality test."""
    metric = quantus.PixelFlipping(features_in_step=224 * 112, return_auc_per_sample=True, disable_warnings=True)
    images, maps, y = case
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    if not hasattr(np, "trapz"):
        with pytest.raises(AttributeError, match="trapz"):
            metric(**args)
    assert np.isfinite(xb.accelerate(metric)(**args)).all()


def test_pixel_flipping_step_count_and_forward_samples(model, case):
    metric = quantus.PixelFlipping(features_in_step=224 * 56, disable_warnings=True)
    theirs, ours, fast = _both(metric, model, case)
    assert ours.shape == (2, 12)  # Quantus steps over the 3·224² channel features: 3·224² / (224·56) = 12 steps
    assert fast.forward_samples == 2 * 12


def test_accelerated_metric_runs_inside_quantus_evaluate(model, case):
    images, maps, y = case
    metrics = {
        "PF": quantus.PixelFlipping(features_in_step=224 * 112, disable_warnings=True, return_aggregate=True),
        "RP": quantus.RegionPerturbation(patch_size=112, regions_evaluation=3, disable_warnings=True),
    }
    kwargs = dict(xai_methods={"gc": maps[:, None].numpy()}, model=model, x_batch=images.numpy(), y_batch=y.numpy())
    theirs = quantus.evaluate(metrics=metrics, **kwargs)
    ours = quantus.evaluate(metrics={k: xb.accelerate(m) for k, m in metrics.items()}, **kwargs)
    for key in metrics:
        np.testing.assert_allclose(np.asarray(ours["gc"][key]), np.asarray(theirs["gc"][key]), atol=1e-5)


# -- pytorch-grad-cam ---------------------------------------------------------------------------------
def _gradcam_both(metric, model, case, target_cls, **kwargs):
    images, maps, y = case
    targets = [target_cls(int(c)) for c in y]
    cams = maps.numpy()
    torch.manual_seed(5)
    theirs = metric(images, cams, targets, model, **kwargs)
    fast = xb.accelerate(metric)
    torch.manual_seed(5)
    ours = fast(images, cams, targets, model, **kwargs)
    return np.asarray(theirs), np.asarray(ours), fast


@pytest.mark.parametrize("name", ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence"])
@pytest.mark.parametrize("target", ["logit", "softmax"])
def test_gradcam_confidence_metric_equals_the_toolkit(model, case, name, target):
    from pytorch_grad_cam.metrics import cam_mult_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    cls = ClassifierOutputTarget if target == "logit" else ClassifierOutputSoftmaxTarget
    theirs, ours, fast = _gradcam_both(getattr(cam_mult_image, name)(), model, case, cls)
    assert theirs.dtype == ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert fast.forward_samples == 4  # the images and the masked images


def test_gradcam_road_equals_the_toolkit_and_shares_the_base_pass(model, case):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    road = gradcam_metrics.ROADMostRelevantFirst(percentile=50)
    theirs, ours, _ = _gradcam_both(road, model, case, ClassifierOutputSoftmaxTarget)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    combined = gradcam_metrics.ROADCombined(percentiles=[40])
    theirs, ours, fast = _gradcam_both(combined, model, case, ClassifierOutputSoftmaxTarget)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert fast.forward_samples == 2 + 2 * 2  # one base pass; grad-cam makes one per percentile and order


# -- refusing what cannot be reproduced -------------------------------------------------------------------
def test_unsupported_metrics_and_settings_are_named_and_can_fall_back():
    with pytest.raises(UnsupportedMetricError, match=r"quantus\.FaithfulnessCorrelation is not accelerated yet"):
        xb.accelerate(quantus.FaithfulnessCorrelation(disable_warnings=True))
    custom = quantus.PixelFlipping(perturb_func=lambda arr, indices, **kw: arr, disable_warnings=True)
    with pytest.raises(UnsupportedMetricError, match="perturb_func"):
        xb.accelerate(custom)
    assert xb.accelerate(custom, fallback=True) is custom
    with pytest.raises(UnsupportedMetricError, match="perturb_func_kwargs"):
        xb.accelerate(quantus.PixelFlipping(perturb_func_kwargs={"foo": 1}, disable_warnings=True))
    with pytest.raises(UnsupportedMetricError, match="perturb_baseline"):
        xb.accelerate(quantus.PixelFlipping(perturb_baseline="neighbourhood_mean", disable_warnings=True))
    with pytest.raises(UnsupportedMetricError, match="expected an instance of a supported toolkit metric"):
        xb.accelerate(object())


def test_bad_input_names_the_argument(model, case):
    images, maps, y = case
    pf = xb.accelerate(quantus.PixelFlipping(features_in_step=224 * 112, disable_warnings=True, normalise=False))
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), device="cpu")
    bad = maps[:, None].numpy().copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"a_batch: attribution\(s\) \[1\] contain NaN"):
        pf(a_batch=bad, **args)
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    drop = xb.accelerate(DropInConfidence())
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    with pytest.raises(ValueError, match="cams: expected one H×W map per image"):
        drop(images, maps[:, :100].numpy(), targets, model)
    with pytest.raises(ValueError, match=r"targets: expected one target per image \(2\)"):
        drop(images, maps.numpy(), targets[:1], model)
    model.train()
    try:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            drop(images, maps.numpy(), targets, model)
    finally:
        model.eval()


def test_accelerate_is_reachable_lazily_and_after_a_submodule_import():
    import importlib

    module = importlib.import_module("xai_bridge.accelerate")
    assert callable(xb.accelerate) and callable(module)
    assert "quantus.PixelFlipping" in module.supported_metrics()
