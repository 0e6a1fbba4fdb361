"""The explainer contract every plugin implements.

An explainer is built for one model (``get_explainer(name, model, **options)``)
and turns a batch of images into one saliency map per image::

    maps = explainer.explain(images, target=None)   # B×H×W, on the images' device

Subclasses override one method, :meth:`Explainer.attribute`, which receives
checked images and one class index per image and returns maps at any
resolution; the base class validates input, resolves targets, upsamples to the
input resolution (bilinear, ``align_corners=False``) and keeps the
feature-resolution map in :attr:`Explanation.raw`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ExplainerOutputError, InvalidArgumentError, InvalidTypeError
from .layers import TargetLayer, find_layer
from .targets import Target, check_images, check_model_ready, is_target_set, resolve_target_sets, resolve_targets


@dataclass
class Explanation:
    """What an explainer returns for a batch.

    Attributes:
        maps: ``B×H×W`` float maps at the input resolution, on the images' device.
        raw: the map at the resolution the method computes it (e.g. ``B×7×7`` for a
            CAM on the last block), or ``None`` when the method works at input resolution.
        targets: ``(B,)`` class indices explained, or ``B×k`` when several classes per image were
            asked for (``target="top5"`` or a ``B×k`` target); ``maps`` is then ``B×k×H×W``.
        logits: ``B×K`` logits of the unperturbed images.
        info: method-specific extras (e.g. Opti-CAM's final masked score).
    """

    maps: torch.Tensor
    raw: torch.Tensor | None
    targets: torch.Tensor
    logits: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax probability of each image's explained class (``B×k`` for several classes per image)."""
        probabilities = self.logits.softmax(-1)
        if self.targets.ndim == 2:
            return probabilities.gather(1, self.targets)
        return probabilities.gather(1, self.targets[:, None]).squeeze(1)


@dataclass
class MapOutput:
    """What :meth:`Explainer.attribute` may return when it has more than a map.

    Attributes:
        maps: ``B×h×w`` (or ``B×1×h×w``) finite float maps at any resolution; the base
            class upsamples them to the input resolution.
        raw: the feature-resolution map, when ``maps`` is already at input resolution
            (otherwise ``maps`` itself is kept as :attr:`Explanation.raw`).
        info: method-specific extras, copied into :attr:`Explanation.info`.
    """

    maps: torch.Tensor
    raw: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """``B×h×w`` → ``B×H×W`` (bilinear, ``align_corners=False``; no-op at the right size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(maps[:, None], size=size, mode=mode, **kwargs)[:, 0]


@contextlib.contextmanager
def preserve_grads(model: nn.Module) -> Iterator[None]:
    """Leave the model's parameter ``.grad`` as it found them (toolkits call backward on it)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


class Explainer:
    """Base class of every explainer. Override :meth:`attribute`.

    Args:
        model: a classifier ``nn.Module`` returning logits, in eval mode.
        class_names: names for ``target="..."`` lookups when the model is not an
            ImageNet-1k classifier.

    Attributes:
        name: the name the explainer was created under (set by the registry).
        needs_grad: whether :meth:`attribute` back-propagates. Then it runs under
            ``torch.enable_grad()`` even when the caller is in ``no_grad``, and the model's
            ``.grad`` are restored afterwards; set it to ``False`` for methods that do not
            (they run under ``no_grad``).
        model: the model being explained.
        class_names: the names given for ``target="..."`` lookups, or ``None``.

    Example::

        >>> import torch, xai_bridge as xb
        >>> class Centre(xb.Explainer):
        ...     def attribute(self, images, targets):
        ...         b, _, h, w = images.shape
        ...         yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        ...         return (-(xx**2 + yy**2)).exp().expand(b, h, w)
        >>> Centre(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()).explain(
        ...     torch.rand(2, 3, 8, 8)
        ... ).shape
        torch.Size([2, 8, 8])
    """

    #: set by the registry to the name the explainer was created under
    name: str = "explainer"
    #: whether :meth:`attribute` back-propagates (then it runs under ``enable_grad``
    #: even when the caller is in ``no_grad``, and the model's ``.grad`` are restored)
    needs_grad: bool = True
    #: whether :meth:`attribute` takes ``B×k`` targets and returns ``B×k×h×w`` maps (one set of
    #: forward passes for every class); other explainers get one :meth:`attribute` call per class
    multi_target: bool = False

    def __init__(self, model: nn.Module, *, class_names: Sequence[str] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
        self.model = model
        self.class_names = class_names

    # -- the one override point -----------------------------------------------------------
    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | MapOutput:
        """Maps for checked ``images`` and ``targets``: the one method a subclass overrides.

        Args:
            images: ``B×C×H×W`` float images, already checked, on the model's device.
            targets: ``(B,)`` long tensor, one class index per image (already resolved).

        Returns:
            A finite float ``B×h×w`` tensor at any resolution (upsampled by the caller), or
            a :class:`MapOutput` to add the raw map or extras. Anything else raises
            :class:`~xai_bridge.errors.ExplainerOutputError` naming the explainer.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement attribute(images, targets)")

    # -- the public API -------------------------------------------------------------------
    def explanation(
        self, images: torch.Tensor, target: Target = None, *, logits: torch.Tensor | None = None
    ) -> Explanation:
        """Maps plus everything around them (raw maps, targets, logits, extras).

        Args:
            images: ``B×C×H×W`` float images the model takes.
            target: the class to explain: ``None`` (each image's predicted class), a class
                index, a class name, one index or name per image, or a ``(B,)`` tensor. Several
                classes per image (``"top5"``, one list per image, a ``B×k`` tensor) give
                ``B×k×H×W`` maps (see :meth:`explain_classes`).
            logits: the ``B×K`` logits of ``images`` when the caller has computed them already
                (:func:`~xai_bridge.evaluate` passes the ones it scores with), so the unperturbed
                forward pass is not run twice; ``None`` runs it here.

        Returns:
            An :class:`Explanation` whose maps are ``B×H×W`` at the input resolution.

        Raises:
            InvalidTypeError: images that are not a floating-point tensor.
            InvalidArgumentError: a model in training mode, images that are not ``B×C×H×W``, or a
                target out of range or not a known class name.
            ExplainerOutputError: :meth:`attribute` returned something other than finite
                real ``B×h×w`` maps.
        """
        check_model_ready(self.model)
        check_images(images)
        if logits is None:
            with torch.no_grad():
                logits = self.model(images)
        elif not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            raise InvalidArgumentError(
                f"logits: expected the {images.shape[0]}×K logits of the images, "
                f"got {getattr(logits, 'shape', type(logits).__name__)}"
            )
        if is_target_set(target):
            return self.explain_classes(images, target, logits)
        targets = resolve_targets(
            target, images.shape[0], logits=logits, class_names=self.class_names, device=images.device
        )
        if self.needs_grad:
            with torch.enable_grad(), preserve_grads(self.model):
                out = self.attribute(images, targets)
        else:
            with torch.no_grad():
                out = self.attribute(images, targets)
        if not isinstance(out, MapOutput):
            out = MapOutput(out)
        maps = self._checked_maps(out.maps, images.shape[0])
        raw = out.raw
        maps = maps.detach().to(device=images.device, dtype=torch.float32)
        if raw is None and tuple(maps.shape[-2:]) != tuple(images.shape[-2:]):
            raw = maps
        maps = upsample(maps, (images.shape[-2], images.shape[-1]))
        if raw is not None:
            raw = raw.detach().to(device=images.device, dtype=torch.float32)
        return Explanation(maps=maps, raw=raw, targets=targets, logits=logits.detach(), info=dict(out.info))

    def explain_classes(self, images: torch.Tensor, target: Any, logits: torch.Tensor) -> Explanation:
        """Several classes per image: ``B×k×H×W`` maps, ``B×k`` targets.

        ``target`` is ``"topK"``, one equal-length list of classes per image or a ``B×k`` tensor
        (see :func:`~xai_bridge.targets.resolve_target_sets`); ``logits`` are the images'. An
        explainer with :attr:`multi_target` gets all ``k`` classes in one :meth:`attribute` call
        (its masked passes serve every class); any other gets one call per class.

        Example::

            >>> import torch, xai_bridge as xb
            >>> class Centre(xb.Explainer):
            ...     def attribute(self, images, targets):
            ...         return images.mean(1) * (targets[:, None, None] + 1)
            >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).eval()
            >>> e = Centre(model).explanation(torch.rand(2, 3, 2, 2), target="top3")
            >>> e.maps.shape, e.targets.shape, e.probabilities.shape
            (torch.Size([2, 3, 2, 2]), torch.Size([2, 3]), torch.Size([2, 3]))
        """
        b = images.shape[0]
        targets = resolve_target_sets(target, b, logits=logits, class_names=self.class_names, device=images.device)
        k = targets.shape[1]
        context = torch.enable_grad() if self.needs_grad else torch.no_grad()
        guard = preserve_grads(self.model) if self.needs_grad else contextlib.nullcontext()
        with context, guard:
            if self.multi_target:
                outs = [self._as_output(self.attribute(images, targets))]
            else:
                outs = [self._as_output(self.attribute(images, targets[:, j])) for j in range(k)]
        maps_list: list[torch.Tensor] = []
        raw_list: list[torch.Tensor] = []
        info: dict[str, Any] = {}
        for out in outs:
            m = out.maps
            if self.multi_target:
                if not isinstance(m, torch.Tensor) or m.ndim != 4 or tuple(m.shape[:2]) != (b, k):
                    shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                    raise ExplainerOutputError(
                        f"explainer {self.name!r} ({type(self).__name__}.attribute) returned {shape} for B×k "
                        f"targets; expected B×k×h×w maps with B={b}, k={k}"
                    )
                m = m.flatten(0, 1)
            m = self._checked_maps(m, b * k if self.multi_target else b)
            maps_list.append(m.detach().to(device=images.device, dtype=torch.float32))
            if out.raw is not None:
                raw = out.raw.detach().to(device=images.device, dtype=torch.float32)
                raw_list.append(raw.reshape(m.shape[0], *raw.shape[-2:]))
            info.update(out.info)
        # (B·k)×h×w in image-major order, whichever way the classes were computed
        flat = maps_list[0] if self.multi_target else torch.stack(maps_list, 1).flatten(0, 1)
        raw_flat: torch.Tensor | None = None
        if len(raw_list) == len(outs):
            raw_flat = raw_list[0] if self.multi_target else torch.stack(raw_list, 1).flatten(0, 1)
        elif tuple(flat.shape[-2:]) != tuple(images.shape[-2:]):
            raw_flat = flat
        raw_sets = None if raw_flat is None else raw_flat.reshape(b, k, *raw_flat.shape[-2:])
        size = (images.shape[-2], images.shape[-1])
        maps = upsample(flat, size).reshape(b, k, *size)
        return Explanation(maps=maps, raw=raw_sets, targets=targets, logits=logits.detach(), info=info)

    @staticmethod
    def _as_output(out: Any) -> MapOutput:
        return out if isinstance(out, MapOutput) else MapOutput(out)

    def _checked_maps(self, maps: Any, batch: int) -> torch.Tensor:
        """What :meth:`attribute` returned, checked: a finite real tensor ``B×h×w`` (or ``B×1×h×w``)."""
        who = f"explainer {self.name!r} ({type(self).__name__}.attribute)"
        if not isinstance(maps, torch.Tensor):
            hint = " (wrap it with torch.as_tensor(..., device=images.device))" if hasattr(maps, "__array__") else ""
            raise ExplainerOutputError(f"{who} returned a {type(maps).__name__}; expected a torch.Tensor B×h×w{hint}")
        if not maps.is_floating_point():
            raise ExplainerOutputError(
                f"{who} returned a {maps.dtype} map; expected a floating-point tensor (saliency is real-valued)"
            )
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if maps.ndim != 3 or maps.shape[0] != batch:
            raise ExplainerOutputError(f"{who} returned shape {tuple(maps.shape)}; expected B×h×w with B={batch}")
        finite = torch.isfinite(maps).flatten(1).all(1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise ExplainerOutputError(
                f"{who} returned NaN or infinite values for image(s) {bad} of the batch; every map must be finite"
            )
        return maps

    def explain(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """``B×H×W`` saliency maps (float, input resolution, on the images' device).

        The same as ``explanation(images, target).maps``; calling the explainer does the same.

        Args:
            images: ``B×C×H×W`` float images the model takes.
            target: as in :meth:`explanation`.
        """
        return self.explanation(images, target).maps

    __call__ = explain

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class LayerExplainer(Explainer):
    """An explainer that reads one layer of the model (CAM methods, layer attributions).

    Args:
        model: a classifier ``nn.Module`` returning logits, in eval mode.
        layer: a module of the model or its dotted name (``"layer4"``); ``None`` asks
            the installed plugins (the ``resolve_target_layer`` hook) for this architecture.
        class_names: as for :class:`Explainer`.

    Attributes:
        target_layer: the resolved :class:`~xai_bridge.layers.TargetLayer` (module, dotted
            name, and an optional ``reshape`` of token sequences into ``B×C×h×w``).
    """

    def __init__(self, model: nn.Module, *, layer: Any = None, class_names: Sequence[str] | None = None) -> None:
        super().__init__(model, class_names=class_names)
        self.target_layer: TargetLayer = find_layer(model, layer)

    @property
    def layer(self) -> nn.Module:
        """The module whose output the explainer reads (``target_layer.module``)."""
        return self.target_layer.module

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} layer={self.target_layer.name!r}>"
