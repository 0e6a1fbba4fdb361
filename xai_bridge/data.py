"""Real photos that ship inside installed packages, and image loading for the CLI.

Nothing is downloaded: the photos come from scikit-image, scikit-learn and
matplotlib's own data folders (credits and licences in ``docs/credits.md``).
"""

from __future__ import annotations

from .errors import ImageLoadError

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch


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

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


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

        raise ValueError(f"names: no embedded photo called {unknown[0]!r}.{did_you_mean(unknown[0], PHOTOS)} Available: {', '.join(PHOTOS)}")
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
        raise ImageLoadError(f"{path}: not a readable image ({exc}); expected a JPEG, PNG or other format PIL reads") from exc
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
        raise ValueError(f"names: no boxes for {unknown}; annotated photos: {', '.join(table)}")
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
