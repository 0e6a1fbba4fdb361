"""Built-in plugin: the faithfulness and localisation metrics of the papers we follow, on the perturbation engine.

Registration only; the classes live in :mod:`xai_bridge_builtins.metrics.faithfulness` (Quantus's
Pixel-Flipping, Region Perturbation and Selectivity in :mod:`xai_bridge_builtins.metrics.toolkit_metrics`)
and are imported when a metric is created, so listing metrics does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xai_bridge import hookimpl

# name, higher is better, category, needs, aliases, description
METRICS: tuple[tuple[str, bool, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("average_drop", False, "Faithfulness", (), ("ad",), "Average Drop: [p − o]+/p·100, o the score of x ⊙ n(S)."),
    ("average_gain", True, "Faithfulness", (), ("ag",), "Average Gain: [o − p]+/(1 − p)·100 (thesis eq. 2.8)."),
    ("average_increase", True, "Faithfulness", (), ("ai", "iic"), "Average Increase / IIC: 1[p < o]·100."),
    (
        "add",
        True,
        "Faithfulness",
        (),
        ("average_drop_in_deletion",),
        "ADD: the drop when the salient part is removed, x ⊙ (1 − n(S)).",
    ),
    (
        "deletion_auc",
        False,
        "Faithfulness",
        (),
        ("dauc", "deletion"),
        "Deletion AUC: score as the most salient pixels are removed.",
    ),
    (
        "insertion_auc",
        True,
        "Faithfulness",
        (),
        ("iauc", "insertion"),
        "Insertion AUC: score as the most salient pixels are revealed on the substrate.",
    ),
    (
        "dc",
        True,
        "Faithfulness",
        (),
        ("deletion_correlation",),
        "DC: correlation of each deletion step's drop with the saliency removed.",
    ),
    (
        "ic",
        True,
        "Faithfulness",
        (),
        ("insertion_correlation",),
        "IC: correlation of each insertion step's gain with the saliency revealed.",
    ),
    ("aopc", True, "Faithfulness", (), (), "AOPC: mean score drop over MoRF removal up to 10 % of the pixels."),
    (
        "afoc",
        False,
        "Faithfulness",
        (),
        (),
        "AFOC: relative score change after removing 10 % (LeRF; order='morf' for MoRF).",
    ),
    (
        "n_morf",
        False,
        "Faithfulness",
        (),
        ("nmorf",),
        "n_MoRF: fraction removed, most relevant first, before the decision flips.",
    ),
    (
        "n_lerf",
        True,
        "Faithfulness",
        (),
        ("nlerf",),
        "n_LeRF: fraction removed, least relevant first, before the decision flips.",
    ),
    # Δσ's direction is its wrapped metric's; the descriptor gives the default's (deletion_auc, ↓)
    (
        "delta",
        False,
        "Faithfulness",
        (),
        ("delta_sigma",),
        "Δσ: σ with the image's own map minus σ with K = 5 other images' maps "
        "(wraps any metric; direction follows it).",
    ),
    ("adcc", True, "Faithfulness", ("explainer",), (), "ADCC: harmonic mean of Coherency, 1 − Complexity and 1 − AD."),
    (
        "official_metric",
        False,
        "Localisation",
        ("boxes",),
        ("om",),
        "OM: 1 − IoU of the map's box with the true box, times class correctness.",
    ),
    (
        "localisation_error",
        False,
        "Localisation",
        ("boxes",),
        ("le",),
        "LE: 1 − IoU of the map's box with the true box.",
    ),
    ("pixel_f1", True, "Localisation", ("boxes",), ("f1",), "Pixel-wise F1 of the saliency mass against the boxes."),
    ("box_accuracy", True, "Localisation", ("boxes",), ("boxacc",), "Box Accuracy over thresholds η and IoU levels δ."),
    (
        "pointing_game",
        True,
        "Localisation",
        ("boxes",),
        ("standard_pointing_game",),
        "Standard Pointing Game: the peak is inside a box.",
    ),
    (
        "energy_pointing_game",
        True,
        "Localisation",
        ("boxes",),
        (),
        "Energy Pointing Game: the share of saliency inside the boxes.",
    ),
    ("saliency_metric", False, "Localisation", (), ("sm",), "Saliency Metric: log max(0.05, box area) − log p."),
    # Quantus's own metrics on the engine, with Quantus's numbers (needs quantus; toolkit_metrics.py)
    (
        "pixel_flipping",
        False,
        "Faithfulness",
        (),
        (),
        "Quantus PixelFlipping: AUC of the score as features_in_step channel features are replaced, MoRF.",
    ),
    (
        "region_perturbation",
        True,
        "Faithfulness",
        (),
        (),
        "Quantus RegionPerturbation: AUC of f(x) − f(x^(k)) over regions_evaluation patches (order morf/lerf).",
    ),
    (
        "selectivity",
        False,
        "Faithfulness",
        (),
        (),
        "Quantus Selectivity: AUC of the score as patch_size patches are replaced, most relevant first.",
    ),
    (
        "infidelity",
        False,
        "Faithfulness",
        (),
        (),
        "Quantus Infidelity: MSE of score drops vs Σ a·(x − x̃) as patches are replaced in raster order.",
    ),
    (
        "irof",
        True,
        "Faithfulness",
        (),
        (),
        "IROF: area over the relative score curve as superpixels are removed, most relevant first.",
    ),
)

#: the metrics whose classes live in toolkit_metrics.py (the others in faithfulness.py)
TOOLKIT = ("pixel_flipping", "region_perturbation", "selectivity", "infidelity", "irof")


def _factory(name: str) -> Callable[..., Any]:
    def factory(**options: Any) -> Any:
        if name in TOOLKIT:
            from xai_bridge_builtins.metrics.toolkit_metrics import METRICS as CLASSES
        else:
            from xai_bridge_builtins.metrics.faithfulness import METRICS as CLASSES

        return CLASSES[name](**options)

    return factory


@hookimpl
def register_metrics(register: Callable[..., None]) -> None:
    for name, higher, category, needs, aliases, description in METRICS:
        register(
            name,
            _factory(name),
            higher_is_better=higher,
            category=category,
            needs=needs,
            aliases=aliases,
            description=description,
        )
