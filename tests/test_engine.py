"""The perturbation engine against Quantus's own metrics, against a naive per-image per-step
loop written here, and against properties any correct implementation has."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from xai_bridge.engine import Curve, Engine, Flip, Masked, normalize_maps, rank_units, step_counts
from xai_bridge.evaluation import score_maps
from xai_bridge.protocols import Replacement, get_protocol


# -- a naive reference: one image, one step, one forward pass at a time --------------------------
def naive_order(saliency: np.ndarray, order: str, cell: int | None) -> list[np.ndarray]:
    """Pixel groups (flat indices) in removal order, from numpy; ties in raster order."""
    h, w = saliency.shape
    if cell is None:
        groups = [np.array([i]) for i in range(h * w)]
        keys = saliency.flatten()
    else:
        groups, keys = [], []
        for gy in range(math.ceil(h / cell)):
            for gx in range(math.ceil(w / cell)):
                ys, xs = np.meshgrid(
                    np.arange(gy * cell, min(h, gy * cell + cell)),
                    np.arange(gx * cell, min(w, gx * cell + cell)),
                    indexing="ij",
                )
                groups.append((ys * w + xs).flatten())
                keys.append(saliency.flatten()[groups[-1]].mean())
        keys = np.array(keys)
    idx = np.argsort(-keys if order == "morf" else keys, kind="stable")
    return [groups[i] for i in idx]


def naive_curve(model, image, saliency, target, kind, order, replacement, k, cell=None, stop=1.0):
    groups = naive_order(saliency.numpy(), order, cell)
    n = len(groups)
    steps = math.ceil(n / k) if stop >= 1 else math.ceil(stop * n / k - 1e-9)
    c, h, w = image.shape
    probs, preds = [], []
    for s in range(steps + 1):
        chosen = np.concatenate(groups[: min(s * k, n)]) if s else np.array([], dtype=int)
        mask = np.zeros(h * w, dtype=bool)
        mask[chosen] = True
        mask = torch.from_numpy(mask.reshape(h, w))
        x = torch.where(mask, replacement, image) if kind == "deletion" else torch.where(mask, image, replacement)
        with torch.no_grad():
            logits = model(x[None])[0]
        probs.append(logits.softmax(0)[target].item())
        preds.append(int(logits.argmax()))
    return np.array(probs), np.array(preds)


def naive_replacement(images: torch.Tensor, replacement: Replacement) -> torch.Tensor:
    """The substrate, from torchvision and torch directly (not the engine's helper)."""
    from torchvision.transforms.functional import gaussian_blur

    if replacement.kind == "black":
        return torch.zeros_like(images)
    if replacement.kind == "mean":
        return images.mean((2, 3), keepdim=True).expand_as(images)
    if replacement.kind == "blur":
        k, sigma = replacement.kernel, replacement.sigma
        return gaussian_blur(images, [k, k], [sigma, sigma])
    if replacement.kind == "noise":  # uniform in [0, 1], seeded
        return torch.rand(images.shape, generator=torch.Generator().manual_seed(replacement.seed))
    raise AssertionError(replacement)


class TinyNet(nn.Module):
    """A small CNN (random but fixed weights) whose decisions do change as pixels go."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 5)
        )

    def forward(self, x):
        return self.net(x) * 20


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(3)
    return TinyNet().eval(), torch.rand(4, 3, 12, 12, generator=g), torch.rand(4, 12, 12, generator=g)


REPLACEMENTS = [
    Replacement("black"),
    Replacement("mean"),
    Replacement("blur", kernel=5, sigma=2.0),
    Replacement("noise", seed=4),
]


@pytest.mark.parametrize(
    "kind,order,cell,rep",
    list(itertools.product(["deletion", "insertion"], ["morf", "lerf"], [None, 5], range(len(REPLACEMENTS)))),
)
def test_curves_equal_the_naive_loop(tiny, kind, order, cell, rep):
    model, images, maps = tiny
    replacement = REPLACEMENTS[rep]
    k = 7 if cell is None else 2
    req = Curve(kind=kind, order=order, replacement=replacement, step=k, cell=cell)
    out = Engine(model, batch_size=13, progress=False).run(images, maps, targets=[0, 1, 2, 3], requests=[req])[req]
    reps = naive_replacement(images, replacement)
    for i in range(images.shape[0]):
        probs, preds = naive_curve(model, images[i], maps[i], i, kind, order, reps[i], k, cell)
        np.testing.assert_allclose(out.probs[i].numpy(), probs, atol=1e-5)
        assert out.predicted[i].tolist() == preds.tolist()


def test_flips_equal_the_naive_loop_and_skip_flipped_images(tiny):
    _, images, maps = tiny
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 5)).eval()  # decisions flip as pixels go
    with torch.no_grad():
        base = model(images).argmax(1)
    total_flips = 0
    for order in ("morf", "lerf"):
        req = Flip(order=order, replacement=Replacement("mean"), step=6)
        engine = Engine(model, batch_size=16, progress=False)
        out = engine.run(images, maps, targets=None, requests=[req])[req]
        reps = images.mean((2, 3), keepdim=True).expand_as(images)
        last = 0
        for i in range(images.shape[0]):
            _, preds = naive_curve(model, images[i], maps[i], 0, "deletion", order, reps[i], 6)
            flips = np.nonzero(preds != int(base[i]))[0]
            expected = flips[0] * 6 / 144 if len(flips) else 1.0
            assert out.fraction[i].item() == pytest.approx(expected)
            assert bool(out.flipped[i]) == bool(len(flips))
            last = max(last, flips[0] if len(flips) else 24)
            total_flips += len(flips) > 0
        if last < 20:  # early exit: images stop once flipped, so fewer than all 4 × 24 steps ran
            assert engine.forward_samples < 4 + 4 * 24
    assert total_flips >= 4, "the test model should flip some decisions"


def test_masked_scores_equal_the_formula(tiny):
    model, images, maps = tiny
    reqs = [Masked(keep=True), Masked(keep=False, replacement=Replacement("mean"))]
    out = Engine(model, progress=False).run(images, maps, targets=1, requests=reqs)
    m = (maps - maps.amin((1, 2), keepdim=True)) / (maps.amax((1, 2), keepdim=True) - maps.amin((1, 2), keepdim=True))
    with torch.no_grad():
        keep = model(images * m[:, None]).softmax(1)[:, 1]
        mean = images.mean((2, 3), keepdim=True)
        remove = model(images * (1 - m[:, None]) + mean * m[:, None]).softmax(1)[:, 1]
    torch.testing.assert_close(out[reqs[0]].probs, keep, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[reqs[1]].probs, remove, atol=1e-6, rtol=1e-5)


def test_shared_sequence_is_computed_once(tiny):
    model, images, maps = tiny
    mean = Replacement("mean")
    full, part, flip = (
        Curve(replacement=mean, step=4),
        Curve(replacement=mean, step=4, stop=0.1),
        Flip(replacement=mean, step=4),
    )
    together = Engine(model, progress=False)
    out = together.run(images, maps, None, [full, part, flip])
    alone = Engine(model, progress=False)
    ref = {r: alone.run(images, maps, None, [r])[r] for r in (full, part, flip)}
    torch.testing.assert_close(out[part].probs, ref[part].probs)
    torch.testing.assert_close(out[part].probs, out[full].probs[:, : out[part].probs.shape[1]])
    torch.testing.assert_close(out[flip].fraction, ref[flip].fraction)
    assert together.forward_samples == images.shape[0] * (1 + 36 + 1)  # base + one full curve


def test_step_schedule():
    assert step_counts(10, 3).tolist() == [0, 3, 6, 9, 10]
    assert step_counts(100, 0.25).tolist() == [0, 25, 50, 75, 100]
    assert step_counts(100, 3, stop=0.1).tolist() == [0, 3, 6, 9, 12]  # rounded up to whole steps
    assert step_counts(49, None).tolist() == list(range(50))  # the tutorial's bound: one unit per step up to 196
    assert step_counts(50176, None)[:3].tolist() == [0, 256, 512] and len(step_counts(50176, None)) == 197
    with pytest.raises(ValueError, match="step"):
        step_counts(10, 0)


def test_properties_on_the_real_model(model, photos):
    images = photos[0][:3]
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 224, 224, generator=g)
    blur = Replacement("blur", kernel=11, sigma=5.0)
    dele, ins = Curve(step=224 * 56), Curve(kind="insertion", replacement=blur, step=224 * 56)
    morf, lerf = Curve(step=224 * 32), Curve(order="lerf", step=224 * 32)
    engine = Engine(model, progress=False)
    out = engine.run(images, maps, None, [dele, ins, morf, lerf])
    with torch.no_grad():
        logits = model(images)
        p = logits.softmax(1).max(1).values
        p_black = model(torch.zeros_like(images)).softmax(1).gather(1, logits.argmax(1, keepdim=True))[:, 0]
    torch.testing.assert_close(out[dele].probs[:, 0], p, atol=1e-5, rtol=1e-4)  # starts at the image
    torch.testing.assert_close(out[dele].probs[:, -1], p_black, atol=1e-5, rtol=1e-4)  # all gone = replacement
    torch.testing.assert_close(out[ins].probs[:, -1], p, atol=1e-5, rtol=1e-4)  # insertion ends at the image
    # on a random map MoRF and LeRF agree on average (within the noise of random pixel sets)
    gap = (out[morf].probs - out[lerf].probs).mean().abs().item()
    assert gap < 0.1


def test_bad_input_is_refused_with_the_argument_named(tiny):
    model, images, maps = tiny
    engine = Engine(model, progress=False)
    with pytest.raises(ValueError, match=r"maps: .*\(12, 12\)"):
        engine.run(images, maps[:, :6], None, [Curve()])
    bad = maps.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"maps: map\(s\) \[1\] contain NaN"):
        engine.run(images, bad, None, [Curve()])
    const = maps.clone()
    const[2] = 0.5
    with pytest.raises(ValueError, match=r"map\(s\) \[2\] are constant"):
        engine.run(images, const, None, [Masked()])
    assert engine.run(images, const, None, [Masked()], constant_maps="zeros")[Masked()].probs.shape == (4,)
    with pytest.raises(ValueError, match=r"targets: class indices must be in \[0, 5\)"):
        engine.run(images, maps, 7, [Curve()])
    with pytest.raises(ValueError, match="targets: expected one class per image"):
        engine.run(images, maps, [0, 1], [Curve()])
    model.train()
    try:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            engine.run(images, maps, None, [Curve()])
    finally:
        model.eval()


def test_rank_units_cells():
    s = torch.tensor([[[1.0, 1.0, 5.0, 5.0], [1.0, 1.0, 5.0, 5.0], [3.0, 3.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0]]])
    assert rank_units(s, "morf", cell=2)[0].tolist() == [[2, 2, 0, 0], [2, 2, 0, 0], [1, 1, 3, 3], [1, 1, 3, 3]]
    assert normalize_maps(s).max() == 1 and normalize_maps(s).min() == 0


# -- the same numbers as Quantus --------------------------------------------------------------------
def untie(maps: torch.Tensor) -> torch.Tensor:
    """The same order with no ties (Grad-CAM's zeros would be ordered differently by numpy's
    unstable argsort): each pixel's rank, which float32 represents exactly."""
    return rank_units(maps, "lerf").float() / maps[0].numel()


@pytest.fixture(scope="module")
def quantus_case(model, photos):
    """Two photos and their Grad-CAM maps."""
    import xai_bridge as xb

    images = photos[0][:2]
    maps = xb.get_explainer("gradcam", model).explain(images)
    with torch.no_grad():
        y = model(images).argmax(1)
    return images, maps, y


def test_deletion_curve_equals_quantus_pixel_flipping(model, quantus_case):
    import quantus

    images, maps, y = quantus_case
    # Quantus counts C×H×W features and needs features_in_step to divide H·W, so whole pixels per
    # step (3·k features) needs 3 | H·W: the photos at 192² (the model pools globally).
    images = torch.nn.functional.interpolate(
        images, size=(192, 192), mode="bilinear", antialias=True, align_corners=False
    )
    maps = untie(
        torch.nn.functional.interpolate(maps[:, None], size=(192, 192), mode="bilinear", align_corners=False)[:, 0]
    )
    with torch.no_grad():
        y = model(images).argmax(1)
    k = 192 * 16  # pixels per step
    metric = quantus.PixelFlipping(
        features_in_step=3 * k,
        perturb_baseline="black",
        normalise=False,
        abs=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    theirs = np.array(
        metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=y.numpy(),
            a_batch=maps[:, None].numpy(),
            device="cpu",
            softmax=True,
        )
    )
    # the quantus preset (its "black" is the per-sample minimum), with whole pixels per step
    curves: dict = {}
    score_maps(model, images, maps, ["deletion_auc"], get_protocol("quantus", step=k), y, curves=curves)
    ours = curves["deletion_auc"]["values"][:, 1:].numpy()
    assert theirs.shape == ours.shape == (2, 12)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_region_curve_equals_quantus_region_perturbation(model, quantus_case):
    import quantus

    images, maps, y = quantus_case
    maps = untie(maps)
    metric = quantus.RegionPerturbation(
        patch_size=32,
        regions_evaluation=12,
        perturb_baseline="black",
        normalise=False,
        abs=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    theirs = np.array(
        metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=y.numpy(),
            a_batch=maps[:, None].numpy(),
            device="cpu",
            softmax=True,
        )
    )
    req = Curve(replacement=Replacement("min"), step=1, cell=32, stop=12 / 49)
    out = Engine(model, progress=False).run(images, maps, y, [req])[req]
    ours = (out.probs[:, :1] - out.probs[:, 1:]).numpy()  # Quantus reports the drop from the image
    assert theirs.shape == ours.shape == (2, 12)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # AOPC on the same 12 regions = the mean of Quantus's drops over the 13 points (the image's own drop is 0)
    from xai_bridge.evaluation import score_maps
    from xai_bridge.protocols import get_protocol

    protocol = get_protocol(level="grid", cell=32, removal=Replacement("min"), removal_step=32 * 32, fraction=12 / 49)
    aopc = score_maps(model, images, maps, ["aopc"], protocol, targets=y)["aopc"]
    np.testing.assert_allclose(aopc.numpy(), theirs.sum(1) / 13, atol=1e-5)


# -- small pieces, each against an independent reference (found by mutation testing) --------------------
def test_folded_gaussian_kernel_equals_scipy_on_a_dirac():
    """RISE's ``gkern``: ``scipy.ndimage.gaussian_filter`` of a centred Dirac; its row sums are the 1-D kernel."""
    from scipy.ndimage import gaussian_filter

    from xai_bridge.engine.maps import folded_gaussian_kernel

    dirac = np.zeros((11, 11))
    dirac[5, 5] = 1
    expected = gaussian_filter(dirac, 5)
    k1d = folded_gaussian_kernel(11, 5.0).double().numpy()
    np.testing.assert_allclose(np.outer(k1d, k1d), expected, atol=1e-7)


def test_blur_replacement_rejects_an_even_kernel():
    from xai_bridge.engine.maps import make_replacement

    with pytest.raises(ValueError, match="replacement.kernel: expected an odd size, got 4"):
        make_replacement(torch.rand(1, 3, 8, 8), Replacement("blur", kernel=4, sigma=1.0))
    assert make_replacement(torch.rand(1, 3, 8, 8), Replacement("blur", kernel=3, sigma=1.0)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    ("text", "expected"), [("2GiB", 2 * 1024**3), ("512MB", 512 * 10**6), ("3kb", 3000), (4096, 4096)]
)
def test_parse_budget_reads_sizes(text, expected):
    from xai_bridge.engine.engine import parse_budget

    assert parse_budget(text) == expected


def _sum_model(n: int) -> nn.Module:
    """``logit = Σ x`` over ``n`` features."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(n, 1, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.fill_(1.0)
    return net


def test_ranked_replacement_logits_by_hand():
    """Two 1×1×3 images, logit Σx. Features of rank s take ``fills[:, s]`` from step s on; rank ≥ 3 never.
    Image 0, x = (1, 2, 4), ranks (2, 0, 1), fills (0, −1, −2): (1, 0, 4) → 5, (1, 0, −1) → 0, (−2, 0, −1) → −3.
    Image 1, x = (3, 5, 7), ranks (0, 2, 3), fills (10, 20, 30): (10, 5, 7) → 22, 22, (10, 30, 7) → 47."""
    from xai_bridge.engine.sequences import ranked_replacement_logits

    net = _sum_model(3)
    images = torch.tensor([[[[1.0, 2.0, 4.0]]], [[[3.0, 5.0, 7.0]]]])
    ranks = torch.tensor([[[[2, 0, 1]]], [[[0, 2, 3]]]])
    fills = torch.tensor([[0.0, -1.0, -2.0], [10.0, 20.0, 30.0]])
    sizes = []
    net.register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0].shape[0]))
    logits = ranked_replacement_logits(Engine(net, batch_size=6, progress=False), images, ranks, fills, 3)
    assert logits.shape == (2, 3, 1) and sizes == [6]  # 2 images × 3 steps in one forward pass, nothing more
    torch.testing.assert_close(logits[..., 0], torch.tensor([[5.0, 0.0, -3.0], [22.0, 22.0, 47.0]]))
    # insertion: after step s the features of rank ≤ s show x, the others that step's fill
    inserted = ranked_replacement_logits(Engine(net, progress=False), images, ranks, fills, 3, insert=True)
    torch.testing.assert_close(inserted[..., 0], torch.tensor([[2.0, 5.0, 7.0], [23.0, 43.0, 38.0]]))


def test_subset_replacement_logits_by_hand():
    """Each subset replaced alone, from the unperturbed image: image 0, x = (1, 2, 4): {0} → 0 gives 6, {2} → −1
    gives 2; image 1, x = (3, 5, 7): {1} → 10 gives 20, {1} → 20 gives 30. No subsets: an empty result."""
    from xai_bridge.engine.sequences import subset_replacement_logits

    engine = Engine(_sum_model(3), progress=False)
    images = torch.tensor([[[[1.0, 2.0, 4.0]]], [[[3.0, 5.0, 7.0]]]])
    subsets = torch.tensor([[[0], [2]], [[1], [1]]])
    logits = subset_replacement_logits(engine, images, subsets, torch.tensor([[0.0, -1.0], [10.0, 20.0]]))
    torch.testing.assert_close(logits[..., 0], torch.tensor([[6.0, 2.0], [20.0, 30.0]]))
    empty = subset_replacement_logits(engine, images, torch.zeros(2, 0, 1, dtype=torch.long), torch.zeros(2, 0))
    assert empty.shape[:2] == (2, 0)
    with pytest.raises(ValueError, match=r"fills: expected shape \(2, 2\)"):
        subset_replacement_logits(engine, images, subsets, torch.zeros(2, 3))


def test_a_grid_tiles_maps_only_in_whole_cells():
    from xai_bridge.engine.maps import tiles

    maps = torch.rand(1, 4, 6)
    assert tiles(torch.rand(1, 2, 3), maps, 2)
    assert not tiles(torch.rand(1, 2, 3), maps, None) and not tiles(None, maps, 2)
    assert not tiles(torch.rand(1, 1, 2), maps, 3)  # 4 is not a multiple of 3
    assert not tiles(torch.rand(1, 2, 2), maps, 2) and not tiles(torch.rand(2, 2, 3), maps, 2)


def test_curve_defaults_are_the_documented_ones():
    """224 pixels per step (the RISE authors' step), pixels as units, the whole image, at most 196 steps."""
    curve = Curve()
    assert (curve.kind, curve.order, curve.step, curve.cell, curve.stop, curve.max_steps) == (
        "deletion",
        "morf",
        224,
        None,
        1.0,
        196,
    )


def test_the_progress_bar_counts_the_images_it_will_send(monkeypatch):
    """The bar's total is every masked image and every curve point: 3 images × (2 masked + 5 curve points) = 21,
    and it reaches its total."""
    import tqdm.auto

    bars = []

    class Recorder(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, disable=True, **kwargs)
            self.seen = 0
            bars.append(self)

        def update(self, n=1):
            self.seen += n

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    images, maps = torch.rand(3, 3, 8, 8), torch.rand(3, 8, 8)
    requests = [Masked(), Masked(replacement=Replacement("mean")), Curve(step=16)]
    Engine(_sum_model(3 * 8 * 8), progress=True).run(images, maps, None, requests)
    assert [bar.total for bar in bars] == [3 * (2 + 5)] and bars[0].seen == bars[0].total
