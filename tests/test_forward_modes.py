"""Graph modes, measured chunk sizes and reduced precision of the engine's forward passes.

No test here asserts a timing: the machine is shared; only values, caches and messages are checked.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import xai_bridge as xb
from xai_bridge.engine import Curve, Engine, Executor, Flip, Masked, forward
from xai_bridge.engine.engine import ladder
from xai_bridge.errors import ForwardModeWarning, UnsupportedSettingError


def small_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16, 5),
    ).eval()


@pytest.fixture(autouse=True)
def fresh_cache():
    forward.clear_cache()
    yield
    forward.clear_cache()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(3)
    return torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 16, 16, generator=g)


REQUESTS = [Curve(step=16), Flip(step=16), Masked()]


def run(engine: Engine, images: torch.Tensor, maps: torch.Tensor) -> dict:
    return engine.run(images, maps, targets=None, requests=REQUESTS)


@pytest.mark.parametrize("mode", ["freeze", "auto"])
def test_graph_modes_match_eager_within_1e5(mode, data):
    images, maps = data
    model = small_cnn()
    ref = run(Engine(model, batch_size=7, compile="eager", progress=False), images, maps)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForwardModeWarning)
        engine = Engine(model, batch_size=7, compile=mode, progress=False)
        out = run(engine, images, maps)
    assert (out[REQUESTS[0]].probs - ref[REQUESTS[0]].probs).abs().max() < 1e-5
    assert torch.equal(out[REQUESTS[1]].steps, ref[REQUESTS[1]].steps)
    assert (out[REQUESTS[2]].probs - ref[REQUESTS[2]].probs).abs().max() < 1e-5
    described = engine.describe()
    assert described["compile"] == mode and described["graph"] in ("eager", "freeze")
    if mode == "freeze":
        assert described["graph"] == "freeze"
        # short chunks (the last of a curve, the decision-flip blocks) are padded: one graph per chunk size
        assert {key[-1][0] for key in forward.CACHE.graphs if key[0] == id(model)} == {7}


def test_auto_decides_once_per_model_and_shape(data, monkeypatch):
    images, maps = data
    model = small_cnn()
    calls = []
    original = forward.ForwardPass._choose

    def spy(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(forward.ForwardPass, "_choose", spy)
    run(Engine(model, batch_size=8, compile="auto", progress=False), images, maps)
    run(Engine(model, batch_size=8, compile="auto", progress=False), images, maps)
    assert len(forward.CACHE.choices) == 1  # one decision for this model, input shape and precision
    assert calls  # asked every batch, answered from the cache after the first


@pytest.mark.parametrize("how", ["in_place", "through_data", "new_tensor"])
def test_a_changed_weight_is_seen_by_the_next_run(how, data):
    images, maps = data
    model = small_cnn()
    engine = Engine(model, batch_size=8, compile="freeze", progress=False)
    before = run(engine, images, maps)[REQUESTS[2]].logits
    last = model[-1]
    with torch.no_grad():
        if how == "in_place":
            last.bias.add_(1.0)
        elif how == "through_data":
            last.bias.data.fill_(2.0)
        else:
            last.bias = torch.nn.Parameter(last.bias + 3.0)
    after = run(engine, images, maps)[REQUESTS[2]].logits
    eager = run(Engine(model, batch_size=8, progress=False), images, maps)[REQUESTS[2]].logits
    assert (after - eager).abs().max() < 1e-5
    assert (after - before).abs().max() > 0.5


def test_a_graph_is_never_reused_for_another_model_or_shape(data):
    images, maps = data
    a, b = small_cnn(0), small_cnn(1)
    out_a = run(Engine(a, batch_size=8, compile="freeze", progress=False), images, maps)[REQUESTS[2]].logits
    out_b = run(Engine(b, batch_size=8, compile="freeze", progress=False), images, maps)[REQUESTS[2]].logits
    eager_b = run(Engine(b, batch_size=8, progress=False), images, maps)[REQUESTS[2]].logits
    assert (out_b - eager_b).abs().max() < 1e-5 and (out_a - out_b).abs().max() > 1e-3
    # another input shape: a graph of its own
    big = torch.nn.functional.interpolate(images, size=(24, 24))
    fp = forward.ForwardPass(a, compile="freeze")
    with torch.inference_mode():
        small_out, big_out = fp(images), fp(big)
        assert (big_out - a(big)).abs().max() < 1e-5 and (small_out - a(images)).abs().max() < 1e-5
    shapes = {key[-1] for key in forward.CACHE.graphs if key[0] == id(a)}
    assert tuple(images.shape) in shapes and tuple(big.shape) in shapes


def test_a_model_that_cannot_be_traced_runs_eagerly_with_one_warning(data, monkeypatch):
    images, maps = data
    model = small_cnn()

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    engine = Engine(model, batch_size=8, compile="freeze", progress=False)
    with pytest.warns(ForwardModeWarning, match="cannot be traced and frozen.*using eager"):
        out = run(engine, images, maps)
    ref = run(Engine(model, batch_size=8, compile="eager", progress=False), images, maps)
    assert torch.equal(out[REQUESTS[2]].logits, ref[REQUESTS[2]].logits)
    assert engine.describe()["graph"] == "eager"


def test_inductor_falls_back_with_one_warning_when_unavailable(data, monkeypatch):
    images, maps = data
    model = small_cnn()

    def broken(model, **kwargs):
        def call(x):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    engine = Engine(model, batch_size=8, compile="inductor", progress=False)
    with pytest.warns(ForwardModeWarning, match="torch.compile is not available") as record:
        out = run(engine, images, maps)
    assert len([w for w in record if issubclass(w.category, ForwardModeWarning)]) == 1
    ref = run(Engine(model, batch_size=8, compile="eager", progress=False), images, maps)
    assert torch.equal(out[REQUESTS[2]].logits, ref[REQUESTS[2]].logits)


def test_auto_uses_eager_when_the_graph_differs(data, monkeypatch):
    images, maps = data
    model = small_cnn()
    monkeypatch.setattr(forward, "EXACT", -1.0)  # any difference, even 0, is too much
    engine = Engine(model, batch_size=8, compile="auto", progress=False)
    with pytest.warns(ForwardModeWarning, match="differs from eager"):
        run(engine, images, maps)
    assert engine.describe()["graph"] == "eager"


def test_bad_settings_name_the_argument_and_what_the_device_supports():
    model = small_cnn()
    with pytest.raises(UnsupportedSettingError, match="compile: 'fast' is not a graph mode; expected one of auto"):
        Engine(model, compile="fast")
    with pytest.raises(UnsupportedSettingError, match="precision: 'float16' is not supported on cpu; this device"):
        Engine(model, precision="float16")
    with pytest.raises(UnsupportedSettingError, match="precision: 'half' is not known"):
        Engine(model, precision="half")
    with pytest.raises(ValueError, match="compile, precision: give them to the Engine"):
        xb.evaluate(model, torch.rand(2, 3, 16, 16), [], [], engine=Engine(model), compile="freeze")


def test_bfloat16_returns_float32_scores_close_to_float32(data):
    images, maps = data
    model = small_cnn()
    ref = run(Engine(model, batch_size=8, compile="eager", progress=False), images, maps)
    for mode in ("eager", "freeze"):
        out = run(Engine(model, batch_size=8, compile=mode, precision="bfloat16", progress=False), images, maps)
        probs = out[REQUESTS[0]].probs
        assert probs.dtype == torch.float32
        assert (probs - ref[REQUESTS[0]].probs).abs().max() < 0.05


def test_the_chunk_ladder_tries_sizes_within_the_budget_and_keeps_the_fastest(data, monkeypatch):
    images, maps = data
    model = small_cnn()
    sizes = []
    original = Executor._forward

    def spy(self, x, pad_to=None):
        sizes.append(x.shape[0])
        return original(self, x, pad_to)

    monkeypatch.setattr(Executor, "_forward", spy)
    per_image = 2**20 // Engine(model, budget=2**20, progress=False).chunk_size(images)
    budget = 24 * per_image  # about 24 images
    engine = Engine(model, budget=budget, progress=False)
    cap = engine.chunk_size(images)
    assert 16 <= cap <= 32
    requests = [Curve(step=2), Flip(step=16), Masked()]  # 4 images × 129 steps: the whole ladder fits
    out = engine.run(images, maps, None, requests)
    rungs = sorted(set(ladder(cap)))
    assert set(rungs) <= set(sizes)  # every rung was tried
    assert engine.describe()["chunk"] in rungs and not engine.executor._ladder
    ref = Engine(model, batch_size=cap, progress=False).run(images, maps, None, requests)
    assert (out[requests[0]].probs - ref[requests[0]].probs).abs().max() < 1e-5
    assert torch.equal(out[requests[1]].steps, ref[requests[1]].steps)
    # the choice is remembered for this model and shape: a new engine skips the ladder
    again = Engine(model, budget=budget, progress=False)
    assert again.chunk_size(images) == engine.describe()["chunk"] and not again.executor._ladder


def test_evaluate_records_how_the_forward_passes_were_computed(photos):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = small_cnn()
    results = xb.evaluate(
        model, images, ["random"], ["deletion_auc"], maps=None, compile="freeze", progress=False, batch_size=2
    )
    assert results.forward["compile"] == "freeze" and results.forward["graph"] == "freeze"
    assert results.forward["precision"] == "float32"
    assert xb.Results.from_json(results.to_json()).forward == results.forward


def test_the_cli_and_runner_take_compile_and_precision(tmp_path):
    import argparse

    from xai_bridge.runner import BenchmarkConfig
    from xai_bridge.runner.cli import add_benchmark_parser
    from xai_bridge.runner.run import Plan

    parser = argparse.ArgumentParser()
    add_benchmark_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["benchmark", "-e", "random", "-m", "deletion_auc", "--compile", "auto"])
    assert args.compile == "auto" and args.precision == "float32"
    config = BenchmarkConfig(
        images="default:chelsea", explainers=["random"], metrics=["deletion_auc"], model=small_cnn(), size=16
    )
    plan = Plan(config)
    described = plan.engine.describe()  # the run's one executor
    assert (described["compile"], described["precision"]) == ("auto", "float32") and "precision" not in plan.settings
    import dataclasses

    reduced = Plan(dataclasses.replace(config, precision="bfloat16", compile="freeze"))
    described = reduced.engine.describe()
    assert (described["compile"], described["precision"]) == ("freeze", "bfloat16")
    assert reduced.config_hash != plan.config_hash  # precision changes values: another configuration
    same = Plan(dataclasses.replace(config, compile="freeze"))
    assert same.config_hash == plan.config_hash  # a graph mode does not
    with pytest.raises(UnsupportedSettingError, match="precision: 'float16' is not supported on cpu"):
        Plan(dataclasses.replace(config, precision="float16"))


def test_auto_is_the_default_and_leaves_forward_hooks_running(data):
    """The engine's default graph mode is ``auto``; a traced graph would skip forward hooks, so with a hook
    registered ``auto`` runs eagerly (the hook sees every image), and without one it may freeze."""
    images, maps = data
    model = small_cnn()
    assert Engine(model).describe()["compile"] == "auto"
    seen = []
    handle = model.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    try:
        engine = Engine(model, batch_size=4, progress=False)
        run(engine, images, maps)
    finally:
        handle.remove()
    assert engine.describe()["graph"] == "eager"
    assert sum(seen) == engine.forward_samples > 4
    results = xb.evaluate(model, images, [], ["deletion_auc"], maps={"given": maps}, progress=False)
    assert results.forward["compile"] == "auto"


def _stub_compile(calls, offset=0.0):
    """A stand-in for ``torch.compile`` that records its calls and returns the model (plus ``offset``)."""

    def compile(model, **kwargs):
        calls.append(model)
        return lambda x: model(x) + offset

    return compile


def _fixed_times(times):
    def best_time(self, mode, x):
        return times[mode], self._run(mode, x)

    return best_time


def _break_even_of_2000(data, monkeypatch, tmp_path):
    """A small model whose recorded break-even is 2,000 inputs (2 s of compile over a saving of 1 ms per input),
    with torch.compile stubbed (its calls recorded) and the graph modes timed as eager 3, freeze 2, inductor 1."""
    images, _ = data
    monkeypatch.setenv("XAI_BRIDGE_CACHE_DIR", str(tmp_path))
    model = small_cnn()
    calls = []
    monkeypatch.setattr(torch, "compile", _stub_compile(calls))
    monkeypatch.setattr(forward.ForwardPass, "_best_time", _fixed_times({"eager": 3.0, "freeze": 2.0, "inductor": 1.0}))
    signature = forward._signature(model, tuple(images.shape[1:]), images, "float32")
    record = {"compile_seconds": 2.0, "freeze_per_input": 2e-3, "inductor_per_input": 1e-3}
    forward.CACHE.compile_records[signature] = record
    forward.CACHE._disk_loaded = True
    return images, model, calls, signature


def test_auto_compiles_only_for_work_past_the_recorded_break_even(data, monkeypatch, tmp_path):
    images, model, calls, signature = _break_even_of_2000(data, monkeypatch, tmp_path)
    assert forward.CACHE.break_even(signature) == pytest.approx(2000)
    short = Executor(model, batch_size=4, progress=False)
    short.plan(1999)
    short.logits(4, lambda s, e: images[s:e])
    assert short.describe()["graph"] == "freeze" and not calls  # short work: no compile
    long = Executor(model, batch_size=4, progress=False)
    long.plan(2000)
    out = long.logits(4, lambda s, e: images[s:e])
    assert long.describe()["graph"] == "inductor" and len(calls) == 1
    with torch.no_grad():
        assert (out - model(images)).abs().max() < 1e-5


def test_the_first_long_run_measures_and_records_the_break_even(data, monkeypatch, tmp_path):
    images, _ = data
    monkeypatch.setenv("XAI_BRIDGE_CACHE_DIR", str(tmp_path))
    model = small_cnn()
    calls = []
    monkeypatch.setattr(torch, "compile", _stub_compile(calls))
    monkeypatch.setattr(forward.ForwardPass, "_best_time", _fixed_times({"eager": 3.0, "freeze": 2.0, "inductor": 1.5}))
    ex = Executor(model, batch_size=4, progress=False)
    ex.plan(int(forward.DEFAULT_BREAK_EVEN))  # nothing measured yet: the default break-even decides
    ex.logits(4, lambda s, e: images[s:e])
    assert len(calls) == 1 and ex.describe()["graph"] == "inductor"
    signature = forward._signature(model, tuple(images.shape[1:]), images, "float32")
    record = forward.CACHE.compile_record(signature)
    assert record["freeze_per_input"] == pytest.approx(2.0 / 4) and record["inductor_per_input"] == pytest.approx(
        1.5 / 4
    )
    # a later process reads it from disk
    fresh = forward.ProcessCache()
    assert fresh.compile_record(signature) == pytest.approx(record)
    assert fresh.break_even(signature) == pytest.approx(record["compile_seconds"] / (0.5 / 4))


def test_auto_refuses_an_inductor_graph_that_is_not_exact(data, monkeypatch, tmp_path):
    images, _ = data
    monkeypatch.setenv("XAI_BRIDGE_CACHE_DIR", str(tmp_path))
    model = small_cnn()
    calls = []
    monkeypatch.setattr(torch, "compile", _stub_compile(calls, offset=1e-2))
    monkeypatch.setattr(forward.ForwardPass, "_best_time", _fixed_times({"eager": 3.0, "freeze": 2.0, "inductor": 1.0}))
    ex = Executor(model, batch_size=4, progress=False)
    ex.plan(10**9)
    with pytest.warns(ForwardModeWarning, match="inductor graph .* differs from eager"):
        ex.logits(4, lambda s, e: images[s:e])
    assert calls and ex.describe()["graph"] == "freeze"


def test_a_compile_served_by_caches_does_not_lower_the_recorded_break_even(monkeypatch, tmp_path):
    """A compile that torch's caches made cheap (0.2 s instead of 30 s) must not make auto compile for short runs:
    the record keeps the cold compile's seconds (one benchmark once recorded 0.17 s and a break-even of 93 images)."""
    monkeypatch.setenv("XAI_BRIDGE_CACHE_DIR", str(tmp_path))
    cache = forward.ProcessCache()
    cache.record_compile("m", {"compile_seconds": 30.0, "freeze_per_input": 0.009, "inductor_per_input": 0.007})
    cache.record_compile("m", {"compile_seconds": 0.2, "freeze_per_input": 0.008, "inductor_per_input": 0.007})
    assert cache.compile_record("m") == pytest.approx(
        {"compile_seconds": 30.0, "freeze_per_input": 0.008, "inductor_per_input": 0.007}
    )
    assert cache.break_even("m") == pytest.approx(30_000)
    assert forward.ProcessCache().break_even("m") == pytest.approx(30_000)  # and so does a later process


def test_auto_weighs_the_work_still_ahead_not_all_that_was_ever_announced(data, monkeypatch, tmp_path):
    """Announcements add up over a long session (each engine run announces its own); a compile pays off only over
    the work still to run. 2,400 announced with 1,200 of them done leaves 1,200 ahead of a 2,000 break-even."""
    images, model, calls, _ = _break_even_of_2000(data, monkeypatch, tmp_path)
    ex = Executor(model, batch_size=4, progress=False)
    many = images.repeat(300, 1, 1, 1)  # 1,200 inputs
    ex.plan(1200)
    ex.logits(1200, lambda s, e: many[s:e])
    ex.plan(1200)  # 2,400 announced in all, 1,200 ahead
    ex.logits(4, lambda s, e: images[s:e])
    assert not calls and ex.describe()["graph"] == "freeze"
    ex.plan(2000)  # now 2,000 + 1,196 ahead: past the break-even
    ex.logits(4, lambda s, e: images[s:e])
    assert len(calls) == 1 and ex.describe()["graph"] == "inductor"
