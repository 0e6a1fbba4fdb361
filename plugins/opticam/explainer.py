"""Built-in plugin: Opti-CAM, saliency maps optimised for the classifier (Zhang et al. 2024; thesis ch. 2).

The map is a convex combination of the target layer's feature maps ``A^k``
(computed once, no gradient into the backbone) with weights ``softmax(u)``; the
per-image variable ``u`` maximises the logit of the explained class on the image
masked by the map (pixel space)::

    S(u) = Σ_k softmax(u)_k A^k            F(u) = y_c(x ⊙ n(up(S(u))))

Adam (lr 0.1) runs at most ``max_iter`` steps; an image stops on its own when its
objective changes by less than ``tolerance``. Images of a batch are independent
problems solved together: an image that has stopped keeps its ``u`` and leaves
the working batch at the next checkpoint.

This module holds the algorithm (:func:`optimise`) and the explainer class; the plugin's
``__init__`` only registers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from xai_bridge.engine.executor import Executor, check_executor
from xai_bridge.engine.maps import normalize_maps as shared_normalize_maps
from xai_bridge.errors import InvalidArgumentError
from xai_bridge.explainer import LayerExplainer, MapOutput, upsample

OBJECTIVES = ("mask", "diff")
NORMALIZATIONS = ("range", "max", "sigmoid")
#: how often (in iterations) the working batch drops images that have stopped; the only host syncs
CHECKPOINT_EVERY = 10

_BETAS = (0.9, 0.999)
_EPS = 1e-8


def normalize_maps(maps: torch.Tensor, how: str = "range") -> torch.Tensor:
    """The normalisation ``n`` of Opti-CAM, per image of a ``B×H×W`` batch (differentiable).

    ``range`` ``(S − min S)/(max S − min S)`` (thesis eq. 2.9; a constant map gives 0, as
    the thesis defines ``n(0) = 0``); ``max`` ``S / max S`` (eq. 2.10; 0 where ``max S ≤ 0``);
    ``sigmoid`` element-wise ``1/(1 + e^{−S})`` (eq. 2.11).

    >>> import torch
    >>> normalize_maps(torch.tensor([[[1.0, 3.0]]]), "range")
    tensor([[[0., 1.]]])
    """

    if how == "sigmoid":
        return torch.sigmoid(maps)
    if how == "range":  # the per-image min-max every part of xai-bridge shares; n(constant) = 0
        return shared_normalize_maps(maps, constant="zeros")
    top = maps.amax(dim=(-2, -1), keepdim=True)
    if how == "max":
        ok = top > 0
        return maps / torch.where(ok, top, torch.ones_like(top)) * ok
    raise InvalidArgumentError(f"normalization: {how!r} is not known; expected one of {NORMALIZATIONS}")


def feature_maps(
    model: Any, images: torch.Tensor, target_layer: Any, executor: Executor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, logits)``: the target layer's output ``B×K×h×w`` (detached) and the model's logits, one no-grad pass
    (through ``executor``, counted, when one is given).

    The forward hook is removed before returning, whatever happens.
    """

    captured: list[torch.Tensor] = []
    handle = target_layer.module.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with torch.no_grad():
            if executor is None:
                logits = model(images)
            else:
                logits = executor.differentiable(lambda net, x: net(x), precision="float32")(images)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise InvalidArgumentError(
            f"layer: {target_layer.name!r} ran {len(captured)} times in one forward pass; Opti-CAM needs a module "
            "that runs exactly once (pick the block that contains it, or a module of its own)"
        )
    features = captured[0]
    if not isinstance(features, torch.Tensor):
        raise InvalidArgumentError(
            f"layer: {target_layer.name!r} returns a {type(features).__name__}, expected a tensor"
        )
    if target_layer.reshape is not None:
        features = target_layer.reshape(features)
    if features.ndim != 4:
        raise InvalidArgumentError(
            f"layer: {target_layer.name!r} gives features of shape {tuple(features.shape)}; expected B×K×h×w "
            "(give the TargetLayer a reshape for token sequences)"
        )
    return features.detach(), logits.detach()


def masked_forward(
    model: Any,
    device: torch.device,
    *,
    channels_last: bool = False,
    compile: bool = False,
    precision: str = "float32",
    executor: Executor | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``forward(x, mask)``: the logits of ``x ⊙ mask``, the step Opti-CAM repeats at every iteration.

    The step runs through ``executor`` (:meth:`~xai_bridge.engine.executor.Executor.differentiable`,
    which counts it; a new executor for ``model`` when none is given). With every option off this is
    exactly ``model(x * mask)``. ``channels_last`` runs a channels-last copy of the model (the model
    itself is left as it is); ``compile`` wraps the step in ``torch.compile`` (eager, with a
    :class:`~xai_bridge.errors.ForwardModeWarning`, when it cannot compile); ``precision`` is
    autocast for the forward pass, and the logits come back as float32 either way.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 4)).eval()
    >>> x, mask = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    >>> fast = masked_forward(model, torch.device("cpu"), channels_last=True)
    >>> bool((fast(x, mask) - model(x * mask)).abs().max() < 1e-5)
    True
    """
    from xai_bridge.engine.forward import check_precision

    check_precision(precision, device)
    if executor is None:
        executor = Executor(model, compile="eager", precision=precision)
    return executor.differentiable(
        lambda net, x, mask: net(x * mask),
        channels_last=channels_last,
        compile=compile,
        precision=precision,
        what="Opti-CAM's masked forward pass",
    )


def optimise(
    model: Any,
    images: torch.Tensor,
    targets: torch.Tensor,
    target_layer: Any,
    *,
    max_iter: int = 100,
    lr: float = 0.1,
    objective: str = "mask",
    normalization: str = "range",
    tolerance: float = 1e-10,
    init: float = 0.0,
    progress: bool | None = False,
    channels_last: bool = False,
    compile: bool = False,
    precision: str = "float32",
    executor: Executor | None = None,
) -> dict[str, torch.Tensor]:
    """Run Opti-CAM on a batch; every image is its own problem and stops on its own.

    Returns a dict of tensors on the images' device: ``mask`` (B×H×W, ``n(up(S(u*)))``),
    ``saliency`` (B×h×w, ``S(u*)``), ``u``, ``masked_score`` (the logit of the class on
    the masked image), ``masked_probability``, ``objective`` (B×(max_iter+1): ``F`` at
    each evaluation, NaN after the image stopped), ``iterations`` (Adam steps taken),
    ``converged`` (stopped by the tolerance before ``max_iter``).

    Only ``u`` gets gradients (``torch.autograd.grad``): the model's parameters,
    their ``.grad`` and ``requires_grad`` flags are left alone.

    The masked forward pass (the cost of every step) can be made faster, all off by default:
    ``channels_last`` runs a channels-last copy of the model; ``compile`` runs it through
    ``torch.compile`` (eager with a warning where that fails); ``precision="bfloat16"``
    (CPU, CUDA) or ``"float16"`` (CUDA) runs it under autocast, with float32 scores and
    gradients for ``u``. See :func:`masked_forward`.

    Every forward and backward pass goes through ``executor`` (one is made for ``model`` when
    none is given), whose counters then hold the cost: ``samples`` (forward images, the feature
    pass included) and ``backward_samples``.
    """
    if executor is None:
        executor = Executor(model, compile="eager", precision=precision)

    features, logits = feature_maps(model, images, target_layer, executor=executor)
    b, k = features.shape[:2]
    size = tuple(images.shape[-2:])
    device, dtype = features.device, features.dtype
    base = logits.gather(1, targets[:, None]).squeeze(1)

    # Full-batch results; the working set shrinks at checkpoints as images stop.
    u_all = torch.full((b, k), float(init), device=device, dtype=dtype)
    score_all = torch.zeros(b, device=device, dtype=logits.dtype)
    prob_all = torch.zeros_like(score_all)
    trace = torch.full((b, max_iter + 1), float("nan"), device=device, dtype=logits.dtype)
    iterations = torch.zeros(b, dtype=torch.long, device=device)
    converged_all = torch.zeros(b, dtype=torch.bool, device=device)

    index = torch.arange(b, device=device)  # working set → batch position
    x, a, c, y0 = images, features, targets, base
    u = u_all.clone()
    m = torch.zeros_like(u)
    v = torch.zeros_like(u)
    previous = torch.full((b,), float("nan"), device=device, dtype=logits.dtype)
    active = torch.ones(b, dtype=torch.bool, device=device)
    beta1, beta2 = _BETAS

    forward = masked_forward(
        model, device, channels_last=channels_last, compile=compile, precision=precision, executor=executor
    )

    def evaluate(u_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weights = u_var.softmax(dim=1)
        saliency = torch.einsum("bk,bkhw->bhw", weights, a)
        mask = normalize_maps(upsample(saliency, size), normalization)
        out = forward(x, mask[:, None].to(x.dtype))
        score = out.gather(1, c[:, None]).squeeze(1)
        prob = out.log_softmax(dim=1).gather(1, c[:, None]).squeeze(1).exp()
        value = score if objective == "mask" else -(score - y0).abs()
        return value, score, prob

    bar = tqdm(
        total=max_iter, desc="opticam", unit="it", leave=False, disable=(None if progress is None else not progress)
    )
    try:
        for t in range(max_iter + 1):
            last = t == max_iter
            u_var = u.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                value, score, prob = evaluate(u_var)
            value_d = value.detach()
            # Record what the still-active images reached at their current u.
            trace[index, t] = torch.where(active, value_d, trace[index, t])
            score_all[index] = torch.where(active, score.detach(), score_all[index])
            prob_all[index] = torch.where(active, prob.detach(), prob_all[index])
            u_all[index] = torch.where(active[:, None], u, u_all[index])
            stopped = active & ((value_d - previous).abs() < tolerance)
            converged_all[index] = converged_all[index] | stopped
            active = active & ~stopped
            previous = value_d
            if last:
                break
            (grad,) = torch.autograd.grad(-value.sum(), u_var)
            executor.count_backward(x.shape[0])
            # Adam (PyTorch's defaults, no weight decay); a stopped image keeps its u.
            step = t + 1
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            update = lr * (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + _EPS)
            u = torch.where(active[:, None], u - update, u)
            iterations[index] += active.long()
            bar.update(1)
            if step % CHECKPOINT_EVERY == 0:
                n_active = int(active.sum())  # one host sync per checkpoint
                bar.set_postfix(active=n_active)
                if n_active == 0:
                    break
                if n_active < index.numel():
                    keep = active.nonzero().squeeze(1)
                    index, x, a, c, y0 = index[keep], x[keep], a[keep], c[keep], y0[keep]
                    u, m, v, previous, active = u[keep], m[keep], v[keep], previous[keep], active[keep]
    finally:
        bar.close()

    with torch.no_grad():
        saliency = torch.einsum("bk,bkhw->bhw", u_all.softmax(dim=1), features)
        mask = normalize_maps(upsample(saliency, size), normalization)
    return {
        "mask": mask,
        "saliency": saliency,
        "u": u_all,
        "masked_score": score_all,
        "masked_probability": prob_all,
        "objective": trace,
        "iterations": iterations,
        "converged": converged_all,
    }


class OptiCAM(LayerExplainer):
    """Opti-CAM: the CAM whose channel weights maximise the class logit of the masked image.

    Args:
        model: classifier in eval mode, taking images in pixel space (masking multiplies the input).
        layer: target layer (module or dotted name); resolved per architecture when omitted.
        max_iter: at most this many Adam steps per image (default 100).
        lr: Adam learning rate (default 0.1).
        objective: ``"mask"`` maximise ``y_c(x ⊙ n(up(S)))`` (default) or ``"diff"``
            maximise ``−|y_c(x) − y_c(x ⊙ n(up(S)))|``.
        normalization: ``"range"`` (default), ``"max"`` or ``"sigmoid"`` (see :func:`normalize_maps`).
        tolerance: an image stops once its objective changes by less than this (default 1e-10).
        init: the constant ``u`` starts from (any constant gives the same map).
        progress: a tqdm bar over iterations: ``True``, ``False``, or ``None`` (default) for
            "only when stderr is a terminal".
        channels_last: run the masked forward pass on a channels-last copy of the model.
        compile: run the masked forward pass through ``torch.compile`` (slow to start on a CPU).
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: autocast for the
            masked forward pass (what the device supports); see :func:`masked_forward`.
        executor: the :class:`~xai_bridge.engine.executor.Executor` that runs (and counts) every
            forward and backward pass; by default the explainer makes one for ``model`` and keeps it.

    ``explain`` returns the mask ``n(up(S(u*)))`` (B×H×W in [0,1]); ``raw`` is ``S(u*)``
    at feature resolution; ``info`` holds ``masked_score``, ``masked_probability``,
    ``iterations``, ``converged``, ``objective`` (the trace) and ``layer``.

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> e = xb.get_explainer("opticam", model, max_iter=5).explanation(images)
        >>> e.maps.shape, e.raw.shape, e.info["iterations"].tolist()
        (torch.Size([1, 224, 224]), torch.Size([1, 7, 7]), [5])
    """

    def __init__(
        self,
        model: Any,
        *,
        layer: Any = None,
        max_iter: int = 100,
        lr: float = 0.1,
        objective: str = "mask",
        normalization: str = "range",
        tolerance: float = 1e-10,
        init: float = 0.0,
        progress: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
        precision: str = "float32",
        executor: Executor | None = None,
        class_names: Any = None,
    ) -> None:
        super().__init__(model, layer=layer, class_names=class_names)
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
            raise InvalidArgumentError(f"max_iter: expected a non-negative integer, got {max_iter!r}")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise InvalidArgumentError(f"lr: expected a positive number, got {lr!r}")
        if objective not in OBJECTIVES:
            raise InvalidArgumentError(f"objective: {objective!r} is not known; expected one of {OBJECTIVES}")
        if normalization not in NORMALIZATIONS:
            raise InvalidArgumentError(
                f"normalization: {normalization!r} is not known; expected one of {NORMALIZATIONS}"
            )
        if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
            raise InvalidArgumentError(f"tolerance: expected a non-negative number, got {tolerance!r}")
        if not isinstance(init, (int, float)) or isinstance(init, bool):
            raise InvalidArgumentError(f"init: expected a number (the constant u starts from), got {init!r}")
        if progress not in (True, False, None):
            raise InvalidArgumentError(f"progress: expected True, False or None (terminal only), got {progress!r}")
        for name, flag in (("channels_last", channels_last), ("compile", compile)):
            if not isinstance(flag, bool):
                raise InvalidArgumentError(f"{name}: expected True or False, got {flag!r}")
        from xai_bridge.engine.forward import check_precision
        from xai_bridge.models import model_device

        check_precision(precision, model_device(model))
        self.channels_last, self.compile, self.precision = channels_last, compile, precision
        self.executor = check_executor(model, executor) or Executor(model, compile="eager", precision=precision)
        self.max_iter, self.lr, self.objective = max_iter, float(lr), objective
        self.normalization, self.tolerance, self.init, self.progress = (
            normalization,
            float(tolerance),
            float(init),
            progress,
        )

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        out = optimise(
            self.model,
            images,
            targets,
            self.target_layer,
            max_iter=self.max_iter,
            lr=self.lr,
            objective=self.objective,
            normalization=self.normalization,
            tolerance=self.tolerance,
            init=self.init,
            progress=self.progress,
            channels_last=self.channels_last,
            compile=self.compile,
            precision=self.precision,
            executor=self.executor,
        )
        info = {key: out[key] for key in ("masked_score", "masked_probability", "iterations", "converged", "objective")}
        info["layer"] = self.target_layer.name
        return MapOutput(out["mask"], raw=out["saliency"], info=info)
