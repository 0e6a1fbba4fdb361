"""Localisation metrics (thesis §1.3.3.4): compare a saliency map with ground-truth boxes.

Pure tensor functions on a whole batch; the metric classes registered by
:mod:`xai_bridge_builtins.metrics` call them. Conventions (thesis §1.3.3.4):

* maps are min-max normalised per image to [0, 1] first;
* the predicted box ``B_p`` is the bounding box of the largest 8-connected component
  of ``{S > mean(S)}`` (Box Accuracy thresholds at ``η`` instead);
* boxes are ``[x0, y0, x1, y1]`` in pixels of the input, ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xai_bridge.engine.maps import normalize_maps
from xai_bridge.errors import InvalidArgumentError

Boxes = Sequence[Sequence[Sequence[float]]]  # per image, a list of [x0, y0, x1, y1]


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1]; a constant map becomes 0 (it points nowhere)."""
    return normalize_maps(maps, constant="zeros")


def box_masks(
    boxes: Boxes, height: int, width: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The union of each image's boxes (B×H×W bool) and the boxes as tensors (per image, n×4)."""
    if not all(len(b) > 0 for b in boxes):
        raise InvalidArgumentError("boxes: every image needs at least one ground-truth box [x0, y0, x1, y1]")
    ys = torch.arange(height, device=device)[:, None]
    xs = torch.arange(width, device=device)[None, :]
    union = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    tensors = []
    for i, image_boxes in enumerate(boxes):
        t = torch.as_tensor(image_boxes, dtype=torch.float32, device=device).reshape(-1, 4)
        if (t[:, 2] <= t[:, 0]).any() or (t[:, 3] <= t[:, 1]).any():
            raise InvalidArgumentError(
                f"boxes: image {i} has an empty box; expected [x0, y0, x1, y1] with x1 > x0 and y1 > y0"
            )
        inside = (
            (xs[None] >= t[:, 0, None, None])
            & (xs[None] < t[:, 2, None, None])
            & (ys[None] >= t[:, 1, None, None])
            & (ys[None] < t[:, 3, None, None])
        )
        union[i] = inside.any(0)
        tensors.append(t)
    return union, tensors


def largest_component_boxes(binary: torch.Tensor) -> torch.Tensor:
    """``[x0, y0, x1, y1]`` of the largest 8-connected component of each image's mask (B×4).

    One ``scipy.ndimage.label`` call for the whole batch: the structuring element
    connects pixels within an image only. An empty mask gives an empty box (all zeros).
    """
    from scipy import ndimage

    masks = binary.detach().cpu().numpy().astype(bool)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity in the plane, none across images
    labels, count = ndimage.label(masks, structure=structure)
    out = np.zeros((masks.shape[0], 4), dtype=np.float32)
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        best = np.zeros(masks.shape[0], dtype=np.int64) - 1
        best_size = np.zeros(masks.shape[0], dtype=np.int64)
        for label, sl in enumerate(ndimage.find_objects(labels), start=1):
            image = sl[0].start
            if sizes[label - 1] > best_size[image]:
                best_size[image], best[image] = sizes[label - 1], label
                out[image] = (sl[2].start, sl[1].start, sl[2].stop, sl[1].stop)
    return torch.from_numpy(out).to(binary.device)


def iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one box (4,) with each of ``boxes`` (n×4), boxes as pixel sets with exclusive ends."""
    x0 = torch.maximum(box[0], boxes[:, 0])
    y0 = torch.maximum(box[1], boxes[:, 1])
    x1 = torch.minimum(box[2], boxes[:, 2])
    y1 = torch.minimum(box[3], boxes[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


def max_iou(pred: torch.Tensor, gt: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([iou(p, g).max() for p, g in zip(pred, gt, strict=False)])


def predicted_boxes(maps: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """``B_p``: bounding box of the largest component of ``S > mean(S)`` (or ``S > threshold``)."""
    s = minmax(maps)
    cut = s.flatten(1).mean(1)[:, None, None] if threshold is None else threshold
    return largest_component_boxes(s > cut)


def localisation_error(maps: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """LE = 1 − max_B IoU(B, B_p) (eq. 1.17; lower is better)."""
    _, gt = box_masks(boxes, maps.shape[-2], maps.shape[-1], maps.device)
    return 1.0 - max_iou(predicted_boxes(maps), gt)


def official_metric(maps: torch.Tensor, boxes: Boxes, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OM = 1 − max_B IoU(B, B_p) · 1[c_p = c] (eq. 1.16; lower is better)."""
    _, gt = box_masks(boxes, maps.shape[-2], maps.shape[-1], maps.device)
    return 1.0 - max_iou(predicted_boxes(maps), gt) * (predicted == labels).float()


def precision_recall(maps: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """P = mass of S inside the union of boxes / total mass (eq. 1.18); R = mass inside / |U| (eq. 1.19)."""
    union, _ = box_masks(boxes, maps.shape[-2], maps.shape[-1], maps.device)
    s = minmax(maps).flatten(1)
    u = union.flatten(1).float()
    inside = (s * u).sum(1)
    total = s.sum(1)
    precision = torch.where(total > 0, inside / total.clamp(min=1e-12), torch.zeros_like(total))
    return precision, inside / u.sum(1)


def pixel_f1(maps: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Pixel-wise F1 = 2PR / (P + R) (higher is better)."""
    p, r = precision_recall(maps, boxes)
    return torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(p))


def energy_pointing_game(maps: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """EP = precision P (eq. 1.18; higher is better)."""
    return precision_recall(maps, boxes)[0]


def standard_pointing_game(maps: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """SP = 1[argmax_p S_p ∈ U] (eq. 1.21): 1.0 for a hit, 0.0 for a miss (first maximum on ties)."""
    union, _ = box_masks(boxes, maps.shape[-2], maps.shape[-1], maps.device)
    peak = maps.flatten(1).argmax(1)
    return union.flatten(1).gather(1, peak[:, None]).squeeze(1).float()


def box_accuracy_hits(maps: torch.Tensor, boxes: Boxes, etas: Sequence[float], deltas: Sequence[float]) -> torch.Tensor:
    """Hits ``(η, δ, B)``: the largest component of ``S > η`` overlaps a box with IoU ≥ δ (eq. 1.20)."""
    _, gt = box_masks(boxes, maps.shape[-2], maps.shape[-1], maps.device)
    s = minmax(maps)
    best = torch.stack([max_iou(largest_component_boxes(s > eta), gt) for eta in etas])  # η × B
    return torch.stack([(best >= delta).float() for delta in deltas], dim=1)  # η × δ × B


def box_accuracy(
    maps: torch.Tensor,
    boxes: Boxes,
    etas: Sequence[float] = tuple(np.arange(0.05, 1.0, 0.05)),
    deltas: Sequence[float] = (0.3, 0.5, 0.7),
) -> torch.Tensor:
    """Per-image Box Accuracy at the best threshold of the batch (Choe et al. 2020; higher is better).

    The thesis averages hits over images, takes the maximum over ``η`` and then
    the mean over ``δ``. Per image this returns the hits at each ``δ``'s best ``η``
    (chosen over the batch evaluated), averaged over ``δ`` — so the mean of the
    returned values is exactly the dataset-level BoxAcc of the batch.
    """
    hits = box_accuracy_hits(maps, boxes, etas, deltas)  # η × δ × B
    best_eta = hits.mean(2).argmax(0)  # per δ
    chosen = hits[best_eta, torch.arange(hits.shape[1])]  # δ × B
    return chosen.mean(0)


def saliency_metric(maps: torch.Tensor, probability: torch.Tensor) -> torch.Tensor:
    """SM = log max(0.05, |B_p| / hw) − log p_c (eq. 1.22, Dabkowski & Gal 2017; lower is better)."""
    box = predicted_boxes(maps)
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) / (maps.shape[-2] * maps.shape[-1])
    return torch.log(area.clamp(min=0.05)) - torch.log(probability.clamp(min=1e-12))
