"""The plugin author's own tests, using the fixtures and checks xai-bridge ships."""

import torch

import xai_bridge as xb
from xai_bridge.testing import check_explainer_contract


def test_found_through_its_entry_point():
    spec = xb.explainer_spec("sobel")
    assert spec.name == "edges"
    assert spec.provider.distribution == "xai-bridge-example-plugin"


def test_contract(tiny_model):
    check_explainer_contract("edges", tiny_model, torch.rand(3, 3, 32, 32))


def test_vertical_edge_is_found(tiny_model):
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0
    edges = xb.get_explainer("edges", tiny_model).explain(image)[0]
    assert edges[:, 7:9].min() > 0 and edges[:, :6].abs().max() == 0
