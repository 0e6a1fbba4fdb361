"""Every exception and warning type of xai-bridge, in one place.

Each error says which argument is wrong and what was expected. Every error the host raises
derives from :class:`XaiBridgeError`, so ``except XaiBridgeError`` catches all of them; the
errors about bad input keep ``ValueError`` or ``TypeError`` as a second base, so existing
``except ValueError`` clauses still work. Plugin authors raise these types too:
:class:`InvalidArgumentError` for a value that is wrong, :class:`InvalidTypeError` for an
argument of the wrong type.

>>> from xai_bridge.errors import InvalidArgumentError, UnknownOptionError, XaiBridgeError
>>> issubclass(UnknownOptionError, TypeError), issubclass(InvalidArgumentError, XaiBridgeError)
(True, True)
>>> try:
...     raise InvalidArgumentError("targets: expected one class per image (3), got 2")
... except ValueError as exc:
...     print(exc)
targets: expected one class per image (3), got 2
"""

from __future__ import annotations


class XaiBridgeError(Exception):
    """The root of every error xai-bridge raises: ``except XaiBridgeError`` handles them all."""


class InvalidArgumentError(XaiBridgeError, ValueError):
    """An argument whose value is wrong (shape, range, NaN, an unknown choice); the message names it
    and says what was expected."""


class InvalidTypeError(XaiBridgeError, TypeError):
    """An argument of the wrong type; the message names it and the type expected."""


class PluginError(XaiBridgeError):
    """A plugin cannot be loaded, or registers something invalid.

    Raised for a broken plugin only under ``XAI_BRIDGE_STRICT_PLUGINS=1``; otherwise the
    host warns with :class:`PluginLoadWarning` and carries on without the plugin.
    """


class NameConflictError(PluginError):
    """Two plugins (or one plugin twice) claim the same explainer, metric or command name.

    A name conflict never stops the host: it is settled with a :class:`PluginLoadWarning`
    (a built-in keeps its name; two third-party claimants both lose it). This error is
    raised instead under ``XAI_BRIDGE_STRICT_PLUGINS=1``, and always when two built-ins or
    two distributions' entry points collide (a packaging bug).
    """


class UnknownNameError(XaiBridgeError, KeyError, LookupError):
    """A name that no plugin registered; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else ""


class UnknownOptionError(InvalidTypeError):
    """An option that an explainer or a metric does not accept; the message lists those it does."""


class UnsupportedSettingError(InvalidArgumentError):
    """A forward-pass setting (``compile=``, ``precision=``) that is unknown or that this device does not support.

    The message names the argument and lists what the device supports.
    """


class LayoutError(InvalidArgumentError):
    """An input layout a planner cannot take (square patches of a volume, superpixels of a series)."""


class ExplainerOutputError(InvalidArgumentError):
    """An explainer returned something that is not a finite real ``B×H×W`` map."""


class ImageLoadError(InvalidArgumentError):
    """An image file that cannot be read or decoded."""


class UnsupportedMetricError(InvalidTypeError):
    """A toolkit metric (or one of its settings) that :func:`xai_bridge.accelerate` cannot reproduce exactly.

    The message names the metric or the argument; ``accelerate(metric, fallback=True)`` runs the
    toolkit's own code instead.
    """


class UsageError(XaiBridgeError):
    """Bad command-line input: printed as one line by ``xai-bridge``, exit status 2."""


class PluginLoadWarning(UserWarning):
    """A plugin, or one of its registrations, was skipped; the message says why and how to fix it."""


class ToolkitDefectWarning(UserWarning):
    """An accelerated toolkit metric computes the published definition where the toolkit's own code does not.

    Issued once per metric class and process; docs/quantus.md lists each defect and the correction.
    """


class ToolkitFallbackWarning(UserWarning):
    """An accelerated toolkit metric made with ``fallback=True`` ran the toolkit's own code for one call (a model
    or an input layout the engine cannot take); the message says why."""


class ForwardModeWarning(UserWarning):
    """A requested graph mode could not be used (a model that cannot be traced, no compiler, a graph
    that differs from eager); the forward passes run eagerly instead and the message says why."""


class MetricValueWarning(UserWarning):
    """A metric returned NaN or an infinite value for an image; the value is kept and reported."""


__all__ = [
    "XaiBridgeError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "ExplainerOutputError",
    "LayoutError",
    "ForwardModeWarning",
    "ImageLoadError",
    "MetricValueWarning",
    "NameConflictError",
    "PluginError",
    "PluginLoadWarning",
    "ToolkitDefectWarning",
    "ToolkitFallbackWarning",
    "UnknownNameError",
    "UnknownOptionError",
    "UnsupportedMetricError",
    "UnsupportedSettingError",
    "UsageError",
]
