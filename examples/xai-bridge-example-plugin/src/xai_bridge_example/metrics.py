"""The metric itself: a subclass of xai_bridge.Metric that asks the engine for one curve point."""

import torch

from xai_bridge import Metric
from xai_bridge.engine import Curve
from xai_bridge.errors import InvalidArgumentError


class KeepTopScore(Metric):
    """Share of the class score recovered by revealing only the top ``fraction`` of the pixels.

    The most salient ``fraction`` of the pixels is revealed on the protocol's insertion
    substrate (a blurred image by default) and the target's score is divided by the score of
    the whole image. The engine computes it: this is the last point of a MoRF insertion curve
    that stops at ``fraction``, so it shares forward passes with other insertion metrics.

    >>> import xai_bridge as xb
    >>> model = xb.default_model(); images, _ = xb.sample_images(names=["chelsea"])
    >>> maps = xb.get_explainer("gradcam", model).explain(images)
    >>> values = xb.score_maps(model, images, maps, [xb.get_metric("keep_top", fraction=0.2)])["keep_top"]
    >>> values.shape
    torch.Size([1])
    """

    name = "keep_top"
    higher_is_better = True
    category = "Faithfulness"

    def __init__(self, protocol=None, fraction: float = 0.1) -> None:
        super().__init__(protocol)
        if not 0 < fraction <= 1:
            raise InvalidArgumentError(f"fraction: expected a share of the pixels in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)

    def request(self, protocol) -> Curve:
        return Curve(
            kind="insertion", order="morf", replacement=protocol.insertion, step=self.fraction, stop=self.fraction
        )

    def requests(self, protocol):
        return [self.request(protocol)]

    def compute(self, ctx) -> torch.Tensor:
        revealed = ctx.score(ctx[self.request(ctx.protocol)])[:, -1]
        return revealed / ctx.base_score.clamp(min=1e-12)
