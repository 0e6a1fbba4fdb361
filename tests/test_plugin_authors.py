"""What a new plugin author meets: clear errors for unknown options and bad explainer output, NaN metrics reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_bridge as xb
from xai_bridge import hookimpl
from xai_bridge.errors import ExplainerOutputError, MetricValueWarning, UnknownOptionError


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


def test_unknown_explainer_option_names_the_explainer_the_options_and_the_closest_match(tiny_model):
    with pytest.raises(UnknownOptionError) as info:
        xb.get_explainer("opticam", xb.default_model(), max_iters=3)
    message = str(info.value)
    assert "explainer 'opticam'" in message and "'max_iters'" in message
    assert "Did you mean 'max_iter'?" in message and "It accepts: layer, max_iter, lr" in message


def test_unknown_toolkit_cam_option_fails_at_creation_not_at_the_first_call():
    with pytest.raises(UnknownOptionError, match=r"'layr'.*Did you mean 'layer'\?.*It accepts: layer"):
        xb.get_explainer("gradcam", xb.default_model(), layr="blocks.15")


def test_unknown_metric_option_names_the_metric_and_what_it_accepts():
    with pytest.raises(UnknownOptionError, match=r"metric 'average_gain'.*'protocl'.*Did you mean 'protocol'\?"):
        xb.get_metric("average_gain", protocl="opticam")


class _Returns(xb.Explainer):
    needs_grad = False

    def __init__(self, model, *, output=None, class_names=None):
        super().__init__(model, class_names=class_names)
        self.output = output

    def attribute(self, images, targets):
        return self.output(images)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            lambda x: np.ones((x.shape[0], 8, 8), dtype=np.float32),
            r"returned a ndarray; expected a torch.Tensor.*torch.as_tensor",
        ),
        (
            lambda x: torch.ones(x.shape[0], 8, 8, dtype=torch.long),
            r"returned a torch.int64 map; expected a floating-point",
        ),
        (
            lambda x: torch.full((x.shape[0], 8, 8), float("nan")),
            r"returned NaN or infinite values for image\(s\) \[0, 1\]",
        ),
        (
            lambda x: torch.ones(x.shape[0], 8, 8).index_fill(0, torch.tensor([1]), float("inf")),
            r"returned NaN or infinite values for image\(s\) \[1\]",
        ),
        (lambda x: torch.ones(x.shape[0] + 1, 8, 8), r"returned shape \(3, 8, 8\); expected B×h×w with B=2"),
    ],
)
def test_explain_rejects_bad_explainer_output_naming_the_explainer(xai_bridge_plugin, tiny_model, output, expected):
    class Plugin:
        @hookimpl
        def register_explainers(self, register):
            register("bad-output", lambda model, **o: _Returns(model, output=output, **o), family="other")

    xai_bridge_plugin(Plugin(), name="bad-output-plugin")
    explainer = xb.get_explainer("bad-output", tiny_model)
    with pytest.raises(ExplainerOutputError, match=r"explainer 'bad-output' \(_Returns.attribute\) " + expected):
        explainer.explain(torch.rand(2, 3, 8, 8), target=0)


def test_a_metric_returning_nan_is_recorded_and_reported_not_dropped(xai_bridge_plugin, tiny_model):
    from xai_bridge.metric import Metric

    class HalfNaN(Metric):
        name = "half_nan"
        higher_is_better = True

        def requests(self, protocol):
            return []

        def compute(self, ctx):
            values = torch.ones(ctx.maps.shape[0], device=ctx.maps.device)
            values[0] = float("nan")
            return values

    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register("half_nan", lambda **o: HalfNaN(**o), higher_is_better=True)

    xai_bridge_plugin(Plugin(), name="nan-metric")
    images = torch.rand(2, 3, 8, 8)
    with pytest.warns(MetricValueWarning, match=r"metric 'half_nan'.*explainer 'random'.*1 image\(s\): first"):
        results = xb.evaluate(
            tiny_model, images, ["random"], ["half_nan"], image_ids=["first", "second"], progress=False
        )
    values = results.values("random", "half_nan")
    assert np.isnan(values[0]) and values[1] == 1.0
    assert results.non_finite("random", "half_nan") == ["first"]
    assert "(1 NaN)" in results.summary()
