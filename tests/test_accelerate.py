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
    with pytest.raises(UnsupportedMetricError, match=r"quantus\.Sufficiency is not accelerated yet"):
        xb.accelerate(quantus.Sufficiency(disable_warnings=True))
    with pytest.raises(UnsupportedMetricError, match="perturb_baseline: IROF with 'uniform'"):
        xb.accelerate(quantus.IROF(perturb_baseline="uniform", disable_warnings=True))
    with pytest.raises(UnsupportedMetricError, match=r"perturb_func_kwargs: ROAD .*\['foo'\]"):
        xb.accelerate(quantus.ROAD(perturb_func_kwargs={"foo": 1}, disable_warnings=True))
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


# -- metrics that perturb one group or subset at a time, from the unperturbed image -----------------------
ONE_AT_A_TIME_CASES = {
    # name: (metric factory, forward samples of the accelerated metric on 2 photos)
    "fe-black": (lambda: quantus.FaithfulnessEstimate(features_in_step=224 * 56, disable_warnings=True), 2 + 2 * 12),
    "fe-uniform-abs": (
        lambda: quantus.FaithfulnessEstimate(
            features_in_step=224 * 32, perturb_baseline="uniform", abs=True, disable_warnings=True
        ),
        2 + 2 * 21,
    ),
    "mc-black-shared": (
        lambda: quantus.MonotonicityCorrelation(
            features_in_step=224 * 56, nr_samples=3, perturb_baseline="black", disable_warnings=True
        ),
        2 + 2 * 12,  # the 3 samples of a group are the same image: scored once (the toolkit: 3 times)
    ),
    "mc-uniform": (
        lambda: quantus.MonotonicityCorrelation(features_in_step=224 * 112, nr_samples=3, disable_warnings=True),
        2 + 2 * 6 * 3,
    ),
    "fc-black": (
        lambda: quantus.FaithfulnessCorrelation(nr_runs=8, subset_size=224 * 28, disable_warnings=True),
        2 + 2 * 8,
    ),
    "fc-mean-aggregate": (
        lambda: quantus.FaithfulnessCorrelation(
            nr_runs=6, subset_size=224 * 56, perturb_baseline="mean", return_aggregate=True, disable_warnings=True
        ),
        2 + 2 * 6,
    ),
}


@pytest.mark.parametrize("name", list(ONE_AT_A_TIME_CASES))
def test_one_at_a_time_metric_equals_the_toolkit(model, case, name):
    make, samples = ONE_AT_A_TIME_CASES[name]
    metric = make()
    theirs, ours, fast = _both(metric, model, case, seed=11)
    assert isinstance(fast, type(metric)) and isinstance(fast, quantus.Metric)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert fast.forward_samples == samples


# -- where Quantus 0.6.0 is wrong: the published definition, a warning, the defect shown ------------------
def _linear(weights):
    """``logits = (w·x, 0)`` on ``1×H×W`` images: the score drop of removing features is the sum of ``w_i·x_i``."""
    w = torch.tensor(weights, dtype=torch.float32).reshape(1, -1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(w.shape[1], 2, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.cat([w, torch.zeros_like(w)]))
    return net


@pytest.fixture
def fresh_warnings(monkeypatch):
    from xai_bridge.accelerate import _quantus

    monkeypatch.setattr(_quantus, "_WARNED", set())


def _tiny(metric, net, x, a, **kwargs):
    y = np.zeros(len(x), dtype=np.int64)
    return metric(model=net, x_batch=x, y_batch=y, a_batch=a, device="cpu", softmax=False, channel_first=True, **kwargs)


def test_monotonicity_hand_worked_and_the_toolkit_defect(fresh_warnings):
    """Insert features 0, 1, 2, 3 (ascending attribution) of x = (0, 1, 2, 3) into the black image (min 0).
    w = (1, 1, −1, 1): scores 0, 1, −1, 2, not monotonic → False; w = (1, 1, 1, 1): 0, 1, 3, 6 → True.
    Quantus 0.6.0 replaces the baseline image's features by the baseline value: the image never changes, True."""
    from xai_bridge.errors import ToolkitDefectWarning

    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    a = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32).reshape(1, 1, 2, 2)
    metric = quantus.Monotonicity(features_in_step=1, disable_warnings=True)
    fast = xb.accelerate(metric)
    with pytest.warns(ToolkitDefectWarning, match="Monotonicity: Quantus 0.6.0 perturbs the baseline image"):
        assert _tiny(fast, _linear([1, 1, -1, 1]), x, a) == [False]
    assert _tiny(fast, _linear([1, 1, 1, 1]), x, a) == [True]  # no second warning (pytest fails on none above)
    assert _tiny(metric, _linear([1, 1, -1, 1]), x, a) == [True]  # the toolkit defect
    assert fast.forward_samples == 2 * 4


def test_monotonicity_on_photos_draws_like_the_toolkit(model, case, fresh_warnings):
    metric = quantus.Monotonicity(features_in_step=224 * 56, perturb_baseline="black", disable_warnings=True)
    with pytest.warns(UserWarning):
        theirs, ours, fast = _both(metric, model, case, seed=3)  # asserts NumPy's state advances the same
    assert theirs.tolist() == [1.0, 1.0]  # the toolkit: always True with a deterministic baseline
    assert ours.shape == (2,) and fast.forward_samples == 2 * 12


def _sensitivity_case():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1, size=(4, 1, 3, 3)).astype(np.float32)
    x[:, :, 0, 0] = 0  # the black baseline (the image minimum) is 0: removing S drops the score by Σ_S w_i·x_i
    w = rng.normal(size=9).astype(np.float32)
    a = (x * w.reshape(1, 1, 3, 3)).astype(np.float32)  # Input × Gradient of the linear score: complete
    return _linear(w), x, a


def test_sensitivity_n_hand_worked_and_the_toolkit_defects(fresh_warnings):
    """A linear score with Input × Gradient: for every set S, f(x) − f(x with S removed) = Σ_S a_i, so the
    correlation across images is 1 for every n (Ancona et al. 2018). Quantus 0.6.0 pairs the cumulative drop with
    the last group's attribution only (not 1), and with several batches keeps the first batch's images only."""
    from xai_bridge.errors import ToolkitDefectWarning

    net, x, a = _sensitivity_case()
    settings = dict(features_in_step=1, normalise=False, abs=False, return_aggregate=False, disable_warnings=True)
    metric = quantus.SensitivityN(**settings)
    fast = xb.accelerate(metric)
    with pytest.warns(ToolkitDefectWarning, match="SensitivityN"):
        ours = np.asarray(_tiny(fast, net, x, a, batch_size=2))  # two batches: every image counts
    assert ours.shape == (7,)  # n = 1 … int(0.8 · 9)
    np.testing.assert_allclose(ours, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(_tiny(fast, net, x, a)), ours, atol=1e-6)  # one batch: the same
    theirs = np.asarray(_tiny(metric, net, x, a))
    assert np.nanmax(np.abs(theirs - 1)) > 0.05  # per-step attribution sums against cumulative drops
    first_batch_only = np.asarray(_tiny(metric, net, x, a, batch_size=2))
    np.testing.assert_allclose(first_batch_only, np.asarray(_tiny(metric, net, x[:2], a[:2])), atol=1e-6)


# -- the same metrics registered as xai-bridge metrics: one engine pass, shared sequences ----------------
def _evaluate_counting(model, case, metrics):
    images, maps, _ = case
    seen = []
    handle = model.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    try:
        results = xb.evaluate(model, images, [], metrics, maps={"gradcam": maps}, progress=False)
    finally:
        handle.remove()
    values = {m: [r["value"] for r in results.rows if r["metric"] == m] for m in {r["metric"] for r in results.rows}}
    return values, sum(seen)


def test_registered_toolkit_metrics_equal_quantus_and_share_a_sequence(model, case):
    rp = xb.get_metric("region_perturbation", patch_size=56, regions_evaluation=6)
    sel = xb.get_metric("selectivity", patch_size=56)
    together, samples = _evaluate_counting(model, case, [rp, sel])
    alone = [_evaluate_counting(model, case, [m]) for m in (rp, sel)]
    # Selectivity's 16 patches per image; Region Perturbation reads the first 6 of the same sequence
    assert samples == alone[1][1] and alone[1][1] - alone[0][1] == 2 * (16 - 6)
    assert alone[0][1] + alone[1][1] > samples
    images, maps, y = case
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    for name, metric in {
        "region_perturbation": quantus.RegionPerturbation(patch_size=56, regions_evaluation=6, disable_warnings=True),
        "selectivity": quantus.Selectivity(patch_size=56, disable_warnings=True),
    }.items():
        curves = np.asarray(metric(**args), dtype=np.float64)
        np.testing.assert_allclose(together[name], np.trapezoid(curves, dx=1, axis=1), atol=1e-5, rtol=0)
        np.testing.assert_allclose(alone[0 if name == "region_perturbation" else 1][0][name], together[name], atol=1e-6)


def test_registered_pixel_flipping_equals_quantus_auc(model, case, monkeypatch):
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus's calculate_auc on NumPy 2.4
    images, maps, y = case
    values, samples = _evaluate_counting(
        model, case, [xb.get_metric("pixel_flipping", features_in_step=224 * 56, perturb_baseline="mean")]
    )
    metric = quantus.PixelFlipping(
        features_in_step=224 * 56, perturb_baseline="mean", return_auc_per_sample=True, disable_warnings=True
    )
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    np.testing.assert_allclose(values["pixel_flipping"], metric(**args), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="perturb_baseline"):
        xb.get_metric("pixel_flipping", perturb_baseline="uniform")


# -- IROF, ROAD, Infidelity: the toolkit's numbers where it runs, the paper's where it fails ---------------
def _gray_case(net_kind="conv", n=3, size=32):
    """``n`` embedded photos in grey at ``size``², a small network on them and its predicted classes."""
    torch.manual_seed(0)
    if net_kind == "conv":
        layers = [torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4)]
        net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64, 5)).eval()
    else:
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, 10)).eval()
    images = xb.sample_images()[0][:n]
    x = torch.nn.functional.interpolate(images.mean(1, keepdim=True), size=size).numpy()
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    a = (x + np.abs(np.random.default_rng(0).normal(size=x.shape))).astype(np.float32)
    return net, x, y, a


def _seeded_both(metric, seed=1, **args):
    """The toolkit's and the accelerated result after the same seed; NumPy's state must advance the same."""
    np.random.seed(seed)
    theirs = metric(**args)
    state = np.random.get_state()[1].copy()
    fast = xb.accelerate(metric)
    np.random.seed(seed)
    ours = fast(**args)
    assert np.array_equal(np.random.get_state()[1], state), "NumPy's random state must advance as in the toolkit"
    return theirs, ours, fast


@pytest.mark.parametrize(
    "settings", [{}, {"perturb_baseline": "black"}, {"segmentation_method": "felzenszwalb", "abs": True}]
)
def test_irof_equals_the_toolkit_where_it_runs(settings, monkeypatch, fresh_warnings):
    """One-channel images, one image per batch (the toolkit's baseline is taken over the batch), np.trapz shimmed."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    net, x, y, a = _gray_case()
    metric = quantus.IROF(return_aggregate=False, disable_warnings=True, **settings)
    args = dict(model=net, x_batch=x, y_batch=y, a_batch=a, device="cpu", batch_size=1)
    with pytest.warns(UserWarning):
        theirs, ours, fast = _seeded_both(metric, **args)
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64), atol=1e-5)
    assert fast.forward_samples > 3 * 10  # every superpixel of every image, and the unperturbed images


def test_irof_on_the_real_model_equals_the_toolkit_with_its_mask_on_every_channel(model, case, monkeypatch):
    """On colour photos the toolkit fails; given a replacement that applies its one-channel mask to every channel
    (and one image per batch) it computes the paper's IROF, and the accelerated metric equals it."""
    from quantus.functions.perturb_func import baseline_replacement_by_mask

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    images, maps, y = case

    def every_channel(arr, mask, **kwargs):
        return baseline_replacement_by_mask(arr, np.broadcast_to(mask, arr.shape), **kwargs)

    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    reference = quantus.IROF(perturb_func=every_channel, return_aggregate=False, disable_warnings=True)
    theirs = np.asarray(reference(**args, batch_size=1), dtype=np.float64)
    with pytest.warns(UserWarning):
        ours = np.asarray(xb.accelerate(quantus.IROF(return_aggregate=False, disable_warnings=True))(**args))
    # a sum of ~100 score ratios f(x̃)/f(x), each equal within float32 noise: relative 1e-6 measured
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours > 0).all()  # Grad-CAM's segments matter: removing them lowers the score


def test_irof_hand_worked_and_the_toolkit_defects(monkeypatch, fresh_warnings):
    """x = (1, 2, 3, 4) in one 2×2 image, segments {0, 1} (top row) and {2, 3}, a ranks the bottom row first,
    logit = w·x with w = (1, 1, 1, 1), black baseline = the image's minimum 1. Curve (score / 10): remove the
    bottom row → (1 + 2 + 1 + 1) / 10 = 0.5, then the top row → 4 / 10 = 0.4; IROF = 2 − (0.5 + 0.4) / 2 = 1.55."""
    from xai_bridge.engine import plans
    from xai_bridge.errors import ToolkitDefectWarning

    segments = np.array([[0, 0], [1, 1]])
    monkeypatch.setattr(quantus.helpers.utils, "get_superpixel_segments", lambda img, segmentation_method: segments)
    monkeypatch.setattr(quantus.helpers.asserts, "assert_nr_segments", lambda nr_segments: None)
    monkeypatch.setattr(plans, "superpixel_segments", lambda img, method: segments)  # the engine's own planner
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    a = np.array([0.1, 0.1, 0.9, 0.9], dtype=np.float32).reshape(1, 1, 2, 2)
    metric = quantus.IROF(perturb_baseline="black", normalise=False, return_aggregate=False, disable_warnings=True)
    fast = xb.accelerate(metric)
    with pytest.warns(ToolkitDefectWarning, match="IROF: Quantus 0.6.0 fails on colour images"):
        np.testing.assert_allclose(_tiny(fast, _linear([1, 1, 1, 1]), x, a), [1.55], atol=1e-6)
    # the toolkit: np.trapz is gone from NumPy 2.4 ...
    if not hasattr(np, "trapz"):
        with pytest.raises(AttributeError, match="trapz"):
            _tiny(metric, _linear([1, 1, 1, 1]), x, a)
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    assert _tiny(metric, _linear([1, 1, 1, 1]), x, a) == pytest.approx([1.55])  # ... with it, the same here
    # ... its baseline is the whole batch's minimum: another image in the batch changes this image's score
    other = np.zeros_like(x)
    together = _tiny(metric, _linear([1, 1, 1, 1]), np.concatenate([x, other + 0.5]), np.concatenate([a, a]))
    assert together[0] != pytest.approx(1.55)
    ours = _tiny(fast, _linear([1, 1, 1, 1]), np.concatenate([x, other + 0.5]), np.concatenate([a, a]))
    assert ours[0] == pytest.approx(1.55)
    # ... and its segment mask has one channel: colour images fail
    with pytest.raises(AssertionError, match="shape of arr must be the same as the mask"):
        _tiny(metric, _linear([1] * 12), np.repeat(x, 3, 1), a)
    assert np.isfinite(_tiny(fast, _linear([1] * 12), np.repeat(x, 3, 1), a)).all()


def test_road_equals_the_toolkit_where_it_runs(fresh_warnings):
    """One-channel images in one batch; the imputation is the toolkit's own function, so the same noise."""
    net, x, y, _ = _gray_case("linear", n=4)
    metric = quantus.ROAD(percentages=[10, 40, 70, 95], disable_warnings=True)
    args = dict(model=net, x_batch=x, y_batch=y, a_batch=x.copy(), device="cpu")
    with pytest.warns(UserWarning):
        theirs, ours, fast = _seeded_both(metric, **args)
    assert theirs == ours and set(ours) == {10, 40, 70, 95}
    assert min(ours.values()) < 1  # some decisions flip: the comparison is not vacuous
    assert fast.forward_samples == 4 * 4


def test_road_on_the_real_model_is_the_paper_and_the_toolkit_defects(model, case, fresh_warnings):
    """The reference: the toolkit's imputation of each image's top p % pixels (ranked by the map) and the model's
    top-1 decision, written here as a plain loop. The toolkit itself fails on colour images and, with several
    batches, averages the first batch only."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    from xai_bridge.errors import ToolkitDefectWarning

    images, maps, y = case
    percentages = [20, 90]
    order = np.argsort(-maps.numpy().reshape(2, -1), axis=1)
    np.random.seed(4)
    kept = np.zeros((2, 2))
    for j, p in enumerate(percentages):
        for i in range(2):
            imputed = noisy_linear_imputation(arr=images[i].numpy(), indices=order[i, : int(224 * 224 * p / 100)])
            with torch.no_grad():
                kept[i, j] = model(torch.from_numpy(imputed)[None].float()).argmax(1).item() == int(y[i])
    metric = quantus.ROAD(percentages=percentages, disable_warnings=True)
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    np.random.seed(4)
    with pytest.warns(ToolkitDefectWarning, match="ROAD: Quantus 0.6.0 fails on colour images"):
        ours = xb.accelerate(metric)(**args)
    assert ours == dict(zip(percentages, kept.mean(0), strict=True))
    with pytest.raises(IndexError):
        metric(**args)
    net, x, y1, _ = _gray_case("linear", n=4)
    gray = dict(model=net, x_batch=x, y_batch=y1, a_batch=x.copy(), device="cpu", batch_size=2)
    one = quantus.ROAD(percentages=[70, 95], disable_warnings=True)
    np.random.seed(2)
    first_batch_only = one(**gray)
    np.random.seed(2)
    assert first_batch_only == one(**{**gray, "x_batch": x[:2], "y_batch": y1[:2], "a_batch": x[:2]})
    np.random.seed(2)
    every_image = xb.accelerate(one)(**gray)
    np.random.seed(2)
    assert every_image == xb.accelerate(one)(**{**gray, "batch_size": 4})


INFIDELITY_CASES = {
    # name: (settings, forward samples of the accelerated metric on 2 photos)
    "black-3-samples": ({"perturb_patch_sizes": [56], "n_perturb_samples": 3}, 2 + 2 * 16),
    "mean-two-sizes": ({"perturb_patch_sizes": [112, 56], "perturb_baseline": "mean", "n_perturb_samples": 2}, 42),
    "uniform": ({"perturb_patch_sizes": [112], "perturb_baseline": "uniform", "n_perturb_samples": 2}, 2 + 2 * 4 * 2),
}


@pytest.mark.parametrize("name", list(INFIDELITY_CASES))
def test_infidelity_equals_the_toolkit_and_scores_each_distinct_perturbation_once(model, case, name):
    settings, samples = INFIDELITY_CASES[name]
    metric = quantus.Infidelity(disable_warnings=True, **settings)
    theirs, ours, fast = _both(metric, model, case, seed=5)
    # a mean squared error of sums over ~10⁵ features: equal up to float32 rounding of those sums
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
    assert fast.forward_samples == samples  # the toolkit: n_perturb_samples × as many


def test_infidelity_hand_worked_and_the_toolkit_defect(fresh_warnings):
    """A 3×3 image, 2×2 patches: the toolkit pads to 4×4 (edge values) and fails; the accelerated metric removes the
    blocks {(0,0),(0,1),(1,0),(1,1)}, {(0,2),(1,2)}, {(2,0),(2,1)}, {(2,2)} in that order (to 0). With the linear
    logit w·x, the gradient (a = w) has infidelity 0, since the score drop is Σ w·(x − x̃) (Yeh et al. 2019);
    a = x gives the mean over the 4 steps of (Σ_removed w·x − Σ_removed x²)², worked out below from the blocks."""
    from xai_bridge.errors import ToolkitDefectWarning

    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1, size=(1, 1, 3, 3)).astype(np.float32)
    w = rng.normal(size=9).astype(np.float32)
    net = _linear(w)
    metric = quantus.Infidelity(
        perturb_patch_sizes=[2], perturb_baseline=0.0, normalise=False, n_perturb_samples=2, disable_warnings=True
    )
    fast = xb.accelerate(metric)
    gradient = w.reshape(1, 1, 3, 3)
    with pytest.warns(ToolkitDefectWarning, match="Infidelity: Quantus 0.6.0 fails when the image size"):
        np.testing.assert_allclose(_tiny(fast, net, x, gradient), [0.0], atol=1e-10)
    blocks = [[0, 1, 3, 4], [2, 5], [6, 7], [8]]
    removed, expected = [], []
    for block in blocks:
        removed += block
        v = x.reshape(-1)[removed].astype(np.float64)
        expected.append((np.sum(w[removed] * v) - np.sum(v**2)) ** 2)
    np.testing.assert_allclose(_tiny(fast, net, x, x), [np.mean(expected)], rtol=1e-5)
    assert fast.forward_samples == 2 * (1 + 4)  # two calls; each: the image and 4 steps, whatever n_perturb_samples
    with pytest.raises(ValueError):  # the toolkit's reshape of the unpadded image to the padded shape
        _tiny(metric, net, x, x)


def test_registered_infidelity_and_irof_equal_their_toolkit_forms(model, case, fresh_warnings):
    """``infidelity`` = Quantus Infidelity (unnormalised maps, one sample: a black baseline is deterministic);
    ``irof`` = the accelerated Quantus IROF, which the tests above tie to the toolkit."""
    images, maps, y = case
    values, samples = _evaluate_counting(
        model,
        case,
        [xb.get_metric("infidelity", perturb_patch_sizes=[56, 112]), xb.get_metric("irof", perturb_baseline="black")],
    )
    args = dict(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    infidelity = quantus.Infidelity(perturb_patch_sizes=[56, 112], normalise=False, disable_warnings=True)
    np.testing.assert_allclose(values["infidelity"], infidelity(**args), rtol=1e-5)
    irof = quantus.IROF(perturb_baseline="black", return_aggregate=False, disable_warnings=True)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(values["irof"], xb.accelerate(irof)(**args), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="perturb_patch_sizes"):
        xb.get_metric("infidelity", perturb_patch_sizes=[0])
    with pytest.raises(ValueError, match="segmentation_method"):
        xb.get_metric("irof", segmentation_method="quickshift")


def test_imputation_system_equals_both_toolkits_assembly():
    """ROAD's sparse system assembled at once equals grad-cam's ``lil_matrix`` assembly entry for entry, and the
    imputed images equal both toolkits' bit for bit after the same seed (so the noise draws follow unchanged)."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from quantus.functions.perturb_func import noisy_linear_imputation

    from xai_bridge.accelerate._gradcam import _AssembledImputer
    from xai_bridge.engine.imputation import imputation_system
    from xai_bridge.engine.plans import road_imputation

    rng = np.random.default_rng(0)
    image = rng.random((3, 9, 7)).astype(np.float32)
    mask = (rng.random((9, 7)) > 0.6).astype(np.float32)  # 1 = known, as grad-cam's mask
    theirs_a, theirs_b = NoisyLinearImputer.setup_sparse_system(mask, image, gradcam_metrics.neighbors_weights)
    missing = np.argwhere(mask.reshape(-1) == 0).flatten()
    ours_a, ours_b = imputation_system((9, 7), missing, image.reshape(3, -1))
    assert np.array_equal(ours_a.toarray(), theirs_a.toarray()) and np.array_equal(ours_b, theirs_b)
    torch.manual_seed(1)
    expected = NoisyLinearImputer()(torch.from_numpy(image), torch.from_numpy(mask))
    torch.manual_seed(1)
    assert torch.equal(_AssembledImputer(0.01)(torch.from_numpy(image), torch.from_numpy(mask)), expected)
    order = rng.permutation(63)[:40]  # Quantus keeps the given order of the unknowns
    np.random.seed(2)
    expected_q = noisy_linear_imputation(arr=image, indices=order, noise=0.01)
    np.random.seed(2)
    assert np.array_equal(road_imputation(image, order, 0.01), expected_q)
