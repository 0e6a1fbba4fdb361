"""Where the benchmark's images come from: the embedded photos, an ImageFolder tree, or a list file.

A source lists items (an id, how to load it, an optional label) without reading any
pixels, so the runner can decide what is already stored before loading; images are
read batch by batch. A file that cannot be read is reported and skipped.

>>> source = open_source("default")
>>> [item.id for item in source.items][:2], source.items[1].label
(['astronaut', 'chelsea'], 281)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class Item:
    """One image: ``id`` keys its rows; ``path`` is a file or ``photo:NAME``; ``label`` a class index or ``None``."""

    id: str
    path: str
    label: int | None = None


@dataclass
class Source:
    """A listed data source. ``identity`` names it in the configuration hash."""

    kind: str
    identity: str
    items: list[Item] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        return bool(self.items) and all(i.label is not None for i in self.items)


def _label(text: str, where: str, class_names: Sequence[str] | None) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        if value < 0:
            raise InvalidArgumentError(
                f"{where}: label {value} is negative; expected a class index ≥ 0 or a class name"
            )
        return value
    from ..classes import class_index

    try:
        return class_index(text.replace("_", " "), class_names)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{where}: label {text!r} is neither a class index nor a known class name ({exc})"
        ) from exc


def embedded_source(names: Sequence[str] | None = None) -> Source:
    """The photos shipped in installed packages, labelled with their annotated ImageNet class."""
    from ..data import PHOTOS, photo_labels

    names = list(PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise InvalidArgumentError(f"images: no embedded photo called {unknown[0]!r}; available: {', '.join(PHOTOS)}")
    labels = photo_labels(names)
    return Source(
        "embedded",
        "embedded:" + ",".join(names),
        [Item(n, f"photo:{n}", lab) for n, lab in zip(names, labels, strict=False)],
    )


def folder_source(root: str | Path, class_names: Sequence[str] | None = None) -> Source:
    """An ImageFolder tree ``root/CLASS/*.jpg`` (labelled) or a flat folder of images (no labels).

    A class folder is labelled by its name: an integer index, or a class name
    (``tabby_cat``, ``tabby cat``; ImageNet names unless ``class_names`` is given).
    Ids are paths relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidArgumentError(
            f"images: {root} is not a directory; expected an ImageFolder tree (root/CLASS/image.jpg) or a folder "
            "of images"
        )
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items: list[Item] = []
    if subdirs:
        for d in subdirs:
            label = _label(d.name, f"images: folder {d}", class_names)
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append(Item(f.relative_to(root).as_posix(), str(f), label))
    else:
        items = [
            Item(f.name, str(f)) for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not items:
        raise InvalidArgumentError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return Source("folder", f"folder:{root.resolve()}", items)


def list_source(path: str | Path, class_names: Sequence[str] | None = None) -> Source:
    """A text file with one image per line: ``PATH``, ``PATH<TAB>LABEL`` or ``PATH LABEL``.

    A label is a class index or a class name (after a space write ``tabby_cat``; after a
    tab spaces are fine). Relative paths are relative to the list file; ``#`` starts a
    comment. Either every line has a label or none does.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(
            f"images: {path} is not a file; expected a list file with one image path (and optional label) per line"
        )
    items: list[Item] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        whole = Path(line) if Path(line).is_absolute() else path.parent / line
        if "\t" in line:
            name, _, label_text = line.partition("\t")
        elif " " in line and not whole.is_file():  # a path with spaces stays whole
            name, _, label_text = line.rpartition(" ")
        else:
            name, label_text = line, ""
        name, label_text = name.strip(), label_text.strip()
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        label = _label(label_text, f"images: {path}:{number}", class_names) if label_text else None
        items.append(Item(name, str(file), label))
    if not items:
        raise InvalidArgumentError(f"images: {path} lists no images")
    labelled = {i.label is not None for i in items}
    if len(labelled) > 1:
        raise InvalidArgumentError(
            f"images: {path} gives labels on some lines only; give a label on every line or on none"
        )
    if len({i.id for i in items}) != len(items):
        raise InvalidArgumentError(f"images: {path} lists the same image twice; each line must name a different file")
    return Source("list", f"list:{path.resolve()}", items)


def open_source(spec: str | Path, class_names: Sequence[str] | None = None) -> Source:
    """``"default"`` (embedded photos), ``"default:chelsea,coffee"``, a directory, or a list file."""
    text = str(spec)
    if text == "default" or text.startswith("default:"):
        names = [n for n in text.partition(":")[2].split(",") if n] or None
        return embedded_source(names)
    p = Path(text)
    if p.is_dir():
        return folder_source(p, class_names)
    if p.is_file():
        return list_source(p, class_names)
    raise InvalidArgumentError(f"images: {text!r} is neither 'default', a directory nor a list file")


def load_item(item: Item, size: int) -> Any:
    """``3×size×size`` in ``[0, 1]``; raises :class:`~xai_bridge.data.ImageLoadError` when unreadable."""
    import warnings

    from ..data import PHOTOS, load_image, to_tensor

    if item.path.startswith("photo:"):
        return to_tensor(PHOTOS[item.path[6:]](), size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grayscale / alpha conversions are expected in datasets
        return load_image(item.path, size=size)


def load_batch(items: Sequence[Item], size: int, on_error: Callable[[Item, str], None]) -> tuple[Any, list[Item]]:
    """Load ``items``; unreadable ones go to ``on_error(item, reason)`` and are left out.

    Returns ``(B×3×size×size tensor or None, the items loaded)``.
    """
    import torch

    from ..data import ImageLoadError

    tensors, kept = [], []
    for item in items:
        try:
            tensors.append(load_item(item, size))
        except ImageLoadError as exc:
            on_error(item, str(exc))
            continue
        kept.append(item)
    return (torch.stack(tensors) if tensors else None), kept
