"""Metric values on models where the map matters, worked independently in numpy.

Every model here is closed-form: class 0's logit is ``Σ w·x`` over channel 0 of a tiny image and
class 1's a constant, so a curve, a removal or a decision flip follows from the pixels a map ranks
first. Each expected value is computed in this file with plain numpy from the definitions (sort the
map, remove/reveal pixels, sum the weights); the engine's helpers are never called for an expected
value. A metric that ranks in the wrong order, takes the wrong substrate, the wrong sign, the wrong
denominator or the wrong reference maps gives another number here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_bridge as xb
from xai_bridge.evaluation import score_maps
from xai_bridge.protocols import Replacement, get_protocol

H = W = 4
N = H * W
# sixteen distinct weights in no spatial order (the map equals them where the map should matter)
WEIGHTS = np.array([3, 11, 7, 0, 14, 5, 9, 1, 12, 2, 15, 6, 4, 13, 8, 10], dtype=np.float64).reshape(H, W) / 10


class Linear(nn.Module):
    """logit_0 = Σ w·x[channel 0], logit_1 = ``c``."""

    def __init__(self, w: np.ndarray, c: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32))
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x[:, 0] * self.w).sum((1, 2))
        return torch.stack([z, torch.full_like(z, self.c)], 1)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def images_from(channel0: np.ndarray) -> torch.Tensor:
    """B×3×H×W images whose channel 0 is ``channel0`` (B×H×W) and whose other channels are 0.5."""
    x = np.full((channel0.shape[0], 3, *channel0.shape[1:]), 0.5)
    x[:, 0] = channel0
    return t(x)


# -- the independent reference ------------------------------------------------------------------------
def order_of(saliency: np.ndarray, order: str = "morf") -> np.ndarray:
    """Flat pixel indices, most (morf) or least (lerf) salient first; ties in raster order."""
    flat = saliency.ravel()
    return np.argsort(-flat if order == "morf" else flat, kind="stable")


def removal_values(w, x0, sub0, saliency, counts, order="morf", kind="deletion") -> np.ndarray:
    """Σ w·x after removing (deletion) or revealing (insertion) the first ``counts`` pixels of the order."""
    idx = order_of(saliency, order)
    out = []
    for k in counts:
        taken = np.zeros(N, dtype=bool)
        taken[idx[:k]] = True
        taken = taken.reshape(H, W)
        if kind == "deletion":
            img = np.where(taken, sub0, x0)
        else:
            img = np.where(taken, x0, sub0)
        out.append(float((w * img).sum()))
    return np.array(out)


def trapezoid(v: np.ndarray, f: np.ndarray) -> float:
    return float(((v[1:] + v[:-1]) / 2 * np.diff(f)).sum())


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, dtype=np.float64)))


def close(actual: torch.Tensor, expected, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(actual.double().numpy(), np.asarray(expected, dtype=np.float64), atol=atol, rtol=1e-5)


@pytest.fixture
def x0() -> np.ndarray:
    """Two images' channel 0 in [0, 1] (not constant, so a mean colour differs from every pixel)."""
    return np.random.default_rng(7).uniform(0.1, 0.9, size=(2, H, W))


# -- deletion and insertion curves --------------------------------------------------------------------
def test_deletion_auc_follows_the_sorted_weights_and_honours_the_step(x0):
    maps = np.stack([WEIGHTS, WEIGHTS.T])  # image 2 ranks by another map: another curve
    protocol = get_protocol(score="logit", step=3)
    out = score_maps(Linear(WEIGHTS).eval(), images_from(x0), t(maps), ["deletion_auc"], protocol, targets=0)
    counts = np.array([0, 3, 6, 9, 12, 15, 16])  # 3 pixels a step, the last step partial
    expected = [trapezoid(removal_values(WEIGHTS, x0[i], 0.0, maps[i], counts), counts / N) for i in range(2)]
    close(out["deletion_auc"], expected)
    # a hand check of the first point: removing the three largest weights (1.5, 1.4, 1.3) from image 1
    first = removal_values(WEIGHTS, x0[0], 0.0, WEIGHTS, [3])[0]
    assert first == pytest.approx((WEIGHTS * x0[0]).sum() - 1.5 * x0[0, 2, 2] - 1.4 * x0[0, 1, 0] - 1.3 * x0[0, 3, 1])


def test_insertion_auc_reveals_the_most_relevant_first_on_its_substrate(x0):
    protocol = get_protocol(score="logit", step=4, insertion=Replacement("constant", value=0.25))
    maps = np.stack([WEIGHTS, -WEIGHTS])  # image 2's map is reversed: the least relevant come first
    out = score_maps(Linear(WEIGHTS).eval(), images_from(x0), t(maps), ["insertion_auc"], protocol, targets=0)
    counts = np.arange(0, N + 1, 4)
    expected = [
        trapezoid(removal_values(WEIGHTS, x0[i], 0.25, maps[i], counts, kind="insertion"), counts / N) for i in range(2)
    ]
    close(out["insertion_auc"], expected)
    assert expected[0] > expected[1] + 0.5  # the order matters by a wide margin


def test_auc_normalize_first_and_max_divide_by_different_points(x0):
    """Signed weights: the insertion curve (probabilities) rises and then falls, so its max is not its first point."""
    w = WEIGHTS - 0.8
    images = images_from(x0)
    counts = np.arange(0, N + 1, 4)
    curves = [sigmoid(removal_values(w, x0[i], 0.0, w, counts, kind="insertion")) for i in range(2)]
    base = get_protocol(step=4, insertion=Replacement("black"))
    for mode, divide in (("none", lambda c: 1.0), ("first", lambda c: c[0]), ("max", lambda c: c.max())):
        out = score_maps(
            Linear(w).eval(),
            images,
            t(np.stack([w, w])),
            ["insertion_auc"],
            base.replace(auc_normalize=mode),
            targets=0,
        )
        close(out["insertion_auc"], [trapezoid(c / divide(c), counts / N) for c in curves])
    assert all(c.max() > c[0] + 0.05 for c in curves)


@pytest.mark.parametrize("name,kind", [("dc", "deletion"), ("ic", "insertion")])
def test_dc_and_ic_equal_the_pearson_of_steps_and_removed_saliency(x0, name, kind):
    """The model weighs pixels by w² while the map is w: a correlation that is neither 0 nor 1."""
    w = WEIGHTS
    model = Linear(w**2).eval()
    protocol = get_protocol(score="logit", step=4, insertion=Replacement("black"))
    maps = np.stack([w, w.T])
    out = score_maps(model, images_from(x0), t(maps), [name], protocol, targets=0)[name]
    counts = np.arange(0, N + 1, 4)
    expected = []
    for i in range(2):
        v = removal_values(w**2, x0[i], 0.0, maps[i], counts, kind=kind)
        change = v[:-1] - v[1:] if kind == "deletion" else v[1:] - v[:-1]
        n = (maps[i] - maps[i].min()) / (maps[i].max() - maps[i].min())
        ranked = n.ravel()[order_of(maps[i])]
        saliency = np.array([ranked[a:b].sum() for a, b in zip(counts[:-1], counts[1:], strict=True)])
        expected.append(np.corrcoef(change, saliency)[0, 1])
    close(out, expected, atol=1e-4)
    assert all(0.3 < e < 0.999 for e in expected), expected


# -- single-step masks: AD, AG, AI, ADD ---------------------------------------------------------------
def test_average_gain_divides_by_one_minus_p_away_from_one_half(x0):
    """Signed weights: masking with n(map) removes the negative weights, so the score rises from p ≠ 0.5."""
    w = WEIGHTS - 0.6
    images = images_from(x0)
    out = score_maps(Linear(w).eval(), images, t(np.stack([w, w])), ["average_gain", "average_drop", "add"], targets=0)
    m = (w - w.min()) / (w.max() - w.min())
    p = sigmoid((w * x0).sum((1, 2)))
    o_keep = sigmoid((w * x0 * m).sum((1, 2)))
    o_del = sigmoid((w * x0 * (1 - m)).sum((1, 2)))
    assert (np.abs(p - 0.5) > 0.1).all() and (o_keep > p).all()
    close(out["average_gain"], (o_keep - p) / (1 - p) * 100, atol=1e-3)
    close(out["average_drop"], np.clip(p - o_keep, 0, None) / p * 100, atol=1e-3)
    close(out["add"], np.clip(p - o_del, 0, None) / p * 100, atol=1e-3)


# -- removal of a fraction: AOPC, AFOC -----------------------------------------------------------------
def test_aopc_removes_the_most_relevant_to_the_image_mean(x0):
    protocol = get_protocol(score="logit", removal_step=2, fraction=0.5)  # default removal: each image's mean
    maps = np.stack([WEIGHTS, WEIGHTS.T])
    out = score_maps(Linear(WEIGHTS).eval(), images_from(x0), t(maps), ["aopc"], protocol, targets=0)
    counts = [0, 2, 4, 6, 8]
    expected = []
    for i in range(2):
        v = removal_values(WEIGHTS, x0[i], x0[i].mean(), maps[i], counts)
        expected.append(np.mean(v[0] - v))
    close(out["aopc"], expected)


def test_afoc_is_least_relevant_first_by_default(x0):
    protocol = get_protocol(score="logit", removal_step=2, fraction=0.25)
    images, maps = images_from(x0), t(np.stack([WEIGHTS, WEIGHTS]))
    model = Linear(WEIGHTS).eval()
    lerf = score_maps(model, images, maps, ["afoc"], protocol, targets=0)["afoc"]
    morf_metric = xb.get_metric("afoc", order="morf")
    morf = score_maps(model, images, maps, [morf_metric], protocol, targets=0)[morf_metric.name]
    for order, got in (("lerf", lerf), ("morf", morf)):
        expected = []
        for i in range(2):
            v = removal_values(WEIGHTS, x0[i], x0[i].mean(), WEIGHTS, [0, 4], order=order)
            expected.append(abs(v[0] - v[1]) / abs(v[0]))
        close(got, expected)
    assert (lerf < morf).all()
    assert xb.get_metric("afoc").higher_is_better is False and morf_metric.higher_is_better is True


# -- decision flips -----------------------------------------------------------------------------------
def flip_fraction(w, x0, sub0, saliency, c, order, step) -> float:
    counts = list(range(0, N + 1, step))
    v = removal_values(w, x0, sub0, saliency, counts, order=order)
    base = v[0] > c
    for k, value in zip(counts, v, strict=True):
        if (value > c) != base:
            return k / N
    return 1.0


def test_n_morf_and_n_lerf_flip_at_the_fraction_the_weights_give(x0):
    """Class 1's logit sits halfway between the image's and its all-removed logit: the decision flips mid-way."""
    protocol = get_protocol(removal_step=2)  # removal to each image's mean colour
    images, maps = images_from(x0[:1]), t(WEIGHTS[None])
    full = (WEIGHTS * x0[0]).sum()
    c = (full + x0[0].mean() * WEIGHTS.sum()) / 2 + 0.15 * (full - x0[0].mean() * WEIGHTS.sum())
    out = score_maps(Linear(WEIGHTS, c).eval(), images, maps, ["n_morf", "n_lerf"], protocol)
    morf = flip_fraction(WEIGHTS, x0[0], x0[0].mean(), WEIGHTS, c, "morf", 2)
    lerf = flip_fraction(WEIGHTS, x0[0], x0[0].mean(), WEIGHTS, c, "lerf", 2)
    assert 0 < morf < lerf < 1, (morf, lerf)
    close(out["n_morf"], [morf], atol=1e-6)
    close(out["n_lerf"], [lerf], atol=1e-6)
    # on black instead of the mean colour the flips come at other fractions
    black = score_maps(
        Linear(WEIGHTS, c).eval(), images, maps, ["n_morf"], protocol.replace(removal=Replacement("black"))
    )
    close(black["n_morf"], [flip_fraction(WEIGHTS, x0[0], 0.0, WEIGHTS, c, "morf", 2)], atol=1e-6)
    assert black["n_morf"].item() != out["n_morf"].item()


# -- Δσ on the built-in path --------------------------------------------------------------------------
def test_delta_subtracts_the_score_with_the_other_images_map(x0):
    """Two images, K = 1: each image's reference is the other image's map applied to it."""
    maps = np.stack([WEIGHTS, WEIGHTS[::-1, ::-1]])
    protocol = get_protocol(score="logit", step=4)
    delta = xb.get_metric("delta", metric="deletion_auc", k=1)
    out = score_maps(Linear(WEIGHTS).eval(), images_from(x0), t(maps), [delta], protocol, targets=0)[delta.name]
    counts = np.arange(0, N + 1, 4)

    def dauc(i, j):
        return trapezoid(removal_values(WEIGHTS, x0[i], 0.0, maps[j], counts), counts / N)

    expected = [dauc(0, 0) - dauc(0, 1), dauc(1, 1) - dauc(1, 0)]
    close(out, expected)
    assert expected[0] < -0.5  # the right map deletes the evidence first: a much lower DAUC


# -- ADCC -------------------------------------------------------------------------------------------------
class FixedMap:
    """An explainer whose map ignores the image (coherency 1)."""

    def __init__(self, saliency: np.ndarray) -> None:
        self.saliency = t(saliency)

    def explain(self, images: torch.Tensor, target=None) -> torch.Tensor:
        return self.saliency.expand(images.shape[0], H, W).clone()


class ChannelZero:
    """An explainer whose map is the image's channel 0 (re-explaining the masked image changes it)."""

    def explain(self, images: torch.Tensor, target=None) -> torch.Tensor:
        return images[:, 0].clone()


def adcc_reference(coherency, complexity, ad):
    return 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - ad / 100))


def test_adcc_of_an_image_independent_map(x0):
    s = WEIGHTS
    m = (s - s.min()) / (s.max() - s.min())
    images = images_from(x0)
    out = score_maps(Linear(WEIGHTS).eval(), images, t(np.stack([s, s])), ["adcc"], explainer=FixedMap(s), targets=0)
    p = sigmoid((WEIGHTS * x0).sum((1, 2)))
    o = sigmoid((WEIGHTS * x0 * m).sum((1, 2)))
    ad = np.clip(p - o, 0, None) / p * 100
    expected = adcc_reference(1.0, m.mean(), ad)
    close(out["adcc"], expected, atol=1e-4)
    assert ((out["adcc"] >= 0) & (out["adcc"] <= 1)).all()


def test_adcc_coherency_re_explains_the_masked_image(x0):
    images = images_from(x0)
    out = score_maps(Linear(WEIGHTS).eval(), images, t(x0), ["adcc"], explainer=ChannelZero(), targets=0)
    expected = []
    for i in range(2):
        s = x0[i]
        m = (s - s.min()) / (s.max() - s.min())
        again = s * m  # channel 0 of x·M + black·(1 − M)
        coherency = (np.corrcoef(s.ravel(), again.ravel())[0, 1] + 1) / 2
        p, o = sigmoid((WEIGHTS * s).sum()), sigmoid((WEIGHTS * s * m).sum())
        expected.append(adcc_reference(coherency, m.mean(), max(p - o, 0) / p * 100))
    close(out["adcc"], expected, atol=1e-4)


# -- localisation -------------------------------------------------------------------------------------
def graded_map() -> np.ndarray:
    """8×8: a 2×2 core of 1 inside a 5×5 halo of 0.4. mean(S) = (4 + 21·0.4)/64 ≈ 0.19 keeps the halo."""
    s = np.zeros((8, 8))
    s[1:6, 1:6] = 0.4
    s[2:4, 2:4] = 1.0
    return s


def test_localisation_error_and_om_threshold_at_the_map_mean():
    s = graded_map()
    boxes = [[[1, 1, 5, 5]], [[1, 1, 5, 5]]]
    # B_p = the halo [1, 1, 6, 6] (25 px); the ground truth is 16 px inside it: IoU = 16/25
    # (a fixed threshold of 0.5 would keep the core [2, 2, 4, 4] instead: IoU = 4/16)
    model = Linear(np.ones((8, 8)), c=0.0).eval()
    x = np.zeros((2, 8, 8))
    x[0] = 0.5  # image 1: logit_0 = 32 > 0, predicted class 0; image 2: all zero, a tie, predicted class 0
    images = images_from(x)
    labels = torch.tensor([0, 1])  # image 2's label is not the predicted class
    out = score_maps(
        model,
        images,
        t(np.stack([s, s])),
        ["localisation_error", "official_metric"],
        boxes=boxes,
        labels=labels,
    )
    close(out["localisation_error"], [1 - 16 / 25, 1 - 16 / 25], atol=1e-6)
    close(out["official_metric"], [1 - 16 / 25, 1.0], atol=1e-6)


def test_box_accuracy_takes_the_batch_best_threshold_not_each_image_best():
    """Images 1-2 hit only at η ≥ 0.55 (their core), image 3 only at η ≤ 0.3 (before its peak takes over).

    Hits per η over the batch: 1/3 for η ≤ 0.3, 0 for 0.35-0.5, 2/3 for η ≥ 0.55: the batch's best η is
    0.55, where image 3 misses (its own best η would give it a hit).
    """
    a = np.zeros((8, 8))
    a[1:7, 1:7] = 0.52
    a[3:5, 3:5] = 1.0  # ground truth = the 2×2 core; the 6×6 halo has IoU 4/36 < 0.3
    b = np.zeros((8, 8))
    b[0:3, 0:3] = 0.32  # ground truth = this 3×3 block; a lone peak elsewhere
    b[7, 7] = 1.0
    boxes = [[[3, 3, 5, 5]], [[3, 3, 5, 5]], [[0, 0, 3, 3]]]
    model = Linear(np.ones((8, 8))).eval()
    images = images_from(np.full((3, 8, 8), 0.5))
    out = score_maps(model, images, t(np.stack([a, a, b])), ["box_accuracy"], boxes=boxes)
    close(out["box_accuracy"], [1.0, 1.0, 0.0], atol=0)
    from xai_bridge_builtins.metrics.localisation import box_accuracy

    close(box_accuracy(t(b[None]), boxes[2:]), [1.0], atol=0)  # alone, image 3 finds its own η


# -- substrates against independent implementations --------------------------------------------------
@pytest.fixture
def picture() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(11))


def test_gaussian_blur_substrate_equals_torchvision(picture):
    from torchvision.transforms.functional import gaussian_blur

    from xai_bridge.engine import make_replacement

    got = make_replacement(picture, Replacement("blur", kernel=5, sigma=1.5))
    torch.testing.assert_close(got, gaussian_blur(picture, [5, 5], [1.5, 1.5]), atol=1e-5, rtol=1e-5)


def test_box_blur_substrate_equals_scipy(picture):
    from scipy import ndimage

    from xai_bridge.engine import make_replacement

    got = make_replacement(picture, Replacement("box_blur", kernel=5))
    expected = ndimage.uniform_filter(picture.double().numpy(), size=(1, 1, 5, 5), mode="mirror")
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_noise_constant_tensor_mean_and_min_substrates(picture):
    from xai_bridge.engine import make_replacement

    noise = make_replacement(picture, Replacement("noise", seed=3))
    torch.testing.assert_close(noise, torch.rand(picture.shape, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(noise, make_replacement(picture, Replacement("noise", seed=4)))
    const = make_replacement(picture, Replacement("constant", value=(0.1, 0.2, 0.3)))
    np.testing.assert_allclose(
        const.numpy(), np.broadcast_to(np.array([0.1, 0.2, 0.3])[None, :, None, None], picture.shape), atol=1e-7
    )
    other = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(make_replacement(picture, Replacement("tensor"), other), other.expand_as(picture))
    mean = picture.numpy().mean((2, 3), keepdims=True)
    np.testing.assert_allclose(
        make_replacement(picture, Replacement("mean")).numpy(), np.broadcast_to(mean, picture.shape), atol=1e-6
    )
    low = picture.numpy().reshape(2, -1).min(1)[:, None, None, None]
    np.testing.assert_allclose(
        make_replacement(picture, Replacement("min")).numpy(), np.broadcast_to(low, picture.shape)
    )


def test_deletion_on_blur_takes_the_blurred_pixels(picture):
    """Through the metric: DAUC on a blur substrate, the substrate from torchvision."""
    from torchvision.transforms.functional import gaussian_blur

    x = picture[:1].clamp(0, 1)
    w = np.random.default_rng(2).uniform(-1, 1, size=(16, 16))
    sub = gaussian_blur(x, [5, 5], [2.0, 2.0])[0, 0].double().numpy()
    protocol = get_protocol(score="logit", step=64, deletion=Replacement("blur", kernel=5, sigma=2.0))
    curves: dict = {}
    out = score_maps(Linear(w).eval(), x, t(w[None]), ["deletion_auc"], protocol, targets=0, curves=curves)
    idx = order_of(w)
    values = []
    for k in (0, 64, 128, 192, 256):
        img = x[0, 0].double().numpy().ravel().copy()
        img[idx[:k]] = sub.ravel()[idx[:k]]
        values.append((w.ravel() * img).sum())
    close(curves["deletion_auc"]["values"][0], values, atol=1e-3)
    close(out["deletion_auc"], [trapezoid(np.array(values), np.array([0, 64, 128, 192, 256]) / 256)], atol=1e-3)


# -- protocol options -----------------------------------------------------------------------------------
def test_target_label_scores_the_label_not_the_prediction(x0):
    images = images_from(x0)  # both predicted class 0 (positive weights, positive pixels)
    labels = torch.tensor([1, 0])
    maps = t(np.stack([WEIGHTS, WEIGHTS]))
    protocol = get_protocol(step=8, target="label")
    out = score_maps(Linear(WEIGHTS).eval(), images, maps, ["deletion_auc"], protocol, labels=labels)
    counts = np.array([0, 8, 16])
    p0 = [sigmoid(removal_values(WEIGHTS, x0[i], 0.0, WEIGHTS, counts)) for i in range(2)]
    close(out["deletion_auc"], [trapezoid(1 - p0[0], counts / N), trapezoid(p0[1], counts / N)])
    predicted = score_maps(
        Linear(WEIGHTS).eval(), images, maps, ["deletion_auc"], protocol.replace(target="predicted"), labels=labels
    )
    close(predicted["deletion_auc"], [trapezoid(p0[i], counts / N) for i in range(2)])


def test_constant_maps_zeros_keep_nothing_and_ones_keep_everything(x0):
    images, flat = images_from(x0), torch.ones(2, H, W)
    p = sigmoid((WEIGHTS * x0).sum((1, 2)))
    zeros = score_maps(
        Linear(WEIGHTS).eval(), images, flat, ["average_drop"], get_protocol(constant_maps="zeros"), targets=0
    )
    close(zeros["average_drop"], (p - 0.5) / p * 100, atol=1e-3)  # x·0: logit 0, probability 1/2
    ones = score_maps(
        Linear(WEIGHTS).eval(), images, flat, ["average_drop"], get_protocol(constant_maps="ones"), targets=0
    )
    close(ones["average_drop"], [0.0, 0.0], atol=1e-4)


def test_grid_level_takes_the_cell_from_the_map_resolution(x0):
    """2×2 maps on 4×4 images: cells of 2×2 pixels, removed one cell a step in the order of the coarse map
    (an int step counts pixels: 4 = one cell)."""
    coarse = np.array([[0.2, 0.9], [0.5, 0.1]])
    protocol = get_protocol(score="logit", level="grid", step=4, resize="nearest")
    maps = t(np.stack([coarse, coarse.T]))
    out = score_maps(Linear(WEIGHTS).eval(), images_from(x0), maps, ["deletion_auc"], protocol, targets=0)
    expected = []
    for i, c in enumerate((coarse, coarse.T)):
        fine = np.kron(c, np.ones((2, 2)))  # the nearest upsampling: each cell its coarse value
        # pixels ranked by their cell (raster within a cell does not matter: cells are removed whole)
        v = removal_values(WEIGHTS, x0[i], 0.0, fine, [0, 4, 8, 12, 16])
        expected.append(trapezoid(v, np.array([0, 4, 8, 12, 16]) / N))
    close(out["deletion_auc"], expected)
    # maps already at input resolution are their own grid, one pixel a cell: 4 pixels a step in the map's order
    fine = score_maps(
        Linear(WEIGHTS).eval(), images_from(x0), t(np.stack([WEIGHTS] * 2)), ["deletion_auc"], protocol, targets=0
    )
    expected = [
        trapezoid(removal_values(WEIGHTS, x0[i], 0.0, WEIGHTS, [0, 4, 8, 12, 16]), np.array([0, 4, 8, 12, 16]) / N)
        for i in range(2)
    ]
    close(fine["deletion_auc"], expected)
    with pytest.raises(ValueError, match="protocol.step: 1 pixels is not a whole number of 2×2-pixel cells"):
        score_maps(Linear(WEIGHTS).eval(), images_from(x0), maps, ["deletion_auc"], protocol.replace(step=1))


# -- killing the survivors of the mutation run ------------------------------------------------------
def test_delta_with_more_references_than_other_images_repeats_the_others(x0):
    """K = 3 on two images: every reference is the one other image (never the image itself)."""
    delta = xb.get_metric("delta", metric="deletion_auc", k=3)
    assert delta.others(2, torch.device("cpu")).tolist() == [[1, 1, 1], [0, 0, 0]]
    assert not (delta.others(3, torch.device("cpu")) == torch.arange(3)[:, None]).any()
    maps = t(np.stack([WEIGHTS, WEIGHTS[::-1, ::-1]]))
    protocol = get_protocol(score="logit", step=4)
    model = Linear(WEIGHTS).eval()
    three = score_maps(model, images_from(x0), maps, [delta], protocol, targets=0)[delta.name]
    one = score_maps(model, images_from(x0), maps, [xb.get_metric("delta", k=1)], protocol, targets=0)
    close(three, one["delta(deletion_auc)"].numpy(), atol=1e-6)


def test_delta_averages_the_values_of_a_toolkit_metric_with_several_per_image(x0):
    """A Quantus-style callable that returns two values per image (the map's mean and max): Δ uses their mean."""

    def two_values(model, x_batch, y_batch, a_batch, device):
        return np.stack([a_batch.mean((1, 2, 3)), a_batch.max((1, 2, 3))], 1)

    maps = np.stack([WEIGHTS, WEIGHTS**2])
    delta = xb.get_metric("delta", metric=two_values, k=1)
    out = score_maps(Linear(WEIGHTS).eval(), images_from(x0), t(maps), [delta], targets=0)[delta.name]
    own = [(m.mean() + m.max()) / 2 for m in maps]
    close(out, [own[0] - own[1], own[1] - own[0]], atol=1e-5)


def test_removal_metrics_flip_their_direction_with_the_order():
    for name, morf_higher in (("aopc", True), ("afoc", True)):
        assert xb.get_metric(name, order="morf").higher_is_better is morf_higher
        assert xb.get_metric(name, order="lerf").higher_is_better is not morf_higher


def test_pixel_f1_and_energy_on_a_map_that_is_not_square():
    """6×10 maps: the box union must have the maps' height and width (not width × width)."""
    s = np.zeros((6, 10))
    s[1:4, 2:8] = 1.0  # 18 px of mass 1
    s[5, 9] = 0.5  # 0.5 outside the box
    boxes = [[[2, 1, 8, 4]]]
    model = Linear(np.ones((6, 10))).eval()
    out = score_maps(
        model, images_from(np.full((1, 6, 10), 0.5)), t(s[None]), ["pixel_f1", "energy_pointing_game"], boxes=boxes
    )
    precision, recall = 18 / 18.5, 18 / 18
    close(out["energy_pointing_game"], [precision], atol=1e-6)
    close(out["pixel_f1"], [2 * precision * recall / (precision + recall)], atol=1e-6)


def test_iou_of_boxes_narrower_than_a_pixel():
    from xai_bridge_builtins.metrics.localisation import iou

    close(iou(torch.tensor([0.0, 0, 4, 4]), torch.tensor([[0.0, 0, 0.5, 4], [0, 0, 4, 0.5]])), [2 / 16] * 2, atol=1e-7)


def test_official_metric_compares_each_image_prediction_with_its_label():
    """Three images predicted 0, 1, 0 with labels 0, 1, 1: only the third is a wrong class (OM = 1)."""
    s = graded_map()
    model = Linear(np.ones((8, 8)), c=10.0).eval()  # logit_0 = Σ x: 32 for x = 0.5 (class 0), 0 for x = 0 (class 1)
    x = np.stack([np.full((8, 8), 0.5), np.zeros((8, 8)), np.full((8, 8), 0.5)])
    out = score_maps(
        model,
        images_from(x),
        t(np.stack([s, s, s])),
        ["official_metric"],
        boxes=[[[1, 1, 5, 5]]] * 3,
        labels=torch.tensor([0, 1, 1]),
    )
    close(out["official_metric"], [1 - 16 / 25, 1 - 16 / 25, 1.0], atol=1e-6)


def test_localisation_metrics_name_the_count_of_boxes_and_images():
    with pytest.raises(ValueError, match="boxes: 2 entries for 3 images"):
        score_maps(
            Linear(WEIGHTS).eval(),
            images_from(np.full((3, H, W), 0.5)),
            t(np.stack([WEIGHTS] * 3)),
            ["pixel_f1"],
            boxes=[[[0, 0, 2, 2]]] * 2,
        )


def test_saliency_metric_of_a_box_away_from_the_corner():
    """SM = log max(0.05, |B_p|/hw) − log p_c: B_p = [2, 1, 8, 4] on 6×10, area 18/60; p_c = sigmoid(1)."""
    s = np.zeros((6, 10))
    s[1:4, 2:8] = 1.0
    model = Linear(np.ones((6, 10)), c=29.0).eval()  # logit_0 = Σ x = 30 for x = 0.5
    out = score_maps(model, images_from(np.full((1, 6, 10), 0.5)), t(s[None]), ["saliency_metric"])
    close(out["saliency_metric"], [math.log(18 / 60) - math.log(sigmoid(1.0))], atol=1e-5)
