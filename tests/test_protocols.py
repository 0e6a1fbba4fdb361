"""Every field of a Protocol does something: changing it changes some metric's value on a small case."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import xai_bridge as xb
from xai_bridge.protocols import Protocol, Replacement

METADATA = {"name", "description", "source"}  # recorded in every result, change no value


@pytest.fixture(scope="module")
def case():
    """A linear classifier on 3×8×8 images (the map matters: each pixel has its own weight) and graded maps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    images = torch.rand(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8)
    return model, images, maps


# field → (base protocol changes, the changed value, the metric that must notice, how the call differs)
CHANGES = {
    "target": ({}, "label", "average_drop", {}),
    "score": ({}, "logit", "average_drop", {}),
    "resize": ({}, "nearest", "average_drop", {"coarse": True}),
    "constant_maps": ({}, "ones", "average_drop", {"constant": True}),
    "mask_replacement": ({}, Replacement("mean"), "average_drop", {}),
    "deletion": ({"step": 4}, Replacement("mean"), "deletion_auc", {}),
    "insertion": ({"step": 4}, Replacement("black"), "insertion_auc", {}),
    "removal": ({"removal_step": 2}, Replacement("black"), "aopc", {}),
    "step": ({}, 4, "deletion_auc", {}),
    "level": ({"step": None}, "grid", "deletion_auc", {"coarse": True}),  # grid: the 2×2 map's own cells
    "cell": ({"level": "grid", "step": None, "cell": 2}, 4, "deletion_auc", {}),
    "auc_normalize": ({"step": 4}, "max", "deletion_auc", {}),
    "fraction": ({"removal_step": 2}, 0.5, "aopc", {}),
    "removal_step": ({}, 2, "aopc", {}),
    "space": ({}, "normalized", "average_drop", {"unnormalised": True}),
    "max_steps": ({"step": None}, 5, "deletion_auc", {}),
    "mask_from": ({"resize": "bicubic"}, "raw", "average_drop", {"coarse": True}),
    "add_clip": ({"target": "label"}, False, "add", {}),  # classes not predicted gain when the image darkens
}


def test_every_field_is_covered():
    fields = {f.name for f in dataclasses.fields(Protocol)}
    assert set(CHANGES) == fields - METADATA


def _outcome(case, protocol: Protocol, metric: str, how: dict) -> object:
    model, images, maps = case
    if how.get("coarse"):
        maps = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(1))
    if how.get("constant"):
        maps = torch.ones_like(maps)
    if how.get("unnormalised"):
        images = images * 4 - 2  # a normalised image: values outside [0, 1]
    labels = torch.tensor([3, 2, 1])
    try:
        values = xb.score_maps(model, images, maps, [metric], protocol, labels=labels)[metric]
    except ValueError as exc:
        return f"error: {type(exc).__name__}"
    return [round(v, 6) for v in values.tolist()]


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_changing_a_field_changes_a_value(case, field):
    base_changes, value, metric, how = CHANGES[field]
    base = dataclasses.replace(Protocol(), **base_changes)
    changed = dataclasses.replace(base, **{field: value})
    before, after = _outcome(case, base, metric, how), _outcome(case, changed, metric, how)
    assert before != after, f"protocol.{field}={value!r} changed nothing in {metric}: {before}"


def test_resize_upsamples_coarse_maps_with_the_chosen_interpolation(case):
    model, images, _ = case
    coarse = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]).expand(3, 2, 2)
    nearest = xb.score_maps(model, images, coarse, ["average_drop"], Protocol(resize="nearest"))["average_drop"]
    mask = torch.zeros(3, 8, 8)
    mask[:, :4, 4:] = 1.0  # nearest: the top-right quarter kept, the rest black
    probs = model(images).softmax(-1)
    target = probs.argmax(1)
    p = probs.gather(1, target[:, None])[:, 0]
    o = model(images * mask[:, None]).softmax(-1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(nearest, ((p - o).clamp(min=0) / p * 100).detach(), atol=1e-5, rtol=1e-5)
