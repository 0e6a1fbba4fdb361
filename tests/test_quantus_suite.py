"""Quantus v0.6.0's own faithfulness test cases, every metric made through ``xb.accelerate``.

The cases re-express those of Quantus's ``tests/metrics/test_faithfulness_metrics.py`` (the torch ones): their
metric parameters, their models (``ConvNet1D`` and ``LeNet`` from ``quantus.helpers.model.models``) and their data
as their fixtures make it: a 1-D batch ``np.random.randn(10, 3, 100)`` with labels ``randint(0, 10)`` and
attributions ``uniform(0, 0.01)`` of shape ``10×1×100``, and MNIST-like ``1×28×28`` digits (random images here:
the MNIST weights and digits of Quantus's repository are not shipped with it). Quantus 0.6.0's default perturb
functions stand where the older cases name ``baseline_replacement_by_indices``.

Each case runs the toolkit's metric and the accelerated one after the same ``np.random.seed`` and asserts

- Quantus's own expectation (the range, the type, the exception) on the accelerated scores, and
- the scores equal the toolkit's within 1e-6 where the definitions agree; where Quantus 0.6.0 computes something
  else (Monotonicity, Sensitivity-n, Infidelity on series, IROF and ROAD in batches; see docs/quantus.md), they
  equal an independent re-implementation of the published definition on the same inputs.

NumPy ≥ 2 has no ``np.trapz``; the toolkit's side gets it back only for the toolkit's call (Quantus's
``calculate_auc``), never for the accelerated one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import quantus
import torch
from quantus.helpers.model.models import ConvNet1D, LeNet

import xai_bridge as xb
from xai_bridge.errors import ToolkitDefectWarning, ToolkitFallbackWarning, UnsupportedMetricError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def series() -> dict[str, Any]:
    """Quantus's 1-D case: ``ConvNet1D(n_channels=3, n_classes=10)`` and its almost-uniform attributions."""
    torch.manual_seed(0)
    model = ConvNet1D(n_channels=3, n_classes=10).eval()
    rng = np.random.RandomState(42)
    x = rng.randn(10, 3, 100).astype(np.float32)
    return {
        "model": model,
        "x_batch": x,
        "y_batch": rng.randint(0, 10, size=10),
        "a_batch": rng.uniform(0, 0.01, (10, 1, 100)),
    }


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    """Quantus's MNIST case at a small size: ``LeNet`` and eight ``1×28×28`` digits, with Saliency attributions."""
    torch.manual_seed(1)
    model = LeNet().eval()
    rng = np.random.RandomState(7)
    x = rng.uniform(0, 1, (8, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    a = quantus.explain(model, x, y, method="Saliency")
    return {"model": model, "x_batch": x, "y_batch": y, "a_batch": a}


@contextlib.contextmanager
def _toolkit_trapz() -> Iterator[None]:
    """``np.trapz`` for the toolkit's own call only (Quantus 0.6.0's ``calculate_auc``; absent from NumPy 2.4)."""
    had = hasattr(np, "trapz")
    if not had:
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had:
            del np.trapz  # type: ignore[attr-defined]


def _run(make: Callable[[], Any], data: dict[str, Any], seed: int = 3, **call: Any) -> tuple[Any, Any, Any]:
    """The toolkit's scores, the accelerated scores and the accelerated metric, after the same seed."""
    args = {**data, "device": "cpu", **call}
    np.random.seed(seed)
    with _toolkit_trapz():
        theirs = make()(**args)
    np.random.seed(seed)
    fast = xb.accelerate(make())
    ours = fast(**args)
    return theirs, ours, fast


def _close(ours: Any, theirs: Any, atol: float = 1e-6, rtol: float = 0.0) -> float:
    """Max ``|Δ|``, asserted ``≤ atol + rtol·|theirs|`` element by element."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape
    delta = np.abs(ours - theirs)
    assert np.all(delta <= atol + rtol * np.abs(theirs)), f"max |Δ| = {delta.max()}, theirs {theirs}"
    return float(delta.max()) if delta.size else 0.0


def _in_range(scores: Any, low: float, high: float) -> bool:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    return bool(np.all((values >= low) & (values <= high)))


# -- the metrics whose definitions agree: equal to Quantus -------------------------------------------------------
AGREE: dict[str, tuple[str, Callable[[], Any], tuple[float, float] | None]] = {
    "fc-mean-digits": (
        "digits",
        lambda: quantus.FaithfulnessCorrelation(
            nr_runs=10,
            perturb_baseline="mean",
            similarity_func=quantus.correlation_spearman,
            normalise=True,
            disable_warnings=True,
        ),
        (-1.0, 1.0),
    ),
    "fc-subset100-digits": (
        "digits",
        lambda: quantus.FaithfulnessCorrelation(
            nr_runs=10,
            perturb_baseline="mean",
            similarity_func=quantus.correlation_spearman,
            normalise=True,
            subset_size=100,
            disable_warnings=True,
        ),
        (-1.0, 1.0),
    ),
    "fc-subset10-series": (
        "series",
        lambda: quantus.FaithfulnessCorrelation(
            nr_runs=10,
            perturb_baseline="mean",
            similarity_func=quantus.correlation_spearman,
            normalise=True,
            subset_size=10,
            disable_warnings=True,
        ),
        (-1.0, 1.0),
    ),
    "fe-uniform-digits": (
        "digits",
        lambda: quantus.FaithfulnessEstimate(
            features_in_step=28, perturb_baseline="uniform", normalise=True, disable_warnings=True
        ),
        (-1.0, 1.0),
    ),
    "fe-uniform-abs-digits": (
        "digits",
        lambda: quantus.FaithfulnessEstimate(
            features_in_step=196, perturb_baseline="uniform", abs=True, normalise=True, disable_warnings=True
        ),
        (0.0, 1.0),
    ),
    "fe-uniform-series": (
        "series",
        lambda: quantus.FaithfulnessEstimate(
            features_in_step=10, perturb_baseline="uniform", normalise=True, disable_warnings=True
        ),
        (-1.0, 1.0),
    ),
    "mc-uniform-digits": (
        "digits",
        lambda: quantus.MonotonicityCorrelation(
            eps=1e-5,
            nr_samples=10,
            features_in_step=28,
            normalise=True,
            abs=True,
            perturb_baseline="uniform",
            similarity_func=quantus.correlation_kendall_tau,
            disable_warnings=True,
        ),
        (-1.0, 1.0),
    ),
    "mc-uniform-series": (
        "series",
        lambda: quantus.MonotonicityCorrelation(
            eps=1e-5,
            nr_samples=10,
            features_in_step=10,
            normalise=True,
            abs=True,
            perturb_baseline="uniform",
            similarity_func=quantus.correlation_kendall_tau,
            disable_warnings=True,
        ),
        (-1.0, 1.0),
    ),
    "pf-mean-abs-digits": (
        "digits",
        lambda: quantus.PixelFlipping(
            features_in_step=28, perturb_baseline="mean", normalise=True, abs=True, disable_warnings=True
        ),
        (0.0, 1.0),
    ),
    "pf-mean-14-digits": (
        "digits",
        lambda: quantus.PixelFlipping(features_in_step=14, perturb_baseline="mean", disable_warnings=True),
        (0.0, 1.0),
    ),
    "pf-uniform-digits": (
        "digits",
        lambda: quantus.PixelFlipping(features_in_step=56, perturb_baseline="uniform", disable_warnings=True),
        (0.0, 1.0),
    ),
    "pf-mean-series": (
        "series",
        lambda: quantus.PixelFlipping(features_in_step=10, perturb_baseline="mean", disable_warnings=True),
        None,  # ConvNet1D returns logits (Quantus's range 0..1 assumes its softmax); compared only
    ),
    "pf-uniform-auc-digits": (
        "digits",
        lambda: quantus.PixelFlipping(
            features_in_step=56,
            perturb_baseline="uniform",
            normalise=True,
            abs=True,
            return_auc_per_sample=True,
            disable_warnings=True,
        ),
        (0.0, 14.0),
    ),
    "rp-morf-digits": (
        "digits",
        lambda: quantus.RegionPerturbation(
            perturb_baseline="mean", patch_size=7, normalise=True, order="morf", disable_warnings=True
        ),
        (-1.0, 1.0),
    ),
    "rp-random-digits": (
        "digits",
        lambda: quantus.RegionPerturbation(
            perturb_baseline="mean", patch_size=7, normalise=True, order="random", disable_warnings=True
        ),
        (-1.0, 1.0),
    ),
    "rp-default-series": ("series", lambda: quantus.RegionPerturbation(disable_warnings=True), None),
    "selectivity-mean-abs-digits": (
        "digits",
        lambda: quantus.Selectivity(
            perturb_baseline="mean", patch_size=7, normalise=True, abs=True, disable_warnings=True
        ),
        None,
    ),
    "selectivity-uniform-4-digits": (
        "digits",
        lambda: quantus.Selectivity(perturb_baseline="uniform", patch_size=4, normalise=True, disable_warnings=True),
        None,
    ),
    "selectivity-mean-abs-series": (
        "series",
        lambda: quantus.Selectivity(
            perturb_baseline="mean", patch_size=7, normalise=True, abs=True, disable_warnings=True
        ),
        None,
    ),
    "infidelity-digits": (
        "digits",
        lambda: quantus.Infidelity(
            normalise=True, abs=True, n_perturb_samples=5, perturb_patch_sizes=[4], disable_warnings=True
        ),
        None,
    ),
}


#: the heaviest cases (the toolkit's side takes 10-25 s on a shared 2-core CPU): run with ``-m slow``
SLOW = {"infidelity-digits", "mc-uniform-digits", "fc-mean-digits"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in AGREE])
def test_accelerated_equals_quantus_where_the_definitions_agree(name, series, digits):
    data_name, make, expected = AGREE[name]
    data = series if data_name == "series" else digits
    theirs, ours, fast = _run(make, data)
    # Infidelity's toolkit side sums a·(x − x̃) in float32 (values near 1e3): compare relative to the value
    _close(ours, theirs, *((0.0, 1e-6) if name.startswith("infidelity") else (1e-6, 0.0)))
    if expected is not None:  # Quantus's expectation (made for its trained models) gets the toolkit's verdict
        assert _in_range(ours, *expected) == _in_range(theirs, *expected)
    assert fast.forward_samples > 0
    if np.ndim(ours) == 2 and isinstance(
        fast, (quantus.PixelFlipping, quantus.RegionPerturbation, quantus.Selectivity)
    ):
        score = fast.get_auc_score  # works under NumPy >= 2, a np.float64 as Quantus's test asserts
        assert type(score) is np.float64 and np.isfinite(score)


@pytest.mark.parametrize("data_name, subset_size", [("series", 100), ("digits", 784)], ids=["series-100", "digits-784"])
def test_subset_size_of_the_whole_input_is_refused_as_quantus_does(data_name, subset_size, series, digits):
    data = series if data_name == "series" else digits
    metric = xb.accelerate(quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=subset_size, disable_warnings=True))
    with pytest.raises(ValueError):
        metric(**data, device="cpu")


# -- where Quantus 0.6.0 computes something else: the published definitions ----------------------------------------
def _spy(fast: Any) -> dict[str, np.ndarray]:
    """Record the (preprocessed) arrays Quantus hands to the accelerated ``evaluate_batch``."""
    seen: dict[str, np.ndarray] = {}
    original = fast.evaluate_batch

    def evaluate_batch(model, x_batch, y_batch, a_batch, **kwargs):
        seen.update(x=np.array(x_batch), y=np.array(y_batch), a=np.array(a_batch))
        return original(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, **kwargs)

    fast.evaluate_batch = evaluate_batch
    return seen


def _target_logits(model: torch.nn.Module, inputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(inputs, dtype=np.float32)))
    return out[np.arange(len(y)), torch.as_tensor(y)].numpy().astype(np.float64)


@pytest.mark.parametrize("data_name", ["series", "digits"])
def test_monotonicity_is_the_published_insertion(data_name, series, digits):
    """Arya et al. 2019: from the baseline input (Quantus's, ``"black"``: each input's minimum), the features are
    given back 28 (10 for series) at a time in ascending attribution order; monotonic when the score never drops."""
    data = series if data_name == "series" else digits
    step = 10 if data_name == "series" else 28
    fast = xb.accelerate(
        quantus.Monotonicity(features_in_step=step, perturb_baseline="black", normalise=True, disable_warnings=True)
    )
    seen = _spy(fast)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ToolkitDefectWarning)
        ours = fast(**data, device="cpu", softmax=False)
    assert all(s in (True, False) for s in ours)  # Quantus's own expectation
    x, y, a = seen["x"], seen["y"], np.broadcast_to(seen["a"], seen["x"].shape)
    b = len(x)
    flat_x, order = x.reshape(b, -1), np.argsort(a.reshape(b, -1), axis=1, kind="stable")
    current = np.repeat(flat_x.min(1, keepdims=True), flat_x.shape[1], 1)
    curve = []
    for start in range(0, flat_x.shape[1], step):
        idx = order[:, start : start + step]
        np.put_along_axis(current, idx, np.take_along_axis(flat_x, idx, 1), 1)
        curve.append(_target_logits(data["model"], current.reshape(x.shape), y))
    expected = np.all(np.diff(np.stack(curve, 1), axis=1) >= 0, axis=1)
    assert list(ours) == expected.tolist()


@pytest.mark.parametrize("data_name", ["series", "digits"])
def test_sensitivity_n_is_the_published_pairing(data_name, series, digits):
    """Ancona et al. 2018: per ``n``, Spearman's correlation over the inputs of the score drop when the ``n`` most
    relevant features are replaced (``"black"``) with the attribution sum over the same ``n`` features."""
    data = series if data_name == "series" else digits
    step = 10 if data_name == "series" else 28
    fast = xb.accelerate(
        quantus.SensitivityN(
            features_in_step=step,
            n_max_percentage=0.9,
            perturb_baseline="black",
            abs=True,
            normalise=True,
            similarity_func=quantus.correlation_spearman,
            return_aggregate=False,
            disable_warnings=True,
        )
    )
    seen = _spy(fast)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ToolkitDefectWarning)
        ours = np.asarray(fast(**data, device="cpu", softmax=False), dtype=np.float64)
    assert _in_range(ours[np.isfinite(ours)], -1.0, 1.0)  # Quantus's own expectation
    x, y, a = seen["x"], seen["y"], np.broadcast_to(seen["a"], seen["x"].shape)
    b = len(x)
    flat_x, flat_a = x.reshape(b, -1), a.reshape(b, -1)
    order = np.argsort(-flat_a, axis=1)
    base = _target_logits(data["model"], x, y)
    steps = int(0.9 * np.prod(x.shape[2:]) // step)
    expected = []
    for k in range(steps):
        top = order[:, : (k + 1) * step]
        removed = flat_x.copy()
        np.put_along_axis(removed, top, flat_x.min(1, keepdims=True), 1)
        drops = base - _target_logits(data["model"], removed.reshape(x.shape), y)
        sums = np.take_along_axis(flat_a, top, 1).sum(1)
        expected.append(quantus.correlation_spearman(a=drops, b=sums))
    _close(ours, np.asarray(expected, dtype=np.float64), atol=1e-6)


def test_infidelity_on_series_is_quantus_s_patches_of_the_series(series):
    """Quantus 0.6.0 fails on series (its padding assumes images); the accelerated metric sees a series as
    ``B×C×1×T`` edge-padded to the patch height, as Quantus pads images. Reference: Quantus itself on that padded
    image (the series repeated on 4 rows, the attributions on the first row only, the model reading the first row),
    where no padding is needed."""

    def make():
        return quantus.Infidelity(
            normalise=True, abs=True, n_perturb_samples=5, perturb_patch_sizes=[4], disable_warnings=True
        )

    with pytest.raises(AssertionError):
        make()(**series, device="cpu")
    np.random.seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ToolkitDefectWarning)
        ours = xb.accelerate(make())(**series, device="cpu")
    model = series["model"]

    class FirstRow(torch.nn.Module):  # the series model, reading the first row of an image
        def forward(self, x):
            return model(x[:, :, 0])

    a_rows = np.zeros((10, 1, 4, 100))
    a_rows[:, :, 0] = series["a_batch"]
    images = {
        **series,
        "model": FirstRow().eval(),
        "x_batch": np.repeat(series["x_batch"][:, :, None], 4, axis=2),
        "a_batch": a_rows,
    }
    np.random.seed(3)
    theirs = make()(**images, device="cpu", channel_first=True)
    _close(ours, theirs, atol=0.0, rtol=1e-6)


@pytest.mark.slow
def test_irof_on_digits_equals_quantus_one_digit_per_batch(digits):
    """IROF (Rieger and Hansen 2020) on one-channel digits: Quantus's value where its batch holds one digit."""

    def make():
        return quantus.IROF(
            perturb_baseline="mean",
            segmentation_method="slic",
            normalise=True,
            disable_warnings=True,
        )

    theirs, ours, _ = _run(make, digits, batch_size=1)
    _close(ours, theirs)
    assert _in_range(ours, 0.0, 80.0)


@pytest.mark.slow
def test_road_on_digits_equals_quantus_in_one_batch(digits):
    """ROAD (Rong et al. 2022) on one-channel digits in one batch: Quantus's values, percentages 1, 3, …, 99."""

    def make():
        return quantus.ROAD(
            normalise=True,
            abs=True,
            percentages=list(range(1, 100, 2)),
            disable_warnings=True,
        )

    small = {k: v[:4] for k, v in digits.items() if k != "model"} | {"model": digits["model"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ToolkitDefectWarning)
        theirs, ours, _ = _run(make, small)
    _close(list(ours.values()), list(theirs.values()))
    assert _in_range(list(ours.values()), 0.0, 1.0)


# -- what the engine cannot take: the toolkit's own code, or a named refusal ---------------------------------------
def test_layout_a_metric_cannot_take_falls_back_with_one_warning_or_is_refused(series):
    """IROF needs images: on series, Quantus's own code runs (and raises its ValueError, as Quantus's test
    expects) under ``fallback=True``, after one warning saying why; without it, the refusal names ``x_batch``."""

    def make():
        return quantus.IROF(perturb_baseline="mean", normalise=True, disable_warnings=True)

    with pytest.warns(ToolkitFallbackWarning, match=r"x_batch: .* takes images B×C×H×W, got \(10, 3, 100\)") as rec:
        with pytest.raises(ValueError):
            xb.accelerate(make(), fallback=True)(**series, device="cpu")
    assert len([w for w in rec if issubclass(w.category, ToolkitFallbackWarning)]) == 1
    with pytest.raises(UnsupportedMetricError, match="x_batch: .*fallback=True"):
        xb.accelerate(make())(**series, device="cpu")


def test_a_model_that_is_not_torch_runs_the_toolkit_s_code_under_fallback(series):
    """A model the engine cannot run (here a plain callable, standing for a TensorFlow model) is the toolkit's
    business under ``fallback=True``; otherwise the refusal names ``model``."""

    def pf():
        return quantus.PixelFlipping(features_in_step=10, perturb_baseline="mean", disable_warnings=True)

    with pytest.raises(UnsupportedMetricError, match="model: the engine runs torch.nn.Module"):
        xb.accelerate(pf())(
            model=object(), x_batch=series["x_batch"], y_batch=series["y_batch"], a_batch=series["a_batch"]
        )
    fast = xb.accelerate(pf(), fallback=True)
    calls: list[int] = []
    original = type(pf()).__call__

    def toolkit_call(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantus.PixelFlipping, "__call__", toolkit_call)
        with pytest.warns(ToolkitFallbackWarning, match="model: the engine runs torch.nn.Module"):
            with pytest.raises(Exception):  # noqa: B017 - the toolkit's own failure on a model it cannot wrap
                fast(model=object(), x_batch=series["x_batch"], y_batch=series["y_batch"], a_batch=series["a_batch"])
    assert calls and fast.forward_samples == 0
