"""Typed, frozen descriptors of what plugins registered, and the lookups over them.

The registry knows no method by name: it only stores what the ``register``
callbacks of :mod:`xai_bridge.hookspecs` received, checks names, and answers
lookups with helpful errors.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import NameConflictError, PluginError, UnknownNameError, UnknownOptionError

EXPLAINER_FAMILIES = ("cam", "gradient", "perturbation", "optimisation", "baseline", "attention", "other")
#: Quantus's ``EvaluationCategory`` values.
METRIC_CATEGORIES = ("Faithfulness", "Robustness", "Randomisation", "Complexity", "Localisation", "Axiomatic")

#: The distribution whose plugins are built-ins: they keep their names in a conflict.
BUILTIN_DISTRIBUTION = "xai-bridge"

_EXPLAINER_NAME = re.compile(r"^[a-z0-9][a-z0-9+\-]*$")
_METRIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class Provider:
    """Where a component comes from: the plugin's entry-point name and distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def builtin(self) -> bool:
        """True for xai-bridge's own plugins (the distribution ``xai-bridge``)."""
        return self.distribution == BUILTIN_DISTRIBUTION

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
        """A configured explainer; an option it does not take is an :class:`UnknownOptionError`."""
        try:
            explainer = self.factory(model, **options)
        except TypeError as exc:
            raise _unknown_option(exc, "explainer", self.name, options, lambda: self.factory(model)) from None
        # Record under which name and family it was made, for results and reports.
        try:
            explainer.name = self.name
            explainer.family = self.family
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


_METRIC_ATTRIBUTES = ("higher_is_better", "category", "needs", "description")


def metric_class_description(cls: Any) -> str:
    """A metric class's ``description``, else the first paragraph of its own docstring, on one line."""
    own = getattr(cls, "description", "") or ""
    if own:
        return str(own)
    doc = (cls.__dict__.get("__doc__") or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its score direction, Quantus category, needs and description.

    They are read from the metric's class (``metric_class``: a class, or ``"module:Class"`` imported
    on first use, so listing metrics imports nothing), unless the plugin declared them at
    registration (``declared``). :meth:`configured` reads them from a configured instance, whose
    options may change the direction (Region Perturbation with ``order="lerf"``).
    """

    name: str
    factory: Callable[..., Any] = field(repr=False)
    provider: Provider
    aliases: tuple[str, ...] = ()
    metric_class: Any = field(default=None, repr=False)
    declared: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def resolve_class(self) -> Any:
        """The metric's class (importing ``"module:Class"``), or ``None`` when only a factory was registered."""
        target = self.metric_class
        if isinstance(target, str):
            import importlib

            module, _, attr = target.partition(":")
            try:
                target = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise PluginError(
                    f"plugin {self.provider} registered metric {self.name!r} with class {self.metric_class!r}, "
                    f"which cannot be imported: {exc}"
                ) from exc
        return target

    def _read(self, attr: str, default: Any) -> Any:
        if attr in self.declared:
            return self.declared[attr]
        cls = self.resolve_class()
        if cls is None:
            return default
        return metric_class_description(cls) if attr == "description" else getattr(cls, attr, default)

    @property
    def higher_is_better(self) -> bool:
        return bool(self._read("higher_is_better", True))

    @property
    def category(self) -> str:
        category = str(self._read("category", "Faithfulness"))
        if category not in METRIC_CATEGORIES:
            raise PluginError(
                f"plugin {self.provider} registered metric {self.name!r} with category {category!r}; "
                f"expected one of Quantus's categories {METRIC_CATEGORIES}"
            )
        return category

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(self._read("needs", ()))

    @property
    def description(self) -> str:
        return str(self._read("description", ""))

    @property
    def score_direction(self) -> str:
        """``"higher"`` or ``"lower"``, as Quantus's ``ScoreDirection`` values."""
        return "higher" if self.higher_is_better else "lower"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def create(self, **options: Any) -> Any:
        """A configured metric; an option it does not take is an :class:`UnknownOptionError`."""
        try:
            metric = self.factory(**options)
        except TypeError as exc:
            raise _unknown_option(exc, "metric", self.name, options, lambda: self.factory()) from None
        try:
            if getattr(metric, "name", None) in (None, ""):
                metric.name = self.name
            # how it was configured: evaluate() keys two configurations of one metric apart by it
            metric.spec_options = dict(options)
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

    def configured(self, metric: Any) -> dict[str, Any]:
        """:meth:`as_dict` for a configured instance: direction, category and needs as the instance has them.

        >>> import xai_bridge as xb
        >>> spec = xb.metric_spec("region_perturbation")
        >>> lerf = xb.get_metric("region_perturbation", order="lerf")
        >>> spec.higher_is_better, spec.configured(lerf)["higher_is_better"]
        (True, False)
        """
        out = self.as_dict()
        higher = bool(getattr(metric, "higher_is_better", out["higher_is_better"]))
        out.update(
            higher_is_better=higher,
            score_direction="higher" if higher else "lower",
            category=getattr(metric, "category", out["category"]),
            needs=list(getattr(metric, "needs", out["needs"])),
            options=dict(getattr(metric, "spec_options", {})),
        )
        return out


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def accepted_options(obj: Any) -> list[str]:
    """The keyword options ``type(obj).__init__`` takes (``model`` and ``self`` left out)."""
    try:
        parameters = inspect.signature(type(obj).__init__).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a builtin or C type
        return []
    skip = {"self", "model"}
    return [p.name for p in parameters if p.name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _unknown_option(
    exc: TypeError, kind: str, name: str, options: Mapping[str, Any], make_default: Callable[[], Any]
) -> Exception:
    """Turn ``__init__() got an unexpected keyword argument 'x'`` into a sentence naming what is accepted."""
    match = _UNEXPECTED.search(str(exc))
    if match is None or match.group(1) not in options:
        return exc
    bad = match.group(1)
    try:
        accepted = accepted_options(make_default())
    except Exception:  # noqa: BLE001 - the default cannot be built here: still name the option
        accepted = []
    listed = ", ".join(accepted) if accepted else "no options"
    return UnknownOptionError(
        f"{kind} {name!r}: unknown option {bad!r}.{did_you_mean(bad, accepted)} It accepts: {listed}."
    )


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
        self.contested: dict[str, Any] = {}  # names two third-party plugins claimed: nobody gets them

    def check_names(self, spec: Any) -> None:
        for label in (spec.name, *spec.aliases):
            if not self.pattern.match(label):
                raise PluginError(
                    f"plugin {spec.provider} registered the {self.kind} name {label!r}, which is not "
                    f"allowed: use lower case letters, digits and "
                    f"{'hyphens' if self.kind == 'explainer' else 'underscores'}."
                )

    def add(self, spec: Any) -> list[str]:
        """Add ``spec``; return the warnings of the name conflicts it settled (empty when none).

        The rule, the same whatever the order plugins load in:

        * a built-in (distribution ``xai-bridge``) keeps its names; a third-party component
          claiming one of them is skipped;
        * two third-party components claiming one name both lose it (whole components are
          dropped, not single aliases), and so does any later claimant;
        * two built-ins claiming one name is a bug of xai-bridge: :class:`NameConflictError`.
        """
        self.check_names(spec)
        labels = (spec.name, *spec.aliases)
        contested = [label for label in labels if label in self.contested]
        if contested:
            first = self.contested[contested[0]]
            return [self._conflict_message(contested[0], first, spec, kept=None)]
        rivals = {self.index[label]: label for label in labels if label in self.index}
        messages = []
        for owner_name, label in rivals.items():
            owner = self.specs[owner_name]
            if owner.provider.builtin and spec.provider.builtin:
                raise NameConflictError(
                    f"two built-in plugins claim the {self.kind} name {label!r}: {owner.provider} and "
                    f"{spec.provider}. This is a bug of xai-bridge; please report it."
                )
            if owner.provider.builtin:
                return [self._conflict_message(label, owner, spec, kept=owner)]
            # the owner is third-party: it loses the name whoever the newcomer is
            self._remove(owner)
            if spec.provider.builtin:
                messages.append(self._conflict_message(label, spec, owner, kept=spec))
            else:
                for lost in (*labels, owner.name, *owner.aliases):
                    self.contested.setdefault(lost, owner)
                messages.append(self._conflict_message(label, owner, spec, kept=None))
        if any(label in self.contested for label in labels):
            return messages
        for label in labels:
            self.index[label] = spec.name
        self.specs[spec.name] = spec
        return messages

    def _remove(self, spec: Any) -> None:
        for label in (spec.name, *spec.aliases):
            self.index.pop(label, None)
        self.specs.pop(spec.name, None)

    def _conflict_message(self, label: str, first: Any, second: Any, kept: Any) -> str:
        head = (
            f"two plugins claim the {self.kind} name {label!r}: {first.provider} (as {first.name!r}) and "
            f"{second.provider} (as {second.name!r})"
        )
        if kept is not None:
            loser = second if kept is first else first
            return (
                f"{head}. The built-in keeps it; {loser.provider.plugin}'s {self.kind} {loser.name!r} is skipped. "
                f"Rename it in that plugin, or set XAI_BRIDGE_DISABLE_PLUGINS={loser.provider.plugin} to silence this."
            )
        return (
            f"{head}. Neither gets it: both are skipped. Uninstall one, set XAI_BRIDGE_DISABLE_PLUGINS="
            f"{first.provider.plugin} (or {second.provider.plugin}), or rename."
        )

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
    def add(self, spec: ExplainerSpec | MetricSpec) -> list[str]:
        """Add a descriptor; returns the warnings of the name conflicts it settled (see :meth:`_Table.add`)."""
        return (self.explainers if isinstance(spec, ExplainerSpec) else self.metrics).add(spec)

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
            factory: Callable[..., Any] | None = None,
            *,
            metric_class: Any = None,
            aliases: Sequence[str] = (),
            **declared: Any,
        ) -> None:
            """Register a metric; ``metric_class`` (a class or ``"module:Class"``) gives its attributes.

            Direction, category, needs and description are read from the class; pass them as
            keywords only for a factory without a class (``higher_is_better`` is then required).
            """
            unknown = sorted(set(declared) - set(_METRIC_ATTRIBUTES))
            if unknown:
                raise PluginError(
                    f"plugin {provider} registered metric {name!r} with unknown keyword {unknown[0]!r}; "
                    f"expected metric_class=, aliases= or {', '.join(_METRIC_ATTRIBUTES)}"
                )
            if metric_class is None and "higher_is_better" not in declared:
                raise PluginError(
                    f"plugin {provider} registered metric {name!r} without metric_class= or higher_is_better=; "
                    "pass the metric's class (its attributes are read from it)"
                )
            if factory is None:
                if metric_class is None:
                    raise PluginError(f"plugin {provider} registered metric {name!r} with neither factory nor class")
                factory = _class_factory(lambda: spec.resolve_class())
            if not callable(factory):
                raise PluginError(f"plugin {provider} registered metric {name!r} with a factory that is not callable")
            if "higher_is_better" in declared:
                declared["higher_is_better"] = bool(declared["higher_is_better"])
            if "needs" in declared:
                declared["needs"] = tuple(declared["needs"])
            spec = MetricSpec(
                name=name,
                factory=factory,
                provider=provider,
                aliases=tuple(aliases),
                metric_class=metric_class,
                declared=dict(declared),
            )
            if "category" in declared:
                spec.category  # noqa: B018 - checked now, at registration
            self.metrics.check_names(spec)
            sink(spec)

        return register


def _class_factory(resolve: Callable[[], Any]) -> Callable[..., Any]:
    def factory(**options: Any) -> Any:
        return resolve()(**options)

    return factory


def options_summary(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
