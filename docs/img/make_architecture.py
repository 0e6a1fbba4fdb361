"""Draw docs/img/architecture.png: python docs/img/make_architecture.py (matplotlib only)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HOST, PLUGIN, DATA, TOOL = "#dbe8f6", "#e3f1df", "#fdf0d5", "#eeeeee"


def box(ax, x, y, w, h, title, body="", color=HOST, size=10, left=False):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=color, ec="#555"))
    ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=size, weight="bold")
    if body:
        bx, ha = (x + 0.25, "left") if left else (x + w / 2, "center")
        ax.text(bx, y + h - 0.55, body, ha=ha, va="top", fontsize=size - 1.5, linespacing=1.45)


def arrow(ax, a, b, text="", style="-|>", color="#333", dy=0.12):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=14, lw=1.4, color=color))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + dy, text, ha="center", va="bottom", fontsize=8, color=color)


fig, ax = plt.subplots(figsize=(13, 7.2))
ax.set_xlim(0, 13)
ax.set_ylim(0, 7.2)
ax.axis("off")

# -- the data flow (top row) ------------------------------------------------------------------
ax.text(0.1, 7.0, "Data flows one way", fontsize=12, weight="bold", va="top")
flow = [
    ("model + images", "B×C×H×W", DATA),
    ("explainer", "get_explainer(…)\n.explain(images)\n→ maps B×H×W", HOST),
    ("engine", "runs the metrics'\nrequests (Masked,\nCurve, Flip) in\nbatched passes", HOST),
    ("metrics", "compute(ctx)\n→ one value\nper image", HOST),
    ("result rows", "one per image ×\nexplainer × metric\n(Results)", DATA),
    ("report", "runner: tables,\nstatistics,\nfigures", HOST),
]
w, h, y, gap = 1.85, 1.75, 4.75, 0.27
for i, (title, body, color) in enumerate(flow):
    x = 0.15 + i * (w + gap)
    box(ax, x, y, w, h, title, body, color)
    if i:
        arrow(ax, (x - gap, y + h / 2), (x, y + h / 2))

# -- the layers (bottom) ----------------------------------------------------------------------
ax.text(0.1, 4.45, "Who owns what", fontsize=12, weight="bold", va="top")
box(
    ax,
    0.15,
    0.25,
    6.3,
    3.85,
    "xai_bridge/  —  the host: knows no method by name",
    "hookspecs.py   the hooks (the plugin author's reference)\n"
    "manager.py   loads the entry-point group lazily, once, tolerantly\n"
    "registry.py   frozen descriptors, lookups, name conflicts\n"
    "explainer.py  metric.py  protocols.py  evaluation.py   the contracts\n"
    "engine/   the shared batched perturbation engine\n"
    "adapters/   Captum, pytorch-grad-cam, Quantus (one module each)\n"
    "runner/   benchmark: plan, SQLite store, report\n"
    "cli.py   xai-bridge …  (plugins add commands by hook)\n"
    "models.py  data.py   the embedded default model and photos\n"
    "testing.py   pytest fixtures and contract checks for plugin authors",
    HOST,
    size=10.5,
    left=True,
)
box(
    ax,
    7.55,
    2.45,
    2.6,
    1.65,
    "plugins/",
    "built-ins, installed as\nxai_bridge_builtins: opticam,\n"
    "deepmaps, castream, gradreg,\nmetrics, toolkit, baselines …",
    PLUGIN,
)
box(ax, 10.35, 2.45, 2.5, 1.65, "third-party plugins", "their own distributions\n(e.g. the example plugin)", PLUGIN)
box(
    ax,
    7.55,
    0.25,
    5.3,
    1.55,
    "entry-point group  xai_bridge",
    "[project.entry-points.xai_bridge] — the same door for every plugin\n"
    "hooks: register_explainers, register_metrics,\nresolve_target_layer, register_commands",
    PLUGIN,
)
arrow(ax, (8.85, 2.45), (8.85, 1.8))
arrow(ax, (11.6, 2.45), (11.6, 1.8))
arrow(ax, (7.55, 1.0), (6.45, 1.0))
ax.text(7.0, 1.12, "manager\nloads", ha="center", va="bottom", fontsize=8.5, color="#333")
ax.text(
    6.5,
    0.02,
    "blue: host   green: plugins   yellow: data",
    ha="center",
    va="bottom",
    fontsize=8.5,
    color="#555",
)

out = Path(__file__).with_name("architecture.png")
fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
print(out, out.stat().st_size, "bytes")
