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
