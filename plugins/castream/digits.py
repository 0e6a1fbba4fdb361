"""A small real dataset and backbone for CA-Stream checks that need no download.

scikit-learn's handwritten digits (1,797 grayscale 8×8 images, 10 classes, shipped
inside scikit-learn) upscaled bilinearly to ``size×size``, repeated to 3 channels,
pixels in [0, 1]; a stratified, seeded train/test split. The backbone is a
torchvision ``ResNet`` (BasicBlock, one block per stage: "ResNet-10") with a CIFAR
style stem (3×3 stride-1 convolution, no max pooling), so at 32×32 its stages are
32², 32², 16², 8², 4² — a real ResNet whose ``layer4`` is a 4×4 map. These are
the GAP model of the CA-Stream tests and benchmark; they are **not ImageNet**.

Example::

    >>> from xai_bridge.data import digits_split
    >>> train, test = digits_split(size=16)
    >>> len(train), len(test), tuple(train[0][0].shape)
    (1437, 360, (3, 16, 16))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader


def digits_resnet(num_classes: int = 10, layers: Sequence[int] = (1, 1, 1, 1), seed: int = 0) -> nn.Module:
    """A torchvision ``ResNet`` (BasicBlock) with a CIFAR-style stem, seeded random weights, eval mode."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    model = ResNet(BasicBlock, list(layers), num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model.eval()


def train_classifier(
    model: nn.Module,
    data: Any,
    *,
    epochs: int = 4,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train a whole classifier (the GAP backbone) with Adam and cross-entropy; returns per-epoch train accuracy (%).

    This is ordinary training of the *baseline*, done before CA-Stream freezes it.
    """
    from tqdm.auto import tqdm

    from xai_bridge.models import model_device

    device = model_device(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    history = []
    model.train()
    for epoch in tqdm(range(epochs), desc="GAP backbone epochs", disable=not progress):
        loader = DataLoader(
            data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed + epoch)
        )
        correct = total = 0
        for images, labels in tqdm(loader, leave=False, disable=not progress):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(-1) == labels).sum())
            total += labels.numel()
        scheduler.step()
        history.append(100.0 * correct / total)
    model.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, data: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``model`` (eval mode) on a dataset of ``(image, label)``."""
    from xai_bridge.models import model_device

    device = model_device(model)
    correct = total = 0
    for images, labels in DataLoader(data, batch_size=batch_size):
        correct += int((model(images.to(device)).argmax(-1) == labels.to(device)).sum())
        total += labels.numel()
    return 100.0 * correct / total
