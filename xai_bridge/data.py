"""Data that ships inside installed packages, and the loaders every part of xai-bridge shares.

* the embedded photos (:func:`sample_images`, :func:`photo_boxes`, :func:`photo_labels`);
* one image file loader (:func:`load_image`);
* scikit-learn's handwritten digits (:func:`digits`, :func:`digits_split`), the small real
  data set training methods use in tests and benchmarks;
* one ``ImageFolder`` loader (:func:`image_folder`, :func:`image_folder_split`).

Nothing is downloaded: the photos come from scikit-image, scikit-learn and
matplotlib's own data folders (credits and licences in ``docs/credits.md``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .errors import ImageLoadError, InvalidArgumentError


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle(side: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return skimage.data.stereo_motorcycle()[side]

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


#: name -> loader of an H×W×3 uint8 array. Order is the order of ``sample_images()``.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle_left": _motorcycle(0),
    "motorcycle_right": _motorcycle(1),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _grace_hopper,
}


def to_tensor(rgb: np.ndarray, size: int | None = 224) -> torch.Tensor:
    """H×W×3 uint8 → 3×size×size float in [0,1]: shorter side resized to ``size``, centre crop."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    if size is not None:
        w, h = image.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().clamp_(0.0, 1.0)


def sample_images(
    names: Sequence[str] | None = None,
    size: int = 224,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """The embedded photos as a batch ``B×3×size×size`` in ``[0,1]``, with their names.

    >>> images, names = sample_images()
    >>> images.shape, names[1]
    (torch.Size([9, 3, 224, 224]), 'chelsea')
    """
    names = list(PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        from .registry import did_you_mean

        raise InvalidArgumentError(
            f"names: no embedded photo called {unknown[0]!r}.{did_you_mean(unknown[0], PHOTOS)} Available: "
            f"{', '.join(PHOTOS)}"
        )
    batch = torch.stack([to_tensor(PHOTOS[n](), size) for n in names])
    return (batch.to(device) if device is not None else batch), names


def load_image(path: str | Path, size: int | None = 224) -> torch.Tensor:
    """Read an image file as ``3×size×size`` in ``[0,1]``.

    Grayscale images are replicated to three channels and RGBA images are
    composited on black; both with a warning saying so. Anything PIL cannot read
    raises :class:`ImageLoadError` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, expected an image file")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(
            f"{path}: not a readable image ({exc}); expected a JPEG, PNG or other format PIL reads"
        ) from exc
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        warnings.warn(f"{path}: has an alpha channel ({mode}); composited on black to RGB", stacklevel=2)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode in ("L", "1", "I", "I;16", "F"):
        warnings.warn(f"{path}: is grayscale ({mode}); replicated to three channels", stacklevel=2)
        image = image.convert("L").convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    return to_tensor(np.asarray(image), size)


def _annotations() -> dict[str, list[dict[str, Any]]]:
    import json
    from importlib import resources

    text = resources.files("xai_bridge").joinpath("photo_boxes.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def photo_boxes(names: Sequence[str] | None = None) -> list[list[list[int]]]:
    """Ground-truth boxes ``[x0, y0, x1, y1]`` (224² crop, x1/y1 exclusive) of the embedded photos.

    Annotated by eye (``xai_bridge/photo_boxes.json``); for the localisation metrics.

    >>> photo_boxes(["chelsea"])
    [[[16, 0, 224, 224]]]
    """
    table = _annotations()
    names = list(PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise InvalidArgumentError(f"names: no boxes for {unknown}; annotated photos: {', '.join(table)}")
    return [[entry["box"] for entry in table[n]] for n in names]


def photo_labels(names: Sequence[str] | None = None) -> list[int]:
    """ImageNet class of each embedded photo's main object (its first box), for ``target="label"``.

    >>> photo_labels(["chelsea"])
    [281]
    """
    from .classes import class_index

    table = _annotations()
    names = list(PHOTOS) if names is None else list(names)
    return [class_index(table[n][0]["label"]) for n in names]


# -- scikit-learn's digits ----------------------------------------------------------------------
def digits(size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 handwritten digits of scikit-learn as ``N×channels×size×size`` floats in [0, 1], and their labels.

    Grey levels 0..16 are scaled to [0, 1], resized bilinearly (``align_corners=False``)
    and repeated over ``channels``.

    >>> images, labels = digits(16)
    >>> tuple(images.shape), int(labels[:10].sum())
    ((1797, 3, 16, 16), 45)
    """
    from sklearn.datasets import load_digits

    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InvalidArgumentError(f"size: expected an integer ≥ 8 (the digits are 8×8), got {size!r}")
    if channels not in (1, 3):
        raise InvalidArgumentError(f"channels: expected 1 or 3, got {channels!r}")
    raw = load_digits()
    images = torch.from_numpy(raw.images).float()[:, None] / 16.0
    if size != 8:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0).expand(-1, channels, -1, -1).contiguous()
    return images, torch.from_numpy(raw.target).long()


def digits_split(
    size: int = 32, test_fraction: float = 0.2, seed: int = 0, channels: int = 3
) -> tuple[TensorDataset, TensorDataset]:
    """A stratified, seeded train/test split of :func:`digits` (1,437 / 360 images at 0.2), in the order
    scikit-learn draws them.

    >>> train, test = digits_split(16)
    >>> len(train), len(test), tuple(train[0][0].shape)
    (1437, 360, (3, 16, 16))
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise InvalidArgumentError(f"test_fraction: expected a fraction in (0, 1), got {test_fraction!r}")
    images, labels = digits(size, channels)
    index = np.arange(labels.shape[0])
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels.numpy())
    train_t, test_t = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return TensorDataset(images[train_t], labels[train_t]), TensorDataset(images[test_t], labels[test_t])


# -- ImageFolder trees --------------------------------------------------------------------------
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def image_folder(
    root: str | os.PathLike[str], size: int = 224, *, normalize: str = "none", crop: bool = True
) -> Dataset:
    """A ``torchvision.datasets.ImageFolder`` (one sub-folder of images per class), pixels in [0, 1].

    ``crop=True`` resizes the short side to ``size`` and crops the centre (the usual
    evaluation transform); ``crop=False`` resizes to ``size×size``. ``normalize="imagenet"``
    applies ImageNet mean/std (for torchvision backbones trained that way); ``"none"`` keeps
    [0, 1] (the default model folds its own preprocessing in).
    """
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise InvalidArgumentError(
            f"data: {str(root)!r} is not a folder; expected an ImageFolder root with one sub-folder of images per class"
        )
    if normalize not in ("none", "imagenet"):
        raise InvalidArgumentError(f"normalize: expected 'none' or 'imagenet', got {normalize!r}")
    steps: list[Any] = (
        [transforms.Resize(size), transforms.CenterCrop(size)] if crop else [transforms.Resize((size, size))]
    )
    steps.append(transforms.ToTensor())
    if normalize == "imagenet":
        steps.append(transforms.Normalize(*IMAGENET_MEAN_STD))
    try:
        return datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise InvalidArgumentError(f"data: {str(root)!r} is not a usable ImageFolder ({exc})") from exc


def image_folder_split(
    root: str | os.PathLike[str], size: int = 32, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset, list[str]]:
    """An ImageFolder tree as ``(train, val, class_names)``, images resized to ``size×size``.

    When ``root`` has ``train/`` and ``val/`` (or ``test/``) sub-folders they are the split;
    otherwise a seeded ``val_fraction`` of the images is held out.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidArgumentError(
            f"data: {str(root)!r} is not a folder (expected an ImageFolder tree: one sub-folder of images per "
            "class, or 'digits')"
        )
    held_out = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and held_out is not None:
        train = image_folder(root / "train", size, crop=False)
        return train, image_folder(held_out, size, crop=False), list(train.classes)  # type: ignore[attr-defined]
    if not 0 < val_fraction < 1:
        raise InvalidArgumentError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    full = image_folder(root, size, crop=False)
    count = len(full)  # type: ignore[arg-type]
    if count < 2:
        raise InvalidArgumentError(
            f"data: {str(root)!r} holds {count} image(s); at least 2 are needed to split off a validation set"
        )
    n_val = max(1, round(count * val_fraction))
    generator = torch.Generator().manual_seed(seed)
    train_set, val_set = torch.utils.data.random_split(full, [count - n_val, n_val], generator=generator)
    return train_set, val_set, list(full.classes)  # type: ignore[attr-defined]
