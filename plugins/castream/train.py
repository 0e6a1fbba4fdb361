"""Training a CA-Stream on a frozen backbone, with resumable weights-only checkpoints.

Only the stream (CLS token(s) and projections) is optimised, with cross-entropy
on the CA logits; backbone and classifier are frozen (BatchNorm in eval mode,
``requires_grad`` off for the duration of training, not in the optimizer). The
default recipe is the thesis' (the torchvision ResNet recipe): SGD, lr 0.1,
momentum 0.9, weight decay 1e-4, lr × 0.1 every 30 epochs, 90 epochs, batch 256.

Each completed epoch writes ``<checkpoint_dir>/last.pt`` atomically (temporary
file, then rename): stream weights, optimizer and scheduler state, the epoch and
the history, as plain tensors, numbers and strings so that
``torch.load(path, weights_only=True)`` reads it. A killed run called again with
the same arguments resumes after the last completed epoch; data order depends
only on ``seed`` and the epoch, so the resumed weights equal an uninterrupted run's.

Example::

    >>> import torch, torchvision
    >>> from xai_bridge_builtins.castream.model import CAModel
    >>> from xai_bridge_builtins.castream.train import train_stream
    >>> gap = torchvision.models.resnet18(num_classes=3).eval()
    >>> images, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 3
    >>> result = train_stream(CAModel(gap), (images, labels), epochs=1, batch_size=4, progress=False)
    >>> sorted(result.history[0])[:3]
    ['ca_accuracy', 'epoch', 'gap_accuracy']
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from xai_bridge.checkpoints import atomic_save, check_resume, load_checkpoint
from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.models import model_device
from xai_bridge_builtins.castream.model import CAModel, castream_config_matches

#: Written into every checkpoint; a file without it is refused.
CHECKPOINT_FORMAT = "xai-bridge-castream/1"
#: The recipe keys that must match when a run resumes (``epochs`` may grow).
RECIPE_KEYS = ("lr", "momentum", "weight_decay", "step_size", "gamma", "batch_size", "seed")


@dataclass
class TrainResult:
    """What :func:`train_stream` returns.

    Attributes:
        model: the :class:`CAModel`, in eval mode, with the trained stream.
        history: one dict per completed epoch: ``epoch`` (1-based), ``loss``, ``lr``,
            ``ca_accuracy`` / ``gap_accuracy`` (training batches, %), ``val_ca_accuracy`` /
            ``val_gap_accuracy`` (when validation data is given), ``seconds``.
        resumed_from: the number of epochs found in the checkpoint (0 for a fresh run).
        checkpoint: the path of ``stream.pt`` (final weights) when a checkpoint folder was given.
    """

    model: CAModel
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    checkpoint: Path | None = None


# -- data -----------------------------------------------------------------------------------------
def as_dataset(data: Any, *, size: int = 224, name: str = "data") -> Dataset:
    """A ``Dataset`` of ``(image, label)`` from a Dataset, an ``(images, labels)`` pair or an ImageFolder path."""
    if isinstance(data, (str, os.PathLike)):
        from xai_bridge.data import image_folder

        return image_folder(data, size=size)
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
        if images.ndim != 4 or not images.is_floating_point():
            raise InvalidArgumentError(
                f"{name}: images must be a float tensor B×C×H×W, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise InvalidArgumentError(
                f"{name}: labels must be one integer class per image ({images.shape[0]}), got {labels.dtype} "
                f"{tuple(labels.shape)}"
            )
        return TensorDataset(images, labels.long())
    raise InvalidTypeError(
        f"{name}: expected a torch Dataset of (image, label), an (images, labels) pair of tensors, or an "
        f"ImageFolder path; got {type(data).__name__}"
    )


# -- checkpoints ----------------------------------------------------------------------------------
def save_stream(model: CAModel, path: str | os.PathLike[str], history: Sequence[dict[str, float]] = ()) -> Path:
    """Write the stream's weights and config (weights only; the backbone is not included).

    >>> import tempfile, torchvision
    >>> ca = CAModel(torchvision.models.resnet18(num_classes=2).eval())
    >>> path = save_stream(ca, tempfile.mkdtemp() + "/stream.pt")
    >>> torch.equal(load_castream(ca.backbone, path).stream.cls_token, ca.stream.cls_token)
    True
    """
    if not isinstance(model, CAModel):
        raise InvalidTypeError(f"model: expected a CAModel, got {type(model).__name__}")
    state = {k: v.detach().cpu() for k, v in model.stream.state_dict().items()}
    return atomic_save(
        {"format": CHECKPOINT_FORMAT, "config": model.config, "stream": state, "history": [dict(h) for h in history]},
        path,
    )


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a CA-Stream checkpoint with ``weights_only=True`` and check its format."""
    return load_checkpoint(path, format=CHECKPOINT_FORMAT, what="CA-Stream checkpoint", map_location=map_location)


def load_castream(backbone: nn.Module, path: str | os.PathLike[str], **options: Any) -> CAModel:
    """Rebuild a :class:`CAModel` around ``backbone`` from ``stream.pt`` or ``last.pt``; eval mode.

    ``options`` override the saved construction options (e.g. ``arch=MyAdapter()``
    for a custom :class:`~xai_bridge_builtins.castream.model.StageAdapter`).
    """
    state = read_checkpoint(path)
    cfg = state["config"]
    kwargs: dict[str, Any] = {
        "start_stage": cfg["start_stage"],
        "kv_projection": cfg["kv_projection"],
        "class_specific": cfg["class_specific"],
        "class_query": cfg["class_query"],
        "num_classes": cfg["num_classes"],
    }
    if cfg["arch"] == "hooked":
        kwargs.update(taps=cfg["taps"], classifier=cfg.get("classifier") or "fc")
    elif cfg["arch"] != "custom":
        kwargs["arch"] = cfg["arch"]
    kwargs.update(options)
    model = CAModel(backbone, **kwargs)
    diff = castream_config_matches(model, cfg)
    if diff:
        raise InvalidArgumentError(
            f"path: the checkpoint's stream does not fit this backbone (differs in {', '.join(diff)})"
        )
    model.stream.load_state_dict(state["stream"])
    return model.eval()


# -- training -------------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``requires_grad = False`` on every parameter of ``module`` inside the block, restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def build_model(model: Any, **options: Any) -> CAModel:
    """A :class:`CAModel` from a CAModel (returned as is), a GAP backbone, or an architecture name.

    Names: ``"efficientnet-lite0"`` (embedded ImageNet weights) or any torchvision
    classification model name (``"resnet18"``, ``"convnext_tiny"`` …) with random weights;
    ``num_classes`` then sets its classifier size.
    """
    if isinstance(model, CAModel):
        if options:
            raise InvalidArgumentError(
                f"model: is already a CAModel; options {sorted(options)} apply only when building one"
            )
        return model
    if isinstance(model, str):
        num_classes = options.pop("num_classes", None)
        backbone = backbone_from_name(model, num_classes=num_classes)
        return CAModel(backbone, **options)
    if isinstance(model, nn.Module):
        return CAModel(model, **options)
    raise InvalidTypeError(
        f"model: expected a CAModel, a backbone nn.Module or an architecture name, got {type(model).__name__}"
    )


def backbone_from_name(
    arch: str, *, num_classes: int | None = None, weights: str | os.PathLike[str] | None = None
) -> nn.Module:
    """A backbone by name, offline: the embedded EfficientNet-Lite0, or a torchvision model.

    torchvision models get random weights unless ``weights`` is a ``state_dict`` file
    (read with ``weights_only=True``); its classifier size wins over ``num_classes``.
    """
    key = arch.lower().replace("_", "-")
    if key in ("efficientnet-lite0", "default"):
        from xai_bridge.models import default_model

        model = default_model()
        if weights is not None:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        if num_classes not in (None, 1000):
            raise InvalidArgumentError(
                f"num_classes: efficientnet-lite0 is the ImageNet model with 1000 classes, got {num_classes}"
            )
        return model.eval()
    import torchvision

    name = arch.lower().replace("-", "_")
    known = set(torchvision.models.list_models(module=torchvision.models))
    if name not in known or not name.startswith(("resnet", "resnext", "wide_resnet", "convnext")):
        choices = sorted(k for k in known if k.startswith(("resnet", "convnext", "resnext", "wide_resnet")))
        raise InvalidArgumentError(
            f"arch: {arch!r} is not supported; expected efficientnet-lite0 or one of {', '.join(choices)}"
        )
    state = None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise InvalidArgumentError(f"backbone weights: no file at {str(path)!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise InvalidArgumentError(f"backbone weights: {str(path)!r} does not hold a state_dict")
        head = state.get("fc.weight", state.get("classifier.2.weight"))
        if head is not None:
            num_classes = int(head.shape[0])
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes or 1000)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidArgumentError(
                f"backbone weights: {weights} do not fit {name}: {str(exc).splitlines()[0]}"
            ) from exc
    return model.eval()


def _loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int, device: torch.device
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


@torch.no_grad()
def evaluate(
    model: CAModel,
    data: Any,
    *,
    batch_size: int = 256,
    device: Any = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy (%) of the CA model and of the GAP model on ``data``, from one pass per batch.

    >>> import torchvision
    >>> ca = CAModel(torchvision.models.resnet18(num_classes=2).eval(), init="gap").eval()
    >>> acc = evaluate(ca, (torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])))
    >>> acc["ca_accuracy"] == acc["gap_accuracy"]
    True
    """
    from tqdm.auto import tqdm

    dataset = as_dataset(data)
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.to(device).eval()
    correct_ca = correct_gap = total = 0
    try:
        for images, labels in tqdm(
            _loader(dataset, batch_size, shuffle=False, seed=0, num_workers=num_workers, device=device),
            desc="evaluate",
            leave=False,
            disable=not progress,
        ):
            images, labels = images.to(device), labels.to(device)
            out = model.run(images, with_gap=True)
            correct_ca += int((out.logits.argmax(-1) == labels).sum())
            correct_gap += int((out.gap_logits.argmax(-1) == labels).sum())
            total += labels.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise InvalidArgumentError("data: is empty")
    return {"ca_accuracy": 100.0 * correct_ca / total, "gap_accuracy": 100.0 * correct_gap / total}


def train_stream(
    model: Any,
    data: Any,
    *,
    epochs: int = 90,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    step_size: int = 30,
    gamma: float = 0.1,
    batch_size: int = 256,
    val_data: Any = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: Any = None,
    seed: int = 0,
    num_workers: int = 0,
    image_size: int = 224,
    progress: bool = True,
    **model_options: Any,
) -> TrainResult:
    """Train the stream of a CA model with cross-entropy; backbone and classifier frozen.

    Args:
        model: a :class:`CAModel`, a GAP backbone to wrap (``model_options`` go to
            :class:`CAModel`), or an architecture name (see :func:`build_model`).
        data: training data: a Dataset of ``(image, label)``, an ``(images, labels)`` pair,
            or an ImageFolder path (resized to ``image_size``).
        epochs: total epochs (a resumed run continues up to this number).
        lr, momentum, weight_decay: SGD, on the stream's parameters only.
        step_size, gamma: ``StepLR``: lr × ``gamma`` every ``step_size`` epochs.
        val_data: optional held-out data; GAP and CA accuracy on it after each epoch.
        checkpoint_dir: folder for ``last.pt`` (after every epoch) and ``stream.pt`` (at the end).
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        seed: data order of epoch ``e`` is drawn from ``seed + e``.
        progress: tqdm bars (epochs, batches).

    Returns:
        A :class:`TrainResult`; ``history`` rows hold the per-epoch GAP vs CA accuracies.
    """
    from tqdm.auto import tqdm

    if not isinstance(epochs, int) or epochs < 0:
        raise InvalidArgumentError(f"epochs: expected a non-negative int, got {epochs!r}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size: expected ≥ 1, got {batch_size}")
    if lr <= 0 or step_size < 1 or not 0 < gamma <= 1 or momentum < 0 or weight_decay < 0:
        raise InvalidArgumentError(
            f"recipe: expected lr > 0, momentum ≥ 0, weight_decay ≥ 0, step_size ≥ 1, 0 < gamma ≤ 1; got lr={lr}, "
            f"momentum={momentum}, weight_decay={weight_decay}, step_size={step_size}, gamma={gamma}"
        )
    ca = build_model(model, **model_options)
    dataset = as_dataset(data, size=image_size)
    val = as_dataset(val_data, size=image_size, name="val_data") if val_data is not None else None
    device = torch.device(device) if device is not None else model_device(ca)
    ca.to(device)

    params = ca.stream_parameters()
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    recipe = {
        "lr": float(lr),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "step_size": int(step_size),
        "gamma": float(gamma),
        "batch_size": int(batch_size),
        "seed": int(seed),
    }

    history: list[dict[str, float]] = []
    start = 0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last_path = folder / "last.pt" if folder is not None else None
    if last_path is not None and resume and last_path.exists():
        state = read_checkpoint(last_path, map_location=device)
        check_resume(
            last_path,
            what="stream",
            config_diff=castream_config_matches(ca, state["config"]),
            saved_recipe=state["recipe"],
            recipe=recipe,
            recipe_keys=RECIPE_KEYS,
        )
        ca.stream.load_state_dict(state["stream"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [dict(h) for h in state["history"]]
        start = int(state["epoch"])
    resumed_from = start

    epoch_bar = tqdm(
        range(start, epochs), desc="CA-Stream epochs", unit="epoch", disable=not progress, initial=start, total=epochs
    )
    with frozen(ca.backbone):
        for epoch in epoch_bar:
            t0 = time.perf_counter()
            ca.train()
            loss_sum = correct_ca = correct_gap = total = 0
            loader = _loader(
                dataset, batch_size, shuffle=True, seed=seed + epoch, num_workers=num_workers, device=device
            )
            batch_bar = tqdm(
                loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=not progress
            )
            for images, labels in batch_bar:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                out = ca.run(images, query_class=labels if ca.class_specific else None, with_gap=True)
                loss = nn.functional.cross_entropy(out.logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = labels.numel()
                loss_sum += float(loss.detach()) * n
                correct_ca += int((out.logits.detach().argmax(-1) == labels).sum())
                correct_gap += int((out.gap_logits.argmax(-1) == labels).sum())
                total += n
                batch_bar.set_postfix(
                    loss=f"{loss_sum / total:.3f}",
                    ca=f"{100 * correct_ca / total:.1f}",
                    gap=f"{100 * correct_gap / total:.1f}",
                )
            if total == 0:
                raise InvalidArgumentError("data: is empty")
            row = {
                "epoch": epoch + 1,
                "loss": loss_sum / total,
                "lr": float(optimizer.param_groups[0]["lr"]),
                "ca_accuracy": 100.0 * correct_ca / total,
                "gap_accuracy": 100.0 * correct_gap / total,
            }
            scheduler.step()
            if val is not None:
                acc = evaluate(ca, val, batch_size=batch_size, device=device, num_workers=num_workers)
                row.update(val_ca_accuracy=acc["ca_accuracy"], val_gap_accuracy=acc["gap_accuracy"])
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            shown = {k: f"{v:.1f}" for k, v in row.items() if k.endswith("accuracy")}
            epoch_bar.set_postfix(loss=f"{row['loss']:.3f}", **shown)
            if last_path is not None:
                atomic_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "config": ca.config,
                        "recipe": recipe,
                        "epoch": epoch + 1,
                        "stream": {k: v.detach().cpu() for k, v in ca.stream.state_dict().items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "history": history,
                    },
                    last_path,
                )
    ca.eval()
    final = save_stream(ca, folder / "stream.pt", history) if folder is not None else None
    return TrainResult(model=ca, history=history, resumed_from=resumed_from, checkpoint=final)
