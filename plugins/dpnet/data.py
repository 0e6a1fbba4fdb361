"""The datasets DP-Net trains and explains on: scikit-learn's digits, an ImageFolder, a list file.

Every source gives ``(image, label)`` pairs, images ``3×size×size`` in ``[0, 1]`` (a DP-Net
folds its backbone's input normalisation in itself):

* ``"digits"``: scikit-learn's 1,797 handwritten digits (8×8, shipped inside scikit-learn),
  upscaled bilinearly to ``size×size`` and repeated to 3 channels; a stratified, seeded
  80/20 train/test split (1,437 / 360 images). Not the paper's data: a small real set
  that needs no download.
* a folder: an ImageFolder root, one sub-folder per class; resize (short side) and centre crop.
* a file: a list file, one ``PATH LABEL`` line per image (``#`` comments and blank lines
  skipped; relative paths are relative to the list file; ``LABEL`` a class index ≥ 0 or a
  class name, the same kind on every line).
* a ``torch.utils.data.Dataset`` of ``(image, label)`` or an ``(images, labels)`` pair of tensors.

Image files are read when used; one that cannot be read raises
:class:`xai_bridge.errors.ImageLoadError` naming it, which feature extraction catches,
counts and skips. Every use of the project's shared loaders (digits, ImageFolder) is in
this module.

Example::

    >>> from xai_bridge_builtins.dpnet.data import load_dataset
    >>> data = load_dataset("digits", size=16)
    >>> len(data.dataset), len(data.held_out), data.classes[:3], tuple(data.dataset[0][0].shape)
    (1437, 360, ['0', '1', '2'], (3, 16, 16))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from xai_bridge.errors import ImageLoadError, InvalidArgumentError, InvalidTypeError

#: The name of the built-in digits set.
DIGITS = "digits"


@dataclass
class LoadedData:
    """What :func:`load_dataset` returns.

    Attributes:
        dataset: the ``(image, label)`` dataset (for digits: the training split).
        classes: class names, index = label; ``None`` when the source does not name them.
        source: a description recorded with a trained model (``"digits"``, ``"imagefolder:/abs/root"``,
            ``"list:/abs/file"``, ``"dataset"``).
        held_out: the source's own test split (digits), else ``None``.
    """

    dataset: Dataset
    classes: list[str] | None
    source: str
    held_out: Dataset | None = None


class ImageSamples(Dataset):
    """Image files with labels, read on use: ``(3×size×size in [0, 1], label)``.

    Args:
        samples: ``(path, label)`` pairs.
        classes: class names, index = label.
        transform: a PIL image → tensor transform (resize, centre crop, ``ToTensor``).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], transform: Any) -> None:
        self.samples = [(str(p), int(label)) for p, label in samples]
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
        return self.transform(image), label

    def describe(self, index: int) -> str:
        """The file behind item ``index`` (for reports of skipped images)."""
        return self.samples[index][0]

    def fingerprint(self) -> str:
        """A hash of the preprocessing and of every (path, label, size, modification time)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr(self.transform).encode())
        for path, label in self.samples:
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{path}\0{label}\0{stamp}\n".encode())
        return digest.hexdigest()


class KnownDataset(Dataset):
    """A dataset whose identity is known without hashing its pixels (the digits splits)."""

    def __init__(self, dataset: Dataset, identity: str) -> None:
        self.dataset = dataset
        self.identity = identity

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def fingerprint(self) -> str:
        return self.identity


def preprocessing(size: int) -> Any:
    """Resize (short side) to ``size``, centre crop ``size×size``, ``ToTensor`` (pixels in [0, 1])."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])


def _digits(size: int) -> tuple[Dataset, Dataset]:
    from xai_bridge.data import digits_split

    train, test = digits_split(size=size, test_fraction=0.2, seed=0)
    return (
        KnownDataset(train, f"sklearn-digits:bilinear-{size}:stratified-0.2-seed0:train"),
        KnownDataset(test, f"sklearn-digits:bilinear-{size}:stratified-0.2-seed0:test"),
    )


def _image_folder(root: Path, size: int) -> tuple[list[tuple[str, int]], list[str], Any]:
    """``(samples, classes, transform)`` of an ImageFolder root (the shared loader scans it)."""
    from xai_bridge.data import image_folder

    folder = image_folder(root, size=size, normalize="none")
    return list(folder.samples), list(folder.classes), folder.transform


def read_list_file(path: str | os.PathLike[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """``(samples, classes)`` of a list file of ``PATH LABEL`` lines.

    Integer labels keep their value (classes ``"0"…"max"``); names are sorted to give indices.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "list.txt"
    >>> _ = f.write_text("# image label\\na.png cat\\nsub dir/b.png dog\\n")
    >>> samples, classes = read_list_file(f)
    >>> [(pathlib.Path(p).name, label) for p, label in samples], classes
    ([('a.png', 0), ('b.png', 1)], ['cat', 'dog'])
    """
    path = Path(path)
    rows: list[tuple[str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise InvalidArgumentError(f"data: {path}:{number}: expected 'PATH LABEL', got {line!r}")
        file, label = fields
        file_path = Path(file)
        rows.append((str(file_path if file_path.is_absolute() else path.parent / file_path), label))
    if not rows:
        raise InvalidArgumentError(f"data: the list file {str(path)!r} has no 'PATH LABEL' lines")
    numeric = [label.isdigit() for _, label in rows]
    if all(numeric):
        labels = [int(label) for _, label in rows]
        classes = [str(i) for i in range(max(labels) + 1)]
    elif not any(numeric):
        classes = sorted({label for _, label in rows})
        labels = [classes.index(label) for _, label in rows]
    else:
        raise InvalidArgumentError(
            f"data: the list file {str(path)!r} mixes class indices and class names; use one kind of LABEL"
        )
    return [(file, label) for (file, _), label in zip(rows, labels, strict=True)], classes


def load_dataset(data: Any, *, size: int = 224, name: str = "data") -> LoadedData:
    """The ``(image, label)`` dataset ``data`` names (see the module doc for the accepted forms)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InvalidArgumentError(f"size: expected an image side ≥ 8 pixels, got {size!r}")
    if isinstance(data, str) and data.lower() == DIGITS:
        train, test = _digits(size)
        return LoadedData(train, [str(i) for i in range(10)], DIGITS, test)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            samples, classes, transform = _image_folder(path, size)
            return LoadedData(ImageSamples(samples, classes, transform), classes, f"imagefolder:{path.resolve()}")
        if path.is_file():
            samples, classes = read_list_file(path)
            return LoadedData(ImageSamples(samples, classes, preprocessing(size)), classes, f"list:{path.resolve()}")
        raise InvalidArgumentError(
            f"{name}: {str(data)!r} is neither 'digits', an ImageFolder root nor a list file (no such file or folder)"
        )
    if isinstance(data, Dataset):
        classes = getattr(data, "classes", None)
        return LoadedData(data, list(classes) if classes is not None else None, "dataset")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
        if images.ndim != 4 or not images.is_floating_point():
            raise InvalidArgumentError(
                f"{name}: images must be a float tensor B×C×H×W in [0, 1], got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise InvalidArgumentError(
                f"{name}: labels must be one integer class per image ({images.shape[0]}), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        return LoadedData(TensorDataset(images, labels.long()), None, "tensors")
    raise InvalidTypeError(
        f"{name}: expected 'digits', an ImageFolder root, a list file, a torch Dataset or an (images, labels) pair; "
        f"got {type(data).__name__}"
    )


def describe(dataset: Dataset, index: int) -> str:
    """A readable name for item ``index`` (its file when there is one)."""
    if isinstance(dataset, Subset):
        return describe(dataset.dataset, int(dataset.indices[index]))
    if hasattr(dataset, "describe"):
        return str(dataset.describe(index))
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and index < len(samples):
        return str(samples[index][0])
    return f"item {index}"


def fingerprint(dataset: Dataset) -> str | None:
    """A hash identifying the images and preprocessing of ``dataset``; ``None`` when it cannot be known.

    Known: :class:`ImageSamples` (files, sizes, times, transform), ``TensorDataset`` (the bytes),
    a ``Subset`` of a known dataset, and any dataset with a ``fingerprint()`` method.
    """
    if hasattr(dataset, "fingerprint"):
        return str(dataset.fingerprint())
    if isinstance(dataset, Subset):
        parent = fingerprint(dataset.dataset)
        if parent is None:
            return None
        digest = hashlib.blake2b(parent.encode(), digest_size=16)
        digest.update(torch.as_tensor(list(dataset.indices), dtype=torch.long).numpy().tobytes())
        return digest.hexdigest()
    if isinstance(dataset, TensorDataset):
        digest = hashlib.blake2b(digest_size=16)
        for tensor in dataset.tensors:
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()
    return None
