"""The command line as a user meets it: outputs, progress, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from xai_bridge.cli import main
from xai_bridge.data import PHOTOS


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    cat = PHOTOS["chelsea"]()
    Image.fromarray(cat).save(root / "cat.jpg")
    Image.fromarray(cat).convert("L").save(root / "grey.png")
    Image.fromarray(cat).convert("RGBA").save(root / "alpha.png")
    (root / "notes.jpg").write_text("this is not an image")
    return root


def test_explain_writes_figure_map_and_top_classes(image_files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--explainer", "gradcam", str(image_files / "cat.jpg"), "--out", str(out), "--quiet"]) == 0
    assert (out / "cat_gradcam.png").stat().st_size > 10_000
    saliency = np.load(out / "cat_gradcam.npy")
    assert saliency.shape == (224, 224) and np.load(out / "cat_gradcam_raw.npy").shape == (7, 7)
    report = json.loads((out / "explanations.json").read_text())
    row = report["images"][0]
    assert row["explained_class"] == row["top5"][0]["class"]  # predicted class by default
    assert {"tabby cat", "Egyptian Mau"} & {t["name"] for t in row["top5"]}
    assert "explained:" in capsys.readouterr().out


def test_explain_default_images_with_a_class_name(tmp_path):
    out = tmp_path / "o"
    assert (
        main(["explain", "-e", "gradcam", "--target", "tabby cat", "--images", "default", "--out", str(out), "--quiet"])
        == 0
    )
    report = json.loads((out / "explanations.json").read_text())
    assert len(report["images"]) == 9 and {r["explained_class"] for r in report["images"]} == {281}


def test_grayscale_and_rgba_are_converted_with_a_warning(image_files, tmp_path):
    with pytest.warns(UserWarning, match="grayscale"):
        assert (
            main(["explain", "-e", "saliency", str(image_files / "grey.png"), "--out", str(tmp_path), "--quiet"]) == 0
        )
    with pytest.warns(UserWarning, match="alpha channel"):
        assert (
            main(["explain", "-e", "saliency", str(image_files / "alpha.png"), "--out", str(tmp_path), "--quiet"]) == 0
        )


@pytest.mark.parametrize(
    "args, message",
    [
        (["-e", "gradcm", "--images", "default"], "no explainer called 'gradcm'. Did you mean 'gradcam'"),
        (["-e", "gradcam", "--images", "default", "--target", "tabby kat"], "Close matches: 'tabby cat'"),
        (["-e", "gradcam", "--images", "default", "--target", "1000"], r"out of range; the model has 1000 classes"),
        (["-e", "gradcam", "NOTES"], "not a readable image"),
        (["-e", "gradcam", "MISSING"], "no such file"),
        (["-e", "gradcam"], "no images"),
        (["-e", "gradcam", "--images", "mine"], "only 'default'"),
        (["-e", "gradcam", "--images", "default", "--layer", "heda"], "Close matches: head"),
        (["-e", "gradcam", "--images", "default", "-o", "oops"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message, image_files, tmp_path, capsys):
    args = [
        a.replace("NOTES", str(image_files / "notes.jpg")).replace("MISSING", str(image_files / "missing.jpg"))
        for a in args
    ]
    assert main(["explain", *args, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xai-bridge explain: error:") and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err
    assert not list(tmp_path.glob("*.png"))  # nothing half-written


def test_plugins_command_human_readable(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "gradcam" in out and "toolkit (xai-bridge" in out and "edges" in out


def test_console_script_is_installed():
    exe = shutil.which("xai-bridge")
    assert exe, "the console script xai-bridge is not on PATH"
    out = subprocess.run([exe, "plugins", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["explainers"]


def test_plugins_table_columns_line_up_whatever_the_name_length(xai_bridge_plugin, capsys):
    from xai_bridge import hookimpl
    from xai_bridge.cli import main

    class Long:
        @hookimpl
        def register_explainers(self, register):
            register("a-very-long-explainer-name-indeed", lambda model: None, family="baseline")

    xai_bridge_plugin(Long(), name="long")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    explainer_rows = out.split("\nMetrics")[0].splitlines()[1:]
    assert any("a-very-long-explainer-name-indeed" in row for row in explainer_rows)
    starts = {re.match(r"  \S+\s+", row).end() for row in explainer_rows if row.strip()}
    assert len(starts) == 1, explainer_rows  # the family column starts at one offset
