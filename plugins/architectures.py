"""Built-in plugin: target layers of the architectures xai-bridge knows.

EfficientNet-Lite0 (the embedded default), torchvision's ResNet, VGG,
ConvNeXt, DenseNet, MobileNet, EfficientNet and ViT. Another architecture is
taught by any plugin implementing the same hook.
"""

from __future__ import annotations

from typing import Any

from xai_bridge import hookimpl


def _last_relu(sequential: Any) -> Any:
    from torch import nn

    relus = [m for m in sequential.modules() if isinstance(m, nn.ReLU)]
    return relus[-1] if relus else sequential[-1]


@hookimpl
def resolve_target_layer(model: Any) -> Any:
    module = type(model).__module__
    cls = type(model).__name__
    if module == "xai_bridge.models" and cls == "EfficientNetLite0":
        return model.head
    if not module.startswith("torchvision.models"):
        return None
    from torchvision import models as tvm

    from xai_bridge.layers import TargetLayer, vit_tokens_to_grid

    if isinstance(model, tvm.ResNet):
        return model.layer4[-1]
    if isinstance(model, tvm.VGG):
        return _last_relu(model.features)
    if isinstance(model, tvm.VisionTransformer):
        block = model.encoder.layers[-1]
        name = f"encoder.layers.{len(model.encoder.layers) - 1}.ln_1"
        return TargetLayer(block.ln_1, name, vit_tokens_to_grid)
    if isinstance(model, (tvm.ConvNeXt, tvm.DenseNet, tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)):
        return model.features[-1]
    return None
