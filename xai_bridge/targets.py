"""Turning the ``target`` argument users pass into one class index per image."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

from .classes import class_index
from .errors import InvalidArgumentError, InvalidTypeError

if TYPE_CHECKING:
    import torch

#: What ``target=`` accepts everywhere: None (the predicted class), one class for
#: every image (int or name), or one per image (a sequence or a 1-d tensor). Explainers also
#: accept several classes per image (``"top5"``, ``B×k``; see :func:`resolve_target_sets`).
Target = Union[None, int, str, Sequence[int | str], "torch.Tensor"]


def check_model_ready(model: Any) -> None:
    """Refuse a model in training mode: its BatchNorm/Dropout would change the maps."""
    if getattr(model, "training", False):
        raise InvalidArgumentError(
            "model: is in training mode, so BatchNorm and Dropout would make explanations and "
            "scores depend on the batch. Call model.eval() first."
        )


def check_images(images: Any, name: str = "images") -> None:
    import torch

    if not isinstance(images, torch.Tensor):
        raise InvalidTypeError(f"{name}: expected a torch.Tensor of shape B×C×H×W, got {type(images).__name__}")
    if images.ndim != 4:
        raise InvalidArgumentError(
            f"{name}: expected a batch B×C×H×W, got shape {tuple(images.shape)}"
            + (" (add a batch dimension with images.unsqueeze(0))" if images.ndim == 3 else "")
        )
    if not images.is_floating_point():
        raise InvalidTypeError(
            f"{name}: expected a floating-point tensor, got {images.dtype} (convert with .float() / 255)"
        )
    if images.shape[0] == 0:
        raise InvalidArgumentError(f"{name}: the batch is empty")


def num_classes_of(logits: torch.Tensor) -> int:
    return int(logits.shape[-1])


def resolve_targets(
    target: Target,
    batch_size: int,
    *,
    logits: torch.Tensor | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    device: Any = None,
) -> torch.Tensor:
    """One class index per image as a ``LongTensor`` of shape ``(B,)``.

    ``target=None`` needs ``logits`` (the predicted class is explained). Names are
    looked up in ``class_names`` (ImageNet's when ``None`` and the model has 1000
    outputs). Every index is checked against ``num_classes``.
    """
    import torch

    if logits is not None and num_classes is None:
        num_classes = num_classes_of(logits)
    if target is None:
        if logits is None:
            raise InvalidArgumentError("target=None means 'the predicted class', which needs the model's logits")
        out = logits.argmax(dim=-1)
    elif isinstance(target, torch.Tensor):
        if target.ndim == 0:
            out = target.reshape(1).expand(batch_size)
        elif target.ndim == 1 and target.shape[0] == batch_size:
            out = target
        else:
            raise InvalidArgumentError(
                f"target: expected a scalar or one class per image ({batch_size}), got shape {tuple(target.shape)}"
            )
        if target.is_floating_point():
            raise InvalidTypeError("target: class indices must be integers, got a floating-point tensor")
    elif isinstance(target, (int, str)) and not isinstance(target, bool):
        out = torch.full((batch_size,), _one(target, class_names, num_classes), dtype=torch.long)
    elif isinstance(target, Sequence):
        if len(target) != batch_size:
            raise InvalidArgumentError(
                f"target: got {len(target)} classes for {batch_size} images; give one per image or a single one"
            )
        out = torch.tensor([_one(t, class_names, num_classes) for t in target], dtype=torch.long)
    else:
        raise InvalidTypeError(
            f"target: expected None, an int, a class name, or one per image, got {type(target).__name__}"
        )
    out = out.to(dtype=torch.long, device=device if device is not None else out.device)
    if num_classes is not None and out.numel():
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise InvalidArgumentError(
                f"target: class {bad} is out of range; the model has {num_classes} classes (0..{num_classes - 1})"
            )
    return out


def _one(t: int | str, class_names: Sequence[str] | None, num_classes: int | None) -> int:
    if isinstance(t, str):
        if class_names is None and num_classes not in (None, 1000):
            raise InvalidArgumentError(
                f"target: the class name {t!r} cannot be looked up: the model has {num_classes} classes, "
                "not ImageNet's 1000; pass class_names=... or an index"
            )
        return class_index(t, class_names)
    if isinstance(t, bool) or not isinstance(t, int):
        try:
            import numbers

            if isinstance(t, numbers.Integral):
                return int(t)
        except Exception:  # pragma: no cover
            pass
        raise InvalidTypeError(f"target: expected an int or a class name, got {t!r}")
    return int(t)


_TOP = re.compile(r"top(\d+)")


def is_target_set(target: Any) -> bool:
    """Whether ``target`` asks for several classes per image.

    ``"top5"`` (the five most probable classes), a ``B×k`` tensor, or one sequence of classes per
    image (``[[281, 285], [1, 2]]``). Everything else is one class per image (:func:`resolve_targets`).

    >>> is_target_set("top5"), is_target_set([[1, 2], [3, 4]]), is_target_set([1, 2]), is_target_set("tabby cat")
    (True, True, False, False)
    """
    import torch

    if isinstance(target, str):
        return _TOP.fullmatch(target) is not None
    if isinstance(target, torch.Tensor):
        return target.ndim == 2
    if isinstance(target, Sequence) and len(target) > 0:
        return all(isinstance(t, Sequence) and not isinstance(t, str) for t in target)
    return False


def resolve_target_sets(
    target: Target | Sequence[Sequence[int | str]],
    batch_size: int,
    *,
    logits: torch.Tensor | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    device: Any = None,
) -> torch.Tensor:
    """``k`` class indices per image as a ``LongTensor`` of shape ``(B, k)``.

    ``"topK"`` takes each image's ``K`` most probable classes (most probable first) from
    ``logits``; a ``B×k`` tensor or one equal-length sequence per image is checked like
    :func:`resolve_targets` checks one class; anything :func:`resolve_targets` accepts gives
    ``k = 1``.

    >>> import torch
    >>> resolve_target_sets("top2", 2, logits=torch.tensor([[0.0, 3.0, 1.0], [5.0, 1.0, 2.0]])).tolist()
    [[1, 2], [0, 2]]
    >>> resolve_target_sets([[0, 2], [1, 1]], 2, num_classes=3).tolist()
    [[0, 2], [1, 1]]
    """
    import torch

    from .errors import InvalidArgumentError, InvalidTypeError

    if logits is not None and num_classes is None:
        num_classes = num_classes_of(logits)
    if not is_target_set(target):
        return resolve_targets(
            target,  # type: ignore[arg-type]  # not a set of classes: one of Target's forms
            batch_size,
            logits=logits,
            num_classes=num_classes,
            class_names=class_names,
            device=device,
        )[:, None]
    if isinstance(target, str):
        match = _TOP.fullmatch(target)
        assert match is not None
        k = int(match.group(1))
        if logits is None:
            raise InvalidArgumentError(f"target: {target!r} means 'the {k} most probable classes', which needs logits")
        if not 1 <= k <= int(logits.shape[-1]):
            raise InvalidArgumentError(
                f"target: {target!r} asks for {k} classes; the model has {logits.shape[-1]} (expected top1..top"
                f"{logits.shape[-1]})"
            )
        out = logits.topk(k, dim=-1).indices
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point():
            raise InvalidTypeError("target: class indices must be integers, got a floating-point tensor")
        if target.shape[0] != batch_size or target.shape[1] == 0:
            raise InvalidArgumentError(
                f"target: expected B×k classes with B={batch_size} and k >= 1, got shape {tuple(target.shape)}"
            )
        out = target
    else:
        rows: list[Sequence[int | str]] = list(target)  # type: ignore[arg-type]  # one sequence per image
        if len(rows) != batch_size:
            raise InvalidArgumentError(f"target: got {len(rows)} lists of classes for {batch_size} images")
        widths = {len(row) for row in rows}
        if len(widths) != 1 or 0 in widths:
            raise InvalidArgumentError(
                f"target: every image needs the same number (>= 1) of classes, got {sorted(widths)}"
            )
        out = torch.tensor([[_one(t, class_names, num_classes) for t in row] for row in rows], dtype=torch.long)
    out = out.to(dtype=torch.long, device=device if device is not None else out.device)
    if num_classes is not None:
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise InvalidArgumentError(
                f"target: class {bad} is out of range; the model has {num_classes} classes (0..{num_classes - 1})"
            )
    return out
