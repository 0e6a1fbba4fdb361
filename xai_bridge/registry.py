"""Typed, frozen descriptors of what plugins registered, and the lookups over them.

The registry knows no method by name: it only stores what the ``register``
callbacks of :mod:`xai_bridge.hookspecs` received, checks names, and answers
lookups with helpful errors.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import NameConflictError, PluginError, UnknownNameError

EXPLAINER_FAMILIES = ("cam", "gradient", "perturbation", "optimisation", "baseline", "attention", "other")
#: Quantus's ``EvaluationCategory`` values.
METRIC_CATEGORIES = ("Faithfulness", "Robustness", "Randomisation", "Complexity", "Localisation", "Axiomatic")

_EXPLAINER_NAME = re.compile(r"^[a-z0-9][a-z0-9+\-]*$")
_METRIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class Provider:
    """Where a component comes from: the plugin's entry-point name and distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version or ''})".replace(" )", ")")
        return self.plugin


@dataclass(frozen=True)
class ExplainerSpec:
    """A registered explainer. ``create(model, **options)`` builds a configured one."""

    name: str
    factory: Callable[..., Any] = field(repr=False)
    provider: Provider
    aliases: tuple[str, ...] = ()
    description: str = ""
    family: str = "other"
    needs_layer: bool = False

    def create(self, model: Any, **options: Any) -> Any:
        explainer = self.factory(model, **options)
        # Record under which name it was made, for results and reports.
        try:
            explainer.name = self.name
        except AttributeError:  # pragma: no cover - read-only attribute on a foreign object
            pass
        return explainer

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "explainer",
            "name": self.name,
            "aliases": list(self.aliases),
            "family": self.family,
            "needs_layer": self.needs_layer,
            "description": self.description,
            "plugin": self.provider.plugin,
            "distribution": self.provider.distribution,
            "version": self.provider.version,
        }


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric, with its score direction and Quantus category."""

    name: str
    factory: Callable[..., Any] = field(repr=False)
    provider: Provider
    higher_is_better: bool
    category: str = "Faithfulness"
    aliases: tuple[str, ...] = ()
    description: str = ""
    needs: tuple[str, ...] = ()

    @property
    def score_direction(self) -> str:
        """``"higher"`` or ``"lower"``, as Quantus's ``ScoreDirection`` values."""
        return "higher" if self.higher_is_better else "lower"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def create(self, **options: Any) -> Any:
        metric = self.factory(**options)
        try:
            if getattr(metric, "name", None) in (None, ""):
                metric.name = self.name
        except AttributeError:  # pragma: no cover
            pass
        return metric

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "metric",
            "name": self.name,
            "aliases": list(self.aliases),
            "higher_is_better": self.higher_is_better,
            "score_direction": self.score_direction,
            "category": self.category,
            "needs": list(self.needs),
            "description": self.description,
            "plugin": self.provider.plugin,
            "distribution": self.provider.distribution,
            "version": self.provider.version,
        }


def suggest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Close matches of ``name`` among ``candidates`` (case-insensitive)."""
    pool = {c.lower(): c for c in candidates}
    return [pool[m] for m in difflib.get_close_matches(name.lower(), list(pool), n=n, cutoff=0.5)]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = suggest(name, candidates)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class _Table:
    """Names and aliases of one kind of component, with conflict checks."""

    def __init__(self, kind: str, pattern: re.Pattern[str]) -> None:
        self.kind = kind
        self.pattern = pattern
        self.specs: dict[str, Any] = {}
        self.index: dict[str, str] = {}  # name or alias -> canonical name

    def check_names(self, spec: Any) -> None:
        for label in (spec.name, *spec.aliases):
            if not self.pattern.match(label):
                raise PluginError(
                    f"plugin {spec.provider} registered the {self.kind} name {label!r}, which is not "
                    f"allowed: use lower case letters, digits and "
                    f"{'hyphens' if self.kind == 'explainer' else 'underscores'}."
                )

    def add(self, spec: Any) -> None:
        self.check_names(spec)
        for label in (spec.name, *spec.aliases):
            owner = self.index.get(label)
            if owner is not None:
                other = self.specs[owner]
                raise NameConflictError(
                    f"two plugins claim the {self.kind} name {label!r}: {other.provider} "
                    f"(as {owner!r}) and {spec.provider} (as {spec.name!r}). Uninstall or "
                    f"block one of them (XAI_BRIDGE_DISABLE_PLUGINS={spec.provider.plugin}), or rename."
                )
        for label in (spec.name, *spec.aliases):
            self.index[label] = spec.name
        self.specs[spec.name] = spec

    def get(self, name: str) -> Any:
        key = self.index.get(name) or self.index.get(name.lower())
        if key is None:
            raise UnknownNameError(
                f"no {self.kind} called {name!r}.{did_you_mean(name, self.index)} "
                f"Run `xai-bridge plugins` to list the {self.kind}s installed."
            )
        return self.specs[key]

    def sorted(self) -> list[Any]:
        return [self.specs[k] for k in sorted(self.specs)]


class Registry:
    """Everything the loaded plugins registered."""

    def __init__(self) -> None:
        self.explainers = _Table("explainer", _EXPLAINER_NAME)
        self.metrics = _Table("metric", _METRIC_NAME)

    # -- the callbacks handed to the hooks -------------------------------------------------
    def add(self, spec: ExplainerSpec | MetricSpec) -> None:
        (self.explainers if isinstance(spec, ExplainerSpec) else self.metrics).add(spec)

    def explainer_callback(self, provider: Provider, sink: Callable[[Any], None]) -> Callable[..., None]:
        """The ``register`` function handed to ``register_explainers``; specs go to ``sink``."""

        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            aliases: Sequence[str] = (),
            description: str = "",
            family: str = "other",
            needs_layer: bool = False,
        ) -> None:
            if not callable(factory):
                raise PluginError(
                    f"plugin {provider} registered explainer {name!r} with a factory that is not callable"
                )
            if family not in EXPLAINER_FAMILIES:
                raise PluginError(
                    f"plugin {provider} registered explainer {name!r} with family {family!r}; "
                    f"expected one of {EXPLAINER_FAMILIES}"
                )
            spec = ExplainerSpec(
                name=name,
                factory=factory,
                provider=provider,
                aliases=tuple(aliases),
                description=description,
                family=family,
                needs_layer=needs_layer,
            )
            self.explainers.check_names(spec)
            sink(spec)

        return register

    def metric_callback(self, provider: Provider, sink: Callable[[Any], None]) -> Callable[..., None]:
        """The ``register`` function handed to ``register_metrics``; specs go to ``sink``."""

        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            higher_is_better: bool,
            aliases: Sequence[str] = (),
            description: str = "",
            category: str = "Faithfulness",
            needs: Sequence[str] = (),
        ) -> None:
            if not callable(factory):
                raise PluginError(f"plugin {provider} registered metric {name!r} with a factory that is not callable")
            if category not in METRIC_CATEGORIES:
                raise PluginError(
                    f"plugin {provider} registered metric {name!r} with category {category!r}; "
                    f"expected one of Quantus's categories {METRIC_CATEGORIES}"
                )
            spec = MetricSpec(
                name=name,
                factory=factory,
                provider=provider,
                higher_is_better=bool(higher_is_better),
                category=category,
                aliases=tuple(aliases),
                description=description,
                needs=tuple(needs),
            )
            self.metrics.check_names(spec)
            sink(spec)

        return register


def options_summary(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
