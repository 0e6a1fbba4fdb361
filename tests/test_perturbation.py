"""The perturbation explainers on the executor: RISE, Score-CAM, Ablation-CAM, Occlusion.

Each is checked against an independent reference: RISE against a NumPy re-implementation of the
authors' ``explanations.py`` (Petsiuk, Das & Saenko), Score-CAM and Ablation-CAM against
pytorch-grad-cam's own classes, Occlusion against Captum's. Several classes per image must
cost the forward passes of one (the executor's ``samples`` counter).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from xai_bridge.engine import Executor
from xai_bridge.errors import ForwardModeWarning, InvalidArgumentError
from xai_bridge_builtins.perturbation import RISE, AblationCAM, Occlusion, ScoreCAM
from xai_bridge_builtins.perturbation.rise import MaskGenerator, interpolation_matrix
from xai_bridge_builtins.perturbation.split import tail_after


def _images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- registration (the entry point is read from installed metadata: call the hook itself) --------------


def test_the_plugin_registers_the_five_methods_under_their_plain_names():
    import xai_bridge_builtins.perturbation as plugin
    import xai_bridge_builtins.toolkit as toolkit

    names: dict[str, tuple] = {}
    plugin.register_explainers(lambda name, factory, **kw: names.setdefault(name, kw.get("aliases", ())))
    assert names == {
        "rise": (),
        "scorecam": ("score-cam",),
        "ablationcam": ("ablation-cam",),
        "occlusion": (),
        "extremal-perturbation": ("extremal",),
    }
    kept: list[str] = []
    toolkit.register_explainers(lambda name, factory, **kw: kept.extend([name, *kw.get("aliases", ())]))
    assert {"scorecam-toolkit", "ablationcam-toolkit", "occlusion-toolkit"} <= set(kept)
    assert not set(kept) & {"rise", "scorecam", "score-cam", "ablationcam", "ablation-cam", "occlusion"}


# -- RISE --------------------------------------------------------------------------------------------


def _authors_masks(n: int, s: int, p1: float, size: int, rng: np.random.Generator):
    """The authors' ``RISE.generate_masks``, re-written: skimage resize (order 1, reflect) then a random crop."""
    from skimage.transform import resize

    cell = int(np.ceil(size / s))
    up = (s + 1) * cell
    grid = (rng.random((n, s, s)) < p1).astype("float32")
    masks = np.empty((n, size, size))
    shifts = []
    for i in range(n):
        x, y = rng.integers(0, cell), rng.integers(0, cell)
        shifts.append((x, y))
        masks[i] = resize(grid[i], (up, up), order=1, mode="reflect", anti_aliasing=False)[x : x + size, y : y + size]
    return masks.astype("float32"), grid, np.array(shifts)


def _authors_saliency(model, image: np.ndarray, masks: np.ndarray, p1: float, gpu_batch: int = 100) -> np.ndarray:
    """The authors' ``RISE.forward`` for one image: softmax scores of the masked stack, then pᵀ·masks / N / p1."""
    n, h, w = masks.shape
    stack = masks[:, None] * image[None]
    p = []
    with torch.no_grad():
        for i in range(0, n, gpu_batch):
            p.append(torch.softmax(model(torch.from_numpy(stack[i : i + gpu_batch])), 1).double().numpy())
    scores = np.concatenate(p)  # N×K
    return (scores.T @ masks.reshape(n, h * w).astype(np.float64)).reshape(-1, h, w) / n / p1


def test_rise_equals_the_authors_code_given_the_same_masks(tiny_resnet):
    masks, _, _ = _authors_masks(150, 4, 0.5, 32, np.random.default_rng(0))
    images = _images(2)
    rise = RISE(tiny_resnet, masks=torch.from_numpy(masks), p1=0.5)
    targets = torch.tensor([[3, 7], [1, 1]])
    ours = rise.attribute(images, targets).maps
    for b in range(2):
        ref = _authors_saliency(tiny_resnet, images[b].numpy(), masks, 0.5)
        for j in range(2):
            np.testing.assert_allclose(ours[b, j].numpy(), ref[int(targets[b, j])], atol=1e-5, rtol=0)
    assert rise.executor.samples == 2 * 150  # every class from the same B·N passes


def test_rise_generator_makes_the_authors_masks_from_its_grids_and_shifts():
    from skimage.transform import resize

    for size, s in ((32, 4), (224, 7), (30, 7)):
        gen = MaskGenerator(20, s, 0.5, (size, size), seed=3)
        ours = gen.masks(0, 20, torch.device("cpu")).double().numpy()
        up = (s + 1) * int(np.ceil(size / s))
        for i in range(20):
            x, y = (int(v) for v in gen.shifts[i])
            ref = resize(gen.grids[i].double().numpy(), (up, up), order=1, mode="reflect", anti_aliasing=False)
            np.testing.assert_allclose(ours[i], ref[x : x + size, y : y + size], atol=1e-6)


def test_rise_mask_statistics_match_the_authors_generator():
    gen = MaskGenerator(4000, 7, 0.3, (224, 224), seed=0)
    cell = 32
    assert gen.cell == (cell, cell)
    assert abs(float(gen.grids.mean()) - 0.3) < 0.01  # p1 is the probability of KEEPING a cell
    assert int(gen.shifts.min()) == 0 and int(gen.shifts.max()) == cell - 1  # offsets span [0, cell)
    masks = gen.masks(0, 500, torch.device("cpu"))
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.02
    # the authors' generator, re-implemented, gives the same statistics
    ref, _, shifts = _authors_masks(300, 7, 0.3, 224, np.random.default_rng(1))
    assert abs(float(ref.mean()) - float(masks.mean())) < 0.03
    assert shifts.min() >= 0 and shifts.max() < cell


def test_interpolation_matrix_rows_sum_to_one_and_mirror_at_the_border():
    m = interpolation_matrix(256, 7)
    assert torch.allclose(m.sum(1), torch.ones(256, dtype=torch.float64))
    # the first output sample lies left of the first cell: it mixes cells 0 and 1 (mirrored), not cell 0 alone
    assert m[0, 1] > 0 and m[0, 0] < 1


def test_rise_top5_costs_the_passes_of_one_target_and_equals_five_single_runs(tiny_resnet):
    images = _images(2)
    one = RISE(tiny_resnet, n_masks=40, grid=4, seed=1)
    single = one.explanation(images, target=[2, 5])
    five = RISE(tiny_resnet, n_masks=40, grid=4, seed=1)
    e = five.explanation(images, target="top5")
    assert e.maps.shape == (2, 5, 32, 32) and e.targets.shape == (2, 5)
    assert five.executor.samples == one.executor.samples == 2 * 40
    sep = RISE(tiny_resnet, n_masks=40, grid=4, seed=1)
    for j in range(5):
        torch.testing.assert_close(e.maps[:, j], sep.explain(images, target=e.targets[:, j]), atol=1e-6, rtol=0)
    assert single.maps.shape == (2, 32, 32)


def test_rise_makes_its_masks_a_bounded_block_at_a_time(tiny_resnet, monkeypatch):
    """Memory stays flat in N: never more than MASK_BYTES of masks exist at once, and the maps do not depend on it."""
    from xai_bridge_builtins.perturbation import rise as rise_module

    images = _images(2)
    whole = RISE(tiny_resnet, n_masks=40, grid=4, seed=1).explain(images, target=[2, 5])
    made = []
    original = MaskGenerator.masks
    monkeypatch.setattr(MaskGenerator, "masks", lambda self, a, b, d: made.append(b - a) or original(self, a, b, d))
    monkeypatch.setattr(rise_module, "MASK_BYTES", 7 * 32 * 32 * 4)  # 7 masks of 32×32
    blocked = RISE(tiny_resnet, n_masks=40, grid=4, seed=1).explain(images, target=[2, 5])
    assert max(made) == 7 and sum(made) == 40
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=0)


def test_rise_rejects_bad_options(tiny_resnet):
    with pytest.raises(InvalidArgumentError, match="p1"):
        RISE(tiny_resnet, p1=1.5)
    with pytest.raises(InvalidArgumentError, match="masks"):
        RISE(tiny_resnet, masks=torch.rand(4, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="masks: they are"):
        RISE(tiny_resnet, masks=torch.rand(4, 8, 8)).explain(_images(1))
    with pytest.raises(InvalidArgumentError, match="executor"):
        RISE(tiny_resnet, executor=Executor(nn.Linear(2, 2).eval()))


# -- Score-CAM and Ablation-CAM against pytorch-grad-cam ------------------------------------------------


def _gradcam(cls, model, layer, images, targets, **options):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = cls(model=model, target_layers=[layer], **options)
    try:
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()


def test_scorecam_equals_pytorch_grad_cam_on_a_resnet(tiny_resnet):
    from pytorch_grad_cam import ScoreCAM as Reference

    images = _images(2, 64)
    ours = ScoreCAM(tiny_resnet)
    e = ours.explanation(images, target=torch.tensor([[4, 9], [0, 4]]))
    for j in range(2):
        ref = _gradcam(Reference, tiny_resnet, tiny_resnet.layer4[-1], images, e.targets[:, j])
        np.testing.assert_allclose(e.maps[:, j].numpy(), ref, atol=1e-5, rtol=0)
    channels = 512
    constant = e.info["constant_channels"]
    assert ours.executor.samples == 2 * channels - constant + (1 if constant else 0)


def test_scorecam_equals_pytorch_grad_cam_on_the_default_model(model, photos):
    from pytorch_grad_cam import ScoreCAM as Reference

    images = photos[0][:1]
    ours = ScoreCAM(model, layer="blocks.15")
    e = ours.explanation(images)
    ref = _gradcam(Reference, model, model.blocks[15], images, e.targets)
    np.testing.assert_allclose(e.maps.numpy(), ref, atol=1e-5, rtol=0)


def test_scorecam_five_targets_cost_one_set_of_passes(tiny_resnet):
    images = _images(2, 64)
    one, five = ScoreCAM(tiny_resnet), ScoreCAM(tiny_resnet)
    single = one.explanation(images, target=[1, 2])
    e = five.explanation(images, target="top5")
    assert five.executor.samples == one.executor.samples
    for j in range(5):
        same = ScoreCAM(tiny_resnet).explain(images, target=e.targets[:, j])
        torch.testing.assert_close(e.maps[:, j], same, atol=1e-5, rtol=0)
    assert single.maps.shape == (2, 64, 64)


def test_ablationcam_equals_pytorch_grad_cam_on_a_resnet_running_only_the_last_layers(tiny_resnet):
    from pytorch_grad_cam import AblationCAM as Reference

    images = _images(2, 64)
    ours = AblationCAM(tiny_resnet)
    e = ours.explanation(images, target=torch.tensor([[4, 9], [0, 4]]))
    assert ours.split
    for j in range(2):
        ref = _gradcam(Reference, tiny_resnet, tiny_resnet.layer4[-1], images, e.targets[:, j], batch_size=64)
        np.testing.assert_allclose(e.maps[:, j].numpy(), ref, atol=1e-5, rtol=0)
    assert ours.tail_executor.samples == 2 * 512  # ablated activations only: avgpool and fc


class _Residual(nn.Module):
    """A model whose target layer sits inside a residual sum: the rest reads a value from before it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = self.body(h) + h
        return self.fc(h.mean((2, 3)))


def test_ablationcam_falls_back_to_full_passes_with_one_warning_and_still_equals_the_toolkit():
    from pytorch_grad_cam import AblationCAM as Reference

    torch.manual_seed(0)
    net = _Residual().eval()
    images = _images(2, 16)
    ours = AblationCAM(net, layer="body")
    with pytest.warns(ForwardModeWarning, match="reads"):
        e = ours.explanation(images, target=[1, 2])
    assert ours.split is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForwardModeWarning)
        ours.explanation(images, target=[1, 2])  # said once
    ref = _gradcam(Reference, net, net.body, images, [1, 2], batch_size=4)
    np.testing.assert_allclose(e.maps.numpy(), ref, atol=1e-5, rtol=0)


def test_the_default_model_splits_after_its_head(model, photos):
    images = photos[0][:2]
    tail, why = tail_after(model, model.head)
    assert why == ""
    with torch.no_grad():
        torch.testing.assert_close(tail(model.features(images)), model(images), atol=1e-5, rtol=0)
    ours = AblationCAM(model)
    e = ours.explanation(images[:1], target="top5")
    assert ours.split and ours.tail_executor.samples == 1280 and e.maps.shape == (1, 5, 224, 224)


def test_ablationcam_five_targets_cost_one_set_of_passes(tiny_resnet):
    images = _images(2, 64)
    one, five = AblationCAM(tiny_resnet), AblationCAM(tiny_resnet)
    one.explain(images, target=[1, 2])
    e = five.explanation(images, target="top5")
    assert five.tail_executor.samples == one.tail_executor.samples == 2 * 512
    torch.testing.assert_close(e.maps[:, 2], AblationCAM(tiny_resnet).explain(images, target=e.targets[:, 2]))


# -- Occlusion against Captum -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "strides", "baseline"),
    [
        ((3, 10, 10), (3, 7, 7), 0.0),  # truncated edge windows, overlaps
        ((2, 8, 6), (1, 5, 4), 0.25),  # windows over part of the channels
    ],
)
def test_occlusion_equals_captum(tiny_resnet, window, strides, baseline):
    from captum.attr import Occlusion as Reference

    images = _images(2, 32)
    targets = torch.tensor([[3, 8], [5, 3]])
    occ = Occlusion(tiny_resnet, sliding_window_shapes=window, strides=strides, baselines=baseline)
    ours = occ.occlusion(images, targets)
    for j in range(2):
        ref = Reference(tiny_resnet).attribute(
            images, target=targets[:, j], sliding_window_shapes=window, strides=strides, baselines=baseline
        )
        np.testing.assert_allclose(ours[:, j].numpy(), ref.numpy(), atol=1e-5, rtol=0)


def test_occlusion_with_a_tensor_baseline_equals_captum(tiny_resnet):
    from captum.attr import Occlusion as Reference

    images = _images(2, 32)
    baseline = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    occ = Occlusion(tiny_resnet, sliding_window_shapes=(3, 12, 12), strides=(3, 10, 10), baselines=baseline)
    ref = Reference(tiny_resnet).attribute(
        images, target=torch.tensor([1, 2]), sliding_window_shapes=(3, 12, 12), strides=(3, 10, 10), baselines=baseline
    )
    np.testing.assert_allclose(occ.occlusion(images, torch.tensor([[1], [2]]))[:, 0].numpy(), ref.numpy(), atol=1e-5)


def test_occlusion_five_targets_cost_one_set_of_passes(tiny_resnet):
    images = _images(2, 32)
    settings = {"sliding_window_shapes": (3, 16, 16), "strides": (3, 8, 8)}
    one, five = Occlusion(tiny_resnet, **settings), Occlusion(tiny_resnet, **settings)
    single = one.explain(images, target=[1, 2])
    e = five.explanation(images, target="top5")
    assert five.executor.samples == one.executor.samples == 2 * (9 + 1)
    torch.testing.assert_close(e.maps[:, 0], Occlusion(tiny_resnet, **settings).explain(images, target=e.targets[:, 0]))
    assert single.shape == (2, 32, 32)


def test_occlusion_rejects_a_window_larger_than_the_image(tiny_resnet):
    with pytest.raises(InvalidArgumentError, match="sliding_window_shapes"):
        Occlusion(tiny_resnet, sliding_window_shapes=(3, 40, 40)).explain(_images(1))
    with pytest.raises(InvalidArgumentError, match="strides"):
        Occlusion(tiny_resnet, strides=(3, 0, 8))


# -- several classes per image through the base class ----------------------------------------------------


def test_an_explainer_without_multi_target_gets_one_call_per_class(tiny_resnet):
    import xai_bridge as xb

    images = _images(2, 64)
    e = xb.get_explainer("gradcam", tiny_resnet).explanation(images, target=[[1, 2, 3], [4, 5, 6]])
    assert e.maps.shape == (2, 3, 64, 64) and e.raw.shape[:2] == (2, 3)
    same = xb.get_explainer("gradcam", tiny_resnet).explain(images, target=[2, 5])
    torch.testing.assert_close(e.maps[:, 1], same)
    assert e.probabilities.shape == (2, 3)


def test_target_sets_are_checked(tiny_resnet):
    rise = RISE(tiny_resnet, n_masks=4)
    with pytest.raises(InvalidArgumentError, match="same number"):
        rise.explain(_images(2), target=[[1, 2], [3]])
    with pytest.raises(InvalidArgumentError, match="out of range"):
        rise.explain(_images(1), target=torch.tensor([[1, 5000]]))
    with pytest.raises(InvalidArgumentError, match="top2000"):
        rise.explain(_images(1), target="top2000")
