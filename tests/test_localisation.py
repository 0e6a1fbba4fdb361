"""Localisation metrics on hand-worked maps and boxes."""

from __future__ import annotations

import math

import pytest
import torch

from xai_bridge_builtins.metrics import localisation as L


def _map_with_blob(x0, y0, x1, y1, size=20, background=0.0):
    m = torch.full((size, size), background)
    m[y0:y1, x0:x1] = 1.0
    return m


def test_largest_component_box_is_found_per_image_without_crossing_images():
    a = torch.zeros(2, 10, 10, dtype=torch.bool)
    a[0, 1:3, 1:3] = True  # 4 px
    a[0, 5:9, 4:9] = True  # 20 px, the largest
    a[1, 0:2, 0:10] = True  # 20 px spanning the width
    boxes = L.largest_component_boxes(a)
    assert boxes.tolist() == [[4, 5, 9, 9], [0, 0, 10, 2]]


def test_iou_by_hand():
    assert L.iou(torch.tensor([0.0, 0, 10, 10]), torch.tensor([[5.0, 0, 15, 10]])).item() == pytest.approx(50 / 150)
    assert L.iou(torch.tensor([0.0, 0, 10, 10]), torch.tensor([[10.0, 10, 20, 20]])).item() == 0.0


def test_perfect_map_scores_perfectly_and_a_wrong_one_fails():
    boxes = [[[4, 6, 12, 14]], [[4, 6, 12, 14]]]
    maps = torch.stack([_map_with_blob(4, 6, 12, 14), _map_with_blob(14, 0, 20, 4)])
    assert L.localisation_error(maps, boxes).tolist() == pytest.approx([0.0, 1.0])
    assert L.standard_pointing_game(maps, boxes).tolist() == [1.0, 0.0]
    assert L.energy_pointing_game(maps, boxes).tolist() == pytest.approx([1.0, 0.0])
    assert L.pixel_f1(maps, boxes).tolist() == pytest.approx([1.0, 0.0])
    om = L.official_metric(maps, boxes, predicted=torch.tensor([3, 3]), labels=torch.tensor([3, 3]))
    assert om.tolist() == pytest.approx([0.0, 1.0])
    wrong_class = L.official_metric(maps, boxes, predicted=torch.tensor([2, 3]), labels=torch.tensor([3, 3]))
    assert wrong_class[0].item() == 1.0


def test_precision_recall_f1_by_hand():
    # map: 1 inside a 4×4 box, 0.5 on a 4×4 patch outside; box covers 8×4 = 32 px
    m = torch.zeros(1, 10, 10)
    m[0, 0:4, 0:4] = 1.0
    m[0, 6:10, 6:10] = 0.5
    boxes = [[[0, 0, 8, 4]]]
    p, r = L.precision_recall(m, boxes)
    assert p.item() == pytest.approx(16 / (16 + 8))
    assert r.item() == pytest.approx(16 / 32)
    assert L.pixel_f1(m, boxes).item() == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_box_accuracy_and_saliency_metric_by_hand():
    boxes = [[[0, 0, 10, 10]]]
    m = _map_with_blob(0, 0, 10, 5, size=10)[None]  # half the box: IoU 0.5
    assert L.box_accuracy(m, boxes, etas=[0.5], deltas=[0.3, 0.5, 0.7]).item() == pytest.approx(2 / 3)
    sm = L.saliency_metric(m, torch.tensor([0.25]))
    assert sm.item() == pytest.approx(math.log(0.5) - math.log(0.25))
    tiny = _map_with_blob(0, 0, 1, 1, size=10)[None]  # 1% of the image: clipped at 5%
    assert L.saliency_metric(tiny, torch.tensor([1.0])).item() == pytest.approx(math.log(0.05))


def test_boxes_are_validated():
    with pytest.raises(ValueError, match="at least one ground-truth box"):
        L.box_masks([[]], 4, 4)
    with pytest.raises(ValueError, match="empty box"):
        L.box_masks([[[3, 0, 1, 2]]], 4, 4)
