"""Built-in plugin: the faithfulness and localisation metrics of the papers we follow, on the perturbation engine.

Registration only; the classes live in :mod:`xai_bridge_builtins.metrics.faithfulness` (Quantus's
Pixel-Flipping, Region Perturbation and Selectivity in :mod:`xai_bridge_builtins.metrics.toolkit_metrics`)
and are imported when a metric is created, so listing metrics does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable

from xai_bridge import hookimpl

_FAITHFULNESS = "xai_bridge_builtins.metrics.faithfulness"
_TOOLKIT = "xai_bridge_builtins.metrics.toolkit_metrics"

# name, class (imported when a metric is created or described), aliases; direction, category, needs and the
# description are the class's own attributes (its docstring's first paragraph)
METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("average_drop", f"{_FAITHFULNESS}:AverageDrop", ("ad",)),
    ("average_gain", f"{_FAITHFULNESS}:AverageGain", ("ag",)),
    ("average_increase", f"{_FAITHFULNESS}:AverageIncrease", ("ai", "iic")),
    ("add", f"{_FAITHFULNESS}:AverageDropInDeletion", ("average_drop_in_deletion",)),
    ("deletion_auc", f"{_FAITHFULNESS}:DeletionAUC", ("dauc", "deletion")),
    ("insertion_auc", f"{_FAITHFULNESS}:InsertionAUC", ("iauc", "insertion")),
    ("dc", f"{_FAITHFULNESS}:DeletionCorrelation", ("deletion_correlation",)),
    ("ic", f"{_FAITHFULNESS}:InsertionCorrelation", ("insertion_correlation",)),
    ("aopc", f"{_FAITHFULNESS}:AOPC", ()),
    ("afoc", f"{_FAITHFULNESS}:AFOC", ()),
    ("n_morf", f"{_FAITHFULNESS}:NMoRF", ("nmorf",)),
    ("n_lerf", f"{_FAITHFULNESS}:NLeRF", ("nlerf",)),
    ("delta", f"{_FAITHFULNESS}:Delta", ("delta_sigma",)),
    ("adcc", f"{_FAITHFULNESS}:ADCC", ()),
    ("official_metric", f"{_FAITHFULNESS}:OfficialMetric", ("om",)),
    ("localisation_error", f"{_FAITHFULNESS}:LocalisationError", ("le",)),
    ("pixel_f1", f"{_FAITHFULNESS}:PixelF1", ("f1",)),
    ("box_accuracy", f"{_FAITHFULNESS}:BoxAccuracy", ("boxacc",)),
    ("pointing_game", f"{_FAITHFULNESS}:PointingGame", ("standard_pointing_game",)),
    ("energy_pointing_game", f"{_FAITHFULNESS}:EnergyPointingGame", ()),
    ("saliency_metric", f"{_FAITHFULNESS}:SaliencyMetric", ("sm",)),
    # Quantus's own metrics on the engine, with Quantus's numbers (needs quantus)
    ("pixel_flipping", f"{_TOOLKIT}:PixelFlipping", ()),
    ("region_perturbation", f"{_TOOLKIT}:RegionPerturbation", ()),
    ("selectivity", f"{_TOOLKIT}:Selectivity", ()),
    ("infidelity", f"{_TOOLKIT}:Infidelity", ()),
    ("irof", f"{_TOOLKIT}:IROF", ()),
)


@hookimpl
def register_metrics(register: Callable[..., None]) -> None:
    for name, cls, aliases in METRICS:
        register(name, metric_class=cls, aliases=aliases)
