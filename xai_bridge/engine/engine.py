"""The perturbation engine: every masked, deleted or inserted image of a request set
goes through the model in large batches on the model's device.

The toolkits loop over images and over steps around each forward pass. Here the
(image, step) pairs of all requests are laid out once, perturbed images are built
chunk by chunk with tensor operations (``where(rank < t, replacement, image)``),
and each chunk is one forward pass under ``torch.inference_mode``. Chunks are as
large as the memory budget allows; on CUDA an out-of-memory error halves the chunk
and retries. Requests walking the same perturbation sequence share their forward
passes, and decision flips evaluate only the images that have not flipped yet.

>>> import torch, xai_bridge as xb
>>> from xai_bridge.engine import Engine, Curve, Flip
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
>>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
>>> out = Engine(model, progress=False).run(images, maps, targets=None, requests=[Curve(step=8), Flip(step=8)])
>>> out[Curve(step=8)].probs.shape            # 2 images × (64 / 8 + 1) points
torch.Size([2, 9])
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..models import model_device
from ..protocols import Replacement
from ..targets import check_images, check_model_ready
from .forward import ForwardPass
from .maps import check_maps, make_replacement, normalize_maps, num_units, rank_units, step_counts
from .requests import Curve, CurveResult, Flip, FlipResult, Masked, Ranked, RankedResult, Request, Scores

GiB = 1024**3
# (id(model), device, sample shape, compile, precision, budget) → (weakref to the model, fastest chunk)
_TUNED: dict[tuple[Any, ...], tuple[Any, int]] = {}


def ladder(cap: int, rungs: int = 4, repeats: int = 2) -> list[int]:
    """The chunk sizes tried while measuring: ``cap`` and its halves, each ``repeats`` times.

    >>> ladder(9)
    [9, 9, 4, 4, 2, 2, 1, 1]
    >>> ladder(64, rungs=3, repeats=1)
    [64, 32, 16]
    """
    sizes: list[int] = []
    size = cap
    while size >= 1 and len(sizes) < rungs:
        if size not in sizes:
            sizes.append(size)
        size //= 2
    return [s for s in sizes for _ in range(repeats)]


def parse_budget(budget: int | float | str | None) -> int | None:
    """Bytes from ``2_000_000_000``, ``"2GiB"``, ``"512MB"`` or ``None`` (automatic)."""
    if budget is None or isinstance(budget, (int, float)):
        return None if budget is None else int(budget)
    text = budget.strip().lower().replace(" ", "")
    for suffix, scale in (("gib", GiB), ("mib", 1024**2), ("gb", 1e9), ("mb", 1e6), ("kb", 1e3), ("b", 1)):
        if text.endswith(suffix):
            try:
                return int(float(text[: -len(suffix)]) * scale)
            except ValueError:
                break
    raise ValueError(f"budget: expected bytes (int) or a size like '2GiB' / '512MB', got {budget!r}")


class Engine:
    """Batched, device-resident evaluation of perturbed images for one model.

    Args:
        model: a classifier returning logits, in eval mode (it is never modified).
        budget: memory for one chunk of perturbed images and their activations
            (bytes or ``"2GiB"``); default: ``$XAI_BRIDGE_ENGINE_BUDGET`` or 1 GiB on CPU (larger
            batches are no faster on a CPU), half the free memory on CUDA.
            Ignored when ``batch_size`` is given.
        batch_size: fixed chunk size (images per forward pass).
        autocast: shorthand for ``precision="float16"`` on CUDA (ignored on other devices).
        compile: graph mode of the forward passes: ``"auto"`` (default: the faster of eager and
            freeze, decided on the first batch and kept only if it agrees with eager within 1e-5),
            ``"eager"``, ``"freeze"`` (channels-last, traced and frozen) or ``"inductor"``
            (``torch.compile``); see :mod:`xai_bridge.engine.forward`.
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: autocast for the
            forward passes (what the device supports); scores stay float32.
        tune: measure the chunk size: the first full chunks try a short ladder of sizes within
            the budget (the budget's size, then halves) and the fastest is kept for the rest of
            the process (per model, input shape, graph mode and precision). Ignored with ``batch_size``.
        progress: show a progress bar (default: when a run has over 2,000 forward samples).

    ``describe()`` says how the forward passes were computed; :func:`~xai_bridge.evaluate`
    records it in :attr:`Results.forward <xai_bridge.results.Results.forward>`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        budget: int | float | str | None = None,
        batch_size: int | None = None,
        autocast: bool = False,
        compile: str = "auto",
        precision: str | None = None,
        tune: bool = True,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.model = model
        self.device = model_device(model)
        self.budget = parse_budget(budget)
        self.batch_size = batch_size
        self.autocast = autocast
        if precision is None:
            precision = "float16" if autocast and self.device.type == "cuda" else "float32"
        self.forward_pass = ForwardPass(model, compile=compile, precision=precision, device=self.device)
        self.tune = tune
        self.progress = progress
        self._bar: Any = None
        self._ladder: list[int] = []
        self._timings: dict[int, float] = {}
        self.forward_samples = 0  # images that went through the model (for benchmarks)
        #: wall time inside the model's forward passes (on CUDA: the time to launch them, unless synchronised)
        self.forward_seconds = 0.0

    def describe(self) -> dict[str, Any]:
        """How the forward passes are computed: graph mode asked for and used, precision, chunk size.

        >>> Engine(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()).describe()
        {'compile': 'auto', 'graph': 'eager', 'precision': 'float32', 'chunk': None}
        """
        chunk = self.batch_size if self.batch_size is not None else getattr(self, "_chunk", None)
        return {**self.forward_pass.describe(), "chunk": chunk}

    # -- forward passes -------------------------------------------------------------------
    def _default_budget(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * 0.5)
        return parse_budget(os.environ.get("XAI_BRIDGE_ENGINE_BUDGET")) or GiB

    def chunk_size(self, sample: torch.Tensor) -> int:
        """Images per forward pass: ``batch_size``, or what fits the budget.

        The cost of one image is measured once by a probe forward pass: the bytes of
        every module output (an upper bound on live activations) plus the perturbed
        input, its mask and its replacement.
        """
        if self.batch_size is not None:
            return self.batch_size
        if getattr(self, "_chunk", None) is None or getattr(self, "_chunk_shape", None) != tuple(sample.shape[1:]):
            total = [0]

            def count(_m: nn.Module, _i: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor):
                    total[0] += out.numel() * out.element_size()

            handles = [m.register_forward_hook(count) for m in self.model.modules()]
            try:
                with torch.inference_mode():
                    self.model(sample[:1].to(self.device))
            finally:
                for h in handles:
                    h.remove()
            per_image = total[0] + 4 * sample[:1].numel() * sample.element_size()
            budget = self.budget if self.budget is not None else self._default_budget()
            self._chunk = max(1, min(1024, budget // max(per_image, 1)))
            self._chunk_shape = tuple(sample.shape[1:])
            self._ladder, self._timings = [], {}
            if self.tune and self._chunk > 1:
                key = self._tune_key(sample)
                hit = _TUNED.get(key)
                if hit is not None and hit[0]() is self.model and hit[1] <= self._chunk:
                    self._chunk = hit[1]
                else:
                    self._ladder = ladder(self._chunk)
        return self._chunk

    def _tune_key(self, sample: torch.Tensor) -> tuple[Any, ...]:
        fp = self.forward_pass
        return (id(self.model), str(self.device), tuple(sample.shape[1:]), fp.compile, fp.precision, self.budget)

    def _forward(self, x: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """Logits of ``x``; a graph (one per input shape) gets a short batch padded to ``pad_to``."""
        n = x.shape[0]
        if pad_to is not None and n < pad_to and self.forward_pass.mode != "eager":
            x = torch.cat([x, x[-1:].expand(pad_to - n, *x.shape[1:])])
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.forward_pass(x)
        self.forward_seconds += time.perf_counter() - start
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ValueError(f"model: expected logits of shape B×K, got {getattr(out, 'shape', type(out).__name__)}")
        self.forward_samples += n
        if self._bar is not None:
            self._bar.update(n)
        return out[:n]

    def _timed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """A ladder step: the forward pass, timed per image; the ladder ends with the fastest size kept."""
        size = x.shape[0]
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        out = self._forward(x)
        sync()
        per_image = (time.perf_counter() - start) / size
        self._timings[size] = min(self._timings.get(size, float("inf")), per_image)
        self._ladder.remove(size)
        if not self._ladder:
            self._chunk = min(self._timings, key=lambda k: self._timings[k])
            _TUNED[self._tune_key(x)] = (weakref.ref(self.model), self._chunk)
        return out

    def forward_chunks(self, n: int, build: Any, sample: torch.Tensor) -> torch.Tensor:
        """Logits of ``n`` inputs made by ``build(start, stop)``, in chunks; halves the chunk on CUDA OOM.

        While the chunk size is being measured, full chunks walk the ladder of sizes.
        """
        size = self.chunk_size(sample)
        outs, start = [], 0
        while start < n:
            # the next rung that fits what is left (larger ones wait for a larger call)
            fits = [s for s in self._ladder if s <= n - start] if self.batch_size is None else []
            trying = fits[0] if fits else None
            step = trying if trying is not None else size
            stop = min(n, start + step)
            try:
                x = build(start, stop)
                outs.append(self._timed_forward(x) if trying is not None else self._forward(x, pad_to=size))
            except torch.cuda.OutOfMemoryError:
                if step == 1:
                    raise
                size = max(1, step // 2)
                if self.batch_size is None:
                    self._chunk = size
                    self._ladder = [s for s in self._ladder if s <= size]
                torch.cuda.empty_cache()
                continue
            if trying is None or not self._ladder:
                size = self.chunk_size(sample)
            start = stop
        return torch.cat(outs) if outs else torch.empty(0, 0, device=self.device)

    # -- the public entry point -------------------------------------------------------------
    def run(
        self,
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor | Sequence[int] | int | None,
        requests: Iterable[Request],
        *,
        constant_maps: str = "error",
        replacement_tensor: torch.Tensor | None = None,
        base_logits: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
    ) -> dict[Request, Any]:
        """Compute every request for a batch; returns ``{request: result}``.

        Args:
            images: ``B×C×H×W`` in the masking space (what the model takes).
            maps: ``B×H×W`` saliency at input resolution (any scale; ranks use its order,
                ``Masked`` uses ``n(S)``).
            targets: class scored per image; ``None`` = the predicted class.
            requests: :class:`Masked`, :class:`Curve`, :class:`Flip` and :class:`Ranked` requests.
            constant_maps: what a constant map becomes for ``Masked`` (see
                :func:`~xai_bridge.engine.maps.normalize_maps`); ranks of a constant map
                are raster order.
            replacement_tensor: the image for ``Replacement("tensor")``.
            base_logits: logits of the unperturbed images when already known.
            masks: ``B×H×W`` soft masks ``M`` for ``Masked`` (default ``n(maps)``).
            grid: ``B×h×w`` map whose values rank the cells of cell-level requests whose
                ``cell×cell`` blocks it tiles (the explainer's raw map); other requests rank
                block means of ``maps``.
        """
        check_model_ready(self.model)
        check_images(images)
        images = images.to(self.device)
        maps = check_maps(maps, images).to(self.device)
        if masks is not None:
            masks = check_maps(masks, images, name="masks").to(self.device)
        if grid is not None:
            grid = check_maps(grid, name="grid").to(self.device)
            if grid.shape[0] != images.shape[0]:
                raise ValueError(f"grid: {grid.shape[0]} maps for {images.shape[0]} images")
        requests = list(dict.fromkeys(requests))
        for r in requests:
            if not isinstance(r, (Masked, Curve, Flip, Ranked)):
                raise TypeError(f"requests: expected Masked, Curve, Flip or Ranked, got {type(r).__name__}")
        b = images.shape[0]
        if base_logits is None:
            base_logits = self.forward_chunks(b, lambda s, e: images[s:e], images)
        base_logits = base_logits.to(self.device).float()
        targets = self._targets(targets, base_logits)
        base_pred = base_logits.argmax(1)

        self._replacements: dict[Replacement, torch.Tensor] = {}
        self._ranks: dict[tuple, torch.Tensor] = {}
        self._grid = grid
        self._replacement_tensor = replacement_tensor
        results: dict[Request, Any] = {}
        show = self.progress
        curves = [r for r in requests if isinstance(r, Curve)]
        total = b * sum(1 for r in requests if isinstance(r, Masked))
        total += b * sum(len(self._counts(c, images)) for c in self._longest(curves).values())
        if show is None:
            show = total > 2000
        bar_ctx = contextlib.nullcontext()
        if show:
            from tqdm.auto import tqdm

            bar_ctx = self._bar = tqdm(total=total, desc="perturbation engine", unit="img", leave=False)
        try:
            with bar_ctx:
                for r in requests:
                    if isinstance(r, Masked):
                        results[r] = self._masked(r, images, maps, targets, constant_maps, masks)
                longest = self._longest(curves)
                for seq, curve in longest.items():
                    full = self._curve(curve, images, maps, targets, base_logits)
                    for c in curves:
                        if c.sequence == seq:
                            results[c] = full.prefix(len(self._counts(c, images)))
                self._ranked_all([r for r in requests if isinstance(r, Ranked)], images, maps, targets, results)
                for r in requests:
                    if isinstance(r, Flip):
                        shared = longest.get(r.sequence)
                        known = results[shared] if shared is not None else None
                        results[r] = self._flips(r, images, maps, base_pred, known)
        finally:
            self._bar = None
            self._replacements, self._ranks, self._grid = {}, {}, None
        return results

    # -- helpers ----------------------------------------------------------------------------
    def _ranked_all(
        self,
        requests: list[Ranked],
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        results: dict[Request, Any],
    ) -> None:
        """Each :class:`Ranked` sequence once, at its longest request's length; shorter ones read a prefix."""
        from .sequences import ranked_replacement_logits

        longest: dict[tuple, int | None] = {}
        for r in requests:
            known = longest.get(r.sequence, 0)
            longest[r.sequence] = None if r.steps is None or known is None else max(r.steps, known)
        for seq, steps in longest.items():
            planner, insert = seq
            ranks, fills, s = planner(images, maps, steps)
            logits = ranked_replacement_logits(self, images, ranks, fills, s, insert=insert)
            b = images.shape[0]
            sc = self._scores(logits.reshape(b * s, -1), targets.repeat_interleave(s))
            for r in requests:
                if r.sequence == seq:
                    n = s if r.steps is None else min(r.steps, s)
                    results[r] = RankedResult(
                        sc.logits.view(b, s)[:, :n],
                        sc.probs.view(b, s)[:, :n],
                        sc.predicted.view(b, s)[:, :n],
                        ranks,
                        fills,
                    )

    def _targets(self, targets: Any, logits: torch.Tensor) -> torch.Tensor:
        b, k = logits.shape
        if targets is None:
            return logits.argmax(1)
        t = torch.as_tensor(targets, device=self.device).long().flatten()
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"targets: expected one class per image ({b}), got {t.numel()}")
        if (t < 0).any() or (t >= k).any():
            raise ValueError(f"targets: class indices must be in [0, {k}) for this model, got {t.tolist()}")
        return t

    @staticmethod
    def _longest(curves: list[Curve]) -> dict[tuple, Curve]:
        out: dict[tuple, Curve] = {}
        for c in curves:
            if c.sequence not in out or c.stop > out[c.sequence].stop:
                out[c.sequence] = c
        return out

    @staticmethod
    def _counts(r: Curve | Flip, images: torch.Tensor) -> torch.Tensor:
        units = num_units(images.shape[-2], images.shape[-1], r.cell)
        return step_counts(units, r.step, getattr(r, "stop", 1.0), r.max_steps)

    def _replacement(self, rep: Replacement, images: torch.Tensor) -> torch.Tensor:
        if rep not in self._replacements:
            self._replacements[rep] = make_replacement(images, rep, self._replacement_tensor)
        return self._replacements[rep]

    def _rank(self, maps: torch.Tensor, order: str, cell: int | None) -> torch.Tensor:
        key = (order, cell)
        if key not in self._ranks:
            self._ranks[key] = rank_units(maps, order, cell, self._grid)  # type: ignore[arg-type]
        return self._ranks[key]

    def _scores(self, logits: torch.Tensor, targets: torch.Tensor) -> Scores:
        t = targets.view(-1, 1)
        return Scores(logits.gather(1, t)[:, 0], logits.softmax(1).gather(1, t)[:, 0], logits.argmax(1))

    def _masked(
        self,
        r: Masked,
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        constant_maps: str,
        masks: torch.Tensor | None = None,
    ) -> Scores:
        m = (normalize_maps(maps, constant_maps) if masks is None else masks)[:, None]  # type: ignore[arg-type]
        if not r.keep:
            m = 1 - m
        rep = self._replacement(r.replacement, images)
        logits = self.forward_chunks(
            images.shape[0], lambda s, e: images[s:e] * m[s:e] + rep[s:e] * (1 - m[s:e]), images
        )
        return self._scores(logits, targets)

    def _perturbed(
        self,
        kind: str,
        images: torch.Tensor,
        rep: torch.Tensor,
        ranks: torch.Tensor,
        img_idx: torch.Tensor,
        counts: torch.Tensor,
    ) -> torch.Tensor:
        """Images ``img_idx`` with their ``counts`` first-ranked units removed (deletion) or revealed."""
        mask = (ranks[img_idx] < counts.view(-1, 1, 1)).unsqueeze(1)
        x, r = images[img_idx], rep[img_idx]
        return torch.where(mask, r, x) if kind == "deletion" else torch.where(mask, x, r)

    def _curve(
        self, c: Curve, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, base_logits: torch.Tensor
    ) -> CurveResult:
        b, _, h, w = images.shape
        counts = self._counts(c, images).to(self.device)
        units = num_units(h, w, c.cell)
        s = counts.numel()
        rep = self._replacement(c.replacement, images)
        ranks = self._rank(maps, c.order, c.cell)
        img_idx = torch.arange(b, device=self.device).repeat_interleave(s)
        step_idx = counts.repeat(b)
        logits = self.forward_chunks(
            b * s, lambda st, en: self._perturbed(c.kind, images, rep, ranks, img_idx[st:en], step_idx[st:en]), images
        )
        sc = self._scores(logits, targets.repeat_interleave(s))
        shape = (b, s)
        return CurveResult(
            sc.logits.view(shape),
            sc.probs.view(shape),
            sc.predicted.view(shape),
            fractions=counts.float() / units,
            counts=counts,
            units=units,
        )

    def _flips(
        self,
        r: Flip,
        images: torch.Tensor,
        maps: torch.Tensor,
        base_pred: torch.Tensor,
        known: CurveResult | None,
    ) -> FlipResult:
        b, _, h, w = images.shape
        counts = self._counts(r, images).to(self.device)
        units = num_units(h, w, r.cell)
        s = counts.numel()
        step_of_flip = torch.full((b,), s, dtype=torch.long, device=self.device)  # s = never
        start = 1
        if known is not None:  # the shared deletion curve already has these steps
            changed = known.predicted != base_pred[:, None]
            has = changed.any(1)
            step_of_flip[has] = changed.float().argmax(1)[has]
            start = known.predicted.shape[1]
        rep = self._replacement(r.replacement, images)
        ranks = self._rank(maps, r.order, r.cell)
        chunk = self.chunk_size(images)
        active = (step_of_flip == s).nonzero().flatten()
        while active.numel() and start < s:
            m = max(1, min(s - start, chunk // active.numel()))  # steps per block: fill one chunk
            steps = torch.arange(start, start + m, device=self.device)
            img_idx = active.repeat_interleave(m)
            cnt = counts[steps].repeat(active.numel())
            if self._bar is not None:
                self._bar.total += img_idx.numel()
            logits = self.forward_chunks(
                img_idx.numel(),
                lambda st, en, img_idx=img_idx, cnt=cnt: self._perturbed(
                    "deletion", images, rep, ranks, img_idx[st:en], cnt[st:en]
                ),
                images,
            )
            changed = (logits.argmax(1) != base_pred[img_idx]).view(-1, m)
            has = changed.any(1)
            first = changed.float().argmax(1) + start
            step_of_flip[active[has]] = first[has]
            active = active[~has]
            start += m
        flipped = step_of_flip < s
        fraction = torch.where(
            flipped, counts[step_of_flip.clamp(max=s - 1)].float() / units, torch.ones(b, device=self.device)
        )
        return FlipResult(fraction=fraction, flipped=flipped, steps=step_of_flip)


def auc(values: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under ``values`` (``B×S``) over ``fractions`` (``S``), per row."""
    return torch.trapezoid(values, fractions.to(values), dim=-1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``B×N`` tensors (0 where either row is constant)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-30), torch.zeros_like(den))


__all__ = ["Engine", "auc", "pearson", "parse_budget", "model_device"]
