"""Statistics that compare explainers (Grabska-Barwińska, Rivasplata, Rannen-Triki & György,
"Towards Better Visual Explanations for Deep Image Classifiers", §4.3 and appendix C).

All functions take per-image scores as a mapping ``explainer -> array (n_images,)``
(the same images, in the same order, for every explainer) and the metric's
direction, and return plain NumPy arrays / floats, so they work on any result
table.

* :func:`win_rates` — how often the row explainer beats the column explainer
  on the same image (Chattopadhyay et al. 2017's win statistic).
* :func:`wilcoxon_pvalues` — two-sided Wilcoxon signed-rank test per pair.
* :func:`rank_explainers` and :func:`krippendorff_alpha` — inter-rater reliability
  of a metric: do different images rank the explainers the same way?
* :func:`spearman_between_metrics` — internal consistency: do two metrics agree?
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from .results import Results

Scores = Mapping[str, Sequence[float] | np.ndarray]


def _matrix(scores: Scores) -> tuple[list[str], np.ndarray]:
    names = list(scores)
    if not names:
        raise InvalidArgumentError("scores: no explainers given")
    columns = [np.asarray(scores[n], dtype=float).reshape(-1) for n in names]
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise InvalidArgumentError(
            f"scores: every explainer needs a value for the same images, got lengths {sorted(lengths)}"
        )
    return names, np.stack(columns, axis=1)  # images × explainers


def win_rates(scores: Scores, higher_is_better: bool) -> tuple[list[str], np.ndarray]:
    """``W[i, j]`` = fraction of images on which explainer ``i`` scores better than ``j``.

    Ties count half, so ``W + Wᵀ = 1`` off the diagonal (the diagonal is 0.5).
    Images where either value is NaN are left out of that pair.

    >>> names, w = win_rates({"a": [3, 2, 1], "b": [1, 2, 0]}, higher_is_better=True)
    >>> float(w[0, 1])  # a wins twice and ties once out of three
    0.8333333333333334
    """
    names, values = _matrix(scores)
    sign = 1.0 if higher_is_better else -1.0
    diff = sign * (values[:, :, None] - values[:, None, :])  # images × i × j
    valid = ~np.isnan(diff)
    wins = np.where(valid, (diff > 0) + 0.5 * (diff == 0), 0.0).sum(0)
    counts = valid.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return names, np.where(counts > 0, wins / np.maximum(counts, 1), np.nan)


def wilcoxon_pvalues(scores: Scores) -> tuple[list[str], np.ndarray]:
    """Two-sided Wilcoxon signed-rank p-values for every pair (``scipy.stats.wilcoxon``).

    The diagonal is 1; a pair whose differences are all zero gets p = 1.
    """
    from scipy.stats import wilcoxon

    names, values = _matrix(scores)
    k = len(names)
    p = np.ones((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            a, b = values[:, i], values[:, j]
            keep = ~(np.isnan(a) | np.isnan(b))
            d = a[keep] - b[keep]
            if d.size == 0 or np.all(d == 0):
                continue
            p[i, j] = p[j, i] = float(wilcoxon(a[keep], b[keep], zero_method="wilcox").pvalue)
    return names, p


def rank_explainers(scores: Scores, higher_is_better: bool) -> tuple[list[str], np.ndarray]:
    """Per-image ranks of the explainers (1 = best; ties get their average rank)."""
    from scipy.stats import rankdata

    names, values = _matrix(scores)
    signed = -values if higher_is_better else values
    ranks = rankdata(signed, axis=1, method="average", nan_policy="omit")
    return names, np.where(np.isnan(values), np.nan, ranks)


def krippendorff_alpha(data: np.ndarray, level: str = "ordinal") -> float:
    """Krippendorff's α for a ``raters × units`` matrix (NaN = missing).

    For a metric's reliability the raters are the images and the units the
    explainers, each value the rank the image gives the explainer (Grabska-Barwińska et al., §4.3):
    ``krippendorff_alpha(rank_explainers(scores, hib)[1], "ordinal")``.
    α = 1 − D_o / D_e from the coincidence matrix of pairable values;
    ``level`` is ``"nominal"``, ``"ordinal"``, ``"interval"`` or ``"ratio"``.

    >>> round(krippendorff_alpha(np.array([[1, 2, 3], [1, 2, 3]]), "interval"), 3)
    1.0
    """
    data = np.asarray(data, dtype=float)
    if data.ndim != 2:
        raise InvalidArgumentError(f"data: expected raters × units, got shape {data.shape}")
    present = ~np.isnan(data)
    pairable = present.sum(0) >= 2
    data, present = data[:, pairable], present[:, pairable]
    values = np.unique(data[present])
    if values.size < 2:
        raise InvalidArgumentError(
            "data: Krippendorff's α needs at least two different values among units rated twice or more"
        )
    # counts[u, c]: how many raters gave value c to unit u
    index = np.searchsorted(values, np.where(present, data, values[0]))
    counts = np.zeros((data.shape[1], values.size))
    for c in range(values.size):
        counts[:, c] = ((index == c) & present).sum(0)
    m = counts.sum(1)
    coincidence = np.einsum("uc,uk->ck", counts / (m - 1)[:, None], counts) - np.diag(
        (counts / (m - 1)[:, None]).sum(0)
    )
    n_c = coincidence.sum(1)
    n = n_c.sum()
    delta2 = _distance(values, n_c, level)
    observed = (coincidence * delta2).sum() / n
    expected = (np.outer(n_c, n_c) * delta2).sum() / (n * (n - 1))
    return float(1.0 - observed / expected) if expected > 0 else float("nan")


def _distance(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    c, k = np.meshgrid(values, values, indexing="ij")
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(((c - k) / (c + k)) ** 2)
    if level == "ordinal":
        cum = np.cumsum(n_c)
        i, j = np.meshgrid(np.arange(values.size), np.arange(values.size), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cum[hi] - cum[lo] + n_c[lo]  # Σ_{g=lo}^{hi} n_g
        return (between - (n_c[i] + n_c[j]) / 2.0) ** 2
    raise InvalidArgumentError(f"level: {level!r}; expected 'nominal', 'ordinal', 'interval' or 'ratio'")


def metric_reliability(scores: Scores, higher_is_better: bool) -> float:
    """Krippendorff's ordinal α of the per-image rankings of the explainers by one metric."""
    return krippendorff_alpha(rank_explainers(scores, higher_is_better)[1], "ordinal")


def spearman_between_metrics(
    values: Mapping[str, Sequence[float]], higher_is_better: Mapping[str, bool] | None = None
) -> tuple[list[str], np.ndarray]:
    """Spearman's ρ between metrics over the same explanations (internal consistency).

    ``values`` maps metric → one value per explanation. With ``higher_is_better``,
    lower-is-better metrics are negated first, as in Grabska-Barwińska et al., Fig. 11, so positive ρ means agreement.
    """
    from scipy.stats import spearmanr

    names = list(values)
    columns = []
    for name in names:
        column = np.asarray(values[name], dtype=float)
        if higher_is_better is not None and not higher_is_better.get(name, True):
            column = -column
        columns.append(column)
    matrix = np.stack(columns, axis=1)
    if len(names) == 1:
        return names, np.ones((1, 1))
    keep = ~np.isnan(matrix).any(1)
    rho = spearmanr(matrix[keep]).statistic
    if np.ndim(rho) == 0:  # scipy returns a bare ρ for two columns
        rho = np.array([[1.0, rho], [rho, 1.0]])
    return names, np.asarray(rho)


# -- statistics of a whole Results table (what the benchmark report shows) ------------------------
def ranking(results: Results, metric: str) -> list[tuple[str, float]]:
    """Explainers by mean, best first (NaN means last)."""
    hib = results.directions.get(metric, True)
    means = [(e, results.mean_std(e, metric)[0]) for e in results.explainers]
    return sorted(means, key=lambda em: (math.isnan(em[1]), -em[1] if hib else em[1]))


def verdicts(results: Results) -> list[dict[str, Any]]:
    """Per metric: the best explainer by mean, the runner-up, the win rate and Wilcoxon p between them."""
    out = []
    for metric in results.metrics:
        order = ranking(results, metric)
        best, mean = order[0]
        row: dict[str, Any] = {
            "metric": metric,
            "best": best,
            "mean": mean,
            "runner_up": None,
            "win": math.nan,
            "p": math.nan,
        }
        if len(order) > 1:
            second = order[1][0]
            scores = results.by_metric(metric)
            names, w = win_rates(scores, results.directions.get(metric, True))
            _, p = wilcoxon_pvalues(scores)
            i, j = names.index(best), names.index(second)
            row.update(
                runner_up=second,
                win=float(w[i, j]),
                p=float(p[i, j]),
                tied=math.isclose(mean, order[1][1], rel_tol=1e-9, abs_tol=1e-12),
            )
        out.append(row)
    return out


def reliability(
    results: Results, explainers: Sequence[str] | None = None, draws: int = 50, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Per metric: Krippendorff's ordinal α of the per-image rankings, with a 95 % interval.

    As in Grabska-Barwińska et al. (Fig. 10) the interval comes from ``draws`` random subsets of the images
    (half of them, at least 3); NaN when the rankings do not vary.
    """
    rng = np.random.default_rng(seed)
    out = {}
    names = list(explainers or results.explainers)
    n = len(results.images)
    for metric in results.metrics:
        scores = {e: np.asarray(results.values(e, metric)) for e in names}
        hib = results.directions.get(metric, True)
        alpha = _alpha(scores, hib)
        draws_alpha = []
        if n >= 6:
            k = max(3, n // 2)
            for _ in range(draws):
                idx = rng.choice(n, size=k, replace=False)
                draws_alpha.append(_alpha({e: v[idx] for e, v in scores.items()}, hib))
        draws_alpha = [a for a in draws_alpha if not math.isnan(a)]
        lo, hi = (
            (float(np.percentile(draws_alpha, 2.5)), float(np.percentile(draws_alpha, 97.5)))
            if draws_alpha
            else (math.nan, math.nan)
        )
        out[metric] = (alpha, lo, hi)
    return out


def _alpha(scores: dict[str, np.ndarray], hib: bool) -> float:
    if len(scores) < 2:
        return math.nan
    try:
        return metric_reliability(scores, hib)
    except ValueError:
        return math.nan


def consistency(results: Results, explainer: str | None = None) -> tuple[list[str], np.ndarray]:
    """Spearman's ρ between metrics over explanations (one explainer's, or all pooled), sign-aligned.

    Computed pair by pair (:func:`xai_bridge.spearman_between_metrics`), each pair on
    the explanations both metrics scored; NaN where a metric is constant.
    """
    import warnings

    explainers = [explainer] if explainer else results.explainers
    names = results.metrics
    values = {m: [v for e in explainers for v in results.values(e, m)] for m in names}
    rho = np.eye(len(names))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                pair = {names[i]: values[names[i]], names[j]: values[names[j]]}
                try:
                    flat = np.asarray(spearman_between_metrics(pair, results.directions)[1], dtype=float).reshape(-1)
                    r = float(flat[0] if flat.size == 1 else flat[1])  # scipy gives a scalar for two columns
                except ValueError:
                    r = math.nan
                rho[i, j] = rho[j, i] = r
    return list(names), rho
