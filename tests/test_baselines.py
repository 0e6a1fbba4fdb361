"""Baseline maps: exact values, seeded determinism, the explainer contract, Fake-CAM's near-zero drop."""

from __future__ import annotations

import math

import pytest
import torch

import xai_bridge as xb
from xai_bridge.testing import check_explainer_contract


@pytest.fixture
def wide_images():
    return torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(5))


def test_registered_as_baselines_without_gradients(tiny_resnet):
    for name in ("fakecam", "random", "center-gaussian"):
        assert xb.explainer_spec(name).family == "baseline"
        assert xb.get_explainer(name, tiny_resnet).needs_grad is False


def test_fakecam_exact(tiny_resnet, wide_images):
    maps = check_explainer_contract("fakecam", tiny_resnet, wide_images)
    expected = torch.ones(2, 48, 64)
    expected[:, 0, 0] = 0
    assert torch.equal(maps, expected)


def test_fakecam_barely_changes_the_score(model, photos):
    """Masking one pixel: the sanity case Average Gain was made for (AD ≈ 0, AG ≈ 0)."""
    images = photos[0][:3]
    out = xb.get_explainer("fakecam", model).explanation(images)
    with torch.no_grad():
        masked = model(images * out.maps[:, None]).softmax(-1).gather(1, out.targets[:, None])[:, 0]
    assert torch.allclose(masked, out.probabilities, atol=1e-3)  # observed: 2.7e-4 on the photos


def test_center_gaussian_exact(tiny_resnet, wide_images):
    sigma = 0.2
    maps = check_explainer_contract("center-gaussian", tiny_resnet, wide_images, sigma=sigma)

    def by_hand(i, j):
        dy, dx = (i + 0.5 - 24) / 48, (j + 0.5 - 32) / 64
        return math.exp(-(dy**2 + dx**2) / (2 * sigma**2))

    for i, j in [(0, 0), (23, 31), (24, 32), (47, 10), (5, 63)]:
        assert maps[0, i, j].item() == pytest.approx(by_hand(i, j), rel=1e-6)
    assert torch.equal(maps[0], maps[1])
    assert torch.equal(maps[0], maps[0].flip(0)) and torch.equal(maps[0], maps[0].flip(1))
    wider = xb.get_explainer("center-gaussian", tiny_resnet, sigma=0.4).explain(wide_images)
    assert (wider[0, 0, 0] > maps[0, 0, 0]) and wider.max() <= 1


def test_random_is_seeded_per_image(tiny_resnet, wide_images):
    maps = check_explainer_contract("random", tiny_resnet, wide_images, seed=7)  # includes batch == alone
    again = xb.get_explainer("random", tiny_resnet, seed=7).explain(wide_images)
    other = xb.get_explainer("random", tiny_resnet, seed=8).explain(wide_images)
    assert torch.equal(maps, again)
    assert not torch.equal(maps, other)
    assert not torch.equal(maps[0], maps[1])  # two images, two maps
    assert maps.min() >= 0 and maps.max() < 1 and abs(maps.mean().item() - 0.5) < 0.02


def test_random_grid(tiny_resnet, wide_images):
    out = xb.get_explainer("random", tiny_resnet, grid=7).explanation(wide_images)
    assert out.raw.shape == (2, 7, 7) and out.maps.shape == (2, 48, 64)


@pytest.mark.parametrize(
    "name, options, match",
    [("random", {"seed": "a"}, "seed"), ("random", {"grid": 0}, "grid"), ("center-gaussian", {"sigma": -1}, "sigma")],
)
def test_bad_options(tiny_resnet, name, options, match):
    with pytest.raises(ValueError, match=match):
        xb.get_explainer(name, tiny_resnet, **options)
