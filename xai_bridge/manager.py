"""The plugin manager: loads the ``xai_bridge`` entry-point group lazily, once, tolerantly.

* Lazy and once: nothing is imported until the first lookup; then every entry
  point of the group is loaded and every ``register_*`` hook runs exactly once.
* Tolerant: a plugin that fails to import (or whose hook raises) is reported
  with its entry-point name and distribution and skipped. Set
  ``XAI_BRIDGE_STRICT_PLUGINS=1`` to re-raise instead, which is what a plugin
  author wants while developing.
* Deterministic: plugins run sorted by name, so the order of installation
  changes nothing.
* A name conflict never stops the host: a built-in keeps its name and a third-party
  component claiming it is skipped; two third-party components claiming one name both
  lose it. Each settled conflict is a warning naming both plugins and the fix
  (``XAI_BRIDGE_STRICT_PLUGINS=1`` raises :class:`~xai_bridge.errors.NameConflictError`).
* ``XAI_BRIDGE_DISABLE_PLUGINS=a,b`` skips the named entry points.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import threading
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import NameConflictError, PluginError, PluginLoadWarning
from .registry import Provider, Registry

ENTRY_POINT_GROUP = "xai_bridge"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was skipped, and why."""

    provider: Provider
    stage: str  # "import" or the hook that raised
    error: str
    traceback: str

    def __str__(self) -> str:
        return f"plugin {self.provider} failed at {self.stage} and was skipped: {self.error}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """Owns the pluggy manager and the registry built from it."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._providers: dict[str, Provider] = {}
        self._entry_points_loaded = False
        self._registry: Registry | None = None
        self.failures: list[PluginFailure] = []
        self.conflicts: list[str] = []
        self._lock = threading.RLock()

    # -- loading --------------------------------------------------------------------------
    @property
    def strict(self) -> bool:
        return _truthy(os.environ.get("XAI_BRIDGE_STRICT_PLUGINS"))

    def _disabled(self) -> set[str]:
        raw = os.environ.get("XAI_BRIDGE_DISABLE_PLUGINS", "")
        return {part.strip() for part in raw.split(",") if part.strip()}

    def _report(self, provider: Provider, stage: str, exc: BaseException) -> None:
        if self.strict:
            raise PluginError(f"plugin {provider} failed at {stage}: {type(exc).__name__}: {exc}") from exc
        failure = PluginFailure(
            provider=provider,
            stage=stage,
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
        )
        self.failures.append(failure)
        warnings.warn(
            f"xai-bridge: {failure}. Set XAI_BRIDGE_STRICT_PLUGINS=1 to raise instead.",
            PluginLoadWarning,
            stacklevel=3,
        )

    def _conflict(self, message: str) -> None:
        if self.strict:
            raise NameConflictError(message)
        warnings.warn(f"xai-bridge: {message}", PluginLoadWarning, stacklevel=4)
        self.conflicts.append(message)

    def _iter_entry_points(self) -> Iterator[metadata.EntryPoint]:
        seen: set[tuple[str, str]] = set()
        for ep in sorted(metadata.entry_points(group=self.group), key=lambda e: (e.name, e.value)):
            if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            yield ep

    def load_entry_points(self) -> None:
        """Import every plugin of the entry-point group (once)."""
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
            disabled = self._disabled()
            for ep in self._iter_entry_points():
                dist = getattr(ep, "dist", None)
                provider = Provider(
                    plugin=ep.name,
                    distribution=dist.metadata["Name"] if dist is not None else None,
                    version=dist.version if dist is not None else None,
                )
                if ep.name in disabled:
                    continue
                if ep.name in self._providers:
                    other = self._providers[ep.name]
                    raise NameConflictError(
                        f"two distributions register the plugin entry point {ep.name!r} in group "
                        f"{self.group!r}: {other} and {provider}. Uninstall one of them."
                    )
                try:
                    plugin = ep.load()
                except Exception as exc:  # noqa: BLE001 - reported, or re-raised when strict
                    self._report(provider, "import", exc)
                    continue
                self._add(plugin, provider)

    def _add(self, plugin: Any, provider: Provider) -> None:
        self.pm.register(plugin, name=provider.plugin)
        self._providers[provider.plugin] = provider
        self._registry = None

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object (a module, class or instance with hookimpls) directly.

        This is how tests and notebooks add a plugin without installing it; the
        shipped pytest fixture ``xai_bridge_plugin`` wraps it for one test.
        """
        with self._lock:
            self.load_entry_points()
            name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
            if name in self._providers:
                raise NameConflictError(f"a plugin named {name!r} is already registered by {self._providers[name]}")
            self._add(plugin, Provider(plugin=name))
            return name

    def unregister(self, name: str) -> None:
        with self._lock:
            self.pm.unregister(name=name)
            self._providers.pop(name, None)
            self._registry = None

    # -- the registry ---------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        with self._lock:
            self.load_entry_points()
            if self._registry is None:
                self._registry = self._build()
            return self._registry

    def _build(self) -> Registry:
        registry = Registry()
        self.conflicts = []
        for hook_name, callback in (
            ("register_explainers", registry.explainer_callback),
            ("register_metrics", registry.metric_callback),
        ):
            caller = getattr(self.pm.hook, hook_name)
            for impl in sorted(caller.get_hookimpls(), key=lambda i: i.plugin_name):
                provider = self._providers.get(impl.plugin_name, Provider(impl.plugin_name))
                staged: list[Any] = []  # all of a plugin's components, or none of them
                try:
                    impl.function(register=callback(provider, staged.append))
                except Exception as exc:  # noqa: BLE001 - reported, or re-raised when strict
                    self._report(provider, hook_name, exc)
                    continue
                for spec in staged:
                    for message in registry.add(spec):  # a settled name conflict: warn (raise when strict)
                        self._conflict(message)
        return registry

    def providers(self) -> dict[str, Provider]:
        self.load_entry_points()
        return dict(sorted(self._providers.items()))

    def add_commands(self, subparsers: Any) -> None:
        """Let every plugin add its sub-commands (the ``register_commands`` hook) to ``subparsers``.

        A plugin whose hook raises is reported and skipped like one that fails to
        import; a command name already taken (by the host or another plugin) is
        skipped with a warning naming both, and the first owner keeps it.
        """
        self.load_entry_points()
        owners: dict[str, str] = {name: "xai-bridge" for name in subparsers.choices}
        for impl in sorted(self.pm.hook.register_commands.get_hookimpls(), key=lambda i: i.plugin_name):
            provider = self._providers.get(impl.plugin_name, Provider(impl.plugin_name))
            guard = _CommandGuard(subparsers, provider, owners)
            try:
                impl.function(subparsers=guard)
            except Exception as exc:  # noqa: BLE001 - reported, or re-raised when strict
                self._report(provider, "register_commands", exc)

    def resolve_target_layer(self, model: Any) -> Any:
        self.load_entry_points()
        return self.pm.hook.resolve_target_layer(model=model)


class _CommandGuard:
    """Stands in for argparse's sub-parsers object while one plugin adds its commands.

    ``add_parser`` of a name already taken gives a detached parser (so the plugin's
    own code runs unchanged) and a warning naming both owners.
    """

    def __init__(self, subparsers: Any, provider: Provider, owners: dict[str, str]) -> None:
        self._subparsers = subparsers
        self._provider = provider
        self._owners = owners

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        import argparse

        for label in (name, *kwargs.get("aliases", ())):
            owner = self._owners.get(label)
            if owner is not None:
                warnings.warn(
                    f"xai-bridge: plugin {self._provider} adds the command {label!r}, which {owner} already "
                    f"provides; {self._provider.plugin}'s command is skipped. Rename it, or set "
                    f"XAI_BRIDGE_DISABLE_PLUGINS={self._provider.plugin}.",
                    PluginLoadWarning,
                    stacklevel=2,
                )
                kwargs.pop("help", None)
                kwargs.pop("aliases", None)
                return argparse.ArgumentParser(prog=f"xai-bridge {name} (skipped)", **kwargs)
        parser = self._subparsers.add_parser(name, **kwargs)
        for label in (name, *kwargs.get("aliases", ())):
            self._owners[label] = str(self._provider)
        return parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._subparsers, name)


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_host() -> PluginHost:
    """The process-wide plugin host (created on first use)."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
        return _host


def reset_host() -> None:
    """Forget every loaded plugin; the next lookup loads the entry points again."""
    global _host
    with _host_lock:
        _host = None
