"""Interpretable-gradients training regulariser (thesis ch. 4, eqs. 4.1–4.8).

Training loss::

    L = L_C + λ · L_R,    L_R = 1/n Σ_i E(∂L_C/∂x_i, ∂_G L_C/∂x_i)

``L_C`` is the batch-mean softmax cross-entropy (eq. 4.1), ``∂L_C/∂x_i`` its
standard input gradient (kept in the graph: double backward), ``∂_G L_C/∂x_i``
the guided-backpropagation input gradient of the same loss (every ``nn.ReLU``
passes back only positive gradients where its input was positive), detached:
it is the "teacher". ``E`` is an error between the two gradient images, each
flattened to ``p = C·H·W`` values: ``"cosine"`` (default, ``λ = 7.5e-3``),
``"mse"``, ``"mae"`` or ``"histogram"`` (see :data:`ERROR_FUNCTIONS`).

How the guided gradient is obtained without changing the user's model: inside
:func:`relu_backward_switch` every ``nn.ReLU`` module's ``forward`` is shadowed
(an instance attribute, deleted on exit) by a ReLU whose backward is either the
standard one or the guided one, chosen by a flag read *at backward time*. One
forward pass then serves both backward passes, reused modules (ResNet's
BasicBlock applies one ReLU twice) get one autograd node per call, and in-place
ReLUs stay in-place.

Example::

    >>> import torch
    >>> from xai_bridge_builtins.gradreg.regularizer import GradientRegularizer, small_cnn
    >>> model = small_cnn(num_classes=10).train()
    >>> images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    >>> total, parts = GradientRegularizer("cosine", lam=7.5e-3).loss(model, images, labels)
    >>> total.backward()          # ∂(CE + λ·E)/∂θ in every parameter's .grad
    >>> sorted(parts)
    ['accuracy', 'ce', 'cosine', 'reg']
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.models import model_device

#: The thesis' default regularisation coefficient (Table 4.3, cosine error).
DEFAULT_LAMBDA = 7.5e-3

# ---------------------------------------------------------------------------------------------
# Error functions E(δ, δ') between two gradient images (thesis eqs. 4.5–4.8), one value per image
# ---------------------------------------------------------------------------------------------


def _flat(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1) if delta.ndim > 1 else delta[None]


def mae_error(delta: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 4.5, ``1/p ‖δ − δ'‖₁`` per image (``B×…`` → ``B``).

    >>> mae_error(torch.tensor([[1., 0., -1., 2.]]), torch.tensor([[2., 1., 0., 1.]]))
    tensor([1.])
    """
    return (_flat(delta) - _flat(target)).abs().mean(1)


def mse_error(delta: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 4.6, ``1/p ‖δ − δ'‖₂²`` per image."""
    return (_flat(delta) - _flat(target)).pow(2).mean(1)


def cosine_error(delta: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 4.7, ``−⟨δ, δ'⟩ / (‖δ‖₂ ‖δ'‖₂)`` per image: −1 when aligned, so minimising raises similarity.

    >>> round(cosine_error(torch.tensor([[1., 2.]]), torch.tensor([[2., 4.]])).item(), 6)
    -1.0
    """
    return -F.cosine_similarity(_flat(delta), _flat(target), dim=1, eps=eps)


def histogram_error(delta: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Histogram intersection of the gradient magnitudes, negated: ``−Σ_i min(|δ_i|/‖δ‖₁, |δ'_i|/‖δ'‖₁)``.

    In ``[−1, 0]``; −1 exactly when ``|δ|`` and ``|δ'|`` are proportional. This is the
    standard (Swain & Ballard) intersection of the two L1-normalised magnitude
    histograms. The thesis prints eq. 4.8 with the sum of minima divided by the
    *product* ``‖δ‖₁‖δ'‖₁``, which is not scale-invariant and is minimised by any δ
    small enough (δ → 0), whatever its direction; that form is kept as
    ``"histogram-eq4.8"`` (:func:`histogram_error_as_printed`) for reproduction only.

    >>> histogram_error(torch.tensor([[1., 0., -1., 2.]]), torch.tensor([[2., 1., 0., 1.]]))
    tensor([-0.5000])
    """
    a, b = _flat(delta).abs(), _flat(target).abs()
    a = a / a.sum(1, keepdim=True).clamp_min(eps)
    b = b / b.sum(1, keepdim=True).clamp_min(eps)
    return -torch.minimum(a, b).sum(1)


def histogram_error_as_printed(delta: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 4.8 exactly as printed: ``−Σ_i min(|δ_i|, |δ'_i|) / (‖δ‖₁ ‖δ'‖₁)`` (see :func:`histogram_error`)."""
    a, b = _flat(delta).abs(), _flat(target).abs()
    return -torch.minimum(a, b).sum(1) / (a.sum(1) * b.sum(1)).clamp_min(eps)


ErrorFunction = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

#: name → E(δ, δ', eps) returning one value per image (thesis eqs. 4.5–4.8).
ERROR_FUNCTIONS: dict[str, ErrorFunction] = {
    "cosine": cosine_error,
    "mse": mse_error,
    "mae": mae_error,
    "histogram": histogram_error,
    "histogram-eq4.8": histogram_error_as_printed,
}


def _check_distance(distance: str) -> str:
    if distance not in ERROR_FUNCTIONS:
        from xai_bridge.registry import did_you_mean

        raise InvalidArgumentError(
            f"distance: {distance!r} is not an error function; expected one of "
            f"{tuple(ERROR_FUNCTIONS)}.{did_you_mean(str(distance), ERROR_FUNCTIONS)}"
        )
    return distance


# ---------------------------------------------------------------------------------------------
# Guided backpropagation without touching the model: a switchable ReLU backward
# ---------------------------------------------------------------------------------------------


class ReLUBackwardMode:
    """Which backward the ReLUs recorded under :func:`relu_backward_switch` use.

    The flag is read when the backward pass runs, so one forward graph can be
    differentiated once with ``guided = True`` and once with ``guided = False``.
    """

    def __init__(self, guided: bool = False) -> None:
        self.guided = guided

    def __repr__(self) -> str:
        return f"ReLUBackwardMode(guided={self.guided})"


class _SwitchableReLU(torch.autograd.Function):
    """``max(x, 0)``; backward ``g·1[x>0]`` (standard) or ``max(g, 0)·1[x>0]`` (guided).

    The backward is written with differentiable operations, so the standard
    gradient can itself be differentiated (double backward, ``create_graph=True``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mode: ReLUBackwardMode, inplace: bool) -> torch.Tensor:  # type: ignore[override]
        if inplace:
            ctx.mark_dirty(x)
            out = x.clamp_(min=0)
        else:
            out = x.clamp(min=0)
        ctx.save_for_backward(out > 0)
        ctx.mode = mode
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (passing,) = ctx.saved_tensors
        grad_in = torch.where(passing, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        if ctx.mode.guided:
            grad_in = grad_in.clamp(min=0)
        return grad_in, None, None


def relu_modules(model: nn.Module) -> list[nn.ReLU]:
    """Every distinct ``nn.ReLU`` module of ``model`` (a module applied twice is listed once)."""
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


_MISSING = object()


@contextlib.contextmanager
def relu_backward_switch(model: nn.Module) -> Iterator[ReLUBackwardMode]:
    """Make the backward of every ``nn.ReLU`` of ``model`` switchable between standard and guided.

    Inside the block each ReLU module's ``forward`` is shadowed by an instance
    attribute (the class is untouched, no hooks are registered); on exit the
    attribute is removed, also when an exception is raised. Forward values are
    unchanged (in-place ReLUs still work in place). Graphs recorded inside keep
    the returned :class:`ReLUBackwardMode`, so they can be differentiated after
    the block too. Only ``nn.ReLU`` modules are seen: ``F.relu`` / ``torch.relu``
    calls in a ``forward`` keep the standard backward (as in Captum).

    Example::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(2, 3, requires_grad=True)
        >>> with relu_backward_switch(net) as mode:
        ...     y = net(x)[:, 0].sum()
        >>> mode.guided = True
        >>> guided, = torch.autograd.grad(y, x, retain_graph=True)
        >>> mode.guided = False
        >>> standard, = torch.autograd.grad(y, x)
    """
    relus = relu_modules(model)
    if not relus:
        raise InvalidArgumentError(
            "model: has no torch.nn.ReLU module; guided backpropagation overrides the backward of nn.ReLU "
            "modules (functional F.relu calls and other activations are not seen)"
        )
    mode = ReLUBackwardMode()
    saved: list[tuple[nn.ReLU, Any]] = []
    try:
        for module in relus:
            saved.append((module, module.__dict__.get("forward", _MISSING)))
            module.forward = _switchable_forward(module, mode)  # type: ignore[method-assign]
        yield mode
    finally:
        for module, previous in reversed(saved):
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous  # type: ignore[method-assign]


def _switchable_forward(module: nn.ReLU, mode: ReLUBackwardMode) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(input: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLU.apply(input, mode, module.inplace)

    return forward


@contextlib.contextmanager
def guided_backprop(model: nn.Module) -> Iterator[None]:
    """Every graph recorded inside back-propagates through the ReLUs with the guided rule.

    Equals Captum's ``GuidedBackprop`` (``tests/test_gradreg.py``) and leaves the
    model as it was.

    Example::

        >>> import torch
        >>> net = small_cnn(num_classes=3).eval()
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> with guided_backprop(net):
        ...     score = net(x)[:, 1].sum()
        >>> guided, = torch.autograd.grad(score, x)
    """
    with relu_backward_switch(model) as mode:
        mode.guided = True
        yield


# ---------------------------------------------------------------------------------------------
# The two input gradients and the regularised loss
# ---------------------------------------------------------------------------------------------


@dataclass
class InputGradients:
    """One forward pass and the two input gradients of the classification loss.

    Attributes:
        logits: ``B×K``, attached to the graph.
        loss: ``L_C``, the batch-mean cross-entropy (eq. 4.1), attached to the graph.
        standard: ``∂L_C/∂x`` (``B×C×H×W``); attached to the graph when computed with ``create_graph=True``.
        guided: ``∂_G L_C/∂x``, detached (the target).
    """

    logits: torch.Tensor
    loss: torch.Tensor
    standard: torch.Tensor
    guided: torch.Tensor


def _check_batch(images: Any, labels: Any) -> None:
    from xai_bridge.targets import check_images

    check_images(images)
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InvalidTypeError(
            "labels: expected an integer tensor of shape (B,), got "
            f"{type(labels).__name__ if not isinstance(labels, torch.Tensor) else labels.dtype}"
        )
    if labels.shape != (images.shape[0],):
        raise InvalidArgumentError(
            f"labels: expected shape ({images.shape[0]},) (one class per image), got {tuple(labels.shape)}"
        )


def input_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> InputGradients:
    """Standard and guided input gradients of the batch-mean cross-entropy, from one forward pass.

    Cost: one forward and two backward passes (the standard one builds a graph
    when ``create_graph=True``, so that ``E`` can be differentiated w.r.t. the
    parameters). Parameter ``.grad`` are not touched.

    Args:
        model: classifier built from ``nn.ReLU`` modules (train or eval mode; its mode is not changed).
        images: ``B×C×H×W`` float.
        labels: ``(B,)`` class indices (the cross-entropy's targets, eq. 4.2).
        create_graph: keep the standard gradient differentiable (training).
        retain_graph: keep the forward graph after the standard backward (default: ``create_graph``).

    Example::

        >>> import torch
        >>> g = input_gradients(small_cnn(num_classes=10).eval(), torch.rand(2, 3, 32, 32), torch.tensor([3, 7]))
        >>> g.standard.shape, g.guided.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 3, 32, 32]))
    """
    _check_batch(images, labels)
    labels = labels.to(device=images.device, dtype=torch.long)
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        with relu_backward_switch(model) as mode:
            logits = model(x)
        if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            raise InvalidArgumentError(f"model: expected logits of shape B×K, got {tuple(logits.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]:
            raise InvalidArgumentError(
                f"labels: class indices must lie in 0..{logits.shape[1] - 1}, got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        loss = F.cross_entropy(logits, labels)
        mode.guided = True
        (guided,) = torch.autograd.grad(loss, x, retain_graph=True)
        mode.guided = False
        keep = create_graph if retain_graph is None else retain_graph
        (standard,) = torch.autograd.grad(loss, x, create_graph=create_graph, retain_graph=keep or create_graph)
    return InputGradients(logits=logits, loss=loss, standard=standard, guided=guided.detach())


class GradientRegularizer:
    """``L = CE + λ · 1/n Σ_i E(∂L_C/∂x_i, ∂_G L_C/∂x_i)`` (thesis eq. 4.4).

    Args:
        distance: the error function ``E``: ``"cosine"`` (eq. 4.7, default), ``"mse"``
            (4.6), ``"mae"`` (4.5), ``"histogram"`` (intersection of normalised
            magnitude histograms, see :func:`histogram_error`) or ``"histogram-eq4.8"``.
        lam: ``λ`` ≥ 0 (thesis default 7.5e-3). With ``λ = 0`` the loss is plain
            cross-entropy; both gradients are still computed (without double
            backward) so that the similarity can be logged.
        eps: guard against zero norms.

    Override :meth:`error` for another ``E``.

    The model's mode is used as it is: in train mode, BatchNorm normalises with the
    batch's statistics, so each image's input gradient also flows through the other
    images of the batch, and the similarity that is optimised is the train-mode one.
    It need not carry over to eval mode (``docs/gradreg.md`` measures both).

    Example::

        >>> import torch
        >>> model = small_cnn(num_classes=10).train()
        >>> reg = GradientRegularizer("histogram", lam=0.1)
        >>> total, parts = reg.loss(model, torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> bool(torch.isclose(total, parts["ce"] + 0.1 * parts["reg"]))
        True
    """

    def __init__(self, distance: str = "cosine", lam: float = DEFAULT_LAMBDA, *, eps: float = 1e-12) -> None:
        self.distance = _check_distance(distance)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise InvalidArgumentError(f"lam: expected a finite number ≥ 0 (the thesis uses 7.5e-3), got {lam!r}")
        self.lam = float(lam)
        self.eps = eps

    def error(self, standard: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        """``E(δ, δ')`` per image (``B``). The override point."""
        return ERROR_FUNCTIONS[self.distance](standard, guided, self.eps)

    def loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss (attached to the graph) and its detached parts.

        Returns ``(total, parts)`` with ``parts`` = ``ce`` (eq. 4.1), ``reg`` (``L_R``,
        eq. 4.3), ``cosine`` (mean cosine similarity of the two input gradients,
        whatever ``E`` is) and ``accuracy`` (fraction of the batch classified right).
        One forward pass, two backward passes, and, when ``λ > 0``, the double
        backward that ``total.backward()`` runs.
        """
        grads = input_gradients(
            model, images, labels, create_graph=self.lam > 0 and torch.is_grad_enabled(), retain_graph=True
        )
        reg = self.error(grads.standard, grads.guided).mean()
        total = grads.loss + self.lam * reg if self.lam > 0 else grads.loss
        with torch.no_grad():
            cosine = F.cosine_similarity(
                grads.standard.detach().flatten(1), grads.guided.flatten(1), dim=1, eps=self.eps
            ).mean()
            accuracy = (grads.logits.argmax(1) == labels.to(grads.logits.device)).float().mean()
        parts = {"ce": grads.loss.detach(), "reg": reg.detach(), "cosine": cosine, "accuracy": accuracy}
        return total, parts

    def __repr__(self) -> str:
        return f"GradientRegularizer(distance={self.distance!r}, lam={self.lam:g})"


# ---------------------------------------------------------------------------------------------
# Training and evaluation loops
# ---------------------------------------------------------------------------------------------


def evaluate_gradients(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: Any = None, progress: bool = False
) -> dict[str, float]:
    """Accuracy, mean cross-entropy and mean per-image cosine similarity of the two input gradients.

    Runs the model in eval mode (its mode is restored afterwards).

    Example::

        >>> import torch
        >>> data = [(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]
        >>> sorted(evaluate_gradients(small_cnn(num_classes=4), data))
        ['accuracy', 'ce', 'cosine', 'images']
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    n, correct, ce_sum, cos_sum = 0, 0.0, 0.0, 0.0
    try:
        for images, labels in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
            images, labels = images.to(device), labels.to(device)
            grads = input_gradients(model, images, labels)
            b = images.shape[0]
            with torch.no_grad():
                cos = F.cosine_similarity(grads.standard.flatten(1), grads.guided.flatten(1), dim=1, eps=1e-12)
                correct += float((grads.logits.argmax(1) == labels).sum())
                ce_sum += float(grads.loss) * b
                cos_sum += float(cos.sum())
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise InvalidArgumentError("loader: yielded no images")
    return {"accuracy": correct / n, "ce": ce_sum / n, "cosine": cos_sum / n, "images": float(n)}


def train_regularized(
    model: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int = 1,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    lam: float = DEFAULT_LAMBDA,
    distance: str = "cosine",
    device: Any = None,
    progress: bool = True,
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    scheduler: Any = None,
    regularizer: GradientRegularizer | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` with ``CE + λ·E`` and return one record per epoch.

    Args:
        model: a classifier built from ``nn.ReLU`` modules; trained in place (left
            in the train/eval mode it had).
        train_loader: yields ``(images B×C×H×W, labels B)``.
        epochs: passes over ``train_loader``.
        optimizer: default Adam (lr 1e-3) over the parameters that require grad.
        lam, distance: see :class:`GradientRegularizer` (ignored when ``regularizer`` is given).
        device: default the model's device; batches are moved there.
        progress: a tqdm bar per epoch.
        val_loader: evaluated after each epoch with :func:`evaluate_gradients`.
        scheduler: stepped once per epoch.

    Returns:
        per epoch: ``epoch``, ``loss``, ``ce``, ``reg``, ``accuracy``, ``cosine`` (means over
        the training images, measured during the epoch), ``seconds``, and
        ``val_accuracy``, ``val_ce``, ``val_cosine`` with a ``val_loader``.

    Example::

        >>> import torch
        >>> data = [(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))] * 2
        >>> history = train_regularized(small_cnn(num_classes=10), data, epochs=1, progress=False)
        >>> sorted(history[0])
        ['accuracy', 'ce', 'cosine', 'epoch', 'loss', 'reg', 'seconds']
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"epochs: expected an integer ≥ 1, got {epochs!r}")
    if not relu_modules(model):
        raise InvalidArgumentError(
            "model: has no torch.nn.ReLU module, so it has no guided gradient to regularise towards"
        )
    reg = regularizer if regularizer is not None else GradientRegularizer(distance, lam)
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=1e-3)
    was_training = model.training
    history: list[dict[str, float]] = []
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            start = time.perf_counter()
            sums = {"loss": 0.0, "ce": 0.0, "reg": 0.0, "accuracy": 0.0, "cosine": 0.0}
            n = 0
            bar = tqdm(
                train_loader,
                desc=f"epoch {epoch}/{epochs} λ={reg.lam:g} {reg.distance}",
                unit="batch",
                disable=not progress,
                leave=False,
            )
            for images, labels in bar:
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                total, parts = reg.loss(model, images, labels)
                total.backward(inputs=params)
                optimizer.step()
                b = images.shape[0]
                n += b
                sums["loss"] += float(total.detach()) * b
                for key in ("ce", "reg", "accuracy", "cosine"):
                    sums[key] += float(parts[key]) * b
                bar.set_postfix(ce=f"{float(parts['ce']):.3f}", cos=f"{float(parts['cosine']):.3f}")
            if n == 0:
                raise InvalidArgumentError("train_loader: yielded no batches")
            if scheduler is not None:
                scheduler.step()
            record: dict[str, float] = {
                "epoch": float(epoch),
                **{k: v / n for k, v in sums.items()},
                "seconds": time.perf_counter() - start,
            }
            if val_loader is not None:
                val = evaluate_gradients(model, val_loader, device=device)
                record.update(val_accuracy=val["accuracy"], val_ce=val["ce"], val_cosine=val["cosine"])
            history.append(record)
            if progress:
                extra = (
                    f"  val acc {record['val_accuracy']:.3f} cos {record['val_cosine']:.3f}"
                    if val_loader is not None
                    else ""
                )
                tqdm.write(
                    f"epoch {epoch}: loss {record['loss']:.4f} ce {record['ce']:.4f} reg {record['reg']:.4f} acc "
                    f"{record['accuracy']:.3f} cos {record['cosine']:.3f}{extra}"
                )
    finally:
        model.train(was_training)
    return history


# ---------------------------------------------------------------------------------------------
# Small models for demos, tests and the benchmark (data: xai_bridge.data.digits_split, image_folder_split)
# ---------------------------------------------------------------------------------------------


def small_cnn(num_classes: int = 10, *, in_channels: int = 3, width: int = 16) -> nn.Sequential:
    """A small VGG-style ReLU CNN (in-place ReLUs, max-pooling, BatchNorm, GAP) for 32×32 images.

    Modules: ``features.block1`` (2 convs, pool) → ``features.block2`` (2 convs, pool)
    → ``features.block3`` (1 conv; the CAM target layer, ``H/4×W/4``) → ``pool`` →
    ``flatten`` → ``classifier``.

    >>> small_cnn(10)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = width
    features = nn.Sequential(
        OrderedDict(
            block1=nn.Sequential(*conv(in_channels, w), *conv(w, w), nn.MaxPool2d(2)),
            block2=nn.Sequential(*conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2)),
            block3=nn.Sequential(*conv(2 * w, 4 * w)),
        )
    )
    return nn.Sequential(
        OrderedDict(
            features=features,
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            classifier=nn.Linear(4 * w, num_classes),
        )
    )


#: ``--arch`` names besides any torchvision classification model.
ARCHITECTURES = ("smallcnn",)


def build_model(arch: str, num_classes: int, *, seed: int = 0) -> nn.Module:
    """``"smallcnn"`` (:func:`small_cnn`) or a torchvision classifier by name, randomly initialised
    (seeded; no download)."""
    torch.manual_seed(seed)
    if arch == "smallcnn":
        return small_cnn(num_classes)
    import torchvision
    from torchvision import models as tvm

    from xai_bridge.registry import did_you_mean

    names = tvm.list_models(module=tvm)
    if arch not in names:
        raise InvalidArgumentError(
            f"arch: {arch!r} is not known; expected 'smallcnn' or a torchvision classifier "
            f"({', '.join(names[:6])}, ...).{did_you_mean(arch, [*ARCHITECTURES, *names])}"
        )
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if not relu_modules(model):
        raise InvalidArgumentError(
            f"arch: {arch!r} has no nn.ReLU modules (it uses other activations), so it has no guided gradient; "
            "pick a ReLU network such as resnet18, vgg11 or smallcnn"
        )
    return model


def cam_layer(arch: str) -> str | None:
    """The CAM target layer of :func:`build_model`'s model (``None``: resolved by the architectures plugin)."""
    return "features.block3" if arch == "smallcnn" else None
