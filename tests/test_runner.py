"""The benchmark runner: resumable store, data sources, report, torchrun sharding, the real evaluate end to end."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xai_bridge.cli import main as runner_main
from xai_bridge.results import Results
from xai_bridge.runner import run_benchmark
from xai_bridge.runner.data import list_source, open_source
from xai_bridge.runner.run import BenchmarkConfig, parse_spec, split_batches
from xai_bridge.runner.store import CurveRecord, RowRecord, Store, merge_curves

TINY_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    def tiny():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        return net.eval()
    """
)


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import tinymodel

    importlib.reload(tinymodel)
    return tinymodel.tiny()


def make_folder(root: Path, n: int = 6, corrupt: bool = False, size: int = 24) -> Path:
    """An ImageFolder tree with classes 0 and 1 of random PNGs (and optionally a broken file)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / str(i % 2)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    if corrupt:
        (root / "1" / "broken.png").write_bytes(b"this is not a png")
    return root


class FakeEvaluate:
    """Stands in for xai_bridge.evaluation.score: values from the pixels (and the batch, like Δ), curves, kill."""

    def __init__(self, kill_after: int | None = None, bonus: dict[tuple[str, str], float] | None = None) -> None:
        self.calls: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = []
        self.kill_after = kill_after
        self.bonus = bonus or {}

    def __call__(self, batch, maps, metrics, *, raw=None, explainer=None, errors="raise"):
        import torch

        from xai_bridge.evaluation import Scored

        if self.kill_after is not None and len(self.calls) >= self.kill_after:
            raise RuntimeError("killed")
        name = explainer.name
        images, image_ids = batch.images, batch.ids
        self.calls.append((tuple(image_ids), name, tuple(key for key, _ in metrics)))
        out = Scored()
        batch_mean = float(images.mean())
        for key, m in metrics:
            out.values[key] = torch.tensor(
                [
                    float(images[k].mean()) * (1 + len(name))
                    + 0.1 * batch_mean
                    + self.bonus.get((name, m.name), 0.0) * (1 + 0.01 * k)
                    for k in range(len(image_ids))
                ]
            )
            if m.name in ("insertion_auc", "deletion_auc"):
                values = torch.tensor([batch_mean, 0.5, len(image_ids) / 10]).expand(len(image_ids), 3)
                out.curves[key] = {"fractions": torch.tensor([0.0, 0.5, 1.0]), "values": values}
        return out


def config(tmp_path, model, images, fake, **kw):
    base = dict(
        images=str(images),
        explainers=["fakecam", "random"],
        metrics=["average_drop", "insertion_auc"],
        model=model,
        size=24,
        batch_size=2,
        store=tmp_path / "store" / "b.sqlite",
        out=None,
        progress=False,
        score=fake,
        grid_images=2,
    )
    base.update(kw)
    return BenchmarkConfig(**base)


def keyset(results: Results) -> list[tuple[str, str, str]]:
    return [(r["image"], r["explainer"], r["metric"]) for r in results.rows]


# -- pieces --------------------------------------------------------------------------------------
def test_split_batches_are_even_and_keep_order():
    items = list(range(9))
    assert [len(b) for b in split_batches(items, 4)] == [3, 3, 3]  # never a lone image (Δ needs ≥ 2)
    assert [len(b) for b in split_batches(items, 9)] == [9]
    assert sum(split_batches(list(range(10)), 3), []) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        split_batches(items, 0)


def test_parse_spec_options_and_errors():
    assert parse_spec("opticam:max_iter=20,lr=0.05", "explainers") == ("opticam", {"max_iter": 20, "lr": 0.05}, None)
    assert parse_spec("delta:metric=n_morf", "metrics") == ("delta", {"metric": "n_morf"}, None)
    assert parse_spec(("gradcam", {"layer": "blocks.6"}, "gc6"), "explainers") == (
        "gradcam",
        {"layer": "blocks.6"},
        "gc6",
    )
    with pytest.raises(ValueError, match="explainers: .*KEY=VALUE"):
        parse_spec("opticam:max_iter", "explainers")


def test_merge_curves_weights_batches_by_images():
    a = CurveRecord("000000", "e", "m", (0.0, 1.0), (1.0, 0.0), 3)
    b = CurveRecord("000001", "e", "m", (0.0, 1.0), (0.0, 1.0), 1)
    merged = merge_curves([b, a])[("e", "m")]
    assert merged["fractions"] == [0.0, 1.0]
    assert merged["mean"] == pytest.approx([0.75, 0.25])  # (3·1 + 1·0)/4, (3·0 + 1·1)/4


def test_store_dump_merge_never_duplicates(tmp_path):
    rows = [RowRecord(f"i{k}", "e", "e", "m", "m", float(k), "default") for k in range(3)]
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        assert a.write_unit("c", rows[:2]) == 2
        assert a.write_unit("c", rows[:2]) == 0  # same keys again: ignored
        b.write_unit("c", rows[1:])
        assert a.merge_from(b) == 1
        assert a.count("c") == 3 and a.done_keys("c") == {(f"i{k}", "e", "m") for k in range(3)}
    with pytest.raises(ValueError, match="store: .* is a directory"):
        Store(tmp_path)


def test_list_file_labels_paths_and_errors(tmp_path):
    make_folder(tmp_path / "imgs", n=2)
    (tmp_path / "list.txt").write_text("# images\nimgs/0/img0.png\t281\nimgs/1/img1.png tabby_cat\n")
    source = list_source(tmp_path / "list.txt")
    assert [(i.id, i.label) for i in source.items] == [("imgs/0/img0.png", 281), ("imgs/1/img1.png", 281)]
    (tmp_path / "half.txt").write_text("imgs/0/img0.png 3\nimgs/1/img1.png\n")
    with pytest.raises(ValueError, match="labels on some lines only"):
        list_source(tmp_path / "half.txt")
    with pytest.raises(ValueError, match="images: 'nowhere' is neither"):
        open_source("nowhere")
    folder = open_source(tmp_path / "imgs")
    assert folder.has_labels and [i.label for i in folder.items] == [0, 1]


# -- the runner with a fake evaluate -------------------------------------------------------------
def test_killed_run_resumes_without_recompute_loss_or_duplicates(tmp_path, tiny_model):
    images = make_folder(tmp_path / "data", n=6)  # 3 batches × 2 explainers = 6 units
    killer = FakeEvaluate(kill_after=4)
    with pytest.raises(RuntimeError, match="killed"):
        run_benchmark(config(tmp_path, tiny_model, images, killer))
    with Store(tmp_path / "store" / "b.sqlite") as store:
        assert store.count() == 4 * 2 * 2  # four whole units: 2 images × 2 metrics each

    resumed = FakeEvaluate()
    results = run_benchmark(config(tmp_path, tiny_model, images, resumed))
    assert len(resumed.calls) == 2  # only the two missing units
    assert not set(c[:2] for c in resumed.calls) & set(c[:2] for c in killer.calls)
    assert len(results.rows) == 6 * 2 * 2 and len(set(keyset(results))) == len(results.rows)

    reference = run_benchmark(config(tmp_path, tiny_model, images, FakeEvaluate(), store=tmp_path / "ref.sqlite"))
    assert keyset(results) == keyset(reference)
    assert [r["value"] for r in results.rows] == pytest.approx([r["value"] for r in reference.rows])
    with sqlite3.connect(tmp_path / "store" / "b.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 24


def test_same_config_is_a_noop_and_new_explainer_computes_only_itself(tmp_path, tiny_model):
    images = make_folder(tmp_path / "data", n=4)
    first = run_benchmark(config(tmp_path, tiny_model, images, FakeEvaluate()))
    again = FakeEvaluate()
    second = run_benchmark(config(tmp_path, tiny_model, images, again))
    assert again.calls == [] and second.rows == first.rows

    more = FakeEvaluate()
    third = run_benchmark(
        config(tmp_path, tiny_model, images, more, explainers=["fakecam", "random", "center-gaussian"])
    )
    assert {c[1] for c in more.calls} == {"center-gaussian"} and len(more.calls) == 2
    assert len(third.rows) == 4 * 3 * 2

    changed = FakeEvaluate()  # another protocol is another configuration: everything is computed
    run_benchmark(config(tmp_path, tiny_model, images, changed, protocol="rise"))
    assert len(changed.calls) == 4


def test_corrupt_image_is_reported_and_skipped(tmp_path, tiny_model, capsys):
    images = make_folder(tmp_path / "data", n=4, corrupt=True)
    fake = FakeEvaluate()
    results = run_benchmark(config(tmp_path, tiny_model, images, fake, out=tmp_path / "report"))
    assert "1/broken.png" not in results.images and len(results.images) == 4
    assert "skipped 1/broken.png" in capsys.readouterr().err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Skipped images (1)" in report and "`1/broken.png`: " in report and "not a readable image" in report
    again = FakeEvaluate()
    run_benchmark(config(tmp_path, tiny_model, images, again))
    assert again.calls == []  # the broken file is remembered, not retried


def test_report_sections_figures_and_verdict(tmp_path, tiny_model):
    images = make_folder(tmp_path / "data", n=6)
    fake = FakeEvaluate(bonus={("random", "insertion_auc"): 5.0, ("fakecam", "average_drop"): -5.0})
    out = tmp_path / "report"
    results = run_benchmark(
        config(
            tmp_path,
            tiny_model,
            images,
            fake,
            out=out,
            explainers=["fakecam", "random", "center-gaussian"],
            metrics=["average_drop", "insertion_auc", "deletion_auc"],
        )
    )
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for heading in (
        "## Verdict",
        "## Summary",
        "## Protocol and settings",
        "## Saliency maps",
        "## Insertion and deletion curves",
        "## Pairwise comparisons",
        "## Reliability of the metrics",
    ):
        assert heading in md
    # the first screen names the winners (the bonus makes them win on every image)
    verdict = md.split("## Summary")[0]
    assert "**random** is best on `insertion_auc` ↑" in verdict and "on 100% of images" in verdict
    assert "**fakecam** is best on `average_drop` ↓" in verdict
    assert "| explainer | average_drop ↓ | insertion_auc ↑ | deletion_auc ↓ |" in md
    mean, std, _ = results.mean_std("random", "insertion_auc")
    assert f"**{mean:.3f} ± {std:.3f}**" in md
    for figure in ("saliency_grid", "curves", "win_rates", "wilcoxon", "reliability", "consistency"):
        png = out / "figures" / f"{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert f'src="figures/{figure}.png"' in page and f"(figures/{figure}.png)" in md
    assert "<table>" in page and "<b>random</b> is best on <code>insertion_auc</code>" in page
    # curves: batches of 2 images averaged by image count
    assert results.curves[("random", "insertion_auc")]["mean"][2] == pytest.approx(0.2)


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert (
        runner_main(
            [
                "benchmark",
                "-e",
                "random",
                "-m",
                "average_gain",
                "--images",
                str(tmp_path / "missing"),
                "--quiet",
                "--no-report",
                "--model",
                "x",
            ]
        )
        == 2
    )
    assert "--model 'x': expected 'default' or 'package.module:factory'" in capsys.readouterr().err
    assert runner_main(["benchmark", "-e", "random", "-m", "average_gain", "--protocol", "nope", "--quiet"]) == 2
    assert "--protocol 'nope': expected one of" in capsys.readouterr().err


# -- torchrun: two gloo ranks equal one process ---------------------------------------------------
def test_two_gloo_ranks_match_one_process(tmp_path, tiny_model):
    # 4 batches of 2: [img0 img2] [img4 img6] [broken img1] [img3 img5]; img1 is left alone, so Δ cannot score it
    images = make_folder(tmp_path / "data", n=7, corrupt=True)
    args = [
        "benchmark",
        "--model",
        "tinymodel:tiny",
        "--images",
        str(images),
        "-e",
        "fakecam",
        "random",
        "center-gaussian",
        "-m",
        "average_drop",
        "delta:metric=average_drop",
        "insertion_auc",
        "--size",
        "24",
        "--batch-size",
        "2",
        "--quiet",
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "xai_bridge",
            *args,
            "--store",
            str(tmp_path / "dist.sqlite"),
            "--out",
            str(tmp_path / "dist"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert not list(tmp_path.glob("dist.sqlite.rank*"))  # shards merged and removed
    assert (tmp_path / "dist" / "report.md").exists()

    assert runner_main([*args, "--store", str(tmp_path / "single.sqlite"), "--out", str(tmp_path / "single")]) == 0
    with Store(tmp_path / "dist.sqlite") as d, Store(tmp_path / "single.sqlite") as s:
        (config_hash,) = [r[0] for r in s._conn.execute("SELECT config FROM configs")]
        dist_rows = {(r.image, r.explainer, r.metric): r.value for r in d.rows(config_hash)}
        single_rows = {(r.image, r.explainer, r.metric): r.value for r in s.rows(config_hash)}
        assert d.skipped(config_hash).keys() == s.skipped(config_hash).keys() == {"1/broken.png"}
    lone = {("1/img1.png", e, "delta(average_drop)") for e in ("fakecam", "random", "center-gaussian")}
    assert len(single_rows) == 7 * 3 * 3 - 3 and not lone & single_rows.keys()
    assert dist_rows.keys() == single_rows.keys()
    assert "Not scored (3)" in (tmp_path / "dist" / "report.md").read_text()
    for key, value in single_rows.items():
        assert dist_rows[key] == pytest.approx(value, abs=1e-6), key


# -- the real evaluate -------------------------------------------------------------------------
def test_real_evaluate_end_to_end_on_two_photos(tmp_path, model, photos):
    import xai_bridge as xb

    coarse = xb.get_protocol("default", step=0.1)  # 10 insertion steps keep the test short
    cfg = BenchmarkConfig(
        images="default:chelsea,coffee",
        explainers=["fakecam", "random", "gradcam"],
        protocol=coarse,
        metrics=["average_drop", "insertion_auc"],
        model=model,
        batch_size=2,
        store=tmp_path / "b.sqlite",
        out=tmp_path / "report",
        progress=False,
        grid_images=2,
    )
    results = run_benchmark(cfg)
    assert len(results.rows) == 2 * 3 * 2
    all_images, names = photos
    batch = all_images[[names.index("chelsea"), names.index("coffee")]]
    direct = xb.evaluate(
        model,
        batch,
        ["fakecam", "random", "gradcam"],
        ["average_drop", "insertion_auc"],
        protocol=coarse,
        image_ids=["chelsea", "coffee"],
        progress=False,
    )
    expected = {(r["image"], r["explainer"], r["metric"]): r["value"] for r in direct.rows}
    got = {(r["image"], r["explainer"], r["metric"]): r["value"] for r in results.rows}
    assert got.keys() == expected.keys()
    # abs 1e-4 (AD is in %): the run's one executor keeps the chunk sizes it tuned on the first batch, a fresh
    # evaluate tunes its own, and the forward batches' composition moves the logits in the last bits; Fake-CAM's
    # AD, (p − o)/p·100 with o ≈ p, amplifies that to ~2e-5
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
    # Fake-CAM keeps all but one pixel, so the score barely drops (AD in %): the pitfall the report must show
    assert max(results.values("fakecam", "average_drop")) < 0.1 < min(results.values("random", "average_drop"))
    assert set(results.curves) == {(e, "insertion_auc") for e in ("fakecam", "random", "gradcam")}
    md = (tmp_path / "report" / "report.md").read_text()
    assert (
        "**fakecam** is best on `average_drop` ↓" in md
        and (tmp_path / "report" / "figures" / "saliency_grid.png").exists()
    )
    assert not any(math.isnan(v) for v in got.values())


def test_a_benchmark_needs_explainers_and_metrics():
    from xai_bridge.runner import BenchmarkConfig, run_benchmark

    with pytest.raises(ValueError, match="explainers: none given"):
        run_benchmark(BenchmarkConfig(metrics=["average_gain"], out=None))
    with pytest.raises(ValueError, match="metrics: none given"):
        run_benchmark(BenchmarkConfig(explainers=["random"], out=None))


def test_explainers_run_on_the_runs_one_executor(tmp_path, tiny_model):
    """An explainer that takes ``executor=`` (RISE) sends its passes through the run's executor: shared graphs and
    chunk, counted with the rest, and quiet when the run is (its own executor showed a bar under --quiet)."""
    from xai_bridge.runner.run import Plan

    images = make_folder(tmp_path / "data", n=2)
    cfg = config(tmp_path, tiny_model, images, FakeEvaluate(), explainers=[("rise", {"n_masks": 8}), "fakecam"])
    plan = Plan(cfg)
    rise = next(e.obj for e in plan.explainers if e.name == "rise")
    assert rise.executor is plan.engine.executor
    assert next(e.key for e in plan.explainers if e.name == "rise") == 'rise {"n_masks": 8}'  # the key has no executor
    results = run_benchmark(cfg)
    assert results.costs["rise"]["forward"] == pytest.approx(8)  # per image: its 8 masked passes, counted once
    assert results.costs["fakecam"]["forward"] == 0
