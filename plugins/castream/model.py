"""CA-Stream: a cross-attention stream that replaces global average pooling (thesis ch. 3).

A frozen backbone ``f = g ∘ GAP ∘ f_L ∘ … ∘ f_0`` is cut at its stages. A
learnable CLS token ``q_0 ∈ R^{d_0}`` (initialised from N(1, 1)) travels along a
stream beside it; at every tapped stage ``ℓ`` with features
``F_ℓ ∈ R^{p_ℓ×d_ℓ}`` (``p_ℓ = h_ℓ·w_ℓ`` positions) one cross-attention block
computes (thesis eqs. 3.1, 3.3, 3.7)::

    a_ℓ     = softmax(F_ℓ q_ℓ / √d_ℓ)        attention over the p_ℓ positions
    CA_ℓ    = F_ℓᵀ a_ℓ                        attention-weighted average of the features
    q_{ℓ+1} = W_ℓ CA_ℓ                        linear map d_ℓ → d_{ℓ+1}, no bias

with no Q/K/V projections, no residual and no normalisation. The last token
``q_{L+1}`` (``d_{L+1} = d_L``) replaces GAP in front of the frozen classifier
``g``. With uniform attention (``q_L = 0``) and ``W_L = I`` the CA model *is*
the GAP model (``init="gap"``).

:class:`CAModel` is an ordinary ``nn.Module`` returning logits; it keeps the
backbone as the attribute ``backbone``, so the GAP model's CAM target layer
(e.g. ``layer4.1`` of a ResNet) is the CA model's ``backbone.layer4.1`` and
every explainer and metric runs on it unchanged.

Example::

    >>> import torch, torchvision
    >>> from xai_bridge_builtins.castream.model import CAModel
    >>> net = torchvision.models.resnet18(num_classes=10).eval()
    >>> ca = CAModel(net).eval()
    >>> ca(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 10])
    >>> [tuple(a.shape) for a in ca.run(torch.rand(1, 3, 64, 64)).attention]
    [(1, 1, 16, 16), (1, 1, 16, 16), (1, 1, 8, 8), (1, 1, 4, 4), (1, 1, 2, 2)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError

#: The names of the stages a stream may start at (``start_stage``), as in the thesis' S0…S4.
STAGE_LABELS = ("S0", "S1", "S2", "S3", "S4")
#: How a class-specific model picks the token at inference (the thesis uses the GAP prediction).
CLASS_QUERIES = ("gap_prediction", "per_class")
#: Initialisations of the stream: the thesis' (q_0 ~ N(1,1), PyTorch's default Linear init),
#: or one that makes the CA model start equal to the GAP model.
INITS = ("thesis", "gap")


# -- how a backbone is cut into stages ------------------------------------------------------------
class StageAdapter:
    """How to run one family of backbones stage by stage, and how to classify a pooled vector.

    Subclass it to teach CA-Stream a new architecture: override :meth:`stages`
    (the tapped feature maps ``F_0 … F_L``, each ``B×d×h×w``) and :meth:`classify`
    (the frozen classifier ``g`` applied to a ``N×d_L`` vector, i.e. to what GAP
    would have produced). Adapters are stateless: the backbone is passed in.
    """

    #: the adapter's name, stored in checkpoints
    name: str = "custom"
    #: dotted names (inside the backbone) of the modules whose outputs are tapped, S0 first
    taps: tuple[str, ...] = ()

    def stages(self, backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def classify(self, backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ResNetStages(StageAdapter):
    """torchvision ResNet (18/34/50/101/152, ResNeXt, Wide ResNet).

    Taps (thesis Fig. 3.2): S0 the stem after max pooling (64-d), S1…S4 ``layer1``…``layer4``
    (ResNet-18: 64, 128, 256, 512; ResNet-50: 256, 512, 1024, 2048). ``g`` is ``fc``.
    """

    name = "resnet"
    taps = ("maxpool", "layer1", "layer2", "layer3", "layer4")

    def stages(self, backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        b = backbone
        f0 = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        f1 = b.layer1(f0)
        f2 = b.layer2(f1)
        f3 = b.layer3(f2)
        return [f0, f1, f2, f3, b.layer4(f3)]

    def classify(self, backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        return backbone.fc(pooled)


class ConvNeXtStages(StageAdapter):
    """torchvision ConvNeXt (tiny/small/base/large).

    Taps: S0 the patchify stem ``features.0`` (ConvNeXt-T: 96-d, stride 4), S1…S4 the four
    stages ``features.1/3/5/7`` (96, 192, 384, 768); the downsampling layers
    ``features.2/4/6`` are not tapped. ``g`` is ``classifier`` (LayerNorm2d, flatten, Linear),
    fed the token as a ``B×d×1×1`` map exactly as it is fed GAP's output.
    """

    name = "convnext"
    taps = ("features.0", "features.1", "features.3", "features.5", "features.7")
    _tapped = (0, 1, 3, 5, 7)

    def stages(self, backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(backbone.features):
            x = layer(x)
            if i in self._tapped:
                out.append(x)
        return out

    def classify(self, backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        return backbone.classifier(pooled[:, :, None, None])


class EfficientNetLite0Stages(StageAdapter):
    """:class:`xai_bridge.models.EfficientNetLite0` (the embedded default model).

    Taps: the last module at each spatial resolution, mirroring ResNet's five stages —
    S0 ``blocks.0`` (16-d, 112² at 224²), S1 ``blocks.2`` (24-d, 56²), S2 ``blocks.4``
    (40-d, 28²), S3 ``blocks.10`` (112-d, 14²), S4 ``head`` (1280-d, 7²: the CAM target
    layer). ``g`` is ``dropout`` (identity in eval) then ``classifier``.
    """

    name = "efficientnet-lite0"
    taps = ("blocks.0", "blocks.2", "blocks.4", "blocks.10", "head")
    _tapped_blocks = (0, 2, 4, 10)

    def stages(self, backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        x = backbone.stem(backbone.normalize(x))
        out = []
        for i, (block, rate) in enumerate(zip(backbone.blocks, backbone._drop_rates, strict=False)):
            x = block(x, drop_connect_rate=rate or None)
            if i in self._tapped_blocks:
                out.append(x)
        out.append(backbone.head(x))
        return out

    def classify(self, backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        return backbone.classifier(backbone.dropout(pooled))


class HookedStages(StageAdapter):
    """Any CNN: tap the outputs of named modules with forward hooks during ``backbone(x)``.

    Args:
        taps: dotted module names, shallow to deep; the last one's output is what GAP pools.
        classifier: dotted name of the module applied to the pooled ``B×d`` vector.

    The backbone's own forward runs in full (its GAP and classifier on top are
    computed and discarded, a negligible cost); each tapped module must run once.
    """

    name = "hooked"

    def __init__(self, taps: Sequence[str], classifier: str) -> None:
        if isinstance(taps, str) or not taps:
            raise InvalidArgumentError(
                "taps: expected a non-empty sequence of dotted module names, e.g. ['layer1', 'layer2']"
            )
        if not isinstance(classifier, str) or not classifier:
            raise InvalidArgumentError("classifier: expected the dotted name of the classifier module, e.g. 'fc'")
        self.taps = tuple(taps)
        self.classifier = classifier

    def stages(self, backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        from xai_bridge.layers import get_submodule

        captured: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(self.taps))}
        handles = []
        for i, name in enumerate(self.taps):
            module = get_submodule(backbone, name)
            handles.append(module.register_forward_hook(lambda _m, _i, out, i=i: captured[i].append(out)))
        try:
            backbone(x)
        finally:
            for handle in handles:
                handle.remove()
        for i, outs in captured.items():
            if len(outs) != 1:
                raise InvalidArgumentError(
                    f"taps: module {self.taps[i]!r} ran {len(outs)} times in the forward pass; tap a module that "
                    "runs exactly once"
                )
        return [captured[i][0] for i in range(len(self.taps))]

    def classify(self, backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        from xai_bridge.layers import get_submodule

        return get_submodule(backbone, self.classifier)(pooled)


def stage_adapter(
    backbone: nn.Module, arch: str | None = None, taps: Sequence[str] | None = None, classifier: str | None = None
) -> StageAdapter:
    """The :class:`StageAdapter` for ``backbone``: given by ``arch``, by ``taps``, or recognised.

    ``arch`` accepts ``"resnet"`` (and ``resnet18`` … names), ``"convnext"`` (and
    ``convnext_tiny`` …), ``"efficientnet-lite0"``, or a :class:`StageAdapter`.
    """
    if isinstance(arch, StageAdapter):
        return arch
    if taps is not None:
        return HookedStages(taps, classifier or "fc")
    if arch is not None:
        if not isinstance(arch, str):
            raise InvalidTypeError(
                f"arch: expected a name such as 'resnet50' or a StageAdapter, got {type(arch).__name__}"
            )
        key = arch.lower().replace("_", "-")
        if key.startswith(("resnet", "resnext", "wide-resnet")):
            return ResNetStages()
        if key.startswith("convnext"):
            return ConvNeXtStages()
        if key in ("efficientnet-lite0", "efficientnetlite0", "default"):
            return EfficientNetLite0Stages()
        raise InvalidArgumentError(
            f"arch: {arch!r} is not an architecture CA-Stream knows; expected resnet*, convnext*, efficientnet-lite0, "
            "or pass taps=[...] and classifier='...' for any other CNN"
        )
    from xai_bridge.models import EfficientNetLite0

    if isinstance(backbone, EfficientNetLite0):
        return EfficientNetLite0Stages()
    try:
        from torchvision import models as tvm
    except ImportError:  # pragma: no cover - torchvision is a dependency
        tvm = None
    if tvm is not None and isinstance(backbone, tvm.ResNet):
        return ResNetStages()
    if tvm is not None and isinstance(backbone, tvm.ConvNeXt):
        return ConvNeXtStages()
    raise InvalidArgumentError(
        f"backbone: CA-Stream does not know how to cut a {type(backbone).__name__} into stages; pass arch='resnet'|"
        "'convnext'|'efficientnet-lite0', or taps=[dotted module names, shallow to deep] and classifier='<module name>'"
    )


# -- the stream ----------------------------------------------------------------------------------
class CrossAttentionBlock(nn.Module):
    """One block CA-ℓ: cross attention between the token(s) and ``F_ℓ``, then ``W_ℓ``.

    ``forward(q, F)`` takes tokens ``q`` (``B×K×d``: K queries per image) and a
    feature map ``F`` (``B×d×h×w``) and returns ``(W_ℓ CA_ℓ, a)`` with ``a`` of
    shape ``B×K×p``. With ``kv_projection=True`` (the PROJ→CA ablation, eq. 3.8)
    ``CA_ℓ = (F W^V)ᵀ softmax(F W^K q / √d)``; it is computed as
    ``W^{V⊤}(Fᵀ softmax(F (W^K q)/√d))`` — the same numbers by associativity, at
    ``O(d²)`` instead of ``O(p·d²)``.
    """

    def __init__(self, in_features: int, out_features: int, *, kv_projection: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.key = nn.Linear(in_features, in_features, bias=False) if kv_projection else None
        self.value = nn.Linear(in_features, in_features, bias=False) if kv_projection else None
        self.projection = nn.Linear(in_features, out_features, bias=False)

    def attention(self, q: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``a = softmax(F q / √d)`` over positions: ``B×K×p``."""
        tokens = features.flatten(2)  # B×d×p
        if self.key is not None:
            q = self.key(q)
        scores = torch.einsum("bkd,bdp->bkp", q, tokens) / math.sqrt(self.in_features)
        return scores.softmax(dim=-1)

    def forward(self, q: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.ndim != 4 or features.shape[1] != self.in_features:
            raise InvalidArgumentError(
                f"features: expected B×{self.in_features}×h×w, got shape {tuple(features.shape)}"
            )
        a = self.attention(q, features)
        pooled = torch.einsum("bkp,bdp->bkd", a, features.flatten(2))  # CA = Fᵀ a
        if self.value is not None:
            pooled = self.value(pooled)
        return self.projection(pooled), a

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}, kv_projection={self.key is not None}"


class CAStream(nn.Module):
    """The trainable part: CLS token(s) and one :class:`CrossAttentionBlock` per tapped stage.

    Args:
        widths: ``d_ℓ`` of the stages the stream reads (from its start stage to the last).
        out_features: width of the final token (the classifier's input, ``d_L``).
        kv_projection: the PROJ→CA variant (eq. 3.8).
        num_queries: 1 (class agnostic) or the number of classes (class specific).
        init: ``"thesis"`` (q_0 ~ N(1,1), PyTorch's default Linear init) or ``"gap"``
            (``W_{L-1} = 0`` so the last attention is uniform, ``W_L = I``, K/V = I, q_0 ~ N(1,1):
            the CA model starts equal to the GAP model).

    >>> stream = CAStream([4, 8], out_features=8)
    >>> token, attn = stream([torch.rand(2, 4, 5, 5), torch.rand(2, 8, 3, 3)], stream.cls_token.expand(2, 1, 4))
    >>> token.shape, [tuple(a.shape) for a in attn]
    (torch.Size([2, 1, 8]), [(2, 1, 25), (2, 1, 9)])
    """

    def __init__(
        self,
        widths: Sequence[int],
        out_features: int,
        *,
        kv_projection: bool = False,
        num_queries: int = 1,
        init: str = "thesis",
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise InvalidArgumentError(f"widths: expected positive stage widths, got {widths}")
        if num_queries < 1:
            raise InvalidArgumentError(f"num_queries: expected ≥ 1, got {num_queries}")
        self.widths = tuple(widths)
        dims = [*widths, int(out_features)]
        self.cls_token = nn.Parameter(torch.empty(num_queries, widths[0]))
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(dims[i], dims[i + 1], kv_projection=kv_projection) for i in range(len(widths))
        )
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "thesis") -> None:
        """(Re)initialise: see the class docstring for ``init``."""
        if init not in INITS:
            raise InvalidArgumentError(f"init: expected one of {INITS}, got {init!r}")
        with torch.no_grad():
            nn.init.normal_(self.cls_token, mean=1.0, std=1.0)
            for block in self.blocks:
                block.projection.reset_parameters()
                for lin in (block.key, block.value):
                    if lin is not None:
                        lin.reset_parameters()
            if init == "gap":
                last = self.blocks[-1]
                if last.in_features != last.out_features:
                    raise InvalidArgumentError(
                        "init='gap' needs the last stage width to equal the classifier's input width"
                    )
                nn.init.eye_(last.projection.weight)
                for block in self.blocks:
                    for lin in (block.key, block.value):
                        if lin is not None:
                            nn.init.eye_(lin.weight)
                if len(self.blocks) > 1:
                    self.blocks[-2].projection.weight.zero_()
                else:
                    self.cls_token.zero_()

    def forward(
        self, features: Sequence[torch.Tensor], queries: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the stream: ``features`` F_s…F_L, ``queries`` ``B×K×d_s`` → (token ``B×K×d_L``, attentions)."""
        if len(features) != len(self.blocks):
            raise InvalidArgumentError(
                f"features: the stream has {len(self.blocks)} blocks, got {len(features)} feature maps"
            )
        q, attention = queries, []
        for block, f in zip(self.blocks, features, strict=False):
            q, a = block(q, f)
            attention.append(a)
        return q, attention


# -- the wrapped model ---------------------------------------------------------------------------
@dataclass
class CAOutput:
    """Everything one pass of :class:`CAModel` computes.

    Attributes:
        logits: ``B×C`` logits of the CA model.
        attention: one ``B×K×h×w`` map per stream block (K = 1 class agnostic; the classes in
            ``per_class`` mode), the last one being the pooling weights over ``F_L``.
        gap_logits: ``B×C`` logits of the GAP model from the same features (when computed).
        query_class: ``(B,)`` the class whose token ran the stream (class-specific, one token per image).
    """

    logits: torch.Tensor
    attention: list[torch.Tensor]
    gap_logits: torch.Tensor | None = None
    query_class: torch.Tensor | None = None


def _parse_stage(start_stage: int | str, n: int) -> int:
    if isinstance(start_stage, str):
        label = start_stage.strip().upper()
        if label not in STAGE_LABELS[:n]:
            raise InvalidArgumentError(
                f"start_stage: expected one of {STAGE_LABELS[:n]} or 0..{n - 1}, got {start_stage!r}"
            )
        return STAGE_LABELS.index(label)
    if isinstance(start_stage, bool) or not isinstance(start_stage, int):
        raise InvalidTypeError(
            f"start_stage: expected an int 0..{n - 1} or a label 'S0'…, got {type(start_stage).__name__}"
        )
    if not 0 <= start_stage < n:
        raise InvalidArgumentError(f"start_stage: expected 0..{n - 1} (S0…S{n - 1}), got {start_stage}")
    return start_stage


class CAModel(nn.Module):
    """A frozen backbone whose global average pooling is replaced by a CA-Stream.

    Args:
        backbone: the GAP model (torchvision ResNet or ConvNeXt, the default
            EfficientNet-Lite0, or any CNN with ``taps``). It is kept as ``self.backbone``,
            always in eval mode; its parameters are never changed here.
        arch: force the stage adapter (``"resnet"``, ``"convnext"``, ``"efficientnet-lite0"``
            or a :class:`StageAdapter`); recognised from the backbone when omitted.
        start_stage: first stage the stream reads, 0…4 or ``"S0"``…``"S4"`` (thesis default S0).
        kv_projection: PROJ→CA blocks (eq. 3.8).
        class_specific: one CLS token ``q_0^c`` per class instead of one shared token.
        num_classes: checked against the classifier's output when given.
        class_query: how a class-specific model picks its token when ``query_class`` is not
            given: ``"gap_prediction"`` (the thesis: the class the GAP model predicts; one stream
            pass) or ``"per_class"`` (logit ``c`` computed from the stream run with ``q_0^c``;
            the stream and classifier run C times per image, batched).
        init: ``"thesis"`` or ``"gap"`` (start equal to the GAP model), see :class:`CAStream`.
        taps, classifier: for any other CNN, see :class:`HookedStages`.
        probe_size: side of the zero image used once to read the stage widths.

    In training mode (``model.train()``) only the stream is in training mode and the
    backbone's stages run under ``torch.no_grad`` (they are frozen); in eval mode the
    whole graph is differentiable, so CAM gradients reach the backbone's layers
    through the attention pooling.

    >>> import torch, torchvision
    >>> gap = torchvision.models.resnet18(num_classes=10).eval()
    >>> ca = CAModel(gap, init="gap").eval()        # uniform attention, W_L = I
    >>> x = torch.rand(2, 3, 64, 64)
    >>> torch.allclose(ca(x), gap(x), atol=1e-5)
    True
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        arch: str | StageAdapter | None = None,
        start_stage: int | str = 0,
        kv_projection: bool = False,
        class_specific: bool = False,
        num_classes: int | None = None,
        class_query: str = "gap_prediction",
        init: str = "thesis",
        taps: Sequence[str] | None = None,
        classifier: str | None = None,
        probe_size: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise InvalidTypeError(f"backbone: expected a torch.nn.Module classifier, got {type(backbone).__name__}")
        if isinstance(backbone, CAModel):
            raise InvalidArgumentError("backbone: is already a CAModel; pass its .backbone to build another stream")
        if class_query not in CLASS_QUERIES:
            raise InvalidArgumentError(f"class_query: expected one of {CLASS_QUERIES}, got {class_query!r}")
        self.backbone = backbone.eval()
        self.adapter = stage_adapter(backbone, arch, taps, classifier)
        widths, detected = self._probe(probe_size)
        if num_classes is not None and int(num_classes) != detected:
            raise InvalidArgumentError(
                f"num_classes: the backbone's classifier has {detected} outputs, got num_classes={num_classes}"
            )
        self.num_classes = detected
        self.start_stage = _parse_stage(start_stage, len(widths))
        self.stage_widths = tuple(widths)
        self.class_specific = bool(class_specific)
        self.class_query = class_query
        self.stream = CAStream(
            widths[self.start_stage :],
            out_features=widths[-1],
            kv_projection=kv_projection,
            num_queries=detected if class_specific else 1,
            init=init,
        )
        device = next(iter(backbone.parameters()), torch.empty(0)).device
        self.stream.to(device)

    # -- construction helpers -------------------------------------------------------------------
    def _probe(self, size: int) -> tuple[list[int], int]:
        ref = next(iter(self.backbone.parameters()), None)
        kwargs = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        with torch.no_grad():
            feats = self.adapter.stages(self.backbone, torch.zeros(1, 3, size, size, **kwargs))
            for name, f in zip(self.adapter.taps, feats, strict=False):
                if f.ndim != 4:
                    raise InvalidArgumentError(
                        f"taps: the output of {name!r} has shape {tuple(f.shape)}; CA-Stream needs B×d×h×w feature maps"
                    )
            logits = self.adapter.classify(self.backbone, feats[-1].mean((2, 3)))
        if len(feats) > len(STAGE_LABELS):
            raise InvalidArgumentError(f"taps: at most {len(STAGE_LABELS)} stages, got {len(feats)}")
        return [int(f.shape[1]) for f in feats], int(logits.shape[-1])

    @property
    def taps(self) -> tuple[str, ...]:
        """Dotted names (inside ``backbone``) of the stages the stream reads, S_start first."""
        return tuple(self.adapter.taps[self.start_stage :])

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this model's stream around the same backbone (plain values, for checkpoints)."""
        return {
            "arch": self.adapter.name,
            "taps": list(self.adapter.taps),
            "classifier": getattr(self.adapter, "classifier", None),
            "stage_widths": list(self.stage_widths),
            "start_stage": self.start_stage,
            "kv_projection": self.stream.blocks[0].key is not None,
            "class_specific": self.class_specific,
            "class_query": self.class_query,
            "num_classes": self.num_classes,
        }

    def stream_parameters(self) -> list[nn.Parameter]:
        """The only trainable parameters: CLS token(s) and the blocks' projections."""
        return list(self.stream.parameters())

    def train(self, mode: bool = True) -> CAModel:
        """Set the stream's mode; the frozen backbone stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        self.backbone.eval()
        return self

    # -- the forward pass -----------------------------------------------------------------------
    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped backbone features ``F_0 … F_L`` (all stages, whatever ``start_stage``)."""
        if self.training:  # training the stream: the backbone is frozen, keep no graph through it
            with torch.no_grad():
                return self.adapter.stages(self.backbone, x)
        return self.adapter.stages(self.backbone, x)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The frozen classifier ``g`` on ``N×d_L`` pooled vectors."""
        return self.adapter.classify(self.backbone, pooled)

    def _queries(
        self, batch: int, query_class: Any, gap_logits: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.stream.cls_token
        if not self.class_specific:
            if query_class is not None:
                raise InvalidArgumentError(
                    "query_class: only a class-specific CAModel (class_specific=True) takes a query class"
                )
            return tokens[None].expand(batch, 1, tokens.shape[-1]), None
        if query_class is None:
            if self.class_query == "per_class":
                return tokens[None].expand(batch, tokens.shape[0], tokens.shape[-1]), None
            query_class = gap_logits.detach().argmax(-1)
        if not isinstance(query_class, torch.Tensor):
            query_class = torch.as_tensor(query_class, device=tokens.device)
        query_class = query_class.to(device=tokens.device, dtype=torch.long).reshape(-1)
        if query_class.numel() == 1 and batch > 1:
            query_class = query_class.expand(batch)
        if query_class.shape[0] != batch:
            raise InvalidArgumentError(
                f"query_class: expected one class per image ({batch}), got {query_class.shape[0]}"
            )
        if int(query_class.min()) < 0 or int(query_class.max()) >= self.num_classes:
            raise InvalidArgumentError(f"query_class: classes must be in 0..{self.num_classes - 1}")
        return tokens[query_class][:, None, :], query_class

    def run(self, x: torch.Tensor, query_class: Any = None, *, with_gap: bool = False) -> CAOutput:
        """One pass returning logits, every block's attention and (optionally) the GAP logits.

        ``query_class`` (class-specific models only): the class whose token runs the
        stream for each image (training uses the label).
        """
        features = self.stage_features(x)
        last = features[-1]
        need_gap = with_gap or (self.class_specific and query_class is None and self.class_query == "gap_prediction")
        gap_logits = self.classify(last.mean((2, 3))) if need_gap else None
        queries, chosen = self._queries(x.shape[0], query_class, gap_logits)
        tokens, attention = self.stream(features[self.start_stage :], queries)
        b, k, d = tokens.shape
        logits = self.classify(tokens.reshape(b * k, d)).reshape(b, k, -1)
        logits = logits[:, 0] if k == 1 else logits.diagonal(dim1=1, dim2=2)  # per_class: y_c from q_0^c
        maps = [
            a.reshape(b, a.shape[1], *f.shape[-2:])
            for a, f in zip(attention, features[self.start_stage :], strict=False)
        ]
        return CAOutput(logits=logits, attention=maps, gap_logits=gap_logits, query_class=chosen)

    def forward(self, x: torch.Tensor, query_class: Any = None) -> torch.Tensor:
        return self.run(x, query_class).logits

    def extra_repr(self) -> str:
        start = STAGE_LABELS[self.start_stage]
        last = STAGE_LABELS[len(self.stage_widths) - 1]
        return (
            f"arch={self.adapter.name!r}, stream={start}-{last}, widths={self.stage_widths[self.start_stage :]}, "
            f"class_specific={self.class_specific}"
        )


def castream_config_matches(model: CAModel, config: dict[str, Any]) -> list[str]:
    """The keys of a saved ``config`` that differ from ``model.config`` (empty when they match)."""
    mine = model.config
    return sorted(k for k in set(mine) | set(config) if mine.get(k) != config.get(k))
