"""Forward passes at the machine's limit: graph modes and reduced precision.

A :class:`ForwardPass` runs a classifier on a batch the way an :class:`~xai_bridge.engine.Engine`
was told to:

- ``compile="eager"`` (the default of a bare ``ForwardPass``): the model as it is.
- ``compile="freeze"``: a channels-last copy of the model, traced (``torch.jit.trace``) and
  frozen (``torch.jit.freeze``) for inference. Within about 1e-5 of eager.
- ``compile="inductor"``: ``torch.compile`` (inductor); falls back to eager with one warning
  when it is not available here.
- ``compile="auto"``: times eager and freeze on the first batch, keeps the faster one when it
  agrees with eager within 1e-5 (eager otherwise, with a warning; eager too when forward hooks are
  registered on the model, since a traced graph would not run them), and remembers the choice
  for this model and input shape for the rest of the process. The default of
  :class:`~xai_bridge.engine.Engine`, :func:`~xai_bridge.evaluate` and the benchmark runner: as fast
  as eager on short runs and 1.5× faster on long CPU runs in ``benchmarks/engine.py``. Inductor is
  left out of ``auto``: it takes tens of seconds per input shape to compile on a CPU.

``precision="bfloat16"`` or ``"float16"`` runs the forward passes under ``torch.autocast``;
logits come back as float32 whatever the precision.

A traced graph is cached per model, parameter state, device, dtype and input shape: it is
never reused for another model, for a model whose parameters changed since it was traced,
or for an input shape it was not traced for.

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
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ForwardModeWarning, UnsupportedSettingError

COMPILE_MODES = ("auto", "eager", "freeze", "inductor")
PRECISIONS = ("float32", "bfloat16", "float16")
#: the largest difference ``auto`` accepts between a graph and eager (probabilities; logits relative)
EXACT = 1e-5
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
_MAX_GRAPHS = 8


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


# (id(model), mode, device, dtype, shape) → (weakref to the model, parameter state, graph)
_GRAPHS: OrderedDict[tuple[Any, ...], tuple[Any, tuple[Any, ...], Callable[..., Any]]] = OrderedDict()
# (id(model), device, dtype, sample shape, precision) → (weakref to the model, the mode auto chose)
_AUTO: dict[tuple[Any, ...], tuple[Any, str]] = {}
_WARNED: set[tuple[int, str]] = set()


def clear_cache() -> None:
    """Forget every traced graph and every ``auto`` decision of this process."""
    _GRAPHS.clear()
    _AUTO.clear()
    _WARNED.clear()


def _warn_once(model: nn.Module, message: str) -> None:
    key = (id(model), message)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, ForwardModeWarning, stacklevel=4)


def _alive(ref: Any, model: nn.Module) -> bool:
    return ref() is model


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
        shape = tuple(x.shape) if mode == "freeze" else ()
        key = (id(model), mode, str(x.device), x.dtype, shape)
        state = parameter_state(model) if mode == "freeze" else ()
        hit = _GRAPHS.get(key)
        if hit is not None and _alive(hit[0], model) and hit[1] == state:
            _GRAPHS.move_to_end(key)
            return hit[2]
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
        _GRAPHS[key] = (weakref.ref(model), state, graph)
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
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
                    _GRAPHS.pop((id(self.model), mode, str(x.device), x.dtype, ()), None)
                    self.compile = self.mode = "eager"
                    return self.model(x)
            return graph(x)

    def _choose(self, x: torch.Tensor) -> str:
        """``auto``: eager or freeze, whichever is faster on ``x`` while agreeing with eager within 1e-5."""
        if _has_hooks(self.model):  # a traced graph would skip them: the user's hooks must still run
            return "eager"
        key = (id(self.model), str(x.device), x.dtype, tuple(x.shape[1:]), self.precision)
        hit = _AUTO.get(key)
        if hit is not None and _alive(hit[0], self.model):
            return hit[1]
        sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

        def best_time(mode: str) -> tuple[float, torch.Tensor]:
            out = self._run(mode, x)  # warm-up (and tracing)
            best = float("inf")
            for _ in range(2):
                sync()
                start = time.perf_counter()
                out = self._run(mode, x)
                sync()
                best = min(best, time.perf_counter() - start)
            return best, out

        choice = "eager"
        t_eager, ref = best_time("eager")
        graph = self._graph("freeze", x)
        if graph is not None:
            t_freeze, out = best_time("freeze")
            with torch.autocast(x.device.type, enabled=False):
                exact_ref, exact_out = self.model(x), graph(x)
            diff = _close(exact_out, exact_ref)
            if diff > EXACT:
                _warn_once(
                    self.model,
                    f"compile='auto': the frozen graph of {type(self.model).__name__} differs from eager by "
                    f"{diff:.1e} (> {EXACT:.0e}); using eager forward passes",
                )
            elif t_freeze < t_eager:
                choice = "freeze"
        _AUTO[key] = (weakref.ref(self.model), choice)
        return choice

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` as float32 (call under ``torch.inference_mode`` or ``no_grad``)."""
        mode = self.mode
        if self.compile == "auto":
            mode = self.mode = self._choose(x)
        out = self._run(mode, x)
        if not isinstance(out, torch.Tensor):
            return out  # the caller checks the shape and says what is wrong
        return out.float()


__all__ = [
    "COMPILE_MODES",
    "EXACT",
    "PRECISIONS",
    "ForwardPass",
    "autocast",
    "check_compile",
    "check_precision",
    "clear_cache",
    "parameter_state",
    "supported_precisions",
]
