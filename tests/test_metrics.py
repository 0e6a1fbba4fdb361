"""Metrics on the engine: known answers from models built for them, the thesis formulas worked by
hand, the published orderings on the real model, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xai_bridge as xb
from xai_bridge.evaluation import score_maps
from xai_bridge.protocols import Replacement, get_protocol


class Brightness(nn.Module):
    """Two classes; logit_0 = a·mean(channel 0) − b·mean(channel 1), logit_1 = 0."""

    def __init__(self, a: float, b: float = 0.0) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        z = self.a * x[:, 0].mean((1, 2)) - self.b * x[:, 1].mean((1, 2))
        return torch.stack([z, torch.zeros_like(z)], 1)


def left_half_maps(b: int, size: int = 8) -> torch.Tensor:
    maps = torch.zeros(b, size, size)
    maps[:, :, : size // 2] = 1.0
    return maps


def test_ad_ag_ai_equal_the_thesis_formulas_worked_by_hand():
    # a = 2 ln 3 makes the probabilities simple: sigmoid(a) = 0.9, sigmoid(a/2) = 0.75, sigmoid(0) = 0.5
    a = 2 * math.log(3)
    model = Brightness(a, 2 * a).eval()
    images = torch.zeros(2, 3, 8, 8)
    images[:, 0] = 1.0
    images[1, 1, :, 4:] = 1.0  # image 2: the right half lowers class 0
    # image 1: p = 0.9, o = score(x ⊙ M) = sigmoid(a/2) = 0.75 → AD = 16.67, AG = 0, AI = 0
    # image 2: p = sigmoid(a - a) = 0.5, o = sigmoid(a/2) = 0.75 → AD = 0, AG = 50, AI = 100
    out = score_maps(model, images, left_half_maps(2), ["average_drop", "average_gain", "average_increase"], targets=0)
    torch.testing.assert_close(out["average_drop"], torch.tensor([(0.9 - 0.75) / 0.9 * 100, 0.0]), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out["average_gain"], torch.tensor([0.0, 50.0]), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out["average_increase"], torch.tensor([0.0, 100.0]))
    # ADD removes the salient half instead, keeping the right half:
    # image 1: o = sigmoid(a/2) = 0.75 → 16.67; image 2: o = sigmoid(a/2 − a) = 0.25 → (0.5 − 0.25)/0.5 = 50
    add = score_maps(model, images, left_half_maps(2), ["add"], targets=0)["add"]
    torch.testing.assert_close(add, torch.tensor([(0.9 - 0.75) / 0.9 * 100, 50.0]), atol=1e-4, rtol=1e-5)


def test_linear_model_gives_dauc_one_half():
    """Score = fraction of pixels left: deleting one pixel per step traces 1 → 0 linearly."""
    model = Brightness(1.0).eval()
    images = torch.ones(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    protocol = get_protocol("default", score="logit", step=1)
    out = score_maps(model, images, maps, ["deletion_auc", "insertion_auc"], protocol, targets=0)
    torch.testing.assert_close(out["deletion_auc"], torch.full((3,), 0.5))
    # insertion from black reveals pixels: 0 → 1, also 0.5
    ins = score_maps(
        model, images, maps, ["insertion_auc"], protocol.replace(insertion=Replacement("black")), targets=0
    )
    torch.testing.assert_close(ins["insertion_auc"], torch.full((3,), 0.5))


def test_constant_model_gives_its_constant_and_no_correlation():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.3, -0.2, 0.1]]).expand(x.shape[0], 3)

    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    p = torch.tensor([0.3, -0.2, 0.1]).softmax(0)[0]
    out = score_maps(
        Constant().eval(),
        images,
        maps,
        ["deletion_auc", "insertion_auc", "dc", "ic", "aopc", "n_morf"],
        get_protocol(step=4, removal_step=4),
        targets=0,
    )
    torch.testing.assert_close(out["deletion_auc"], p.expand(2))
    torch.testing.assert_close(out["insertion_auc"], p.expand(2))
    assert out["dc"].abs().max() < 1e-6 and out["ic"].abs().max() < 1e-6
    assert out["aopc"].abs().max() < 1e-7
    assert out["n_morf"].tolist() == [1.0, 1.0]  # the decision never changes


def test_dc_is_one_when_the_score_drop_is_the_removed_saliency():
    """logit_0 = mean(x·w) with the map equal to w: each step's drop is proportional to the saliency removed."""
    torch.manual_seed(0)
    w = torch.rand(8, 8)

    class Weighted(nn.Module):
        def forward(self, x):
            z = (x[:, 0] * w).sum((1, 2))
            return torch.stack([z, torch.zeros_like(z)], 1)

    images = torch.ones(2, 3, 8, 8)
    out = score_maps(
        Weighted().eval(), images, w.expand(2, 8, 8), ["dc"], get_protocol(score="logit", step=4), targets=0
    )  # equal steps: drop affine in n(S)
    torch.testing.assert_close(out["dc"], torch.ones(2), atol=1e-5, rtol=0)


def test_delta_of_a_map_that_ignores_the_image_is_zero():
    """The same map for every image: its own map and the others' maps are identical, Δ = 0."""
    model = Brightness(3.0).eval()
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(4)).expand(6, 8, 8)
    delta = xb.get_metric("delta", metric="deletion_auc")
    assert delta.name == "delta(deletion_auc)" and delta.higher_is_better is False
    out = score_maps(model, images, maps, [delta], get_protocol(step=8), targets=0)
    torch.testing.assert_close(out["delta(deletion_auc)"], torch.zeros(6), atol=1e-6, rtol=0)
    others = delta.others(6, torch.device("cpu"))
    assert others.shape == (6, 5) and not (others == torch.arange(6)[:, None]).any()


def test_delta_wraps_a_quantus_metric():
    import quantus

    model = Brightness(3.0).eval()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(5))
    sparseness = quantus.Sparseness(disable_warnings=True, display_progressbar=False)
    delta = xb.get_metric("delta", metric=sparseness, k=2)
    out = score_maps(model, images, maps, [delta], targets=0)["delta(Sparseness)"]
    own = torch.tensor(
        sparseness(model=model, x_batch=images.numpy(), y_batch=[0] * 4, a_batch=maps[:, None].numpy(), device="cpu")
    )
    idx = delta.others(4, torch.device("cpu"))
    ref = torch.stack(
        [
            torch.tensor(
                sparseness(
                    model=model,
                    x_batch=images.numpy(),
                    y_batch=[0] * 4,
                    a_batch=maps[idx[:, j]][:, None].numpy(),
                    device="cpu",
                )
            )
            for j in range(2)
        ]
    ).mean(0)
    torch.testing.assert_close(out, (own - ref).float(), atol=1e-5, rtol=1e-5)


def test_afoc_and_aopc_follow_their_definitions():
    model = Brightness(1.0).eval()
    images = torch.ones(2, 3, 10, 10)
    maps = torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(6))
    protocol = get_protocol(score="logit", removal=Replacement("black"), removal_step=5, fraction=0.1)
    out = score_maps(model, images, maps, ["aopc", "afoc"], protocol, targets=0)
    # logits: 1.0, 0.95, 0.90 over the 3 points of 10 % removal; AOPC = mean(0, .05, .10) = 0.05
    torch.testing.assert_close(out["aopc"], torch.full((2,), 0.05), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["afoc"], torch.full((2,), 0.10), atol=1e-6, rtol=0)


def test_evaluate_rows_summary_and_exports(model, photos, tmp_path):
    images, names = photos[0][:2], photos[1][:2]
    results = xb.evaluate(
        model,
        images,
        explainers=["gradcam"],
        metrics=["average_drop", "deletion_auc", "n_morf"],
        image_ids=names,
        progress=False,
    )
    frame = results.to_frame()
    assert {"image", "explainer", "metric", "value", "protocol"} <= set(frame.columns)
    assert len(frame) == 2 * 3 and set(frame.protocol) == {"default"}
    assert "average_drop ↓" in results.summary() and "Protocol: default" in results.summary()
    assert ("gradcam", "deletion_auc") in results.curves
    assert results.protocols["default"]["step"] == 224 * 8
    again = xb.Results.from_json(results.to_json(tmp_path / "r.json"))
    assert again.rows == results.rows
    assert results.to_csv().splitlines()[0].startswith("image,explainer,metric,value,protocol")


def test_bad_input_names_the_argument(model, photos):
    images = photos[0][:2]
    maps = torch.rand(2, 224, 224)
    with pytest.raises(ValueError, match=r"maps: \(300, 300\) is larger than the images \(224, 224\)"):
        score_maps(model, images, torch.rand(2, 300, 300), ["average_drop"])
    with pytest.raises(ValueError, match=r"maps: 3 maps for 2 images"):
        score_maps(model, images, torch.rand(3, 7, 7), ["average_drop"])
    nan = maps.clone()
    nan[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="maps: .*NaN"):
        score_maps(model, images, nan, ["average_drop"])
    with pytest.raises(ValueError, match="constant"):
        score_maps(model, images, torch.ones(2, 224, 224), ["average_drop"])
    with pytest.raises(ValueError, match=r"target"):
        score_maps(model, images, maps, ["average_drop"], targets=1000)
    with pytest.raises(ValueError, match=r"images: values in .* pixel space"):
        score_maps(model, images * 2 - 1, maps, ["average_drop"])
    with pytest.raises(ValueError, match="boxes: metric 'pixel_f1' needs"):
        score_maps(model, images, maps, ["pixel_f1"])
    with pytest.raises(xb.UnknownNameError, match="average_gian|average_gain"):
        xb.get_metric("average_gian")


def test_localisation_metrics_through_evaluate(model, photos):
    from xai_bridge.data import photo_boxes

    images, names = photos[0][:3], photos[1][:3]
    boxes = photo_boxes(names)
    inside = torch.zeros(3, 224, 224)
    for i, bs in enumerate(boxes):
        x0, y0, x1, y1 = bs[0]
        inside[i, y0:y1, x0:x1] = 1.0
    inside += 0.01 * torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = score_maps(
        model, images, inside, ["pointing_game", "energy_pointing_game", "localisation_error"], boxes=boxes
    )
    assert out["pointing_game"].tolist() == [1.0, 1.0, 1.0]
    assert (out["energy_pointing_game"] > 0.9).all()
    assert (out["localisation_error"] < 0.1).all()


@pytest.mark.parametrize("name", [s.name for s in xb.list_metrics() if s.provider.plugin == "metrics" and not s.needs])
def test_every_builtin_metric_honours_the_metric_contract(name, tiny_resnet):
    from xai_bridge.testing import check_metric_contract

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    check_metric_contract(name, tiny_resnet, images, batch_invariant=name != "delta")
