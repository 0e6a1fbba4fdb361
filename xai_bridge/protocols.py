"""Evaluation protocols: every choice that changes a score is a named field, never a hidden constant.

Published numbers disagree largely because papers evaluate differently. A
:class:`Protocol` names each choice; presets reproduce the sources, and every
result row records the protocol it was computed with.

>>> from xai_bridge.protocols import get_protocol
>>> get_protocol("rise").insertion
Replacement(kind='blur', value=None, kernel=11, sigma=5.0, seed=0, padding='zeros', tails='fold')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import InvalidArgumentError, InvalidTypeError
from .registry import did_you_mean


@dataclass(frozen=True)
class Replacement:
    """What replaces removed pixels (the "baseline" of perturbation metrics).

    ``kind``: ``"black"`` (0 in the masking space), ``"constant"`` (``value``: a
    number or one per channel), ``"mean"`` (per-image channel mean, or the dataset
    mean colour given as ``value``), ``"blur"`` (Gaussian, ``kernel``×``kernel``,
    ``sigma``), ``"box_blur"`` (``kernel``; ``None`` = ``max(H // 5, 9)`` made odd, the
    tutorial authors' rule: 45 at 224²), ``"noise"`` (uniform in [0, 1], ``seed``),
    ``"min"`` (per-image minimum: Quantus's ``"black"``), ``"tensor"`` (a user tensor
    passed at evaluation time).

    The blurs pad the image border by ``padding``: ``"reflect"`` or ``"zeros"`` (a plain
    zero-padded convolution, as RISE's and the tutorial's code blur). ``tails`` is how the
    Gaussian's tails beyond ``kernel`` taps are treated: ``"truncate"`` (cut and renormalised)
    or ``"fold"`` (reflected back into the window: RISE builds its kernel with
    ``scipy.ndimage.gaussian_filter`` on a Dirac in a ``kernel``×``kernel`` array).
    """

    kind: Literal["black", "constant", "mean", "blur", "box_blur", "noise", "min", "tensor"] = "black"
    value: Any = None
    kernel: int | None = None
    sigma: float | None = None
    seed: int = 0
    padding: Literal["reflect", "zeros"] = "reflect"
    tails: Literal["truncate", "fold"] = "truncate"

    def __post_init__(self) -> None:
        if self.padding not in ("reflect", "zeros"):
            raise InvalidArgumentError(f"replacement.padding: {self.padding!r} is not one of ('reflect', 'zeros')")
        if self.tails not in ("truncate", "fold"):
            raise InvalidArgumentError(f"replacement.tails: {self.tails!r} is not one of ('truncate', 'fold')")


BLACK = Replacement("black")
#: A Gaussian blur of RISE's size, 11×11 with σ = 5, sampled and truncated, reflect padding (the project default).
RISE_BLUR = Replacement("blur", kernel=11, sigma=5.0)
#: RISE's own insertion substrate (Petsiuk et al. 2018, ``gkern(11, 5)`` in their ``evaluation.py``):
#: the tails folded back into the 11×11 window, zero padding.
RISE_INSERTION = Replacement("blur", kernel=11, sigma=5.0, padding="zeros", tails="fold")
#: The saliency-map tutorial's insertion substrate (Gomez & Mouchère 2023, their package
#: ``saliency-maps-metrics``): a box blur of side ``max(H // 5, 9)`` made odd, zero padding.
TUTORIAL_BLUR = Replacement("box_blur", padding="zeros")
IMAGE_MEAN = Replacement("mean")


@dataclass(frozen=True)
class Protocol:
    """How explanations are scored: every choice that changes a score, named.

    Attributes:
        name: preset name (recorded in every result row).
        description: one paragraph saying what the preset reproduces.
        target: ``"predicted"`` (default for users) or ``"label"`` (papers' tables;
            falls back to the prediction when no labels are given).
        score: ``"probability"`` (softmax of the target class) or ``"logit"``.
        resize: how maps coarser than the images (``B×h×w`` given to :func:`~xai_bridge.score_maps`
            or through ``evaluate(maps=...)``) reach input resolution: ``"bilinear"``
            (``align_corners=False``), ``"bicubic"`` or ``"nearest"``. An explainer's maps are
            already at input resolution (each explainer upsamples as its method defines) and
            pass through. ``n(S)`` is always the min-max of the map at input resolution.
        constant_maps: what ``n(S)`` is for a constant map: ``"error"``, ``"zeros"`` or ``"ones"``.
        mask_replacement: what ``x ⊙ M`` blends with (AD, AG, AI, ADD): ``x·M + r·(1−M)``.
        deletion: replacement of removed pixels in deletion curves (DAUC, DC).
        insertion: the start image of insertion curves (IAUC, IC).
        removal: replacement for AOPC, AFOC and decision flips (n_MoRF / n_LeRF).
        step: pixels per step (int), a fraction of the image (float), or ``None``: at most
            ``max_steps`` steps of ``units // min(max_steps, units)`` units each, for deletion/insertion.
            With ``level="grid"`` the curves step by whole cells: an int step still counts pixels and
            must be a whole number of cells (2048 = two 32×32 cells), or the evaluation refuses it.
        level: ``"pixel"`` or ``"grid"`` (cells of the saliency grid as features; the tutorial).
        cell: grid cell size in pixels for ``level="grid"``; ``None`` = the explainer's own grid
            (input size ÷ raw map size, e.g. 32 for a 7×7 CAM at 224², whose cells are then ranked
            by the raw map's own values; 1, i.e. pixels, for maps at input resolution).
        max_steps: the bound of ``step=None`` / ``removal_step=None`` (196 = 14×14, the tutorial's package).
        mask_from: the soft mask ``M`` of AD, AG, AI, ADD: ``"maps"`` = ``n(S)`` of the maps at input
            resolution; ``"raw"`` = ``up(n(S_raw))``, the explainer's raw map min-max normalised at its
            own resolution, then resized with ``resize`` and not clipped (a bicubic resize overshoots a
            little), as the tutorial authors' package masks; the maps when there is no raw map.
        add_clip: ADD clips a negative drop to 0 (``[p − o]_+ / p``, like AD); ``False`` keeps its sign
            (``(p − o)/p``, the tutorial authors' package).
        auc_normalize: ``"none"``, ``"first"`` or ``"max"`` — divide each curve before the area.
        fraction: fraction of pixels removed by AOPC and AFOC (Grabska-Barwińska et al.: 10 %).
        removal_step: pixels per step (int) or fraction for AOPC/AFOC/n_MoRF/n_LeRF.
        space: where masking happens: ``"pixel"`` (images in [0, 1], black = 0; the images are
            checked to lie in [0, 1]) or ``"normalized"`` (the images given are already normalised,
            ``(x − mean)/std``, so ``"black"`` = 0 is the dataset's mean colour; no range check).
        source: where the settings come from (paper, section); recorded with the rest.

    ``name``, ``description`` and ``source`` are metadata (recorded in every result, they change
    no value); every other field changes some metric's value (``tests/test_protocols.py``).
    """

    name: str = "default"
    description: str = ""
    target: Literal["predicted", "label"] = "predicted"
    score: Literal["probability", "logit"] = "probability"
    resize: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    constant_maps: Literal["error", "zeros", "ones"] = "error"
    mask_replacement: Replacement = BLACK
    deletion: Replacement = BLACK
    insertion: Replacement = RISE_BLUR
    removal: Replacement = IMAGE_MEAN
    step: int | float | None = 224 * 8
    level: Literal["pixel", "grid"] = "pixel"
    cell: int | None = None
    max_steps: int = 196
    mask_from: Literal["maps", "raw"] = "maps"
    add_clip: bool = True
    auc_normalize: Literal["none", "first", "max"] = "none"
    fraction: float = 0.1
    removal_step: int | float | None = 224
    space: Literal["pixel", "normalized"] = "pixel"
    source: str = ""

    def __post_init__(self) -> None:
        choices = {
            "target": ("predicted", "label"),
            "score": ("probability", "logit"),
            "resize": ("bilinear", "bicubic", "nearest"),
            "constant_maps": ("error", "zeros", "ones"),
            "level": ("pixel", "grid"),
            "auc_normalize": ("none", "first", "max"),
            "space": ("pixel", "normalized"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidArgumentError(f"protocol.{name}: {getattr(self, name)!r} is not one of {allowed}")
        if not 0 < self.fraction <= 1:
            raise InvalidArgumentError(f"protocol.fraction: {self.fraction} must be in (0, 1]")
        self._check_steps()

    def replace(self, **changes: Any) -> Protocol:
        """A copy with some fields changed (the name becomes ``name+custom`` unless given)."""
        changes.setdefault("name", self.name if self.name.endswith("+custom") else f"{self.name}+custom")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _check_steps(self) -> None:
        if self.mask_from not in ("maps", "raw"):
            raise InvalidArgumentError(f"protocol.mask_from: {self.mask_from!r} is not one of ('maps', 'raw')")
        if not isinstance(self.add_clip, bool):
            raise InvalidArgumentError(f"protocol.add_clip: expected True or False, got {self.add_clip!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise InvalidArgumentError(
                f"protocol.max_steps: expected a positive number of steps, got {self.max_steps!r}"
            )
        if self.cell is not None and (isinstance(self.cell, bool) or not isinstance(self.cell, int) or self.cell < 1):
            raise InvalidArgumentError(
                f"protocol.cell: expected a positive number of pixels or None, got {self.cell!r}"
            )
        for name in ("step", "removal_step"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidArgumentError(
                    f"protocol.{name}: expected pixels (int), a fraction (float) or None, got {value!r}"
                )
            if isinstance(value, float) and value > 1:
                raise InvalidArgumentError(
                    f"protocol.{name}: a float is a fraction of the image in (0, 1], got {value!r}"
                )
        # with level="grid" an int step must be whole cells: checked where it is used (grid_step), as the
        # cell is often known only then (the explainer's own grid)


def grid_step(step: int | float | None, cell: int, name: str = "step") -> int | float | None:
    """A protocol step in units of ``cell×cell`` cells: an int step counts pixels and must be whole cells.

    >>> grid_step(2048, 32), grid_step(0.25, 32), grid_step(None, 32)
    (2, 0.25, None)
    """
    if not isinstance(step, int) or isinstance(step, bool):
        return step
    area = cell * cell
    if step % area:
        raise InvalidArgumentError(
            f"protocol.{name}: {step} pixels is not a whole number of {cell}×{cell}-pixel cells, and level='grid' "
            f"removes whole cells; give {name}={max(1, step // area) * area} ({max(1, step // area)} cell(s)), "
            f"a fraction of the image ({name}=0.05) or {name}=None (at most max_steps steps)"
        )
    return step // area


PRESETS: dict[str, Protocol] = {
    "default": Protocol(
        name="default",
        description="The project default: pixel space, predicted class, softmax probability, bilinear "
        "upsampling then per-image min-max; black masking for AD/AG/AI/ADD and deletion, a Gaussian blur of "
        "RISE's size (11×11, σ=5, truncated, reflect padding) for insertion, 1/28 of the image per step; "
        "mean-colour removal of 224-pixel steps for AOPC/AFOC (10 %) and decision flips.",
        source="project",
    ),
    "opticam": Protocol(
        name="opticam",
        description="The Opti-CAM / CA-Stream group's evaluation (Torres Figueroa's thesis, ch. 2-3): the image "
        "masked in pixel space by n(S) (black elsewhere), softmax probability of the label when given (else the "
        "prediction), AD/AG/AI; insertion/deletion as RISE's code, 224 pixels per step.",
        target="label",
        step=224,
        insertion=RISE_INSERTION,
        source="F. Torres Figueroa, PhD thesis (Aix-Marseille Université 2024) §2.6, §3.5; Zhang et al., Opti-CAM",
    ),
    "rise": Protocol(
        name="rise",
        description="RISE's causal metrics (Petsiuk et al. 2018) as their evaluation.py (CausalMetric) computes "
        "them: deletion to zeros, insertion from their Gaussian blur (11×11, σ=5, tails folded into the window, "
        "zero padding), 224 pixels per step, probability of the class predicted on the image, trapezoid area "
        "over the fraction of pixels changed.",
        step=224,
        insertion=RISE_INSERTION,
        source="Petsiuk, Das & Saenko, RISE (BMVC 2018); github.com/eclique/RISE evaluation.py",
    ),
    "tutorial": Protocol(
        name="tutorial",
        description="The saliency-map tutorial (Gomez & Mouchère 2023) as its authors' package saliency-maps-metrics "
        "computes it: the cells of the explainer's own map are the units, ranked by their raw values, one per step "
        "up to 14×14 cells and at most 196 steps beyond (256 pixels per step for a 224² map); deletion to black, "
        "insertion from a box blur of side max(H/5, 9) with zero padding; the area under the scores as they are "
        "(auc_normalize='max' divides them by their maximum first, as the paper's text says); DC/IC correlate each "
        "step's score change with the saliency it removed/revealed; AD, ADD and IIC mask with the raw map min-max "
        "normalised then upsampled bicubically, and ADD keeps its sign.",
        level="grid",
        step=None,
        removal_step=None,
        insertion=TUTORIAL_BLUR,
        resize="bicubic",
        mask_from="raw",
        add_clip=False,
        source="Gomez & Mouchère, J. Electron. Imaging 32(2) 2023; saliency-maps-metrics 0.0.26 (PyPI)",
    ),
    "deepmaps": Protocol(
        name="deepmaps",
        description="The DeepMaps paper (Grabska-Barwińska et al.): mean-colour replacement, predicted class, "
        "10 % of the pixels for AOPC/AFOC, decision flips (n_MoRF/n_LeRF) in steps of 0.5 % of the pixels.",
        removal_step=0.005,
        mask_replacement=IMAGE_MEAN,
        deletion=IMAGE_MEAN,
        source="Grabska-Barwińska et al., §4, appendix B",
    ),
    "quantus": Protocol(
        name="quantus",
        description="Quantus's defaults for PixelFlipping/RegionPerturbation: removed pixels set to the "
        "per-sample minimum (Quantus's 'black'), one pixel per step, softmax probabilities.",
        deletion=Replacement("min"),
        removal=Replacement("min"),
        step=1,
        source="quantus 0.6 defaults",
    ),
}


def get_protocol(protocol: str | Protocol | None = None, **overrides: Any) -> Protocol:
    """A preset by name (``None`` = ``"default"``) or a given :class:`Protocol`, with overrides."""
    if protocol is None:
        protocol = "default"
    if isinstance(protocol, str):
        if protocol not in PRESETS:
            raise InvalidArgumentError(
                f"protocol: no preset called {protocol!r}.{did_you_mean(protocol, PRESETS)} "
                f"Presets: {', '.join(PRESETS)}"
            )
        protocol = PRESETS[protocol]
    if not isinstance(protocol, Protocol):
        raise InvalidTypeError(f"protocol: expected a preset name or a Protocol, got {type(protocol).__name__}")
    return protocol.replace(**overrides) if overrides else protocol
