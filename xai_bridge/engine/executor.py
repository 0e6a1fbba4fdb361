"""The executor: the one place where forward passes run.

Every forward pass of the project goes through an :class:`Executor`: the perturbation engine's
masked images, deletion curves and decision flips, the accelerated toolkit metrics, and the
explainers that need many passes (RISE, Score-CAM, Ablation-CAM, Occlusion, Opti-CAM). It owns

- the **graph mode** (``compile="auto" | "eager" | "freeze" | "inductor"``, see
  :mod:`xai_bridge.engine.forward`) and the **precision** (autocast);
- the **chunk**: how many inputs go through the model at once, sized by a memory budget and then
  measured (the first full chunks walk a short ladder of sizes and the fastest is kept);
- **CUDA out-of-memory back-off** (the chunk halves and the work goes on);
- the **progress bar** of long work;
- the **counters**: inputs sent forward (``samples``), inputs sent backward (``backward_samples``)
  and the seconds spent in the model (``seconds``), which benchmarks and results report as cost.

Whoever runs work owns one executor and reuses it across calls: one :func:`~xai_bridge.evaluate`
call, a benchmark plan, an accelerated metric, an explainer. What a process learns about a model
(its traced graphs, ``auto``'s choice, the fastest chunk, the inductor break-even) lives in one
bounded, documented process cache (:data:`xai_bridge.engine.forward.CACHE`), keyed by the model
object (never reused for another model, or after its parameters changed).

``plan(images)`` tells the executor how many forward images the coming work needs. With
``compile="auto"`` that decides whether compiling with inductor pays off (see
:mod:`xai_bridge.engine.forward`): short runs stay on the eager or frozen graph, a run past the
measured break-even compiles once.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
>>> ex = Executor(model, progress=False)
>>> x = torch.rand(6, 3, 4, 4)
>>> ex.logits(6, lambda start, stop: x[start:stop]).shape
torch.Size([6, 5])
>>> ex.samples
6
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError, InvalidTypeError
from ..models import model_device
from .forward import CACHE, ForwardPass, autocast, check_precision

GiB = 1024**3

__all__ = ["Executor", "check_executor", "ladder", "parse_budget", "GiB"]


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
    """Bytes from ``2_000_000_000``, ``"2GiB"``, ``"512MB"`` or ``None`` (automatic).

    >>> parse_budget("2GiB"), parse_budget("512MB"), parse_budget(None)
    (2147483648, 512000000, None)
    """
    if budget is None or isinstance(budget, (int, float)):
        return None if budget is None else int(budget)
    text = budget.strip().lower().replace(" ", "")
    for suffix, scale in (("gib", GiB), ("mib", 1024**2), ("gb", 1e9), ("mb", 1e6), ("kb", 1e3), ("b", 1)):
        if text.endswith(suffix):
            try:
                return int(float(text[: -len(suffix)]) * scale)
            except ValueError:
                break
    raise InvalidArgumentError(f"budget: expected bytes (int) or a size like '2GiB' / '512MB', got {budget!r}")


class Executor:
    """Runs a classifier's forward passes in chunks sized for the machine, and counts them.

    Args:
        model: a classifier returning logits, in eval mode (never modified: graphs trace a copy).
        budget: memory for one chunk of inputs and their activations (bytes or ``"2GiB"``);
            default: ``$XAI_BRIDGE_ENGINE_BUDGET`` or 1 GiB on CPU (larger batches are no faster
            on a CPU), half the free memory on CUDA. Ignored when ``batch_size`` is given.
        batch_size: fixed chunk size (inputs per forward pass).
        compile: graph mode: ``"auto"`` (default), ``"eager"``, ``"freeze"`` or ``"inductor"``
            (see :mod:`xai_bridge.engine.forward`).
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: autocast for the
            forward passes (what the device supports); logits come back as float32.
        autocast: shorthand for ``precision="float16"`` on CUDA (ignored on other devices).
        tune: measure the chunk: the first full chunks try a short ladder of sizes within the
            budget and the fastest is kept (per model, input shape, graph mode and precision).
        progress: show a progress bar (``None``: for work of over 2,000 inputs).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> ex = Executor(model, batch_size=2)
        >>> x = torch.rand(5, 3, 2, 2)
        >>> ex.logits(5, lambda s, e: x[s:e]).shape, ex.samples
        (torch.Size([5, 3]), 5)
        >>> ex.describe()
        {'compile': 'auto', 'graph': 'eager', 'precision': 'float32', 'chunk': 2, 'planned': 0}
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        budget: int | float | str | None = None,
        batch_size: int | None = None,
        compile: str = "auto",
        precision: str | None = None,
        autocast: bool = False,
        tune: bool = True,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise InvalidArgumentError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.model = model
        self.device = model_device(model)
        self.budget = parse_budget(budget)
        self.batch_size = batch_size
        if precision is None:
            precision = "float16" if autocast and self.device.type == "cuda" else "float32"
        self.forward_pass = ForwardPass(model, compile=compile, precision=precision, device=self.device)
        self.tune = tune
        self.progress = progress
        #: inputs that went through the model's forward pass
        self.samples = 0
        #: inputs whose gradients went back through the model (:meth:`differentiable`)
        self.backward_samples = 0
        #: wall time inside the model's forward passes (on CUDA: the time to launch them, unless synchronised)
        self.seconds = 0.0
        #: one-input forward passes that measured the memory of an input shape (see :meth:`chunk_size`)
        self.probes = 0
        self._bar: Any = None
        self._chunk: int | None = None
        self._chunk_shape: tuple[int, ...] | None = None
        self._ladder: list[int] = []
        self._timings: dict[int, float] = {}

    # -- what was and will be done ----------------------------------------------------------------
    def plan(self, images: int) -> None:
        """Tell the executor that the coming work sends about ``images`` inputs forward.

        ``compile="auto"`` compiles with inductor when the announced work still ahead (all that was
        planned, less the inputs computed since) passes the break-even of inductor over the frozen
        graph measured for this model and input shape (see :mod:`xai_bridge.engine.forward`). Calls
        add up; the counters are not touched. Each :class:`~xai_bridge.engine.Engine` run announces
        its own requests, and the many-pass explainers theirs: announce only other work.
        """
        if not isinstance(images, int) or images < 0:
            raise InvalidArgumentError(f"images: expected a number of forward images >= 0, got {images!r}")
        self.forward_pass.planned += images

    @property
    def planned(self) -> int:
        """Forward images announced through :meth:`plan`."""
        return self.forward_pass.planned

    def describe(self) -> dict[str, Any]:
        """How the forward passes are computed: graph mode asked for and used, precision, chunk, planned work."""
        chunk = self.batch_size if self.batch_size is not None else self._chunk
        return {**self.forward_pass.describe(), "chunk": chunk, "planned": self.planned}

    def counters(self) -> tuple[int, int, float]:
        """``(samples, backward_samples, seconds)`` now; subtract two readings to cost a piece of work.

        >>> import torch
        >>> ex = Executor(torch.nn.Linear(2, 2).eval())
        >>> before = ex.counters()
        >>> _ = ex.logits(3, lambda s, e: torch.ones(e - s, 2))
        >>> ex.counters()[0] - before[0]
        3
        """
        return self.samples, self.backward_samples, self.seconds

    @contextlib.contextmanager
    def progress_bar(self, total: int, desc: str = "forward passes") -> Iterator[None]:
        """Show a bar over ``total`` inputs while the block runs (per :attr:`progress`); nests into one bar."""
        show = self.progress if self.progress is not None else total > 2000
        if not show or self._bar is not None:
            yield
            return
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
            self._bar = bar
            try:
                yield
            finally:
                self._bar = None

    def extend_progress(self, inputs: int) -> None:
        """Add ``inputs`` to the open bar's total (work that turned out to be needed on the way)."""
        if self._bar is not None:
            self._bar.total += inputs

    # -- chunks -----------------------------------------------------------------------------------
    def _default_budget(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * 0.5)
        return parse_budget(os.environ.get("XAI_BRIDGE_ENGINE_BUDGET")) or GiB

    def chunk_size(self, sample: torch.Tensor) -> int:
        """Inputs per forward pass: ``batch_size``, or what fits the budget (then measured).

        The cost of one input is measured once per input shape by a probe forward pass of one
        input (counted in :attr:`probes`, not in :attr:`samples`): the bytes of every module
        output (an upper bound on live activations) plus the input, its mask and its replacement.
        """
        if self.batch_size is not None:
            return self.batch_size
        shape = tuple(sample.shape[1:])
        if self._chunk is None or self._chunk_shape != shape:
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
            self.probes += 1
            per_input = total[0] + 4 * sample[:1].numel() * sample.element_size()
            budget = self.budget if self.budget is not None else self._default_budget()
            self._chunk = max(1, min(1024, budget // max(per_input, 1)))
            self._chunk_shape = shape
            self._ladder, self._timings = [], {}
            if self.tune and self._chunk > 1:
                known = CACHE.tuned_chunk(self.model, self._tune_key(shape))
                if known is not None and known <= self._chunk:
                    self._chunk = known
                else:
                    self._ladder = ladder(self._chunk)
        return self._chunk

    def _tune_key(self, shape: tuple[int, ...]) -> tuple[Any, ...]:
        fp = self.forward_pass
        return (str(self.device), shape, fp.compile, fp.precision, self.budget)

    # -- forward passes ---------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """Logits of ``x``; a graph (one per input shape) gets a short batch padded to ``pad_to``."""
        n = x.shape[0]
        if pad_to is not None and n < pad_to and self.forward_pass.mode != "eager":
            x = torch.cat([x, x[-1:].expand(pad_to - n, *x.shape[1:])])
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.forward_pass(x)
        self.seconds += time.perf_counter() - start
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise InvalidArgumentError(
                f"model: expected logits of shape B×K, got {getattr(out, 'shape', type(out).__name__)}"
            )
        self.samples += n
        if self._bar is not None:
            self._bar.update(n)
        return out[:n]

    def _timed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """A ladder step: the forward pass, timed per input; the ladder ends with the fastest size kept."""
        size = x.shape[0]
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        out = self._forward(x)
        sync()
        per_input = (time.perf_counter() - start) / size
        self._timings[size] = min(self._timings.get(size, float("inf")), per_input)
        self._ladder.remove(size)
        if not self._ladder:
            self._chunk = min(self._timings, key=lambda k: self._timings[k])
            CACHE.remember_chunk(self.model, self._tune_key(tuple(x.shape[1:])), self._chunk)
        return out

    def logits(
        self, n: int, build: Callable[[int, int], torch.Tensor], sample: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``n×K`` of the ``n`` inputs ``build(start, stop)`` makes, a chunk at a time.

        ``build`` returns the inputs ``start … stop-1`` (on the model's device, or they are moved
        there); ``sample`` is one such input batch used to size the chunk (default:
        ``build(0, 1)``). While the chunk is being measured, full chunks walk the ladder of sizes;
        on CUDA an out-of-memory error halves the chunk and the chunk is tried again.
        """
        if n == 0:
            return torch.empty(0, 0, device=self.device)
        if sample is None:
            sample = build(0, 1)
        size = self.chunk_size(sample)
        outs, start = [], 0
        while start < n:
            # the next rung that fits what is left (larger ones wait for a larger call)
            fits = [s for s in self._ladder if s <= n - start] if self.batch_size is None else []
            trying = fits[0] if fits else None
            step = trying if trying is not None else size
            stop = min(n, start + step)
            try:
                x = build(start, stop).to(self.device)
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
        return torch.cat(outs)

    #: the name the engine's helpers have always called (``forward_chunks(n, build, sample)``)
    forward_chunks = logits

    def differentiable(
        self,
        fn: Callable[..., torch.Tensor],
        *,
        channels_last: bool = False,
        compile: bool = False,
        precision: str | None = None,
        what: str = "this step",
    ) -> Callable[..., torch.Tensor]:
        """``fn(model, *args)`` with gradients, under autocast at ``precision``, counted.

        For explainers that optimise through the model (Opti-CAM): ``fn`` receives the model to
        call (a channels-last copy with ``channels_last=True``) and its arguments; the result is
        float32. ``compile=True`` runs ``fn`` through ``torch.compile`` (eager, with a
        :class:`~xai_bridge.errors.ForwardModeWarning` naming ``what``, where that fails).
        ``precision`` defaults to the executor's. Each call adds its first argument's batch size
        to :attr:`samples` and its time to :attr:`seconds`; call :meth:`count_backward` after a
        backward pass.

        >>> import torch
        >>> model = torch.nn.Linear(3, 2).eval()
        >>> ex = Executor(model)
        >>> step = ex.differentiable(lambda net, x: net(x))
        >>> x = torch.ones(4, 3, requires_grad=True)
        >>> step(x).sum().backward(); ex.count_backward(4)
        >>> ex.samples, ex.backward_samples
        (4, 4)
        """
        from .forward import differentiable_step

        precision = check_precision(precision or self.forward_pass.precision, self.device)
        run = differentiable_step(self.model, fn, channels_last=channels_last, compile=compile, what=what)
        device = self.device

        def call(*args: Any) -> torch.Tensor:
            start = time.perf_counter()
            with autocast(precision, device):
                out = run(*args)
            self.seconds += time.perf_counter() - start
            first = args[0] if args else None
            self.samples += int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 1
            return out.float()

        return call

    def count_backward(self, inputs: int) -> None:
        """Record that the gradients of ``inputs`` inputs went back through the model."""
        self.backward_samples += inputs


def check_executor(model: nn.Module, executor: Any) -> Executor | None:
    """``executor`` if it is an :class:`Executor` made for ``model`` (``None`` passes through); else a clear error.

    For explainers and metrics that take an ``executor=`` option and otherwise make their own.

    >>> import torch
    >>> model = torch.nn.Linear(2, 2).eval()
    >>> check_executor(model, None) is None, check_executor(model, Executor(model)).model is model
    (True, True)
    >>> try:
    ...     check_executor(model, Executor(torch.nn.Linear(2, 2).eval()))
    ... except ValueError as exc:
    ...     print(exc)
    executor: it runs another model; give one made for this explainer's model
    """
    if executor is None:
        return None
    if not isinstance(executor, Executor):
        raise InvalidTypeError(f"executor: expected an xai_bridge.engine.Executor, got {type(executor).__name__}")
    if executor.model is not model:
        raise InvalidArgumentError("executor: it runs another model; give one made for this explainer's model")
    return executor
