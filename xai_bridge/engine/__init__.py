"""The shared perturbation engine (see :mod:`xai_bridge.engine.engine`)."""

from .context import RunContext
from .engine import Engine, auc, model_device, parse_budget, pearson
from .executor import Executor
from .forward import COMPILE_MODES, PRECISIONS, ForwardPass, supported_precisions
from .maps import check_maps, make_replacement, normalize_maps, rank_units, step_counts
from .requests import (
    Curve,
    CurveResult,
    Flip,
    FlipResult,
    Masked,
    Ranked,
    RankedResult,
    Request,
    Scores,
    SubsetResult,
    Subsets,
)

__all__ = [
    "Engine",
    "Executor",
    "RunContext",
    "Subsets",
    "SubsetResult",
    "ForwardPass",
    "COMPILE_MODES",
    "PRECISIONS",
    "supported_precisions",
    "Curve",
    "CurveResult",
    "Flip",
    "FlipResult",
    "Masked",
    "Ranked",
    "RankedResult",
    "Request",
    "Scores",
    "auc",
    "pearson",
    "check_maps",
    "make_replacement",
    "normalize_maps",
    "rank_units",
    "step_counts",
    "model_device",
    "parse_budget",
]
