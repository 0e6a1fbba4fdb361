"""DP-Net: a part layer and a linear classifier on a frozen CNN (Sicre et al., ICIP 2023, DP-Net).

A pretrained CNN is **frozen**: never fine-tuned, always in eval mode. Its feature map at
one layer gives ``R = h·w`` region vectors ``X`` (``D×R``). The part layer ``U`` (``P×D``,
each row L2-normalised on every forward) scores every region, and each part keeps its
best-matching region::

    S   = U X                  P×R   part scores of every region
    b_p = max_r S_{p,r}        P     the bag of parts
    y   = V b + bias           C     logits (V is C×P)

Parts are grouped per class: ``P = q·C`` and class ``i`` owns parts ``q·i … q·i + q − 1``
(0-based; ``q = 10`` by default). The "global" baseline is a linear classifier on the
global-average-pooled features of the same frozen layer (:class:`GlobalClassifier`); a
:class:`DPNet` carries one (``global_head``) so both are trained and compared together.

Losses (all minimised; each weighted by its own λ in training)::

    L⊥  = 1/P² Σ_{i≠j} (u_iᵀ u_j)²                         parts differ from one another
    LA  = mean_r  −Σ_p s_{p,r} log s_{p,r},  s = softmax_p(S)  each region decisively assigned
    LCS = 1/C Σ_i Σ_{j ∉ parts of i} |V_{i,j}| / Σ_j |V_{i,j}|   parts specific to their class

The slides of the paper write ``C⊥`` with a leading minus sign, sum ``C_Assign`` over the
regions instead of averaging, and write ``CS`` without the absolute value or a normalisation;
see ``docs/dpnet.md`` for why we minimise the forms above (a sign typo, a rescaling of λA by
``R``, a loss that would otherwise be unbounded below, and a normalisation that keeps one λCS
meaningful for any P and C).

Example::

    >>> import torch, torchvision
    >>> from xai_bridge_builtins.dpnet.model import DPNet
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=3)
    >>> out = net.run(torch.rand(2, 3, 64, 64))
    >>> out.logits.shape, out.scores.shape, out.bag.shape     # layer4 of ResNet-18 is 2×2 at 64²
    (torch.Size([2, 3]), torch.Size([2, 6, 2, 2]), torch.Size([2, 6]))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xai_bridge.checkpoints import atomic_save, load_checkpoint
from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.layers import TargetLayer, find_layer

#: Written into every saved DP-Net and checkpoint; a file without it is refused.
CHECKPOINT_FORMAT = "xai-bridge-dpnet/1"
#: Input normalisations a DP-Net can fold in front of its backbone (images stay in [0, 1]).
NORMALIZATIONS = {"none": None, "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def positive_int(value: Any, name: str, what: str) -> int:
    """``value`` if it is a positive ``int`` (not a bool), else a ``ValueError`` naming ``name``.

    >>> positive_int(3, "parts_per_class", "parts per class")
    3
    >>> positive_int(0, "num_classes", "classes")
    Traceback (most recent call last):
    ...
    xai_bridge.errors.InvalidArgumentError: num_classes: expected a positive integer (the number of classes), got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name}: expected a positive integer (the number of {what}), got {value!r}")
    return value


@dataclass
class DPNetOutput:
    """Everything one DP-Net pass computes.

    Attributes:
        logits: ``B×C`` (``V b + bias``).
        scores: ``B×P×h×w``, the part scores ``S = U X`` of every region.
        bag: ``B×P``, the bag of parts ``b_p = max_r S_{p,r}``.
        best_region: ``B×P`` (long), the flat index ``r`` of each part's best region.
        global_logits: ``B×C`` of the global baseline, when asked for.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    bag: torch.Tensor
    best_region: torch.Tensor
    global_logits: torch.Tensor | None = None


class _StopBackbone(Exception):
    """Raised by the feature hook once the layer has run: the rest of the backbone is not needed."""


class InputNormalize(nn.Module):
    """``(x − mean) / std`` per channel, so a DP-Net takes images in ``[0, 1]`` like the default model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _is_torchvision(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torchvision.models")


class DPNet(nn.Module):
    """Discriminative Part Network on a frozen backbone (Sicre et al., ICIP 2023, DP-Net).

    Args:
        backbone: a pretrained CNN in eval mode (``backbone.eval()``); it is never trained
            and a DP-Net keeps it in eval mode, so its BatchNorm statistics never move.
        layer: the feature layer whose output gives the regions: a module of the backbone,
            its dotted name, or ``None`` for the layer the installed plugins resolve (the
            CAM target layer: ``head`` of EfficientNet-Lite0, ``layer4[-1]`` of a ResNet,
            the last ReLU of a VGG, ``features[-1]`` of a ConvNeXt).
        parts_per_class: ``q``; ``P = q·C`` parts in all.
        num_classes: ``C``; may be left out when ``class_names`` is given.
        class_names: one name per class (recorded in saved models; ``target="name"`` works).
        normalize: ``"none"``, ``"imagenet"`` or ``"auto"`` (ImageNet mean/std for torchvision
            backbones, none otherwise: the default model folds its own). Applied inside the
            model: images are always given in ``[0, 1]``.
        backbone_name: how to rebuild the backbone when loading (``"efficientnet-lite0"`` or a
            torchvision model name); recorded in saved models. Defaults to the class name.
        feature_dim: ``D``; found by one probe pass of a ``probe_size²`` image when omitted.

    The backbone's parameters keep their ``requires_grad`` (gradient explainers such as
    Grad-CAM need them); it is frozen because no optimiser ever sees them and training
    reads features computed once under ``torch.no_grad``.

    >>> import torch, torchvision
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=3)
    >>> net.num_parts, net.feature_dim, net.layer_name, net.part_owner.tolist()
    (6, 512, 'layer4.1', [0, 0, 1, 1, 2, 2])
    >>> torch.linalg.norm(net.part_vectors(), dim=1).allclose(torch.ones(6))
    True
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        layer: Any = None,
        parts_per_class: int = 10,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        normalize: str = "auto",
        backbone_name: str | None = None,
        feature_dim: int | None = None,
        probe_size: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise InvalidTypeError(
                f"backbone: expected a torch.nn.Module (a pretrained CNN), got {type(backbone).__name__}"
            )
        if backbone.training:
            raise InvalidArgumentError(
                "backbone: is in training mode; DP-Net keeps its backbone frozen in eval mode so its BatchNorm "
                "statistics never move. Pass backbone.eval()."
            )
        q = positive_int(parts_per_class, "parts_per_class", "parts per class")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if num_classes is None:
                num_classes = len(class_names)
        if num_classes is None:
            raise InvalidArgumentError(
                "num_classes: expected a positive integer (the number of classes); give num_classes or class_names"
            )
        c = positive_int(num_classes, "num_classes", "classes")
        if class_names is not None and len(class_names) != c:
            raise InvalidArgumentError(
                f"class_names: got {len(class_names)} names for num_classes={c}; give one name per class"
            )
        if normalize == "auto":
            normalize = "imagenet" if _is_torchvision(backbone) else "none"
        if normalize not in NORMALIZATIONS:
            raise InvalidArgumentError(f"normalize: expected 'auto', 'none' or 'imagenet', got {normalize!r}")

        self.backbone = backbone
        target = find_layer(backbone, layer)
        self._layer = TargetLayer(target.module, target.name, target.reshape)
        stats = NORMALIZATIONS[normalize]
        self.input_normalize = InputNormalize(*stats) if stats is not None else None
        self.normalize = normalize
        self.parts_per_class = q
        self.num_classes = c
        self.class_names = class_names
        self.backbone_name = backbone_name or type(backbone).__name__
        if feature_dim is None:
            feature_dim = self._probe_dim(probe_size)
        self.feature_dim = positive_int(feature_dim, "feature_dim", "feature channels")
        p = q * c
        self.parts = nn.Parameter(torch.randn(p, self.feature_dim))
        self.classifier = nn.Linear(p, c)
        self.global_head = nn.Linear(self.feature_dim, c)
        self.register_buffer("part_owner", torch.arange(p) // q, persistent=False)
        #: extra facts recorded when saving (preprocessing, data), set by training
        self.meta: dict[str, Any] = {}

    # -- structure ------------------------------------------------------------------------------
    @property
    def num_parts(self) -> int:
        """``P = q·C``."""
        return self.parts.shape[0]

    @property
    def layer_name(self) -> str:
        """Dotted name of the feature layer inside the backbone."""
        return self._layer.name

    @property
    def target_layer(self) -> TargetLayer:
        """The feature layer as seen from this model (``backbone.<layer>``): what CAM methods should read."""
        return TargetLayer(self._layer.module, f"backbone.{self._layer.name}", self._layer.reshape)

    def part_vectors(self) -> torch.Tensor:
        """``U`` with unit-norm rows (``P×D``), as every forward uses it."""
        return F.normalize(self.parts, dim=1)

    def class_of_part(self, part: int) -> int:
        """The class owning ``part`` (``part // q``)."""
        return int(part) // self.parts_per_class

    @property
    def config(self) -> dict[str, Any]:
        """What a saved DP-Net records about itself (plain values: ``weights_only`` loads them)."""
        return {
            "backbone": self.backbone_name,
            "backbone_class": f"{type(self.backbone).__module__}.{type(self.backbone).__name__}",
            "layer": self.layer_name,
            "parts": self.num_parts,
            "parts_per_class": self.parts_per_class,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "feature_dim": self.feature_dim,
            "normalize": self.normalize,
            **{k: v for k, v in self.meta.items()},
        }

    def train(self, mode: bool = True) -> DPNet:
        """Set the heads' mode; the backbone stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        self.backbone.eval()
        return self

    def reset_heads(self, seed: int | None = None) -> None:
        """Draw ``U`` from N(0, 1) and the linear heads with PyTorch's default init (seeded; global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            with torch.no_grad():
                self.parts.copy_(torch.randn(self.parts.shape))
            self.classifier.reset_parameters()
            self.global_head.reset_parameters()

    # -- computation ----------------------------------------------------------------------------
    def _probe_dim(self, size: int) -> int:
        device = next((t.device for t in self.backbone.parameters()), torch.device("cpu"))
        try:
            with torch.no_grad():
                feats = self.features(torch.zeros(1, 3, size, size, device=device))
        except ValueError:
            raise
        except Exception as exc:  # e.g. a backbone with a fixed input size
            raise InvalidArgumentError(
                f"feature_dim: could not be found with a probe pass of a {size}×{size} image "
                f"({type(exc).__name__}: {exc}); "
                "pass feature_dim=D (the layer's channels) or probe_size=<a size the backbone accepts>"
            ) from exc
        return int(feats.shape[1])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen layer's output ``B×D×h×w`` for images in ``[0, 1]`` (the backbone stops after the layer)."""
        if self.backbone.training:
            raise InvalidArgumentError(
                "backbone: is in training mode; a DP-Net's backbone must stay frozen in eval mode. Call model.eval()."
            )
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured.append(output)
            raise _StopBackbone

        x = self.input_normalize(images) if self.input_normalize is not None else images
        handle = self._layer.module.register_forward_hook(hook)  # registered last: other hooks (CAM methods) run first
        try:
            self.backbone(x)
        except _StopBackbone:
            pass
        finally:
            handle.remove()
        if not captured:
            raise InvalidArgumentError(
                f"layer: {self._layer.name!r} did not run in the backbone's forward pass; pick a layer that does"
            )
        out = captured[0]
        if self._layer.reshape is not None:
            out = self._layer.reshape(out)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidArgumentError(
                f"layer: {self._layer.name!r} gives {shape}; DP-Net needs a B×D×h×w feature map "
                "(a convolutional layer, "
                "or a TargetLayer with a reshape for token sequences)"
            )
        return out

    def head(self, features: torch.Tensor, *, with_global: bool = False) -> DPNetOutput:
        """Parts and classifier on precomputed features ``B×D×h×w`` (training runs here, never on the backbone)."""
        b, d, h, w = features.shape
        if d != self.feature_dim:
            raise InvalidArgumentError(f"features: have {d} channels, the part layer expects D={self.feature_dim}")
        x = features.reshape(b, d, h * w)
        scores = torch.einsum("pd,bdr->bpr", self.part_vectors(), x)
        bag, best = scores.max(dim=-1)
        logits = self.classifier(bag)
        glob = self.global_head(x.mean(-1)) if with_global else None
        return DPNetOutput(logits, scores.reshape(b, -1, h, w), bag, best, glob)

    def run(self, images: torch.Tensor, *, with_global: bool = False) -> DPNetOutput:
        """One pass on images in ``[0, 1]``: logits, part scores, bag of parts (and the global logits)."""
        return self.head(self.features(images), with_global=with_global)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images).logits

    def global_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the global baseline (linear on the pooled features of the same layer)."""
        return self.global_head(self.features(images).mean((2, 3)))

    def global_model(self) -> GlobalClassifier:
        """The global baseline as a classifier module of its own (shares this backbone and head)."""
        return GlobalClassifier(self)

    # -- interpretation shortcuts ---------------------------------------------------------------
    def explain_parts(self, images: torch.Tensor, target: Any = None) -> Any:
        """:func:`xai_bridge_builtins.dpnet.explainers.explain_parts` on this model."""
        from .explainers import explain_parts

        return explain_parts(self, images, target)

    def class_parts(self, c: int | str) -> Any:
        """:func:`xai_bridge_builtins.dpnet.explainers.class_parts` on this model."""
        from .explainers import class_parts

        return class_parts(self, c)

    def extra_repr(self) -> str:
        parts = f"parts={self.num_parts} (q={self.parts_per_class} × C={self.num_classes})"
        return f"layer={self.layer_name!r}, {parts}, D={self.feature_dim}"


class GlobalClassifier(nn.Module):
    """The "Global" baseline of a DP-Net: its frozen backbone, GAP over the same layer, ``global_head``.

    An ordinary classifier module, so every explainer and metric runs on it; its target
    layer (``dpnet.backbone.<layer>``) is the DP-Net's.

    >>> import torch, torchvision
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=1, num_classes=4)
    >>> net.global_model()(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 4])
    """

    def __init__(self, dpnet: DPNet) -> None:
        super().__init__()
        self.dpnet = dpnet

    def train(self, mode: bool = True) -> GlobalClassifier:
        super().train(mode)
        self.dpnet.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dpnet.global_logits(images)


# -- losses ---------------------------------------------------------------------------------------
def orthogonality_loss(parts: torch.Tensor) -> torch.Tensor:
    """``L⊥ = 1/P² Σ_{i≠j} (u_iᵀu_j)²`` of the row-normalised ``parts`` (``P×D``).

    >>> orthogonality_loss(torch.eye(3, 5)).item()          # orthogonal parts
    0.0
    >>> orthogonality_loss(torch.tensor([[1.0, 0.0], [2.0, 0.0]])).item()   # two equal directions: 2 / 2²
    0.5
    """
    u = F.normalize(parts, dim=1)
    gram = u @ u.T
    off = gram - torch.diag_embed(torch.diagonal(gram))
    return off.pow(2).sum() / parts.shape[0] ** 2


def assignment_loss(scores: torch.Tensor) -> torch.Tensor:
    """``LA = mean over images and regions of −Σ_p s_{p,r} log s_{p,r}``, ``s`` the softmax of ``S`` over parts.

    ``scores``: ``B×P×R`` or ``B×P×h×w``.

    >>> round(assignment_loss(torch.zeros(1, 4, 3)).item(), 6) == round(__import__("math").log(4), 6)  # undecided
    True
    >>> assignment_loss(torch.tensor([[[100.0], [0.0]]])).item() < 1e-30       # one part takes the region
    True
    """
    flat = scores.flatten(2)
    log_s = F.log_softmax(flat, dim=1)
    entropy = -(log_s.exp() * log_s).sum(dim=1)
    return entropy.mean()


def own_part_share(weight: torch.Tensor, parts_per_class: int) -> torch.Tensor:
    """``(C,)``: the share of ``Σ_p |V_{c,p}|`` that falls on class ``c``'s own parts (0 for an all-zero row).

    ``1`` means class ``c`` reads only its own parts; a ``V`` with no class structure gives about
    ``q/P = 1/C`` (chance).

    >>> own_part_share(torch.tensor([[3.0, -1.0], [2.0, 2.0]]), 1).tolist()   # |3| / 4, |2| / 4
    [0.75, 0.5]
    """
    c, p = weight.shape
    owner = torch.arange(p, device=weight.device) // parts_per_class
    own = owner[None, :] == torch.arange(c, device=weight.device)[:, None]
    magnitude = weight.abs()
    total = magnitude.sum(dim=1)
    return torch.where(total > 0, (magnitude * own).sum(dim=1) / total.clamp_min(1e-30), torch.zeros_like(total))


def class_specific_loss(weight: torch.Tensor, parts_per_class: int) -> torch.Tensor:
    """``LCS = 1/C Σ_i Σ_{j ∉ parts of i} |V_{i,j}| / Σ_j |V_{i,j}|`` for the classifier weight ``V`` (``C×P``).

    The mean over classes of the share of a class's ``|V_i|`` that falls *outside* its own parts:
    ``1 − own_part_share(V).mean()``. It lies in ``[0, 1]``: 0 when every class reads only its own
    parts, about ``(C − 1)/C`` when ``V`` has no class structure (chance). 0 when ``C = 1``.

    Why a share and not the mean ``|V_{i,j}|`` off the class blocks (``1/(P(C−1)) Σ …``, our first
    definition): that mean gives each off-class weight a gradient of ``λCS / (P(C−1))``, 0.001 for
    P = 100 and C = 10, far below the cross-entropy's, so at ``λCS = 1`` the classifier stayed at
    chance (11 % of ``|V_c|`` on a class's own parts on digits) and the needed λCS grew with P and
    C. The share does not depend on the scale of ``V`` (the constraint asks *where* a class's
    weight goes, not how large it is), is bounded, reads directly as "1 − own-part share", and
    its λ means the same for any P and C. ``benchmarks/dpnet.py`` sweeps both normalisations.

    >>> round(class_specific_loss(torch.ones(3, 6), 2).item(), 6)   # each row: 4 of its 6 equal weights off its block
    0.666667
    >>> class_specific_loss(torch.block_diag(*[torch.ones(1, 2)] * 3), 2).item()   # zero outside the blocks
    0.0
    """
    c, _ = weight.shape
    if c < 2:
        return weight.new_zeros(())
    return 1.0 - own_part_share(weight, parts_per_class).mean()


def part_overlap(parts: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal ``|u_iᵀu_j|`` of the row-normalised ``parts`` (``P×D``): 0 for orthogonal parts, 1 for equal.

    >>> round(part_overlap(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])).item(), 4)   # 2·(2/√2) / 6 = √2/3
    0.4714
    """
    p = parts.shape[0]
    if p < 2:
        return parts.new_zeros(())
    u = F.normalize(parts, dim=1)
    gram = (u @ u.T).abs()
    return (gram.sum() - gram.diagonal().sum()) / (p * (p - 1))


def near_chance(share: float, num_classes: int) -> bool:
    """Whether an own-part share has come less than a quarter of the way from chance (``1/C``) to 1.

    The threshold training and ``dpnet explain`` warn at: 32.5 % for 10 classes, 62.5 % for 2.

    >>> near_chance(0.11, 10), near_chance(0.60, 10), near_chance(0.60, 2)
    (True, False, True)
    """
    chance = 1.0 / num_classes
    return share < chance + (1.0 - chance) / 4


# -- backbones by name ----------------------------------------------------------------------------
def backbone_from_name(name: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """A backbone by name, offline, in eval mode.

    ``"efficientnet-lite0"`` (or ``"default"``) is the embedded ImageNet EfficientNet-Lite0; any
    other name is a torchvision classification model (``resnet50``, ``vgg16``, ``convnext_tiny`` …)
    with random weights drawn with seed 0 (the same name always gives the same backbone) unless
    ``weights`` is a ``state_dict`` file (read with ``weights_only=True``). Nothing is downloaded.

    >>> type(backbone_from_name("resnet18")).__name__
    'ResNet'
    """
    key = name.lower().replace("_", "-")
    if key in ("efficientnet-lite0", "default"):
        from xai_bridge.models import default_model

        model = default_model()
        if weights is not None:
            model.load_state_dict(_read_state(weights))
        return model.eval()
    import torchvision

    tv_name = name.lower().replace("-", "_")
    known = set(torchvision.models.list_models(module=torchvision.models))
    if tv_name not in known:
        examples = ", ".join(n for n in ("resnet18", "resnet50", "vgg16", "convnext_tiny") if n in known)
        raise InvalidArgumentError(
            f"backbone: {name!r} is not known; expected efficientnet-lite0 or a torchvision classification model name "
            f"({examples}, …)"
        )
    state = _read_state(weights) if weights is not None else None
    num_classes = 1000
    if state is not None:
        heads = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
        if heads:
            num_classes = int(heads[-1].shape[0])
    with torch.random.fork_rng(devices=[]):  # random weights are seeded: one name, one backbone (reloadable)
        torch.manual_seed(0)
        model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidArgumentError(
                f"backbone weights: {weights} do not fit {tv_name}: {str(exc).splitlines()[0]}"
            ) from exc
    return model.eval()


def _read_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"backbone weights: no file at {str(path)!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"backbone weights: {str(path)!r} does not hold a state_dict")
    return state


def backbone_fingerprint(backbone: nn.Module) -> str:
    """A short hash of the backbone's architecture and every weight and buffer (what the parts were learnt on).

    >>> import torchvision
    >>> len(backbone_fingerprint(torchvision.models.resnet18()))
    16
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{type(backbone).__module__}.{type(backbone).__name__}".encode())
    for key, value in sorted(backbone.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# -- save and load --------------------------------------------------------------------------------
def head_state(model: DPNet) -> dict[str, torch.Tensor]:
    """The trained tensors only (``parts``, ``classifier``, ``global_head``), on the CPU."""
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(("backbone.", "input_normalize."))
    }


def save_dpnet(model: DPNet, path: str | os.PathLike[str], history: Sequence[dict[str, Any]] = ()) -> Path:
    """Write a DP-Net's heads and config (backbone name and fingerprint, layer, P, q, C, class names).

    The backbone's weights are not included: :func:`load_dpnet` rebuilds it by name (or takes
    it as an argument) and checks its fingerprint. Readable with ``torch.load(..., weights_only=True)``.

    >>> import tempfile, torchvision
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=3, class_names=["a", "b", "c"])
    >>> path = save_dpnet(net, tempfile.mkdtemp() + "/dpnet.pt")
    >>> again = load_dpnet(path, net.backbone)
    >>> torch.equal(again.parts, net.parts), again.class_names
    (True, ['a', 'b', 'c'])
    """
    if not isinstance(model, DPNet):
        raise InvalidTypeError(f"model: expected a DPNet, got {type(model).__name__}")
    config = {**model.config, "backbone_fingerprint": backbone_fingerprint(model.backbone)}
    return atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "state": head_state(model),
            "history": [dict(h) for h in history],
        },
        path,
    )


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a saved DP-Net or training checkpoint with ``weights_only=True`` and check its format."""
    return load_checkpoint(path, format=CHECKPOINT_FORMAT, what="saved DP-Net", map_location=map_location)


def load_dpnet(
    path: str | os.PathLike[str],
    backbone: nn.Module | None = None,
    *,
    backbone_weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    check_backbone: bool = True,
    map_location: Any = "cpu",
) -> DPNet:
    """Rebuild a saved DP-Net (``dpnet.pt`` or a training ``last.pt``); eval mode.

    Args:
        backbone: the frozen backbone it was trained on; ``None`` rebuilds it from the recorded
            name (``backbone_weights`` for a torchvision model's ``state_dict`` file).
        num_classes, class_names: what the caller expects; a mismatch with the file is an error
            (nothing is silently cut or padded).
        check_backbone: compare the backbone's fingerprint with the recorded one; the parts only
            mean something on the features they were learnt on (a fine-tuned or different backbone
            is refused).
    """
    state = read_checkpoint(path, map_location=map_location)
    cfg = state["config"]
    saved_c = int(cfg["num_classes"])
    if num_classes is not None and positive_int(num_classes, "num_classes", "classes") != saved_c:
        raise InvalidArgumentError(
            f"num_classes: {str(path)!r} holds a DP-Net with C={saved_c} classes, got num_classes={num_classes}"
        )
    if class_names is not None and len(class_names) != saved_c:
        raise InvalidArgumentError(
            f"class_names: {str(path)!r} holds a DP-Net with C={saved_c} classes, got {len(class_names)} names"
        )
    if backbone is None:
        backbone = backbone_from_name(cfg["backbone"], weights=backbone_weights)
    if (
        check_backbone
        and cfg.get("backbone_fingerprint")
        and backbone_fingerprint(backbone) != cfg["backbone_fingerprint"]
    ):
        raise InvalidArgumentError(
            f"backbone: differs from the one the DP-Net in {str(path)!r} was trained on "
            f"({cfg['backbone']}, layer {cfg['layer']}); its parts only make sense on the same frozen weights. "
            "Pass that backbone (or --backbone-weights), or check_backbone=False."
        )
    model = DPNet(
        backbone,
        layer=cfg["layer"],
        parts_per_class=int(cfg["parts_per_class"]),
        num_classes=saved_c,
        class_names=list(class_names) if class_names is not None else cfg.get("class_names"),
        normalize=cfg.get("normalize", "none"),
        backbone_name=cfg["backbone"],
        feature_dim=int(cfg["feature_dim"]),
    )
    model.meta = {k: v for k, v in cfg.items() if k not in model.config and k != "backbone_fingerprint"}
    model.load_state_dict({**model.state_dict(), **state["state"]})
    return model.eval()
