"""Statistics comparing explainers, against hand-worked cases and independent implementations."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from scipy.stats import spearmanr, wilcoxon

from xai_bridge import stats

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 observers × 12 units.
K2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
        [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
    ]
)


@pytest.mark.parametrize(
    "level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_alpha_matches_the_published_example(level, published):
    assert stats.krippendorff_alpha(K2011, level) == pytest.approx(published, abs=1e-3)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_the_krippendorff_package(level):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 6, size=(7, 20)).astype(float)
    data[rng.random(data.shape) < 0.15] = np.nan
    assert stats.krippendorff_alpha(data, level) == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement=level), abs=1e-9
    )


def test_identical_rankings_give_alpha_one_and_random_ones_near_zero():
    rng = np.random.default_rng(1)
    same = {f"m{k}": np.full(50, float(k)) + 0.0 for k in range(5)}
    assert stats.metric_reliability(same, higher_is_better=True) == pytest.approx(1.0)
    noise = {f"m{k}": rng.random(400) for k in range(5)}
    assert abs(stats.metric_reliability(noise, higher_is_better=True)) < 0.05


def test_win_rates_by_hand_with_ties_and_direction():
    scores = {"a": [3.0, 2.0, 1.0, np.nan], "b": [1.0, 2.0, 0.0, 5.0], "c": [4.0, 4.0, 4.0, 4.0]}
    names, w = stats.win_rates(scores, higher_is_better=True)
    assert names == ["a", "b", "c"]
    assert w[0, 1] == pytest.approx(2.5 / 3)  # NaN image left out
    assert w[2, 0] == 1.0 and w[0, 2] == 0.0
    np.testing.assert_allclose(w + w.T, np.where(np.isnan(w), np.nan, 1.0))
    _, lower = stats.win_rates(scores, higher_is_better=False)
    assert lower[0, 1] == pytest.approx(0.5 / 3)


def test_wilcoxon_equals_scipy_per_pair():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=40), rng.normal(0.5, size=40)
    names, p = stats.wilcoxon_pvalues({"a": a, "b": b, "same": a})
    assert p[0, 1] == pytest.approx(wilcoxon(a, b).pvalue) and p[1, 0] == p[0, 1]
    assert p[0, 2] == 1.0 and np.all(np.diag(p) == 1)


def test_ranks_follow_the_direction():
    _, r = stats.rank_explainers({"a": [0.9, 0.1], "b": [0.5, 0.5]}, higher_is_better=True)
    np.testing.assert_array_equal(r, [[1, 2], [2, 1]])
    _, r = stats.rank_explainers({"a": [0.9, 0.1], "b": [0.5, 0.5]}, higher_is_better=False)
    np.testing.assert_array_equal(r, [[2, 1], [1, 2]])


def test_spearman_negates_lower_is_better_metrics():
    x = np.arange(10.0)
    names, rho = stats.spearman_between_metrics(
        {"insertion": x, "deletion": -x, "n_morf": x**2}, {"insertion": True, "deletion": False, "n_morf": False}
    )
    assert rho[0, 1] == pytest.approx(1.0)  # deletion falls as insertion rises: agreement after negation
    assert rho[0, 2] == pytest.approx(-1.0)
    assert rho[0, 1] == pytest.approx(-spearmanr(x, -x).statistic)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same images"):
        stats.win_rates({"a": [1, 2], "b": [1]}, True)
    with pytest.raises(ValueError, match="level"):
        stats.krippendorff_alpha(K2011, "cardinal")


def test_spearman_between_two_metrics_is_a_full_two_by_two_matrix():
    x = np.arange(8.0)
    names, rho = stats.spearman_between_metrics(
        {"insertion": x, "deletion": x[::-1].copy()}, {"insertion": True, "deletion": False}
    )
    assert names == ["insertion", "deletion"]
    np.testing.assert_allclose(rho, [[1.0, 1.0], [1.0, 1.0]])  # deletion negated: the two agree perfectly
