"""Forward passes at the machine's limit: graph modes and reduced precision.

A :class:`ForwardPass` runs a classifier on a batch the way an :class:`~xai_bridge.engine.Engine`
was told to:

- ``compile="eager"`` (the default of a bare ``ForwardPass``): the model as it is.
- ``compile="freeze"``: a channels-last copy of the model, traced (``torch.jit.trace``) and
  frozen (``torch.jit.freeze``) for inference. Within about 1e-5 of eager.
- ``compile="inductor"``: ``torch.compile`` (inductor); falls back to eager with one warning
  when it is not available here.
- ``compile="auto"``: times eager and freeze on the first batch and keeps the fastest graph that
  agrees with eager within 1e-5 (eager otherwise, with a warning; eager too when forward hooks are
  registered on the model, since a traced graph would not run them). Inductor joins the race only
  when the announced work still ahead (planned through :meth:`Executor.plan
  <xai_bridge.engine.executor.Executor.plan>`, less what has run since) passes the
  **break-even** (or its graph for this shape was built already): the first compile's seconds
  divided by inductor's saving per input over the frozen graph, measured the first time a long run
  compiles and recorded per model signature in the process cache and on disk
  (:class:`ProcessCache`); before any measurement, :data:`DEFAULT_BREAK_EVEN` images. Inductor
  keeps torch's own on-disk compile cache, so a second process pays a fraction of the first
  compile. The choice is remembered for this model, input shape and run length for the rest of the
  process. The default of
  :class:`~xai_bridge.engine.executor.Executor`, :func:`~xai_bridge.evaluate` and the benchmark runner.

``precision="bfloat16"`` or ``"float16"`` runs the forward passes under ``torch.autocast``;
logits come back as float32 whatever the precision.

A traced graph is cached (in :data:`CACHE`, at most 8 graphs) per model, parameter state, device,
dtype and input shape: it is never reused for another model, for a model whose parameters changed
since it was traced, or for an input shape it was not traced for.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
>>> x = torch.rand(2, 3, 8, 8)
>>> with torch.inference_mode():
...     eager = ForwardPass(model)(x)
...     frozen = ForwardPass(model, compile="freeze")(x)
>>> bool((eager - frozen).abs().max() < 1e-5), frozen.dtype
(True, torch.float32)
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ForwardModeWarning, UnsupportedSettingError

COMPILE_MODES = ("auto", "eager", "freeze", "inductor")
PRECISIONS = ("float32", "bfloat16", "float16")
#: the largest difference ``auto`` accepts between a graph and eager (probabilities; logits relative)
EXACT = 1e-5
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def supported_precisions(device: torch.device | str) -> tuple[str, ...]:
    """The precisions autocast offers on ``device``.

    >>> supported_precisions("cpu")
    ('float32', 'bfloat16')
    """
    device = torch.device(device)
    if device.type == "cuda":
        return ("float32", "float16", "bfloat16") if torch.cuda.is_bf16_supported() else ("float32", "float16")
    if device.type == "cpu":
        return ("float32", "bfloat16")
    return ("float32",)


def check_compile(compile: Any) -> str:
    """``compile`` if it names a graph mode; otherwise :class:`~xai_bridge.errors.UnsupportedSettingError`.

    >>> check_compile("freeze")
    'freeze'
    """
    if compile not in COMPILE_MODES:
        raise UnsupportedSettingError(
            f"compile: {compile!r} is not a graph mode; expected one of {', '.join(COMPILE_MODES)}"
        )
    return str(compile)


def check_precision(precision: Any, device: torch.device | str) -> str:
    """``precision`` if autocast supports it on ``device``; otherwise a clear error.

    >>> try:
    ...     check_precision("float16", "cpu")
    ... except ValueError as exc:
    ...     print(exc)
    precision: 'float16' is not supported on cpu; this device supports float32, bfloat16
    """
    if precision not in PRECISIONS:
        raise UnsupportedSettingError(f"precision: {precision!r} is not known; expected one of {', '.join(PRECISIONS)}")
    supported = supported_precisions(device)
    if precision not in supported:
        raise UnsupportedSettingError(
            f"precision: {precision!r} is not supported on {torch.device(device).type}; "
            f"this device supports {', '.join(supported)}"
        )
    return str(precision)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for a reduced precision, a no-op for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def parameter_state(model: nn.Module) -> tuple[Any, ...]:
    """What a traced graph depends on: each parameter's and buffer's storage, version and sum.

    In-place updates bump ``_version``, a new tensor has a new ``data_ptr``, and the sums catch
    writes through ``.data`` (which bypass the version counter).
    """
    tensors = [*model.parameters(), *model.buffers()]
    if not tensors:
        return ()
    with torch.no_grad():
        sums = torch.stack([t.detach().float().sum() for t in tensors]).tolist()
    return tuple((t.data_ptr(), t._version, s) for t, s in zip(tensors, sums, strict=True))


def _signature(model: nn.Module, shape: tuple[int, ...], x: torch.Tensor, precision: str) -> str:
    """A model's identity across processes, for the recorded compile break-even: its class, size, the
    input shape, dtype, device kind, precision and the torch release."""
    params = sum(p.numel() for p in model.parameters())
    kind = type(model)
    return (
        f"{kind.__module__}.{kind.__qualname__}|{params}|{'x'.join(map(str, shape))}|{x.dtype}|"
        f"{x.device.type}|{precision}|torch {torch.__version__}"
    )


class ProcessCache:
    """What this process has learned about the models it ran: the one process-wide cache.

    - ``graphs``: traced or compiled graphs, least recently used first, at most ``max_graphs``
      (a frozen graph holds a copy of the weights);
    - ``choices``: the graph mode ``auto`` chose per model, input shape, precision and run length;
    - ``chunks``: the fastest chunk an executor measured per model, input shape, mode and budget;
    - ``compile_records``: the inductor break-even measured per model signature (class, size,
      shape, dtype, device kind, precision, torch release), also kept on disk in
      ``$XAI_BRIDGE_CACHE_DIR/compile.json`` (default ``~/.cache/xai_bridge``) so that a later
      process knows it without compiling to find out.

    Every in-memory entry is keyed by the model object's ``id`` and holds a weak reference to it:
    an entry is used only while that very model is alive (never for a new object at a reused
    address), and a graph only while the model's parameters are those it was traced with.
    Each table is bounded (``max_entries``, oldest dropped first). :func:`clear_cache` empties it.
    """

    def __init__(self, max_graphs: int = 8, max_entries: int = 256) -> None:
        self.max_graphs, self.max_entries = max_graphs, max_entries
        self.graphs: OrderedDict[tuple[Any, ...], tuple[Any, tuple[Any, ...], Callable[..., Any]]] = OrderedDict()
        self.choices: OrderedDict[tuple[Any, ...], tuple[Any, str]] = OrderedDict()
        self.chunks: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self.compile_records: dict[str, dict[str, float]] = {}
        self.warned: set[tuple[int, str]] = set()
        self._disk_loaded = False

    def clear(self) -> None:
        """Forget everything (the on-disk compile records stay)."""
        self.graphs.clear()
        self.choices.clear()
        self.chunks.clear()
        self.compile_records.clear()
        self.warned.clear()
        self._disk_loaded = False

    @staticmethod
    def _bounded_put(table: OrderedDict[Any, Any], key: Any, value: Any, bound: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > bound:
            table.popitem(last=False)

    @staticmethod
    def _live(hit: Any, model: nn.Module) -> bool:
        return hit is not None and hit[0]() is model

    # graphs
    def graph(self, model: nn.Module, key: tuple[Any, ...], state: tuple[Any, ...]) -> Callable[..., Any] | None:
        hit = self.graphs.get((id(model), *key))
        if self._live(hit, model) and hit is not None and hit[1] == state:
            self.graphs.move_to_end((id(model), *key))
            return hit[2]
        return None

    def store_graph(
        self, model: nn.Module, key: tuple[Any, ...], state: tuple[Any, ...], graph: Callable[..., Any]
    ) -> None:
        self._bounded_put(self.graphs, (id(model), *key), (weakref.ref(model), state, graph), self.max_graphs)

    def drop_graph(self, model: nn.Module, key: tuple[Any, ...]) -> None:
        self.graphs.pop((id(model), *key), None)

    # auto's choices and measured chunks
    def choice(self, model: nn.Module, key: tuple[Any, ...]) -> str | None:
        hit = self.choices.get((id(model), *key))
        return hit[1] if self._live(hit, model) and hit is not None else None

    def remember_choice(self, model: nn.Module, key: tuple[Any, ...], mode: str) -> None:
        self._bounded_put(self.choices, (id(model), *key), (weakref.ref(model), mode), self.max_entries)

    def tuned_chunk(self, model: nn.Module, key: tuple[Any, ...]) -> int | None:
        hit = self.chunks.get((id(model), *key))
        return hit[1] if self._live(hit, model) and hit is not None else None

    def remember_chunk(self, model: nn.Module, key: tuple[Any, ...], chunk: int) -> None:
        self._bounded_put(self.chunks, (id(model), *key), (weakref.ref(model), chunk), self.max_entries)

    # the inductor break-even
    @staticmethod
    def disk_path() -> Path:
        """Where the compile records are kept: ``$XAI_BRIDGE_CACHE_DIR/compile.json``."""
        root = os.environ.get("XAI_BRIDGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "xai_bridge")
        return Path(root) / "compile.json"

    def _load(self) -> None:
        if self._disk_loaded:
            return
        self._disk_loaded = True
        try:
            data = json.loads(self.disk_path().read_text())
        except (OSError, ValueError):
            return
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
                    self.compile_records.setdefault(k, {n: float(x) for n, x in v.items()})

    def compile_record(self, signature: str) -> dict[str, float] | None:
        """The measured compile seconds and per-input times of ``signature``, if any process measured them."""
        self._load()
        return self.compile_records.get(signature)

    def record_compile(self, signature: str, record: dict[str, float]) -> None:
        """Keep a measurement, here and on disk (a failed write only loses the record for later processes).

        The per-input times are the latest; the compile seconds the largest ever recorded: a compile
        served by torch's caches (its on-disk cache, or graphs this process already built) is cheaper
        than what a process without them pays, so the break-even stays that of a cold compile.
        """
        self._load()
        before = self.compile_records.get(signature, {}).get("compile_seconds", 0.0)
        record = {**record, "compile_seconds": max(before, record.get("compile_seconds", 0.0))}
        self.compile_records[signature] = record
        path = self.disk_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.compile_records, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass

    def break_even(self, signature: str) -> float:
        """Forward images past which compiling with inductor pays off over the frozen graph.

        ``compile seconds / (frozen − inductor seconds per input)`` from the record; without one,
        :data:`DEFAULT_BREAK_EVEN`; infinite where inductor was not faster.
        """
        rec = self.compile_record(signature)
        if rec is None:
            return DEFAULT_BREAK_EVEN
        saving = rec.get("freeze_per_input", 0.0) - rec.get("inductor_per_input", float("inf"))
        if saving <= 0:
            return float("inf")
        return rec.get("compile_seconds", 0.0) / saving


#: The break-even assumed before one is measured, in forward images: EfficientNet-Lite0 at 224×224 on this
#: project's 2-core CPU took 36.9 s to compile cold in a fresh process (4.8 s with torch's on-disk cache
#: warm) and saved 1.1–1.8 ms per image over the frozen graph at a chunk of 8, i.e. 21,000–33,000 images
#: (``benchmarks/engine.py --parts f``).
DEFAULT_BREAK_EVEN = 30_000.0

#: The process-wide cache of graphs, ``auto`` choices, measured chunks and compile records.
CACHE = ProcessCache()


def clear_cache() -> None:
    """Forget every traced graph, ``auto`` decision, measured chunk and compile record of this process.

    torch's in-memory compiled code goes too (``torch._dynamo.reset()``), so that a compile after this
    is timed as a new process would pay it (torch's on-disk cache, if any, still serves it).
    """
    CACHE.clear()
    with contextlib.suppress(Exception):  # a torch without dynamo has nothing to forget
        torch._dynamo.reset()


def _warn_once(model: nn.Module, message: str) -> None:
    key = (id(model), message)
    if key not in CACHE.warned:
        CACHE.warned.add(key)
        warnings.warn(message, ForwardModeWarning, stacklevel=4)


def _freeze(model: nn.Module, example: torch.Tensor) -> Callable[..., Any]:
    channels_last = example.ndim == 4
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    if channels_last:
        clone = clone.to(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in recent releases
        graph = torch.jit.freeze(torch.jit.trace(clone, example.contiguous(memory_format=fmt), check_trace=False))

    def run(x: torch.Tensor) -> Any:
        return graph(x.contiguous(memory_format=fmt))

    return run


def _inductor(model: nn.Module) -> Callable[..., Any]:
    compiled = torch.compile(model, dynamic=False)
    return compiled


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """The larger of the probabilities' max |Δ| and the logits' max |Δ| relative to their scale."""
    a, b = a.float(), b.float()
    probs = (a.softmax(1) - b.softmax(1)).abs().max()
    logits = (a - b).abs().max() / b.abs().max().clamp_min(1.0)
    return float(torch.maximum(probs, logits))


def _has_hooks(model: nn.Module) -> bool:
    """Whether forward hooks are registered on the model or any submodule (a traced graph runs without them)."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class ForwardPass:
    """The model's logits (float32) for a batch, in the requested graph mode and precision.

    Args:
        model: a classifier in eval mode (never modified: ``freeze`` traces a copy).
        compile: ``"eager"``, ``"freeze"``, ``"inductor"`` or ``"auto"`` (see the module).
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast; what the device supports).
        device: the model's device (default: where its first parameter lives).

    ``mode`` is the graph mode actually used for the last batch (``auto`` resolved, or
    ``"eager"`` after a fallback).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        compile: str = "eager",
        precision: str = "float32",
        device: torch.device | None = None,
    ) -> None:
        from ..models import model_device

        self.model = model
        self.device = device if device is not None else model_device(model)
        self.compile = check_compile(compile)
        self.precision = check_precision(precision, self.device)
        self.mode = "eager" if self.compile == "auto" else self.compile
        #: forward images the owner announced (:meth:`Executor.plan <xai_bridge.engine.executor.Executor.plan>`)
        self.planned = 0
        #: forward images computed so far (``planned − done`` is the announced work still ahead)
        self.done = 0

    def describe(self) -> dict[str, str]:
        """How the forward passes are computed (recorded with results).

        >>> ForwardPass(torch.nn.Linear(2, 2)).describe()
        {'compile': 'eager', 'graph': 'eager', 'precision': 'float32'}
        """
        return {"compile": self.compile, "graph": self.mode, "precision": self.precision}

    # -- graphs ------------------------------------------------------------------------------
    def _graph(self, mode: str, x: torch.Tensor) -> Callable[..., Any] | None:
        """The cached graph of ``mode`` for this model and input, built when missing or stale."""
        model = self.model
        key = (mode, str(x.device), x.dtype, tuple(x.shape))
        state = parameter_state(model) if mode == "freeze" else ()  # inductor reads the live parameters
        graph = CACHE.graph(model, key, state)
        if graph is not None:
            return graph
        try:
            graph = _freeze(model, x) if mode == "freeze" else _inductor(model)
        except Exception as exc:  # noqa: BLE001 - any tracing failure means: use eager, and say why
            what = "traced and frozen" if mode == "freeze" else "compiled with torch.compile"
            _warn_once(
                model,
                f"compile={mode!r}: {type(model).__name__} cannot be {what} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); using eager forward passes",
            )
            return None
        CACHE.store_graph(model, key, state, graph)
        return graph

    def _run(self, mode: str, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            if mode == "eager":
                return self.model(x)
            graph = self._graph(mode, x)
            if graph is None:
                self.mode = "eager"
                return self.model(x)
            if mode == "inductor":
                try:
                    return graph(x)
                except Exception as exc:  # noqa: BLE001 - inductor needs a compiler; without one, eager
                    _warn_once(
                        self.model,
                        f"compile='inductor': torch.compile is not available here ({type(exc).__name__}); "
                        "using eager forward passes",
                    )
                    CACHE.drop_graph(self.model, (mode, str(x.device), x.dtype, tuple(x.shape)))
                    if self.compile == "inductor":
                        self.compile = "eager"
                    self.mode = "eager"
                    return self.model(x)
            return graph(x)

    def _best_time(self, mode: str, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The best of two timed runs of ``mode`` on ``x`` after one warm-up (which traces or compiles)."""
        sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
        out = self._run(mode, x)
        best = float("inf")
        for _ in range(2):
            sync()
            start = time.perf_counter()
            out = self._run(mode, x)
            sync()
            best = min(best, time.perf_counter() - start)
        return best, out

    def _exact(self, mode: str, x: torch.Tensor) -> bool:
        """Whether ``mode``'s graph agrees with eager within :data:`EXACT` in float32 (warns when not)."""
        graph = self._graph(mode, x)
        if graph is None:
            return False
        with torch.autocast(x.device.type, enabled=False):
            try:
                diff = _close(graph(x), self.model(x))
            except Exception:  # noqa: BLE001 - a graph that cannot run is not exact
                return False
        if diff > EXACT:
            _warn_once(
                self.model,
                f"compile='auto': the {mode} graph of {type(self.model).__name__} differs from eager by "
                f"{diff:.1e} (> {EXACT:.0e}); not using it",
            )
            return False
        return True

    def _choose(self, x: torch.Tensor) -> str:
        """``auto``: the fastest of eager, freeze and (for planned work past the break-even) inductor that
        agrees with eager within 1e-5."""
        if _has_hooks(self.model):  # a traced graph would skip them: the user's hooks must still run
            return "eager"
        shape = tuple(x.shape[1:])
        signature = _signature(self.model, shape, x, self.precision)
        # what decides is the announced work still ahead: a compile pays off over what remains to run
        ahead = max(0, self.planned - self.done)
        built = CACHE.graph(self.model, ("inductor", str(x.device), x.dtype, tuple(x.shape)), ())
        long = ahead >= CACHE.break_even(signature) or built is not None  # a graph already built costs nothing
        key = ("auto", str(x.device), x.dtype, shape, self.precision, long)
        known = CACHE.choice(self.model, key)
        if known is not None:
            return known
        times = {"eager": self._best_time("eager", x)[0]}
        if self._graph("freeze", x) is not None and self._exact("freeze", x):
            times["freeze"] = self._best_time("freeze", x)[0]
        if long:
            start = time.perf_counter()
            compiled = self._graph("inductor", x) is not None and self._exact("inductor", x)
            compile_seconds = time.perf_counter() - start
            if compiled:
                times["inductor"] = self._best_time("inductor", x)[0]
                n = x.shape[0]
                reference = times.get("freeze", times["eager"])
                CACHE.record_compile(
                    signature,
                    {
                        "compile_seconds": compile_seconds,
                        "freeze_per_input": reference / n,
                        "inductor_per_input": times["inductor"] / n,
                    },
                )
        choice = min(times, key=lambda m: times[m])
        CACHE.remember_choice(self.model, key, choice)
        return choice

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` as float32 (call under ``torch.inference_mode`` or ``no_grad``)."""
        mode = self.mode
        if self.compile == "auto":
            mode = self.mode = self._choose(x)
        out = self._run(mode, x)
        self.done += int(x.shape[0]) if x.ndim else 1
        if not isinstance(out, torch.Tensor):
            return out  # the caller checks the shape and says what is wrong
        return out.float()


def differentiable_step(
    model: nn.Module,
    fn: Callable[..., torch.Tensor],
    *,
    channels_last: bool = False,
    compile: bool = False,
    what: str = "this step",
) -> Callable[..., torch.Tensor]:
    """``fn(net, *args)`` as a callable of ``*args`` with gradients: ``net`` is the model, or a
    channels-last copy of it (``channels_last=True``, the model itself is left as it is);
    ``compile=True`` runs it through ``torch.compile`` and falls back to eager with a
    :class:`~xai_bridge.errors.ForwardModeWarning` (naming ``what``) where that fails.

    >>> import torch
    >>> step = differentiable_step(torch.nn.Linear(2, 1), lambda net, x: net(x) * 2)
    >>> step(torch.ones(3, 2)).shape
    torch.Size([3, 1])
    """
    if not isinstance(channels_last, bool) or not isinstance(compile, bool):
        raise UnsupportedSettingError(
            f"channels_last, compile: expected True or False, got {channels_last!r}, {compile!r}"
        )
    net = model
    if channels_last:
        net = copy.deepcopy(model).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        net = net.to(memory_format=torch.channels_last)

    def step(*args: Any) -> torch.Tensor:
        if channels_last:
            args = tuple(
                a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.ndim == 4 else a
                for a in args
            )
        return fn(net, *args)

    if not compile:
        return step
    compiled = torch.compile(step)
    state = {"eager": False}

    def run(*args: Any) -> torch.Tensor:
        if not state["eager"]:
            try:
                return compiled(*args)
            except Exception as exc:  # noqa: BLE001 - torch.compile needs a working compiler; else eager
                state["eager"] = True
                warnings.warn(
                    f"compile=True: torch.compile cannot compile {what} here ({type(exc).__name__}); "
                    "running it eagerly",
                    ForwardModeWarning,
                    stacklevel=3,
                )
        return step(*args)

    return run


__all__ = [
    "COMPILE_MODES",
    "EXACT",
    "PRECISIONS",
    "CACHE",
    "DEFAULT_BREAK_EVEN",
    "ForwardPass",
    "ProcessCache",
    "differentiable_step",
    "autocast",
    "check_compile",
    "check_precision",
    "clear_cache",
    "parameter_state",
    "supported_precisions",
]
