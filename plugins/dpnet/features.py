"""Frozen-backbone features for DP-Net, computed once and cached on disk.

The backbone of a DP-Net is frozen, so its features of a training image never change:
they are computed once (one backbone pass per image, under ``torch.no_grad``) and every
epoch trains the part layer and the classifiers on them, with no backbone pass at all.

The cache file is named by a hash of everything the features depend on: the backbone's
architecture and weights (:func:`~xai_bridge_builtins.dpnet.model.backbone_fingerprint`),
the layer, the input normalisation, the image list and preprocessing
(:func:`~xai_bridge_builtins.dpnet.data.fingerprint`: files with their size and modification
time, or the pixels of a tensor dataset) and the storage dtype. A second run with the same
inputs reads the file (memory-mapped, ``weights_only=True``) instead of running the backbone;
a changed file, weight or option gives another key. Files are written atomically.

Images that cannot be read are skipped, counted and named (``FeatureSet.skipped``), with a
warning; a dataset where nothing can be read is an error.

Example::

    >>> import tempfile, torch, torchvision
    >>> from xai_bridge_builtins.dpnet.model import DPNet
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=1, num_classes=2)
    >>> data = (torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]))
    >>> folder = tempfile.mkdtemp()
    >>> first = extract_features(net, data, cache_dir=folder, progress=False)
    >>> again = extract_features(net, data, cache_dir=folder, progress=False)
    >>> first.cached, again.cached, tuple(again.features.shape), torch.equal(first.features, again.features)
    (False, True, (4, 512, 2, 2), True)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from xai_bridge.checkpoints import atomic_save
from xai_bridge.errors import InvalidArgumentError

from .data import describe, fingerprint, load_dataset
from .model import DPNet, backbone_fingerprint

#: Format tag of a features cache file.
FEATURES_FORMAT = "xai-bridge-dpnet-features/1"
#: Storage dtypes a cache may use (float16 halves the disk and memory for large sets).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class FeatureSet:
    """Backbone features of a dataset's readable images.

    Attributes:
        features: ``N×D×h×w`` on the CPU (memory-mapped when read from the cache).
        labels: ``(N,)`` class indices.
        indices: ``(N,)`` the dataset item each row comes from (unreadable items are absent).
        skipped: ``"file: reason"`` for every item that could not be read.
        key: the cache key, also recorded by training to refuse resuming on other data (``None`` when
            the dataset cannot be identified: then it is not cached).
        path: the cache file, when there is one.
        cached: ``True`` when read from the cache (no backbone pass ran).
    """

    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[str] = field(default_factory=list)
    key: str | None = None
    path: Path | None = None
    cached: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)``: the regions per image are ``h·w``."""
        return int(self.features.shape[-2]), int(self.features.shape[-1])

    def subset(self, rows: torch.Tensor, *, keep_report: bool = False) -> FeatureSet:
        """The rows ``rows`` (indices into this set) as a new set; ``keep_report`` keeps ``skipped`` and ``key``."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        skipped, key = (list(self.skipped), self.key) if keep_report else ([], None)
        return FeatureSet(self.features[rows], self.labels[rows], self.indices[rows], skipped, key, None, self.cached)

    def split(self, fraction: float, seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
        """A stratified, seeded ``(rest, held_out)`` split with about ``fraction`` of each class held out.

        ``rest`` keeps the report of skipped images and the cache key of the whole set.

        >>> fs = FeatureSet(torch.zeros(10, 1, 1, 1), torch.tensor([0] * 5 + [1] * 5), torch.arange(10))
        >>> rest, held = fs.split(0.2)
        >>> len(rest), len(held), sorted(held.labels.tolist())
        (8, 2, [0, 1])
        """
        if not 0 < fraction < 1:
            raise InvalidArgumentError(f"val_fraction: expected a fraction in (0, 1), got {fraction!r}")
        generator = torch.Generator().manual_seed(seed)
        held: list[torch.Tensor] = []
        for c in torch.unique(self.labels):
            rows = torch.nonzero(self.labels == c)[:, 0]
            rows = rows[torch.randperm(rows.numel(), generator=generator)]
            n = int(round(fraction * rows.numel())) if rows.numel() > 1 else 0
            held.append(rows[:n])
        held_rows = torch.cat(held).sort().values
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[held_rows] = False
        return self.subset(torch.nonzero(keep)[:, 0], keep_report=True), self.subset(held_rows)


class _Tolerant(Dataset):
    """``(index, image or None, label, reason)``: an unreadable item becomes a report, not a crash."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any, int, str]:
        try:
            image, label = self.dataset[index]
        except (
            OSError,
            ValueError,
            SyntaxError,
        ) as exc:  # ImageLoadError, PIL's UnidentifiedImageError, truncated files
            return index, None, -1, f"{describe(self.dataset, index)}: {exc}"
        return index, image, int(label), ""


def _collate(items: list[tuple[int, Any, int, str]]) -> tuple[list[int], torch.Tensor | None, torch.Tensor, list[str]]:
    good = [item for item in items if item[1] is not None]
    skipped = [item[3] for item in items if item[1] is None]
    images = torch.stack([torch.as_tensor(item[1]) for item in good]) if good else None
    return [item[0] for item in good], images, torch.tensor([item[2] for item in good], dtype=torch.long), skipped


def cache_key(model: DPNet, dataset: Dataset, dtype: str = "float32") -> str | None:
    """The cache key of ``dataset``'s features on ``model``'s frozen layer (``None``: not identifiable)."""
    data = fingerprint(dataset)
    if data is None:
        return None
    facts = {
        "format": FEATURES_FORMAT,
        "backbone": backbone_fingerprint(model.backbone),
        "layer": model.layer_name,
        "normalize": model.normalize,
        "data": data,
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def extract_features(
    model: DPNet,
    data: Any,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: Any = None,
    num_workers: int = 0,
    dtype: str = "float32",
    progress: bool = True,
) -> FeatureSet:
    """The features of every readable image of ``data`` at the DP-Net's frozen layer.

    Args:
        model: the :class:`DPNet` (only its backbone, layer and input normalisation are used).
        data: a dataset or anything :func:`~xai_bridge_builtins.dpnet.data.load_dataset` accepts.
        cache_dir: folder of the on-disk cache (``None``: computed in memory, not cached).
        batch_size: images per backbone pass.
        device: where the backbone runs (default: the model's device); features are kept on the CPU.
        dtype: storage dtype, ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
        progress: a tqdm bar over the batches.
    """
    from tqdm.auto import tqdm

    if dtype not in DTYPES:
        raise InvalidArgumentError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size: expected a positive integer, got {batch_size!r}")
    dataset = data if isinstance(data, Dataset) else load_dataset(data).dataset
    key = cache_key(model, dataset, dtype)
    path = Path(cache_dir) / f"features-{key[:24]}.pt" if cache_dir is not None and key is not None else None
    if cache_dir is not None and key is None:
        warnings.warn(
            f"data: a {type(dataset).__name__} cannot be identified, so its features are not cached; "
            "use digits, an ImageFolder, "
            "a list file or tensors (or give the dataset a fingerprint() method)",
            stacklevel=2,
        )
    if path is not None and path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(stored, dict) and stored.get("format") == FEATURES_FORMAT and stored.get("key") == key:
            return FeatureSet(
                stored["features"], stored["labels"], stored["indices"], list(stored["skipped"]), key, path, True
            )

    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = DataLoader(
        _Tolerant(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate
    )
    chunks: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    indices: list[int] = []
    skipped: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx, images, y, bad in tqdm(
                loader, desc="DP-Net features (frozen backbone)", unit="batch", disable=not progress
            ):
                skipped.extend(bad)
                if images is None:
                    continue
                chunks.append(model.features(images.to(device)).to("cpu", DTYPES[dtype]))
                labels.append(y)
                indices.extend(idx)
    finally:
        model.train(was_training)
    total = len(dataset)  # type: ignore[arg-type]
    if total == 0:
        raise InvalidArgumentError("data: is empty; expected at least one image per class")
    if not chunks:
        raise InvalidArgumentError(f"data: none of the {total} images could be read (first: {skipped[0]})")
    if skipped:
        warnings.warn(
            f"data: skipped {len(skipped)} of {total} images that could not be read (first: {skipped[0]})", stacklevel=2
        )
    result = FeatureSet(
        torch.cat(chunks), torch.cat(labels), torch.tensor(indices, dtype=torch.long), skipped, key, path, False
    )
    if path is not None:
        atomic_save(
            {
                "format": FEATURES_FORMAT,
                "key": key,
                "layer": model.layer_name,
                "backbone": model.backbone_name,
                "features": result.features,
                "labels": result.labels,
                "indices": result.indices,
                "skipped": skipped,
            },
            path,
        )
    return result
