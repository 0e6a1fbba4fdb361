"""The benchmark report's document: ``report.md`` and ``report.html``, with the figures of :mod:`.figures`.

The first screen says which explainer wins on which metric (best mean, how often it
beats the runner-up on the same image, and whether that is significant); then the
summary table (mean ± std, ↑/↓ by direction), the protocol, the saliency grid, mean
insertion/deletion curves, win-rate and Wilcoxon heat maps (Grabska-Barwińska et al., Fig. 7, 9), and the
reliability of the metrics: Krippendorff's α of the per-image rankings (inter-rater,
Fig. 10) and Spearman's ρ between metrics (internal consistency, Fig. 11).

>>> from xai_bridge.results import Results
>>> rows = [{"image": str(i), "explainer": e, "metric": "m", "value": v + i, "protocol": "default"}
...         for i in range(4) for e, v in (("a", 1.0), ("b", 0.0))]
>>> import tempfile; out = write_report(Results(rows=rows, directions={"m": True}), tempfile.mkdtemp())
>>> sorted(p.name for p in out)
['report.html', 'report.md']
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ..results import Results
from ..stats import reliability, verdicts
from .figures import (
    _arrow,
    _fmt,
    figure_consistency,
    figure_cost,
    figure_curves,
    figure_grid,
    figure_reliability,
    figure_wilcoxon,
    figure_win_rates,
)

if TYPE_CHECKING:  # pragma: no cover
    from .run import Plan, RunInfo
    from .store import Store


# -- a tiny document model rendered to Markdown and HTML ---------------------------------------
@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(head), [list(r) for r in rows])))

    def img(self, path: str, alt: str) -> None:
        self.blocks.append(("img", (path, alt)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                head, rows = value
                lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                anchor = re.sub(r"[^a-z0-9]+", "-", value[1].lower()).strip("-")
                body.append(f'<h{value[0]} id="{anchor}">{_inline(value[1])}</h{value[0]}>')
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                head, rows = value
                body.append(
                    "<table><thead><tr>"
                    + "".join(f"<th>{_inline(h)}</th>" for h in head)
                    + "</tr></thead><tbody>"
                    + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                    + "</tbody></table>"
                )
            elif kind == "img":
                body.append(
                    f'<figure><img src="{html.escape(value[0])}" alt="{html.escape(value[1])}"><figcaption>'
                    f"{html.escape(value[1])}</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
            "table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}"
            "figcaption{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 .2em}"
        )
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


def _inline(text: str) -> str:
    """``**bold**`` and ``code`` spans of the Markdown text, as HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


# -- statistics ---------------------------------------------------------------------------------


def write_report(
    results: Results,
    out: str | Path,
    *,
    store: Store | None = None,
    plan: Plan | None = None,
    info: RunInfo | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` to ``out``; returns the two reports.

    ``store``, ``plan`` and ``info`` (from :func:`~xai_bridge.runner.run_benchmark`) add the
    saliency grid, the settings and the skipped images; a plain :class:`Results` is enough
    for the tables and statistics.
    """
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    if not results.rows:
        raise InvalidArgumentError("results: no rows to report; did every image fail to load?")
    title = title or (plan.config.title if plan is not None else "xai-bridge benchmark")
    doc = _Doc()
    doc.h(1, title)
    explainers, metrics = results.explainers, results.metrics
    n_images = len(results.images)
    protocols = ", ".join(sorted({r["protocol"] for r in results.rows}))
    model = plan.config.model_name if plan is not None else "the model"
    doc.p(
        f"{len(explainers)} explainers × {len(metrics)} metrics on {n_images} images, {model}, protocol `{protocols}`."
    )

    # first screen: who wins on what
    found = verdicts(results)
    doc.h(2, "Verdict")
    lines = []
    for v in found:
        text = f"**{v['best']}** is best on `{v['metric']}` {_arrow(results, v['metric'])} (mean {_fmt(v['mean'])})"
        if v["runner_up"] is not None and not math.isnan(v["win"]):
            sig = "significant" if v["p"] < 0.05 else "not significant"
            test = f"(Wilcoxon p = {_fmt(v['p'], 2)}, {sig} at 5 %)"
            if v.get("tied"):
                text += f", tied on the mean with {v['runner_up']}, which it beats on {v['win']:.0%} of images {test}"
            else:
                text += f"; it beats the runner-up {v['runner_up']} on {v['win']:.0%} of images {test}"
        lines.append(text)
    doc.ul(lines)
    tally: dict[str, int] = {}
    for v in found:
        tally[v["best"]] = tally.get(v["best"], 0) + 1
    overall = sorted(tally.items(), key=lambda kv: -kv[1])
    doc.p(
        "Overall: "
        + ", ".join(
            f"**{e}** best on {k} of {len(metrics)} metric{'s' if len(metrics) > 1 else ''}" for e, k in overall
        )
        + f". With {n_images} images, treat differences that are not significant as ties."
    )

    # summary table
    doc.h(2, "Summary")
    best = {v["metric"]: v["best"] for v in found}
    head = ["explainer"] + [f"{m} {_arrow(results, m)}" for m in metrics] + ["cost / image"]
    rows = []
    for e in explainers:
        cells = [e]
        for m in metrics:
            mean, std, n = results.mean_std(e, m)
            cell = "—" if n == 0 else f"{_fmt(mean)} ± {_fmt(std)}"
            cells.append(f"**{cell}**" if best.get(m) == e and n else cell)
        cells.append(results.cost_cell(e))
        rows.append(cells)
    doc.table(head, rows)
    doc.p(
        f"Mean ± standard deviation over {n_images} images; ↑ higher is better, ↓ lower is better; the best mean "
        "per metric is bold. Cost: the explainer's wall time and the model's forward (fwd) and backward (bwd) "
        "passes per image while explaining, measured through the engine's executor or, for explainers that do "
        "not use it, by hooks on the model."
    )
    if results.metric_costs:
        doc.p(
            "Scoring cost, forward passes per image (mean over explainers): "
            + ", ".join(
                f"`{m}` {_fmt(sum(per.values()) / len(per), 3)}" for m, per in results.metric_costs.items() if per
            )
            + "."
        )

    # protocol and settings
    doc.h(2, "Protocol and settings")
    for name, proto in results.protocols.items():
        if proto.get("description"):
            doc.p(f"Protocol `{name}`: {proto['description']}")
        fields = [(k, v) for k, v in proto.items() if k not in ("name", "description") and v not in (None, "")]
        doc.table(["setting", "value"], [[k, f"`{_setting(v)}`"] for k, v in fields])
    if plan is not None:
        settings = [
            f"model: {plan.config.model_name}",
            f"images: {plan.source.kind} `{plan.source.identity}` ({len(plan.source.items)} listed, "
            f"{plan.config.size}×{plan.config.size}, labels {'given' if plan.source.has_labels else 'not given'})",
            f"batches: {len(plan.batches)} of up to {plan.config.batch_size} images (Δ metrics take their "
            "reference maps from the same batch)",
            "explainers: "
            + ", ".join(f"`{e.key}`" + (f" as {e.label}" if e.label != e.name else "") for e in plan.explainers),
            "metrics: "
            + ", ".join(f"`{m.key}`" + (f" → {m.label}" if m.label != m.name else "") for m in plan.metrics),
            f"store: `{plan.config.store}` (configuration `{plan.config_hash}`)",
            f"engine forward passes: graph mode `{plan.config.compile}`, precision `{plan.config.precision}`",
        ]
        if info is not None:
            settings.append(
                f"this run: {info.units_computed} of {info.units_total} pending units computed "
                f"({info.rows_written} new rows) on {info.world_size} "
                f"process{'es' if info.world_size > 1 else ''} in {info.seconds:.0f} s"
            )
        settings += list(plan.config.notes)
        doc.ul(settings)
    skipped = (
        store.skipped(plan.config_hash)
        if (store is not None and plan is not None)
        else (info.skipped if info is not None else {})
    )
    if skipped:
        doc.h(3, f"Skipped images ({len(skipped)})")
        doc.ul([f"`{k}`: {v}" for k, v in sorted(skipped.items())])

    if results.errors:
        doc.h(3, f"Not scored ({len(results.errors)})")
        doc.p(
            "These metrics raised on these images × explainer; their values there are left out (a rerun tries "
            "again), the other metrics kept theirs:"
        )
        doc.ul(
            [f"`{e['metric']}` × {e['explainer']} on {', '.join(e['images'])}: `{e['error']}`" for e in results.errors]
        )

    # figures
    if store is not None and plan is not None:
        grid = figure_grid(figures / "saliency_grid.png", plan, store, results)
        if grid is not None:
            doc.h(2, "Saliency maps")
            doc.img(
                "figures/saliency_grid.png", "Saliency grid: images down (with the explained class), explainers across"
            )
    if figure_cost(results, figures / "cost.png") is not None:
        doc.h(2, "Faithfulness against cost")
        doc.img("figures/cost.png", "Each explainer's mean score against its seconds per image (log scale)")
    curves = figure_curves(results, figures / "curves.png")
    if curves is not None:
        doc.h(2, "Insertion and deletion curves")
        doc.img(
            "figures/curves.png",
            "Mean score of the explained class as pixels are inserted / deleted, most salient first (legend: mean "
            "area)",
        )
    if len(explainers) > 1:
        doc.h(2, "Pairwise comparisons")
        doc.p(
            "Per-image win rates (Grabska-Barwińska et al., §4.2, Fig. 7): the share of images on which the row "
            "explainer scores better than the column explainer (ties count half). Wilcoxon signed-rank p-values "
            "(Fig. 9) say whether the paired differences are significant."
        )
        figure_win_rates(results, figures / "win_rates.png")
        doc.img("figures/win_rates.png", "Win rates: row beats column on this % of images")
        figure_wilcoxon(results, figures / "wilcoxon.png")
        doc.img("figures/wilcoxon.png", "Two-sided Wilcoxon signed-rank p-values per pair")

        doc.h(2, "Reliability of the metrics")
        alphas = {"all explainers": reliability(results)}
        informative = [e for e in explainers if results.families.get(e) != "baseline"]
        if 1 < len(informative) < len(explainers):  # baselines (Fake-CAM, random maps) can dominate α
            alphas["without baselines"] = reliability(results, informative)
        figure_reliability(results, figures / "reliability.png", alphas)
        doc.p(
            "Inter-rater reliability (Grabska-Barwińska et al., App. C.2, Fig. 10): Krippendorff's ordinal α of "
            "the rankings each image gives the explainers; 1 = every image ranks them the same way, 0 = rankings "
            "unrelated across images. Intervals: 2.5–97.5 % over 50 random halves of the images."
        )
        doc.table(
            ["metric"] + list(alphas),
            [[f"{m} {_arrow(results, m)}"] + [_alpha_cell(t[m]) for t in alphas.values()] for m in metrics],
        )
        doc.img("figures/reliability.png", "Krippendorff's α per metric")
        if len(metrics) > 1:
            figure_consistency(results, figures / "consistency.png")
            doc.p(
                "Internal consistency (Fig. 11): Spearman's ρ between metrics over the same explanations, "
                "lower-is-better metrics negated so that positive ρ means the metrics agree."
            )
            doc.img("figures/consistency.png", "Spearman's ρ between metrics, pooled and per explainer")

    md = out / "report.md"
    md.write_text(doc.markdown(), encoding="utf-8")
    page = out / "report.html"
    page.write_text(doc.html(title), encoding="utf-8")
    return [md, page]


def _setting(value: Any) -> str:
    """A protocol field for a table: replacements as ``blur(kernel=11, sigma=5.0)``."""
    if isinstance(value, dict) and "kind" in value:
        extra = ", ".join(
            f"{k}={v}"
            for k, v in value.items()
            if k != "kind" and v is not None and not (k == "seed" and value["kind"] != "noise")
        )
        return f"{value['kind']}({extra})" if extra else str(value["kind"])
    return str(value)


def _alpha_cell(entry: tuple[float, float, float]) -> str:
    alpha, lo, hi = entry
    if math.isnan(alpha):
        return "— (rankings do not vary)"
    return f"{alpha:.2f}" + ("" if math.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]")
