"""The explainer itself: a subclass of xai_bridge.Explainer overriding one method."""

import torch
import torch.nn.functional as F

from xai_bridge import Explainer


class EdgeSaliency(Explainer):
    """Sobel gradient magnitude of the grey image; the same map for every class.

    >>> import torch, xai_bridge as xb
    >>> maps = xb.get_explainer("edges", xb.default_model()).explain(torch.rand(2, 3, 224, 224))
    >>> maps.shape
    torch.Size([2, 224, 224])
    """

    needs_grad = False

    def attribute(self, images, targets):
        grey = images.mean(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
        kernels = torch.stack([kx, kx.T])[:, None]
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
        return g.pow(2).sum(1).sqrt()
