"""Tests of the example metric: the contract checks xai-bridge ships, and a value worked independently."""

import pytest
import torch
import torch.nn.functional as F

import xai_bridge as xb
from xai_bridge.protocols import Replacement
from xai_bridge.testing import check_metric_contract


def test_found_through_its_entry_point():
    spec = xb.metric_spec("keep_top")
    assert spec.provider.distribution == "xai-bridge-example-plugin"
    assert spec.higher_is_better and spec.category == "Faithfulness"


def test_contract(tiny_model):
    check_metric_contract(
        "keep_top", tiny_model, torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(1)), fraction=0.25
    )


def test_equals_revealing_the_top_pixels_by_hand(tiny_model):
    """Reveal the top quarter of a 20×20 image on black by hand and score it with the model."""
    torch.manual_seed(2)
    images, maps = torch.rand(2, 3, 20, 20), torch.rand(2, 20, 20)  # random maps: no ties
    protocol = xb.get_protocol("default", insertion=Replacement("black"))
    values = xb.score_maps(tiny_model, images, maps, [xb.get_metric("keep_top", fraction=0.25)], protocol)["keep_top"]

    top = maps.flatten(1).topk(100, dim=1).indices  # 25 % of 400 pixels
    keep = torch.zeros(2, 400).scatter_(1, top, 1.0).view(2, 1, 20, 20)
    with torch.no_grad():
        probs = F.softmax(tiny_model(images), -1)
        target = probs.argmax(1, keepdim=True)
        expected = F.softmax(tiny_model(images * keep), -1).gather(1, target) / probs.gather(1, target)
    torch.testing.assert_close(values, expected.squeeze(1), atol=1e-5, rtol=1e-5)


def test_a_fraction_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        xb.get_metric("keep_top", fraction=1.5)
