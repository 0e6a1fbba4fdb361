"""Shared fixtures: the real default model and photos (session-wide), and small known models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def model():
    import xai_bridge as xb

    return xb.default_model()


@pytest.fixture(scope="session")
def photos():
    """The embedded photos (B×3×224×224 in [0,1]) and their names."""
    import xai_bridge as xb

    return xb.sample_images()


@pytest.fixture(scope="session")
def tiny_resnet():
    """A torchvision ResNet-18 with seeded random weights: a real architecture, cheap at 64×64."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    return net


@pytest.fixture
def small_images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 64, 64, generator=g)
