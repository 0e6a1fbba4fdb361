"""The one bridge between a toolkit's metric instance and the engine, for Quantus and pytorch-grad-cam alike.

An accelerated metric is an instance of the toolkit's own class (so ``isinstance`` and the toolkit's
pipelines keep working) with :class:`Bridge` mixed in. The bridge holds the configuration copied from the
toolkit's instance, the engine (made on the first call, for the model of that call), the count of inputs it
sent through the model (``forward_samples``), and the decision taken at every call: run on the engine, or,
when the call brings something the engine cannot take (a TensorFlow model, an input layout the metric's
planner does not handle), run the toolkit's own code with one :class:`~xai_bridge.errors.ToolkitFallbackWarning`
(``fallback=True``) or raise :class:`~xai_bridge.errors.UnsupportedMetricError` naming the argument.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..engine import Engine
from ..errors import InvalidTypeError, ToolkitFallbackWarning, UnsupportedMetricError
from ..targets import check_model_ready

__all__ = ["Bridge"]

_PASS_FALLBACK = "pass fallback=True to accelerate() to run the toolkit's own code"


class Bridge:
    """Mixin of every accelerated toolkit metric: engine, forward count, and the fall-back decision.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> pf = xb.accelerate(quantus.PixelFlipping(disable_warnings=True), fallback=True)
        >>> isinstance(pf, Bridge), pf.forward_samples
        (True, 0)
    """

    _xb_budget: Any = None
    _xb_batch_size: int | None = None
    _xb_fallback: bool = False
    _xb_toolkit: Any = None
    _xb_engine_obj: Engine | None = None
    #: input dimensions (``B`` included) the metric's planner takes; ``None``: any ``B×C×…``
    _xb_ndims: tuple[int, ...] | None = None
    forward_samples: int = 0

    @classmethod
    def bridge(cls, metric: Any, *, budget: Any = None, batch_size: int | None = None, fallback: bool = False) -> Any:
        """An instance of ``cls`` with ``metric``'s configuration, not re-initialised (no warnings, no draws)."""
        out: Any = object.__new__(cls)
        out.__dict__.update(copy.copy(metric.__dict__))
        out._xb_budget, out._xb_batch_size, out._xb_fallback = budget, batch_size, bool(fallback)
        out._xb_toolkit, out._xb_engine_obj, out.forward_samples = metric, None, 0
        return out

    # -- the decision at each call --------------------------------------------------------------------------------
    def _xb_refusal(self, model: Any, inputs: Any, input_name: str) -> str | None:
        """Why the engine cannot run this call (``None``: it can): a model that is not a ``torch.nn.Module``, an
        input whose number of dimensions the metric's planner does not take."""
        net = model.get_model() if hasattr(model, "get_model") else model
        if not isinstance(net, torch.nn.Module):
            return (
                f"model: the engine runs torch.nn.Module classifiers, got {type(net).__module__}.{type(net).__name__}"
            )
        ndim = getattr(inputs, "ndim", None)
        if ndim is None or ndim < 3 or (self._xb_ndims is not None and ndim not in self._xb_ndims):
            layouts = {3: "series B×C×T", 4: "images B×C×H×W"}
            wanted = " or ".join(layouts.get(n, f"{n}-D") for n in self._xb_ndims or ()) or "inputs B×C×…"
            shape = tuple(getattr(inputs, "shape", ())) or type(inputs).__name__
            return f"{input_name}: {type(self).__name__} takes {wanted}, got {shape}"
        return None

    def _xb_dispatch(
        self, reason: str | None, engine_call: Callable[[], Any], toolkit_call: Callable[[Any], Any]
    ) -> Any:
        """``engine_call()`` when ``reason`` is None; else the toolkit's own code (``fallback=True``, one warning)
        or :class:`~xai_bridge.errors.UnsupportedMetricError` naming the argument."""
        if reason is None:
            return engine_call()
        if not self._xb_fallback:
            raise UnsupportedMetricError(f"{reason}; {_PASS_FALLBACK}")
        warnings.warn(
            f"{type(self).__name__}: {reason}; running the toolkit's own code", ToolkitFallbackWarning, stacklevel=3
        )
        toolkit = self._xb_toolkit
        result = toolkit_call(toolkit)
        for name in ("evaluation_scores", "all_evaluation_scores"):  # what the toolkit's properties read
            if hasattr(toolkit, name):
                setattr(self, name, getattr(toolkit, name))
        return result

    # -- the engine -----------------------------------------------------------------------------------------------
    def _xb_engine(self, model: Any) -> Engine:
        net = model.get_model() if hasattr(model, "get_model") else model
        if not isinstance(net, torch.nn.Module):
            raise InvalidTypeError(f"model: expected a torch.nn.Module classifier, got {type(net).__name__}")
        check_model_ready(net)
        engine = self._xb_engine_obj
        if engine is None or engine.model is not net:
            engine = Engine(net, budget=self._xb_budget, batch_size=self._xb_batch_size, progress=False)
            self._xb_engine_obj = engine
        return engine

    def _xb_forward(self, model: Any, call: Callable[[Engine], torch.Tensor]) -> torch.Tensor:
        """``call(engine)``'s logits, with the inputs it sent through the model added to ``forward_samples``."""
        engine = self._xb_engine(model)
        before = engine.forward_samples
        logits = call(engine)
        self.forward_samples += engine.forward_samples - before
        return logits

    def _xb_stack_logits(self, model: Any, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``N×K`` of ``inputs`` as they are, in the engine's chunks."""
        return self._xb_forward(
            model,
            lambda engine: engine.forward_chunks(len(inputs), lambda s, e: inputs[s:e].to(engine.device), inputs),
        )
