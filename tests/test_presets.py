"""Protocol presets against independent references, value by value.

- ``tutorial``: the tutorial authors' own package, ``saliency-maps-metrics`` 0.0.26 (Gomez & Mouchère,
  "Computing and evaluating saliency maps for image classification: a tutorial", 2023).

The real model is slow on a CPU, so the default suite uses one or two photos at 56²–112² (EfficientNet-Lite0
pools globally); ``-m slow`` runs the nine photos at 224². Maps are made tie-free where a reference orders
tied pixels in an unspecified way (``torch.topk``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_bridge as xb
from xai_bridge.engine import Engine, make_replacement
from xai_bridge.evaluation import score_maps
from xai_bridge.protocols import TUTORIAL_BLUR, get_protocol

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
