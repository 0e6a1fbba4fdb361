"""One evaluation path: rows keyed by what the caller asked for, one unperturbed pass, local failures, costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_bridge as xb
from xai_bridge.evaluation import score_maps
from xai_bridge.metric import Metric
from xai_bridge.protocols import get_protocol


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)
    ).eval()


def images(b: int = 3, side: int = 8) -> torch.Tensor:
    return torch.rand(b, 3, side, side, generator=torch.Generator().manual_seed(1))


def maps_for(x: torch.Tensor) -> torch.Tensor:
    return x.mean(1) + torch.linspace(0, 0.1, x.shape[-1])


def test_two_configurations_of_one_metric_are_two_columns():
    model, x = tiny(), images(2)
    morf, lerf = xb.get_metric("afoc", order="morf"), xb.get_metric("afoc")
    proto = get_protocol("default", removal_step=2)  # 8×8 images: remove 2 pixels a step
    out = xb.evaluate(model, x, [], [morf, lerf], proto, maps={"given": maps_for(x)}, progress=False)
    frame = out.to_frame()
    assert len(frame) == 4  # 2 images × 2 configurations, none replacing the other
    assert sorted(set(frame["metric"])) == ["afoc", "afoc:order='morf'"]
    alone = score_maps(model, x, maps_for(x), [morf], proto)["afoc"]
    assert out.values("given", "afoc:order='morf'") == pytest.approx(alone.tolist())
    assert out.values("given", "afoc") == pytest.approx(
        score_maps(model, x, maps_for(x), ["afoc"], proto)["afoc"].tolist()
    )
    assert out.values("given", "afoc") != pytest.approx(alone.tolist())
    labelled = xb.evaluate(model, x, [], {"m": morf, "l": lerf}, maps={"given": maps_for(x)}, progress=False)
    assert labelled.metrics == ["m", "l"]
    with pytest.raises(xb.errors.InvalidArgumentError, match="given twice"):
        xb.evaluate(model, x, [], [morf, morf], maps={"given": maps_for(x)}, progress=False)


def test_given_maps_win_over_the_listed_explainer_which_is_not_run(monkeypatch):
    import xai_bridge.evaluation as evaluation

    model, x = tiny(), images(3)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the listed explainer was built or run although its maps were given")

    monkeypatch.setattr(evaluation, "make_explainer", must_not_run)
    out = xb.evaluate(
        model, x, explainers=["fakecam"], metrics=["average_drop"], maps={"fakecam": maps_for(x)}, progress=False
    )
    keys = [(r["image"], r["explainer"], r["metric"]) for r in out.rows]
    assert len(keys) == 3 and len(set(keys)) == 3
    expected = score_maps(model, x, maps_for(x), ["average_drop"])["average_drop"]
    assert out.values("fakecam", "average_drop") == pytest.approx(expected.tolist())
    assert "fakecam" not in out.costs  # nothing was run for it


def test_a_metric_with_its_own_protocol_takes_every_input_from_it():
    # masks from the raw map resized bicubic, a different replacement: all from the metric's protocol
    model, x = tiny(), images(3)
    raw = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(2))
    own = get_protocol("default", mask_from="raw", resize="bicubic", constant_maps="zeros", score="logit")
    with_own = xb.get_metric("average_drop", protocol=own)
    got = xb.evaluate(model, x, [], {"ad": with_own}, maps={"m": raw}, progress=False).values("m", "ad")
    want = xb.evaluate(model, x, [], ["average_drop"], own, maps={"m": raw}, progress=False)
    assert got == pytest.approx(want.values("m", "average_drop"))
    plain = xb.evaluate(model, x, [], ["average_drop"], maps={"m": raw}, progress=False).values("m", "average_drop")
    assert got != pytest.approx(plain)


class Boom(Metric):
    """Raises on every batch (a metric that does not apply here)."""

    name = "boom"

    def compute(self, ctx):
        raise xb.errors.InvalidArgumentError("boom: does not apply to these images")


class Counting(xb.Explainer):
    """The image's channel mean; counts its calls."""

    calls = 0
    needs_grad = False

    def attribute(self, images, targets):
        type(self).calls += 1
        return images.mean(1)


class Plugin:
    @xb.hookimpl
    def register_metrics(self, register):
        register("boom", lambda **o: Boom(**o), higher_is_better=True)

    @xb.hookimpl
    def register_explainers(self, register):
        register("counting", lambda model, **o: Counting(model, **o), family="baseline")


def test_a_failing_metric_beside_a_working_one_keeps_values_records_the_error_and_runs_the_explainer_once(
    tmp_path, xai_bridge_plugin
):
    from xai_bridge.runner import BenchmarkConfig, run_benchmark
    from xai_bridge.runner.store import Store

    from .test_runner import make_folder

    xai_bridge_plugin(Plugin(), name="evaluation-paths-test")
    Counting.calls = 0
    folder = make_folder(tmp_path / "imgs", n=4, size=8)
    store = tmp_path / "b.sqlite"
    cfg = BenchmarkConfig(
        images=str(folder),
        explainers=["counting"],
        metrics=["boom", "average_drop"],
        model=tiny(),
        size=8,
        batch_size=2,
        store=store,
        out=tmp_path / "report",
        progress=False,
        grid_images=1,
    )
    results = run_benchmark(cfg)
    assert Counting.calls == 2  # two batches, one explanation each: not re-run per metric
    assert results.metrics == ["average_drop"] and len(results.rows) == 4
    assert [e["metric"] for e in results.errors] == ["boom", "boom"]
    assert "does not apply" in results.errors[0]["error"]
    with Store(store) as s:
        assert len(s.errors(run_benchmark_hash(results, s))) == 2
    report = (tmp_path / "report" / "report.md").read_text()
    assert "boom" in report and "does not apply" in report
    assert "cost / image" in report and "figures/cost.png" in report
    # the values agree with scoring the explainer's maps directly
    x = results.values("counting", "average_drop")
    assert all(0 <= v <= 100 for v in x)


def run_benchmark_hash(results, store):
    (config,) = {row[0] for row in store.dump()["errors"]}
    return config


def test_evaluate_runs_one_unperturbed_pass_per_image_and_records_costs():
    from xai_bridge.engine import Engine

    model, x = tiny(), images(4)
    engine = Engine(model, compile="eager", progress=False)
    calls = []
    handle = model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        out = xb.evaluate(model, x, ["fakecam"], ["average_drop"], engine=engine, progress=False)
    finally:
        handle.remove()
    # the unperturbed batch once (shared by the explainer and the metric), the masked batch once
    assert calls.count(4) == 2 and engine.executor.samples == 8
    assert out.costs["fakecam"]["forward"] == 0  # fakecam needs no pass of its own
    assert out.metric_costs["average_drop"]["fakecam"] == 1.0
    assert out.costs["fakecam"]["seconds"] > 0
    assert "cost / image" in out.summary()
    frame = out.to_frame()
    assert {"explainer_seconds", "metric_forward"} <= set(frame.columns)


def test_gradcam_cost_counts_its_forward_and_backward_passes_on_the_model():
    model, x = tiny(), images(2)
    out = xb.evaluate(model, x, [xb.get_explainer("gradcam", model, layer="0")], ["average_drop"], progress=False)
    cost = out.costs["gradcam"]
    assert cost["forward"] == 1.0 and cost["backward"] == 1.0  # one forward and one backward pass per image


def test_metric_registrations_read_direction_category_and_needs_from_the_class():
    for spec in xb.list_metrics():
        if spec.provider.plugin != "metrics" and not spec.provider.builtin:
            continue
        cls = spec.resolve_class()
        if cls is None:
            continue
        assert (spec.higher_is_better, spec.category, spec.needs) == (
            cls.higher_is_better,
            cls.category,
            tuple(cls.needs),
        ), spec.name
    spec = xb.metric_spec("region_perturbation")
    lerf = xb.get_metric("region_perturbation", order="lerf")
    view = spec.configured(lerf)
    assert view["higher_is_better"] is lerf.higher_is_better is False and view["options"] == {"order": "lerf"}
    assert spec.higher_is_better is True  # the class's default order, MoRF


def test_an_explainers_own_executor_is_counted_in_its_cost():
    """RISE keeps its own executor, whose traced graph a hook on the model would not see: N passes per image."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 5)
    ).eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    spec = "rise:n_masks=16,compile='freeze'"  # a traced graph: the model's own hooks never fire
    results = xb.evaluate(model, images, [spec], metrics=["average_drop"])
    cost = results.costs[spec]
    assert cost["forward"] == 16 and cost["backward"] == 0  # B·N = 32 masked passes for 2 images
