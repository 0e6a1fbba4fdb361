"""Evaluation results: one row per image × explainer × metric, and what reads them.

Rows are plain dicts, so the table survives without pandas; ``to_frame()``
gives a pandas DataFrame when pandas is installed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLUMNS = ("image", "explainer", "metric", "value", "protocol")


@dataclass
class Results:
    """Rows ``{image, explainer, metric, value, protocol}`` plus the protocol used and curves.

    Attributes:
        rows: the table.
        protocols: name → the protocol's settings (``Protocol.as_dict()``), so a result
            records exactly how it was computed.
        directions: metric → ``True`` when higher is better (for arrows and statistics).
        curves: optional ``(explainer, metric) → {"fractions": [...], "mean": [...]}``
            mean curves of progressive metrics, for plots.
        curve_kinds: metric → the engine request kind its curve comes from (``"deletion"``,
            ``"insertion"``), from :attr:`Metric.curve_kind <xai_bridge.metric.Metric.curve_kind>`.
        families: explainer → its registered family (``"cam"``, ``"baseline"``, …).
        forward: how the engine's forward passes were computed: ``compile`` (the graph mode
            asked for), ``graph`` (the one used), ``precision`` and ``chunk``
            (see :meth:`Engine.describe <xai_bridge.engine.Engine.describe>`).
        errors: one entry per metric that raised on a batch: ``{images, explainer, metric, error}``
            (its values for those images are missing; the other metrics kept theirs).
        costs: explainer → ``{seconds, forward, backward}`` per image (wall seconds of
            explaining, and the model's forward and backward inputs), plus ``images``.
        metric_costs: metric → explainer → forward inputs per image of the engine runs it read.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    directions: dict[str, bool] = field(default_factory=dict)
    curves: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    curve_kinds: dict[str, str] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    forward: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)
    metric_costs: dict[str, dict[str, float]] = field(default_factory=dict)

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def __len__(self) -> int:
        return len(self.rows)

    # -- views ----------------------------------------------------------------------------
    @property
    def explainers(self) -> list[str]:
        return list(dict.fromkeys(r["explainer"] for r in self.rows))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(r["metric"] for r in self.rows))

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(r["image"] for r in self.rows))

    def values(self, explainer: str, metric: str) -> list[float]:
        """Per-image values in image order (NaN where missing)."""
        table = {r["image"]: r["value"] for r in self.rows if r["explainer"] == explainer and r["metric"] == metric}
        return [float(table.get(image, math.nan)) for image in self.images]

    def non_finite(self, explainer: str, metric: str) -> list[str]:
        """The images whose stored value is NaN or infinite (a metric that could not score them)."""
        return [
            r["image"]
            for r in self.rows
            if r["explainer"] == explainer and r["metric"] == metric and not math.isfinite(float(r["value"]))
        ]

    def by_metric(self, metric: str) -> dict[str, list[float]]:
        """``explainer → per-image values`` for one metric: the input of :mod:`xai_bridge.stats`."""
        return {e: self.values(e, metric) for e in self.explainers}

    def mean_std(self, explainer: str, metric: str) -> tuple[float, float, int]:
        vals = [v for v in self.values(explainer, metric) if not math.isnan(v)]
        if not vals:
            return math.nan, math.nan, 0
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
        return mean, math.sqrt(var), len(vals)

    def cost_cell(self, explainer: str) -> str:
        """``"0.17 s, 1 fwd + 1 bwd"`` per image for an explainer that was run; ``"—"`` for given maps."""
        cost = self.costs.get(explainer)
        if not cost:
            return "—"
        passes = f"{cost['forward']:.3g} fwd"
        if cost.get("backward"):
            passes += f" + {cost['backward']:.3g} bwd"
        return f"{_seconds(cost['seconds'])}, {passes}"

    def summary(self, digits: int = 3) -> str:
        """A Markdown table: explainers down, metrics across, ``mean ± std``, ↑/↓ by direction, and the cost.

        The cost column is the explainer's seconds and model passes per image (explaining only; scoring
        is the same work for every explainer). Metrics that failed on some batch are listed below.
        """
        metrics = self.metrics
        head = ["explainer"] + [f"{m} {'↑' if self.directions.get(m, True) else '↓'}" for m in metrics]
        head.append("cost / image")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for e in self.explainers:
            cells = [e]
            for m in metrics:
                mean, std, n = self.mean_std(e, m)
                bad = self.non_finite(e, m)
                cell = "—" if n == 0 else f"{mean:.{digits}f} ± {std:.{digits}f}"
                cells.append(f"{cell} ({len(bad)} NaN)" if bad else cell)
            cells.append(self.cost_cell(e))
            lines.append("| " + " | ".join(cells) + " |")
        protocols = ", ".join(sorted({r["protocol"] for r in self.rows}))
        lines.append("")
        lines.append(
            f"Protocol: {protocols}. Mean ± standard deviation over {len(self.images)} images; ↑ higher is "
            "better, ↓ lower is better. Cost: the explainer's wall time and model passes per image."
        )
        for err in self.errors:
            lines.append(
                f"- not scored: {err['metric']} × {err['explainer']} on {', '.join(map(str, err['images']))}: "
                f"{err['error']}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # -- export ---------------------------------------------------------------------------
    def to_frame(self) -> Any:
        """A pandas DataFrame with the columns ``image, explainer, metric, value, protocol`` (and any extra).

        When costs were measured, three more columns give them per image: ``explainer_seconds``,
        ``explainer_passes`` (forward + backward inputs of explaining) and ``metric_forward``
        (forward inputs of the metric's engine runs).
        """
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=list(dict.fromkeys([*COLUMNS, *(k for r in self.rows for k in r)])))
        if self.costs or self.metric_costs:
            nan = math.nan
            cost = [self.costs.get(e, {}) for e in frame["explainer"]]
            frame["explainer_seconds"] = [c.get("seconds", nan) for c in cost]
            frame["explainer_passes"] = [c.get("forward", nan) + c.get("backward", 0.0) for c in cost]
            frame["metric_forward"] = [
                self.metric_costs.get(m, {}).get(e, nan)
                for e, m in zip(frame["explainer"], frame["metric"], strict=True)
            ]
        return frame

    def to_csv(self, path: str | Path | None = None) -> str:
        extra = list(dict.fromkeys(k for r in self.rows for k in r if k not in COLUMNS))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(self.rows)
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        payload = {
            "rows": self.rows,
            "protocols": self.protocols,
            "directions": self.directions,
            "forward": self.forward,
            "errors": self.errors,
            "costs": self.costs,
            "metric_costs": self.metric_costs,
            "curves": [{"explainer": e, "metric": m, **c} for (e, m), c in self.curves.items()],
        }
        text = json.dumps(payload, indent=2, default=_jsonable)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text: str) -> Results:
        payload = json.loads(text)
        curves = {(c.pop("explainer"), c.pop("metric")): c for c in payload.get("curves", [])}
        return cls(
            rows=payload["rows"],
            protocols=payload.get("protocols", {}),
            directions=payload.get("directions", {}),
            curves=curves,
            forward=payload.get("forward", {}),
            errors=payload.get("errors", []),
            costs=payload.get("costs", {}),
            metric_costs=payload.get("metric_costs", {}),
        )


def _seconds(value: float) -> str:
    """``0.17 s``, ``50 s``, ``1.2 ms``: seconds to two or three significant figures."""
    if value < 0.01:
        return f"{value * 1000:.2g} ms"
    return f"{value:.2g} s" if value < 10 else f"{value:.0f} s"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def merge(parts: Sequence[Results]) -> Results:
    """Concatenate results (e.g. from several ranks), keeping the first row of any duplicate key."""
    out = Results()
    seen: set[tuple[str, str, str, str]] = set()
    for part in parts:
        out.protocols.update(part.protocols)
        out.directions.update(part.directions)
        out.curves.update(part.curves)
        out.forward = out.forward or dict(part.forward)
        out.errors.extend(part.errors)
        out.costs.update(part.costs)
        for metric, per in part.metric_costs.items():
            out.metric_costs.setdefault(metric, {}).update(per)
        for row in part.rows:
            key = (row["image"], row["explainer"], row["metric"], row["protocol"])
            if key not in seen:
                seen.add(key)
                out.rows.append(row)
    return out
