"""Every protocol preset against an independent reference, value by value.

- ``tutorial``: the tutorial authors' own package, ``saliency-maps-metrics`` 0.0.26 (Gomez & Mouchère,
  "Computing and evaluating saliency maps for image classification: a tutorial", 2023).
- ``rise``: a reimplementation, written here, of ``CausalMetric.evaluate`` in ``evaluation.py`` of
  github.com/eclique/RISE (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
  Black-box Models", 2018), which is not on PyPI.
- zero-baseline deletion/insertion (``default`` with a black insertion start): ``torchcam`` 0.5.0's
  ``DeletionInsertionMetric``.
- ``opticam``: a reimplementation, written here, of the Opti-CAM / CA-Stream group's AD/AG/AI
  (github.com/ftorres11/saliencysense: ``routines/evaluation/interpretable_evaluation.py`` and
  ``gradcampp_recognition`` in ``evaluation/object_recognition.py``).
- ``deepmaps`` (no public code): small cases worked by hand.
- ``quantus``: Quantus's PixelFlipping / RegionPerturbation, in ``tests/test_engine.py``.

The real model is slow on a CPU, so the default suite uses one or two photos at 56²–112² (EfficientNet-Lite0
pools globally); ``-m slow`` runs the nine photos at 224². Maps are made tie-free where a reference orders
tied pixels in an unspecified way (numpy's quicksort, ``torch.topk``).
"""

from __future__ import annotations

import contextlib
import math
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_bridge as xb
from xai_bridge.engine import Engine, make_replacement
from xai_bridge.evaluation import score_maps
from xai_bridge.protocols import BLACK, RISE_INSERTION, TUTORIAL_BLUR, get_protocol

MULTI_STEP = ["deletion_auc", "insertion_auc", "dc", "ic"]
SINGLE_STEP = ["average_drop", "add", "average_increase"]


# -- helpers ------------------------------------------------------------------------------------------
@pytest.fixture
def trapz(monkeypatch):
    """saliency-maps-metrics calls ``np.trapz``, removed in NumPy 2.4: give it ``np.trapezoid`` (tests only)."""
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def untie(maps: torch.Tensor) -> torch.Tensor:
    """The maps with every tie broken: values equal to the one before them in (stable) descending order are
    pushed down by one float32 step, so the order is ours (ties in raster order) and the values move by a
    few units in the last place. The references order ties in unspecified ways (``torch.topk``, numpy's
    quicksort)."""
    out = maps.detach().float().clone().flatten(1)
    for row in out:
        order = torch.argsort(-row, stable=True)
        values = row[order].numpy().copy()
        for i in range(1, values.size):
            if values[i] >= values[i - 1]:
                values[i] = np.nextafter(values[i - 1], np.float32(-np.inf))
        row[order] = torch.from_numpy(values)
    assert all(len(set(row.tolist())) == row.numel() for row in out)
    return out.view_as(maps)


def ranks_as_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's rank (ties in raster order) as a float32 map: the same order with no ties."""
    from xai_bridge.engine import rank_units

    return rank_units(maps, "lerf").float() / maps[0].numel()


def softmax_model(model: nn.Module) -> nn.Module:
    """The classifier followed by a softmax, as the references score it."""
    return nn.Sequential(model, nn.Softmax(dim=1)).eval()


@pytest.fixture(scope="module")
def gradcam_raw(model):
    """Grad-CAM's raw 7×7 maps of two photos at 224² (astronaut, chelsea)."""
    images, _ = xb.sample_images(names=["astronaut", "chelsea"])
    return xb.get_explainer("gradcam", model).explanation(images).raw


def photos_at(model, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same two photos at ``size``² (the model pools globally) and the model's predictions there."""
    images, _ = xb.sample_images(names=["astronaut", "chelsea"], size=size)
    with torch.no_grad():
        return images, model(images).argmax(1)


def upsampled(raw: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(raw[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


# -- grid steps -----------------------------------------------------------------------------------------
class MeanRed(nn.Module):
    """Two classes; logit_0 = 2·mean(channel 0) − 1, logit_1 = 0: cheap, and every cell matters."""

    def forward(self, x):
        z = 2 * x[:, 0].mean((1, 2)) - 1
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_a_7x7_grid_curve_has_50_points_and_pixel_steps_are_converted_or_refused():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 224, 224, generator=g)
    raw = F.avg_pool2d(images[:, :1], 32)[:, 0]  # each cell's red: what deleting the cell costs this model
    maps = F.interpolate(raw[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    model = MeanRed().eval()
    curves: dict = {}
    out = score_maps(model, images, maps, ["deletion_auc", "dc"], "tutorial", raw=raw, curves=curves)
    assert curves["deletion_auc"]["values"].shape == (2, 50)  # one 32×32 cell per step
    assert (out["dc"] > 0.9).all()  # each step's drop follows the cell it removed (was 0: one step)
    # an int step counts pixels; whole cells are converted, anything else is refused with the numbers
    curves = {}
    score_maps(model, images, maps, ["deletion_auc"], get_protocol("tutorial", step=2048), raw=raw, curves=curves)
    assert curves["deletion_auc"]["values"].shape == (2, 26)  # 2 cells per step: 25 steps
    with pytest.raises(ValueError, match=r"protocol.step: 224 pixels is not a whole number of 32×32-pixel cells"):
        score_maps(model, images, maps, ["deletion_auc"], get_protocol("tutorial", step=224), raw=raw)
    with pytest.raises(ValueError, match=r"protocol.step: 1792 pixels"):
        score_maps(model, images, maps, ["deletion_auc"], get_protocol("default", level="grid"), raw=raw)
    with pytest.raises(ValueError, match=r"protocol.removal_step: 300 pixels .* 32×32"):
        score_maps(model, images, maps, ["aopc"], get_protocol("tutorial", removal_step=300), raw=raw)
    with pytest.raises(ValueError, match=r"does not tile 224×224"):
        score_maps(model, images, maps, ["deletion_auc"], "tutorial", raw=torch.rand(2, 9, 9))
    # maps at input resolution are their own grid: the bounded schedule, 50176 // 196 = 256 pixels per step
    curves = {}
    score_maps(model, images, maps, ["insertion_auc"], "tutorial", curves=curves)
    assert curves["insertion_auc"]["values"].shape == (2, 197)
    torch.testing.assert_close(curves["insertion_auc"]["fractions"][:3], torch.tensor([0.0, 256, 512]) / 50176)


def test_tutorial_substrate_and_step_bound_are_the_packages():
    pytest.importorskip("saliency_maps_metrics")
    from saliency_maps_metrics.data_replace import blur_data
    from saliency_maps_metrics.multi_step_metrics import Deletion, Insertion

    assert get_protocol("tutorial").max_steps == Deletion().max_step_nb == Insertion().max_step_nb == 196
    g = torch.Generator().manual_seed(1)
    for size in (224, 112, 40):  # sides 45, 23 and 9
        images = torch.rand(2, 3, size, size, generator=g)
        # one 45×45 sum there, two 45-tap passes here: float32 rounding apart
        torch.testing.assert_close(make_replacement(images, TUTORIAL_BLUR), blur_data(images), atol=1e-5, rtol=0)


# -- tutorial = saliency-maps-metrics 0.0.26 -------------------------------------------------------------
def package_scores(model, images, maps, targets, max_steps=196):
    """DAUC, IAUC, DC, IC (per image, raw scores of the softmax) and AD, ADD, IIC (×100) from the package.

    Single-step metrics are computed one image per call, which is per-image min-max (the package
    normalises over the whole batch it is given) and one image per forward pass.
    """
    from saliency_maps_metrics.multi_step_metrics import Deletion, Insertion, compute_auc_metric
    from saliency_maps_metrics.single_step_metrics import ADD, IIC_AD

    net = softmax_model(model)
    classes = [int(t) for t in targets]
    out = {}
    for name, metric in (
        ("deletion", Deletion(max_step_nb=max_steps)),
        ("insertion", Insertion(max_step_nb=max_steps)),
    ):
        scores, saliency = metric.compute_scores(net, images, maps[:, None], classes)
        out[f"{name}_auc"] = compute_auc_metric(scores)
        out["dc" if name == "deletion" else "ic"] = metric.compute_calibration_metric(scores, saliency)
        out[f"{name}_points"] = scores.shape[1]
    for key in SINGLE_STEP:
        out[key] = []
    for i in range(images.shape[0]):
        x, s, c = images[i : i + 1], maps[i : i + 1, None], targets[i : i + 1]
        r = IIC_AD().compute_metric(*IIC_AD().compute_scores(net, x, s, c))
        out["average_drop"].append(r["ad"][0] * 100)
        out["average_increase"].append(r["iic"][0] * 100)
        out["add"].append(ADD().compute_metric(*ADD().compute_scores(net, x, s, c))["add"][0] * 100)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def ours_scores(model, images, maps, raw, targets, protocol):
    curves: dict = {}
    out = score_maps(model, images, maps, MULTI_STEP, protocol, targets, raw=raw, curves=curves)
    # one image per forward pass, as the package's single-step calls: EfficientNet-Lite0's outputs move by
    # ~3e-6 with the batch composition, and AD/ADD divide by p
    engine = Engine(model, batch_size=1, progress=False)
    out |= score_maps(model, images, maps, SINGLE_STEP, protocol, targets, raw=raw, engine=engine)
    values = {k: v.double().numpy() for k, v in out.items()}
    values["deletion_points"] = curves["deletion_auc"]["values"].shape[1]
    values["insertion_points"] = curves["insertion_auc"]["values"].shape[1]
    return values


def assert_same(ours, theirs, keys, atol=1e-5):
    for key in keys:
        np.testing.assert_allclose(ours[key], theirs[key], atol=atol, rtol=0, err_msg=key)


def test_tutorial_equals_the_authors_package_on_a_7x7_map(model, gradcam_raw, trapz):
    """A 7×7 map over 84² (12-pixel cells): one cell per step, 50 points."""
    pytest.importorskip("saliency_maps_metrics")
    images, pred = photos_at(model, 84)
    images, pred, raw = images[1:], pred[1:], untie(gradcam_raw[1:])
    maps = upsampled(raw, 84)
    ours = ours_scores(model, images, maps, raw, pred, "tutorial")
    theirs = package_scores(model, images, raw, pred)
    assert ours["deletion_points"] == theirs["deletion_points"] == 50
    assert_same(ours, theirs, MULTI_STEP)
    assert_same(ours, theirs, SINGLE_STEP, atol=1e-3)  # ×100: 1e-5 of the package's fractions
    assert abs(ours["dc"][0]) > 0.05 and abs(ours["ic"][0]) > 0.01  # not the degenerate 0 of a two-point curve


def test_tutorial_equals_the_authors_package_on_a_full_resolution_map(model, trapz):
    """A map at input resolution takes the package's bounded path: ``units // min(max_steps, units)`` pixels per
    step. 196 steps are run in the slow suite; here 28 (252 pixels per step at 84²) on both sides."""
    pytest.importorskip("saliency_maps_metrics")
    images, pred = photos_at(model, 84)
    images, pred = images[1:], pred[1:]  # chelsea: a negative ADD here, which the package keeps
    maps = untie(xb.get_explainer("saliency", model).explain(images, target=pred))
    protocol = get_protocol("tutorial", max_steps=28)
    ours = ours_scores(model, images, maps, None, pred, protocol)
    theirs = package_scores(model, images, maps, pred, max_steps=28)
    assert ours["insertion_points"] == theirs["insertion_points"] == 29
    assert_same(ours, theirs, MULTI_STEP)
    assert_same(ours, theirs, SINGLE_STEP, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("explainer", ["gradcam", "gradcam++"])
def test_tutorial_equals_the_authors_package_on_the_nine_photos(model, photos, explainer, trapz):
    """The nine photos at 224², the explainer's raw 7×7 maps: DAUC, IAUC, DC, IC, AD, ADD, IIC as the package."""
    pytest.importorskip("saliency_maps_metrics")
    images, _ = photos
    with torch.no_grad():
        pred = model(images).argmax(1)
    explanation = xb.get_explainer(explainer, model).explanation(images, target=pred)
    raw = untie(explanation.raw)
    ours = ours_scores(model, images, explanation.maps, raw, pred, "tutorial")
    theirs = package_scores(model, images, raw, pred)
    assert_same(ours, theirs, MULTI_STEP)
    assert_same(ours, theirs, SINGLE_STEP, atol=1e-3)
    if explainer == "gradcam":  # the means a user of the package sees (DC/IC were exactly 0 before grid steps)
        assert abs(ours["deletion_auc"].mean() - 0.068) < 5e-4 and abs(ours["dc"].mean() - 0.376) < 5e-3


@pytest.mark.slow
def test_tutorial_equals_the_authors_package_with_196_steps_at_224(model, photos, trapz):
    pytest.importorskip("saliency_maps_metrics")
    images = photos[0][:1]
    with torch.no_grad():
        pred = model(images).argmax(1)
    maps = untie(xb.get_explainer("saliency", model).explain(images, target=pred))
    ours = ours_scores(model, images, maps, None, pred, "tutorial")
    theirs = package_scores(model, images, maps, pred)
    assert ours["deletion_points"] == theirs["deletion_points"] == 197  # 256 pixels per step
    assert_same(ours, theirs, MULTI_STEP)
    assert_same(ours, theirs, SINGLE_STEP, atol=1e-3)


def test_tutorial_options_follow_the_paper_text(model, gradcam_raw):
    """``auc_normalize="max"`` is the paper's division by the maximum score; ``add_clip`` is AD's clipping."""
    images, pred = photos_at(model, 56)
    images, pred, raw = images[:1], pred[:1], gradcam_raw[:1]
    maps = upsampled(raw, 56)
    curves: dict = {}
    paper = get_protocol("tutorial", auc_normalize="max", add_clip=True)
    out = score_maps(model, images, maps, ["deletion_auc", "add"], paper, pred, raw=raw, curves=curves)
    values = curves["deletion_auc"]["values"]
    assert values.max() == pytest.approx(1.0)
    assert out["add"].item() >= 0


# -- rise = eclique/RISE evaluation.py -----------------------------------------------------------------
def rise_kernel(klen: int, nsig: float) -> torch.Tensor:
    """As ``gkern`` in RISE's ``evaluation.py``: ``scipy.ndimage.gaussian_filter`` of a Dirac in a klen×klen
    array, on the diagonal of a 3×3 channel kernel."""
    from scipy.ndimage import gaussian_filter

    dirac = np.zeros((klen, klen))
    dirac[klen // 2, klen // 2] = 1.0
    k = torch.from_numpy(gaussian_filter(dirac, nsig).astype("float32"))
    kernel = torch.zeros(3, 3, klen, klen)
    for c in range(3):
        kernel[c, c] = k
    return kernel


def rise_causal_metric(model, images, saliency, mode, step, substrate_fn):
    """Scores ``(n_steps + 1) × B`` as ``CausalMetric.evaluate`` of RISE's ``evaluation.py`` computes them:
    class = argmax on the image; pixels in the order of ``np.flip(np.argsort(saliency))``; ``step`` pixels
    per step copied from ``finish`` into ``start``; the softmax score at every step, the last step partial."""
    n, _, h, w = images.shape
    hw = h * w
    net = softmax_model(model)
    with torch.no_grad():
        top = net(images).argmax(-1).numpy()
        substrate = substrate_fn(images)
    n_steps = (hw + step - 1) // step
    order = np.flip(np.argsort(saliency.reshape(n, hw).numpy(), axis=1), axis=-1)
    rows = np.arange(n).reshape(n, 1)
    start, finish = (images.clone(), substrate) if mode == "del" else (substrate.clone(), images.clone())
    start_np, finish_np = start.numpy().reshape(n, 3, hw), finish.numpy().reshape(n, 3, hw)
    scores = np.empty((n_steps + 1, n))
    for i in range(n_steps + 1):
        with torch.no_grad():
            scores[i] = net(torch.from_numpy(start_np.reshape(n, 3, h, w))).numpy()[range(n), top]
        coords = order[:, step * i : step * (i + 1)]
        start_np[rows, :, coords] = finish_np[rows, :, coords]
    return scores


def rise_auc(scores: np.ndarray) -> np.ndarray:
    """RISE's ``auc``: trapezoid over equal steps on [0, 1]."""
    return (scores.sum(0) - scores[0] / 2 - scores[-1] / 2) / (scores.shape[0] - 1)


def test_rise_substrate_is_gkern_with_zero_padding():
    pytest.importorskip("scipy")
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    theirs = F.conv2d(images, rise_kernel(11, 5), padding=11 // 2)
    torch.testing.assert_close(make_replacement(images, RISE_INSERTION), theirs, atol=1e-6, rtol=0)


def test_rise_equals_its_causal_metric(model, gradcam_raw):
    """At 56², 224 pixels per step is 14 whole steps (RISE's area treats a partial last step as a whole one)."""
    pytest.importorskip("scipy")
    images, _ = photos_at(model, 56)
    maps = ranks_as_maps(upsampled(gradcam_raw, 56))
    protocol = get_protocol("rise")
    assert protocol.step == 224 and protocol.deletion == BLACK and protocol.insertion == RISE_INSERTION
    ours = score_maps(model, images, maps, ["deletion_auc", "insertion_auc"], protocol)
    blur = partial(F.conv2d, weight=rise_kernel(11, 5), padding=11 // 2)
    theirs_del = rise_auc(rise_causal_metric(model, images, maps, "del", 224, torch.zeros_like))
    theirs_ins = rise_auc(rise_causal_metric(model, images, maps, "ins", 224, blur))
    np.testing.assert_allclose(ours["deletion_auc"].numpy(), theirs_del, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["insertion_auc"].numpy(), theirs_ins, atol=1e-5, rtol=0)


# -- zero baseline = torchcam 0.5.0 DeletionInsertionMetric -------------------------------------------------
class GivenMaps:
    """A torchcam CAM extractor that returns maps given in advance (``DeletionInsertionMetric`` ranks with it)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def test_zero_baseline_deletion_and_insertion_equal_torchcam(model, gradcam_raw):
    metrics = pytest.importorskip("torchcam.metrics")
    images, _ = photos_at(model, 56)
    maps = ranks_as_maps(upsampled(gradcam_raw, 56))
    units = images.shape[-1] * images.shape[-2]
    protocol = get_protocol("default", insertion=BLACK, step=math.ceil(units / 20))  # torchcam's steps=20
    engine = Engine(model, batch_size=1, progress=False)
    ours = score_maps(model, images, maps, ["deletion_auc", "insertion_auc"], protocol, engine=engine)
    theirs = {"deletion_auc": [], "insertion_auc": []}
    for i in range(images.shape[0]):
        metric = metrics.DeletionInsertionMetric(
            GivenMaps(model, maps[i : i + 1]), partial(torch.softmax, dim=-1), steps=20, batch_size=1
        )
        metric.update(images[i : i + 1])
        summary = metric.summary()
        theirs["deletion_auc"].append(summary["deletion_auc"])
        theirs["insertion_auc"].append(summary["insertion_auc"])
    for key, values in theirs.items():
        np.testing.assert_allclose(ours[key].numpy(), values, atol=1e-6, rtol=0, err_msg=key)


# -- opticam = the Opti-CAM / CA-Stream group's AD, AG, AI -----------------------------------------------
def opticam_group_scores(model, images, maps, labels):
    """AD, AG, AI (×100) as ``interpretable_evaluation.py`` and ``gradcampp_recognition`` of saliencysense
    compute them: the saved map, min-max normalised, multiplies the image in pixel space; softmax
    probabilities of the ground-truth label; ``epsilon = sys.float_info.epsilon`` in the denominators."""
    eps = sys.float_info.epsilon
    lo = maps.flatten(1).min(1).values.view(-1, 1, 1)
    hi = maps.flatten(1).max(1).values.view(-1, 1, 1)
    smap = ((maps - lo) / (hi - lo))[:, None]
    rows = torch.arange(images.shape[0])
    with torch.no_grad():
        base = model(images).softmax(-1)[rows, labels].double()
        masked = model(smap * images).softmax(-1)[rows, labels].double()
    ad = (base - masked).clamp(min=0) / (base + eps)
    ag = (masked - base).clamp(min=0) / (1 - base + eps)
    ai = torch.sign(masked - base).clamp(min=0)
    return {"average_drop": ad * 100, "average_gain": ag * 100, "average_increase": ai * 100}


def test_opticam_ad_ag_ai_equal_the_groups_evaluation(model):
    from xai_bridge.data import photo_labels

    images, predicted = photos_at(model, 112)  # astronaut and chelsea: labels 812 and 281
    labels = torch.tensor(photo_labels(["astronaut", "chelsea"]))
    maps = xb.get_explainer("gradcam", model).explain(images, target=labels)
    theirs = opticam_group_scores(model, images, maps, labels)
    engine = Engine(model, batch_size=2, progress=False)
    ours = score_maps(model, images, maps, list(theirs), "opticam", labels=labels, engine=engine)
    for key, values in theirs.items():
        np.testing.assert_allclose(ours[key].double().numpy(), values.numpy(), atol=1e-4, rtol=0, err_msg=key)
    assert (predicted != labels).all()  # so the comparison tells the label from the prediction:
    assert (
        opticam_group_scores(model, images, maps, predicted)["average_drop"] - theirs["average_drop"]
    ).abs().max() > 1


# -- deepmaps: worked by hand ------------------------------------------------------------------------------
class RedAgainstThreshold(nn.Module):
    """Two classes: logit_0 = mean(channel 0), logit_1 = 0.4485."""

    def forward(self, x):
        z = x[:, 0].mean((1, 2))
        return torch.stack([z, torch.full_like(z, 0.4485)], 1)


def two_halves() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 20×10 images: channel 0 is 1 on the left (image 0) or right (image 1) half, 0 elsewhere;
    each image's map is its own channel 0 (so MoRF removes the red half first)."""
    images = torch.zeros(2, 3, 10, 20)
    images[0, 0, :, :10] = 1.0
    images[1, 0, :, 10:] = 1.0
    return images, images[:, 0].clone()


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_deepmaps_preset_worked_by_hand():
    """200 pixels, 0.5 % = one pixel per step, replaced by the image's mean colour (red 0.5).

    MoRF: each step turns a red 1 into 0.5, so mean red = 0.5 − k/400 and logit_0 − logit_1 = 0.0515 − k/400:
    class 1 first wins at k = 21 (n_MoRF = 21/200: an odd count, so a coarser step would show). LeRF turns
    the zeros into 0.5 first: mean red only rises, then falls back to 0.5 > 0.4485 when everything is
    replaced: never flips (n_LeRF = 1).
    AOPC (probability p of class 0, 10 % = 20 steps): mean over k = 0..20 of p(0.0515) − p(0.0515 − k/400).
    AFOC (LeRF, 10 %): |p(0.0515) − p(0.0515 + 20/400)| / p(0.0515), p the sigmoid of the logit margin.
    Δn_MoRF: the other image's map removes this image's zeros first (as LeRF): n = 1, so Δ = 21/200 − 1.
    """
    images, maps = two_halves()
    model = RedAgainstThreshold().eval()
    protocol = get_protocol("deepmaps")
    metrics = ["n_morf", "n_lerf", "aopc", "afoc", xb.get_metric("delta", metric="n_morf", k=3)]
    out = score_maps(model, images, maps, metrics, protocol)
    aopc = sum(sigmoid(0.0515) - sigmoid(0.0515 - k / 400) for k in range(21)) / 21
    afoc = abs(sigmoid(0.0515) - sigmoid(0.0515 + 20 / 400)) / sigmoid(0.0515)
    torch.testing.assert_close(out["n_morf"], torch.full((2,), 21 / 200))
    torch.testing.assert_close(out["n_lerf"], torch.ones(2))
    torch.testing.assert_close(out["aopc"], torch.full((2,), aopc), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["afoc"], torch.full((2,), afoc), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["delta(n_morf)"], torch.full((2,), 21 / 200 - 1))
