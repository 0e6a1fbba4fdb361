"""Training a DP-Net on cached frozen-backbone features (Sicre et al., ICIP 2023, DP-Net).

Loss (each λ an option; 0 disables its term)::

    CE(V b + bias, y) + λ⊥ L⊥(U) + λA LA(S) + λCS LCS(V)        (defaults λ⊥ = 1, λA = 0.1, λCS = 100)

``LCS`` is the share of a class's ``|V_c|`` off its own parts (in ``[0, 1]``), so λCS = 100 makes
one point of that share cost one nat; the default was chosen by the sweep in
``benchmarks/dpnet.py``, the smallest λCS of the sweep whose classes put most of their weight on
their own parts with no loss of accuracy (docs/dpnet.md has the table).

plus the cross-entropy of the global baseline head, trained alongside on the same features
(its parameters are disjoint from the parts', and Adam is per parameter, so the global head
trains exactly as it would alone). Adam, lr 1e-3, constant (the paper gives no optimiser or
schedule; these are our defaults).

* The backbone runs once per image: features are extracted and cached on disk
  (:mod:`~xai_bridge_builtins.dpnet.features`); epochs read them, with no backbone pass.
* Parts start from k-means: class ``i``'s ``q`` parts are the centroids of ``q``-means on the
  L2-normalised region vectors of class ``i``'s training images (at most ``kmeans_regions``
  regions per class, drawn with the seed), normalised; ``init="random"`` draws N(0, 1) rows.
  The linear heads start from PyTorch's default initialisation, seeded.
* Deterministic with a seed: the initialisation and the order of epoch ``e``'s batches depend
  only on ``seed`` (and ``e``).
* Resumable: each completed epoch writes ``<checkpoint_dir>/last.pt`` atomically (heads,
  optimizer, history); calling again with the same arguments continues after the last
  completed epoch and ends with the weights an uninterrupted run would have.
* Validation accuracy of the parts head and of the global head after every epoch.

Example::

    >>> import torch, torchvision
    >>> from xai_bridge_builtins.dpnet.training import train
    >>> g = torch.Generator().manual_seed(0)
    >>> data = (torch.rand(12, 3, 64, 64, generator=g), torch.arange(12) % 3)
    >>> result = train(torchvision.models.resnet18().eval(), data, parts_per_class=2, epochs=2,
    ...                val_fraction=0.25, progress=False)
    >>> [sorted(k for k in row if "accuracy" in k) for row in result.history][0]
    ['global_accuracy', 'parts_accuracy', 'val_global_accuracy', 'val_parts_accuracy']
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xai_bridge.checkpoints import atomic_save, check_resume
from xai_bridge.errors import InvalidArgumentError, InvalidTypeError

from .data import DIGITS, load_dataset
from .features import FeatureSet, extract_features
from .model import (
    CHECKPOINT_FORMAT,
    DPNet,
    assignment_loss,
    backbone_from_name,
    class_specific_loss,
    head_state,
    near_chance,
    orthogonality_loss,
    own_part_share,
    positive_int,
    read_checkpoint,
    save_dpnet,
)

#: Part initialisations.
INITS = ("kmeans", "random")
#: What must match for a run to resume from ``last.pt`` (``epochs`` may grow).
RECIPE_KEYS = (
    "lr",
    "weight_decay",
    "batch_size",
    "lambda_orth",
    "lambda_assign",
    "lambda_cs",
    "init",
    "kmeans_regions",
    "seed",
    "features",
    "validation",
)
#: What of the model's config must match for a run to resume.
CONFIG_KEYS = ("backbone", "layer", "parts", "parts_per_class", "num_classes", "feature_dim", "normalize")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained :class:`DPNet`, in eval mode.
        history: one dict per completed epoch: ``epoch`` (1-based), ``loss`` (total), ``ce``,
            ``orth``, ``assign``, ``cs`` (unweighted loss terms, mean over batches), ``global_ce``,
            ``parts_accuracy`` / ``global_accuracy`` (training, %), ``val_parts_accuracy`` /
            ``val_global_accuracy`` (when there is validation data), ``own_share`` (the mean over
            classes of the share of ``|V_c|`` on the class's own parts at the end of the epoch, %;
            chance is ``100/C``), ``seconds``.
        resumed_from: epochs found in the checkpoint (0 for a fresh run).
        checkpoint: ``dpnet.pt`` (the final model) when a checkpoint folder was given.
        train_features, val_features: the feature sets trained and validated on.
    """

    model: DPNet
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    checkpoint: Path | None = None
    train_features: FeatureSet | None = None
    val_features: FeatureSet | None = None


def _nonnegative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name}: expected a number ≥ 0 (0 disables the term), got {value!r}")
    return float(value)


def build_model(
    model: Any,
    *,
    num_classes: int,
    class_names: Sequence[str] | None,
    layer: Any = None,
    parts_per_class: int = 10,
    backbone_weights: str | os.PathLike[str] | None = None,
) -> DPNet:
    """A :class:`DPNet` from a DPNet (checked against the data), a backbone module or a backbone name."""
    if isinstance(model, DPNet):
        if model.num_classes != num_classes:
            raise InvalidArgumentError(
                f"model: the DP-Net has C={model.num_classes} classes but the data has {num_classes}"
            )
        if model.class_names is None and class_names is not None:
            model.class_names = list(class_names)
        return model
    if isinstance(model, str):
        backbone = backbone_from_name(model, weights=backbone_weights)
        return DPNet(
            backbone,
            layer=layer,
            parts_per_class=parts_per_class,
            num_classes=num_classes,
            class_names=class_names,
            backbone_name=model,
        )
    if isinstance(model, nn.Module):
        return DPNet(
            model, layer=layer, parts_per_class=parts_per_class, num_classes=num_classes, class_names=class_names
        )
    raise InvalidTypeError(
        "model: expected a DPNet, a backbone nn.Module or a backbone name such as 'efficientnet-lite0', "
        f"got {type(model).__name__}"
    )


def kmeans_parts(
    features: FeatureSet, parts_per_class: int, num_classes: int, *, seed: int = 0, max_regions: int = 4096
) -> torch.Tensor:
    """``P×D`` unit rows: class ``i``'s block holds the ``q``-means centroids of its images' normalised regions.

    A class with fewer regions than ``q`` (or none) fills the rest with N(0, 1) rows.
    """
    from sklearn.cluster import KMeans

    generator = torch.Generator().manual_seed(seed)
    d = int(features.features.shape[1])
    blocks = []
    for c in range(num_classes):
        rows = torch.nonzero(features.labels == c)[:, 0]
        regions = features.features[rows].float().flatten(2).transpose(1, 2).reshape(-1, d)
        regions = F.normalize(regions, dim=1)
        if regions.shape[0] > max_regions:
            regions = regions[torch.randperm(regions.shape[0], generator=generator)[:max_regions]]
        n_distinct = int(torch.unique(regions, dim=0).shape[0]) if regions.shape[0] else 0
        if n_distinct >= parts_per_class:
            km = KMeans(n_clusters=parts_per_class, n_init=3, random_state=seed).fit(regions.numpy())
            centers = torch.from_numpy(km.cluster_centers_).float()
        else:
            centers = torch.cat(
                [regions[:n_distinct], torch.randn(parts_per_class - n_distinct, d, generator=generator)]
            )
        weak = centers.norm(dim=1) < 1e-6  # an all-zero centroid would have no direction
        centers[weak] = torch.randn(int(weak.sum()), d, generator=generator)
        blocks.append(F.normalize(centers, dim=1))
    return torch.cat(blocks)


@torch.no_grad()
def evaluate(
    model: DPNet, data: Any, *, batch_size: int = 256, device: Any = None, cache_dir: Any = None, progress: bool = False
) -> dict[str, float]:
    """Top-1 accuracy (%) of the parts head and of the global head on ``data`` (a :class:`FeatureSet` or any data)."""
    features = (
        data
        if isinstance(data, FeatureSet)
        else extract_features(model, data, cache_dir=cache_dir, device=device, progress=progress)
    )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct_parts = correct_global = 0
    try:
        for i in range(0, len(features), batch_size):
            x = features.features[i : i + batch_size].to(device, torch.float32)
            y = features.labels[i : i + batch_size].to(device)
            out = model.head(x, with_global=True)
            correct_parts += int((out.logits.argmax(-1) == y).sum())
            correct_global += int((out.global_logits.argmax(-1) == y).sum())  # type: ignore[union-attr]
    finally:
        model.train(was_training)
    n = max(1, len(features))
    return {"parts_accuracy": 100.0 * correct_parts / n, "global_accuracy": 100.0 * correct_global / n}


def loss_terms(model: DPNet, x: torch.Tensor, y: torch.Tensor, lambdas: dict[str, float]) -> dict[str, torch.Tensor]:
    """The loss and its terms on features ``x`` (``B×D×h×w``) with labels ``y``; a term whose λ is 0 is skipped."""
    out = model.head(x, with_global=True)
    zero = x.new_zeros(())
    terms = {
        "ce": F.cross_entropy(out.logits, y),
        "orth": orthogonality_loss(model.parts) if lambdas["lambda_orth"] else zero,
        "assign": assignment_loss(out.scores) if lambdas["lambda_assign"] else zero,
        "cs": class_specific_loss(model.classifier.weight, model.parts_per_class) if lambdas["lambda_cs"] else zero,
        "global_ce": F.cross_entropy(out.global_logits, y),  # type: ignore[arg-type]
    }
    terms["parts_loss"] = (
        terms["ce"]
        + lambdas["lambda_orth"] * terms["orth"]
        + lambdas["lambda_assign"] * terms["assign"]
        + lambdas["lambda_cs"] * terms["cs"]
    )
    terms["correct_parts"] = (out.logits.detach().argmax(-1) == y).sum()
    terms["correct_global"] = (out.global_logits.detach().argmax(-1) == y).sum()  # type: ignore[union-attr]
    return terms


def _step(
    model: DPNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lambdas: dict[str, float]
) -> dict[str, float]:
    """One optimiser step on one batch; the numbers of the batch."""
    terms = loss_terms(model, x, y, lambdas)
    optimizer.zero_grad(set_to_none=True)
    (terms["parts_loss"] + terms["global_ce"]).backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def _features_for(
    model: DPNet,
    data: Any,
    *,
    cache_dir: Any,
    batch_size: int,
    device: torch.device,
    num_workers: int,
    progress: bool,
    dtype: str,
) -> FeatureSet:
    return extract_features(
        model,
        data,
        cache_dir=cache_dir,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        dtype=dtype,
    )


def _check_classes(features: FeatureSet, num_classes: int, name: str) -> None:
    if len(features) == 0:
        raise InvalidArgumentError(f"{name}: has no images; expected images of at least 2 classes")
    lo, hi = int(features.labels.min()), int(features.labels.max())
    if lo < 0 or hi >= num_classes:
        raise InvalidArgumentError(
            f"{name}: has label {hi if hi >= num_classes else lo}, "
            f"outside the {num_classes} classes (0..{num_classes - 1})"
        )


def train(
    model: Any = "efficientnet-lite0",
    data: Any = DIGITS,
    *,
    val_data: Any = None,
    val_fraction: float = 0.2,
    layer: Any = None,
    parts_per_class: int = 10,
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    lambda_orth: float = 1.0,
    lambda_assign: float = 0.1,
    lambda_cs: float = 100.0,
    init: str = "kmeans",
    kmeans_regions: int = 4096,
    seed: int = 0,
    image_size: int | None = None,
    backbone_weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_dtype: str = "float32",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: Any = None,
    feature_batch_size: int = 64,
    num_workers: int = 0,
    progress: bool | None = None,
) -> TrainResult:
    """Train a DP-Net's parts, classifier and global baseline head on a frozen backbone.

    Args:
        model: a :class:`DPNet` (then ``layer``, ``parts_per_class`` and ``backbone_weights`` are
            not used), a pretrained backbone module in eval mode (wrapped with ``layer`` and
            ``parts_per_class``), or a backbone name (``"efficientnet-lite0"``, the embedded
            ImageNet model, or a torchvision name with ``backbone_weights``).
        data: ``"digits"``, an ImageFolder root, a list file of ``PATH LABEL`` lines, a Dataset of
            ``(image in [0,1], label)`` or an ``(images, labels)`` pair.
        val_data: validation data of the same classes; default: the source's test split (digits)
            or a stratified ``val_fraction`` of ``data`` (seed 0, the same for every training seed;
            ``val_fraction=0`` for none).
        parts_per_class: ``q``.
        epochs: total epochs (a resumed run continues up to this number).
        lr, weight_decay: Adam on ``U``, ``V``, the bias and the global head.
        lambda_orth, lambda_assign, lambda_cs: λ⊥, λA, λCS (0 disables a term).
        init: ``"kmeans"`` (per class, on training regions) or ``"random"``.
        seed: initialisation and batch order.
        image_size: side of the images fed to the backbone; default 128 for digits, 224 otherwise.
        cache_dir: where features are cached (``None``: in memory only, recomputed next time).
        cache_dtype: storage dtype of cached features (``"float32"``, ``"float16"``, ``"bfloat16"``).
        checkpoint_dir: folder for ``last.pt`` (every epoch) and ``dpnet.pt`` (at the end).
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        device: where the backbone and heads run (default: the model's device).
        progress: one tqdm bar per stage (feature extraction, then epochs, with the loss, the
            accuracies and the own-part share of the last epoch); ``None`` (default) shows them
            only when stderr is a terminal, so logs and pipes stay clean.

    A warning says so when the trained classifier's own-part share is near chance (less than a
    quarter of the way from ``1/C`` to 1, :func:`~xai_bridge_builtins.dpnet.model.near_chance`):
    then its parts are not specific to their classes, and ``lambda_cs`` is too weak for this data.
    """
    from tqdm.auto import tqdm

    progress = sys.stderr.isatty() if progress is None else bool(progress)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise InvalidArgumentError(f"epochs: expected a non-negative integer, got {epochs!r}")
    positive_int(batch_size, "batch_size", "training samples per batch")
    positive_int(parts_per_class, "parts_per_class", "parts per class")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise InvalidArgumentError(f"lr: expected a positive learning rate, got {lr!r}")
    lambdas = {
        name: _nonnegative(value, name)
        for name, value in (("lambda_orth", lambda_orth), ("lambda_assign", lambda_assign), ("lambda_cs", lambda_cs))
    }
    weight_decay = _nonnegative(weight_decay, "weight_decay")
    if init not in INITS:
        raise InvalidArgumentError(f"init: expected one of {INITS}, got {init!r}")
    positive_int(kmeans_regions, "kmeans_regions", "regions sampled per class for k-means")

    source = data.lower() if isinstance(data, str) and data.lower() == DIGITS else data
    size = image_size if image_size is not None else (128 if source == DIGITS else 224)
    loaded = load_dataset(data, size=size)
    classes = loaded.classes
    if classes is None:
        labels = _labels_of(loaded.dataset)
        classes = [str(i) for i in range(int(labels.max()) + 1)] if labels.numel() else []
    if len(loaded.dataset) == 0:  # type: ignore[arg-type]
        raise InvalidArgumentError("data: is empty; expected images of at least 2 classes")
    if len(classes) < 2:
        raise InvalidArgumentError(
            f"data: has {len(classes)} class ({', '.join(classes) or 'none'}); "
            "DP-Net learns parts that tell classes apart, so it needs at least 2"
        )
    net = build_model(
        model,
        num_classes=len(classes),
        class_names=classes,
        layer=layer,
        parts_per_class=parts_per_class,
        backbone_weights=backbone_weights,
    )
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device)
    if net.backbone.training:
        raise InvalidArgumentError(
            "model: its backbone is in training mode; DP-Net trains only on a frozen backbone in eval mode "
            "(call .eval())"
        )

    extract = dict(
        cache_dir=cache_dir,
        batch_size=feature_batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        dtype=cache_dtype,
    )
    train_fs = _features_for(net, loaded.dataset, **extract)
    val_fs: FeatureSet | None = None
    if val_data is not None:
        val_loaded = load_dataset(val_data, size=size, name="val_data")
        if val_loaded.classes is not None and list(val_loaded.classes) != list(classes):
            raise InvalidArgumentError(
                "val_data: its classes differ from data's; both need the same classes in the same order"
            )
        val_fs = _features_for(net, val_loaded.dataset, **extract)
    elif loaded.held_out is not None:
        val_fs = _features_for(net, loaded.held_out, **extract)
    elif val_fraction:
        train_fs, val_fs = train_fs.split(val_fraction, seed=0)
    _check_classes(train_fs, len(classes), "data")
    present = torch.unique(train_fs.labels).numel()
    if present < 2:
        raise InvalidArgumentError(
            f"data: only one class has readable images ({classes[int(train_fs.labels[0])]}); DP-Net needs at least 2"
        )
    if val_fs is not None:
        _check_classes(val_fs, len(classes), "val_data")

    net.meta = {"image_size": int(size), "data": loaded.source}
    recipe = {
        "lr": float(lr),
        "weight_decay": weight_decay,
        "batch_size": int(batch_size),
        **lambdas,
        "init": init,
        "kmeans_regions": int(kmeans_regions),
        "seed": int(seed),
        "features": train_fs.key or "",
        "validation": "val_data"
        if val_data is not None
        else ("held_out" if loaded.held_out is not None else f"split:{float(val_fraction)}"),
    }
    params = [net.parts, *net.classifier.parameters(), *net.global_head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    history: list[dict[str, float]] = []
    start = 0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last_path = folder / "last.pt" if folder is not None else None
    if last_path is not None and resume and last_path.exists():
        state = read_checkpoint(last_path, map_location=device)
        check_resume(
            last_path,
            what="DP-Net",
            config_diff=[k for k in CONFIG_KEYS if state["config"].get(k) != net.config.get(k)],
            saved_recipe=state["recipe"],
            recipe=recipe,
            recipe_keys=RECIPE_KEYS,
        )
        net.load_state_dict({**net.state_dict(), **state["state"]})
        optimizer.load_state_dict(state["optimizer"])
        history = [dict(h) for h in state["history"]]
        start = int(state["epoch"])
    else:
        net.reset_heads(seed)
        if init == "kmeans":
            with torch.no_grad():
                net.parts.copy_(
                    kmeans_parts(
                        train_fs, net.parts_per_class, net.num_classes, seed=seed, max_regions=kmeans_regions
                    ).to(device)
                )
    resumed_from = start

    n = len(train_fs)
    epoch_bar = tqdm(
        range(start, epochs), desc="DP-Net epochs", unit="epoch", disable=not progress, initial=start, total=epochs
    )
    for epoch in epoch_bar:
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        sums: dict[str, float] = {}
        batches = 0
        for i in range(0, n, batch_size):
            rows = order[i : i + batch_size]
            x = train_fs.features[rows].to(device, torch.float32)
            y = train_fs.labels[rows].to(device)
            numbers = _step(net, optimizer, x, y, lambdas)
            batches += 1
            for k, v in numbers.items():
                sums[k] = sums.get(k, 0.0) + v
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "loss": sums["parts_loss"] / batches,
            **{k: sums[k] / batches for k in ("ce", "orth", "assign", "cs", "global_ce")},
            "parts_accuracy": 100.0 * sums["correct_parts"] / n,
            "global_accuracy": 100.0 * sums["correct_global"] / n,
            "own_share": _own_share(net),
        }
        if val_fs is not None:
            acc = evaluate(net, val_fs, device=device)
            row.update(val_parts_accuracy=acc["parts_accuracy"], val_global_accuracy=acc["global_accuracy"])
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        epoch_bar.set_postfix(
            {
                "loss": f"{row['loss']:.3f}",
                **{k: f"{v:.1f}" for k, v in row.items() if k.endswith(("accuracy", "share"))},
            }
        )
        if last_path is not None:
            atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": net.config,
                    "recipe": recipe,
                    "epoch": epoch + 1,
                    "state": head_state(net),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                },
                last_path,
            )
    net.eval()
    share = _own_share(net)
    if epochs > 0 and near_chance(share / 100.0, net.num_classes):
        warnings.warn(
            f"DP-Net: {share:.1f} % of each class's |V_c| is on its own parts, near chance "
            f"({100.0 / net.num_classes:.1f} %): the parts are not specific to their classes. "
            f"Raise lambda_cs (now {lambdas['lambda_cs']:g}) or train longer.",
            stacklevel=2,
        )
    final = save_dpnet(net, folder / "dpnet.pt", history) if folder is not None else None
    return TrainResult(net, history, resumed_from, final, train_fs, val_fs)


def _own_share(model: DPNet) -> float:
    """The mean over classes of the share of ``|V_c|`` on class ``c``'s own parts, in %."""
    with torch.no_grad():
        return 100.0 * float(own_part_share(model.classifier.weight, model.parts_per_class).mean())


def _labels_of(dataset: Any) -> torch.Tensor:
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        return tensors[1].long()
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)
