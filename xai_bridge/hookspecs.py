"""The hooks a plugin may implement: this module is the reference for plugin authors.

A plugin is any importable module (or object) listed under the ``xai_bridge``
entry-point group, with functions decorated by :data:`xai_bridge.hookimpl`.
Each hook's docstring below is its complete documentation; ``docs/hooks.md`` is
generated from them and a test checks that every hook is documented and tested.

Hooks receive a ``register`` callback rather than returning values, so one plugin
can bring a whole family of components in one function (the pattern of
``simonw/llm``). Plugin modules must stay cheap to import: import torch and
friends inside factories, not at module level.

Loading. The host reads the entry-point group lazily (on the first lookup), once,
and in name order, so the order of installation changes nothing. The built-in
plugins (the distribution ``xai-bridge``, import name ``xai_bridge_builtins``) are
loaded through the same group as any third-party plugin. Two environment
variables control loading:

* ``XAI_BRIDGE_DISABLE_PLUGINS=name1,name2`` skips the named entry points (the
  names on the left of ``[project.entry-points.xai_bridge]``, as ``xai-bridge plugins``
  lists them): they are not imported at all.
* ``XAI_BRIDGE_STRICT_PLUGINS=1`` (or ``true``, ``yes``, ``on``) turns every
  reported problem into an exception: a plugin that fails to import or whose hook
  raises raises ``xai_bridge.errors.PluginError``, and a name conflict raises
  ``xai_bridge.errors.NameConflictError``. Without it the host warns
  (``xai_bridge.errors.PluginLoadWarning``, naming the plugin and its
  distribution) and carries on without the broken plugin; set it while you develop one.

Name conflicts never stop the host, and are settled the same way whatever the
order plugins load in (names and aliases count alike):

* a built-in keeps its name: a third-party explainer or metric claiming it is
  skipped, with a warning naming both plugins and the fix
  (``XAI_BRIDGE_DISABLE_PLUGINS=<newcomer>``, or rename the component);
* two third-party plugins claiming one name both lose it: both components are
  skipped, and the warning names both plugins (uninstall or disable one, or rename).

A command name (``register_commands``) already used by the host or by a plugin
loaded earlier is skipped with a warning naming both; the first owner keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import argparse

PROJECT = "xai_bridge"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterExplainer(Protocol):
    """The ``register`` callback that :func:`register_explainers` receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        aliases: Sequence[str] = (),
        description: str = "",
        family: str = "other",
        needs_layer: bool = False,
    ) -> None: ...


class RegisterMetric(Protocol):
    """The ``register`` callback that :func:`register_metrics` receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any] | None = None,
        *,
        metric_class: Any = None,
        aliases: Sequence[str] = (),
        **declared: Any,
    ) -> None: ...


@hookspec
def register_explainers(register: RegisterExplainer) -> None:
    """Register saliency explainers.

    Call ``register`` once per explainer::

        register(
            name: str,                      # lower case, hyphenated: "my-cam"
            factory: Callable[..., Explainer],  # factory(model, **options) -> Explainer
            *,
            aliases: Sequence[str] = (),
            description: str = "",
            family: str = "other",          # "cam", "gradient", "perturbation",
                                            # "optimisation", "baseline", "attention", "other"
            needs_layer: bool = False,      # True when the method reads a target layer
        )

    The factory is called by :func:`xai_bridge.get_explainer` with the model
    and the user's options; import heavy modules inside it.

    Example (a complete plugin module)::

        from xai_bridge import hookimpl

        def _make(model, **options):
            from my_package.explainer import CentreBias   # an xai_bridge.Explainer subclass
            return CentreBias(model, **options)

        @hookimpl
        def register_explainers(register):
            register("centre-bias", _make, aliases=("center-bias",), family="baseline",
                     description="A Gaussian bump in the centre of the image.")
    """


@hookspec
def register_metrics(register: RegisterMetric) -> None:
    """Register evaluation metrics.

    Call ``register`` once per metric::

        register(
            name: str,                      # snake case as in the papers: "average_gain"
            factory: Callable[..., Metric] | None = None,  # factory(**options) -> Metric; default: the class
            *,
            metric_class: type | str,       # the Metric class, or "module:Class" (imported on first use)
            aliases: Sequence[str] = (),
        )

    The direction (``higher_is_better``, Quantus's ScoreDirection), ``category`` (Quantus's
    EvaluationCategory value), ``needs`` and the description (``description``, else the first
    paragraph of the docstring) are read from the class: write them once, there. A factory
    registered without a class declares them as keywords instead (``higher_is_better=`` is then
    required; ``category=``, ``needs=``, ``description=`` are optional).

    Example::

        from xai_bridge import hookimpl

        @hookimpl
        def register_metrics(register):
            register("mask_area", metric_class="my_package.metrics:MaskArea")
    """


@hookspec(firstresult=True)
def resolve_target_layer(model: Any) -> Any:
    """Name the layer CAM-style explainers should read on ``model``.

    Return ``None`` when the architecture is not yours; the first non-``None``
    answer wins. Return either a module of ``model`` or a
    :class:`xai_bridge.layers.TargetLayer` (module plus an optional
    ``reshape`` turning token sequences into ``B×C×h×w`` grids, for
    transformers). An explicit ``layer=`` given by the user always wins over
    this hook.

    Example::

        from xai_bridge import hookimpl

        @hookimpl
        def resolve_target_layer(model):
            if type(model).__name__ == "MyNet":
                return model.backbone.last_block
            return None
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add sub-commands to the ``xai-bridge`` command line.

    ``subparsers`` is the :mod:`argparse` sub-parsers object of ``xai-bridge``: call
    ``subparsers.add_parser(name, help=...)`` and give the new parser a ``func``
    default, ``func(args) -> int``, which ``xai-bridge`` calls with the parsed
    arguments. Raise :class:`xai_bridge.errors.UsageError` for bad input: it is
    printed as one line and the command exits with status 2. Keep the hook cheap:
    import torch inside ``func``, not here. :mod:`xai_bridge.cli_support` has the
    helpers every built-in command uses (``parse_options``, ``torch_device``).

    A command name another plugin (or the host) already uses is skipped with a
    warning naming both.

    Example::

        from xai_bridge import hookimpl
        from xai_bridge.errors import UsageError

        def _hello(args):
            if args.times < 1:
                raise UsageError(f"--times {args.times}: expected at least 1")
            print("hello " * args.times)
            return 0

        @hookimpl
        def register_commands(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.add_argument("--times", type=int, default=1)
            p.set_defaults(func=_hello)
    """
