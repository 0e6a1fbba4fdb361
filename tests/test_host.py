"""The plugin host: entry-point loading, tolerance, conflicts, aliases, lookups, hooks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
import warnings

import pytest

import xai_bridge as xb
from xai_bridge import hookimpl
from xai_bridge.manager import PluginHost, PluginLoadWarning
from xai_bridge.registry import NameConflictError, PluginError, UnknownNameError


def _fake_distribution(root, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None):
    """A real installed-distribution layout (dist-info + entry_points.txt) under ``root``."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[xai_bridge]\n{lines}\n")
    for name, source in (modules or {}).items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def fake_site(tmp_path, monkeypatch, xai_bridge_isolated):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_importing_and_listing_does_not_import_torch():
    code = "import sys, xai_bridge as xb; xb.list_explainers(); xb.list_metrics(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_builtins_load_through_the_entry_point_group():
    host = xb.get_host()
    providers = host.providers()
    assert providers["toolkit"].distribution == "xai-bridge"
    assert providers["architectures"].distribution == "xai-bridge"
    spec = xb.explainer_spec("gradcam")
    assert spec.provider.plugin == "toolkit" and spec.family == "cam" and spec.needs_layer


def test_third_party_example_plugin_is_installed_and_discovered():
    spec = xb.explainer_spec("edges")
    assert spec.provider.distribution == "xai-bridge-example-plugin"
    assert spec.provider.plugin == "example"


def test_aliases_and_case_resolve_to_the_same_spec():
    assert xb.explainer_spec("grad-cam") is xb.explainer_spec("gradcam")
    assert xb.explainer_spec("GradCAM++") is xb.explainer_spec("gradcam++")
    assert xb.explainer_spec("ig").name == "integrated-gradients"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"no explainer called 'gradcma'.*'gradcam'"):
        xb.get_explainer("gradcma", None)
    with pytest.raises(UnknownNameError, match="xai-bridge plugins"):
        xb.metric_spec("no_such_metric")


def test_broken_plugin_is_reported_with_name_and_distribution_and_skipped(fake_site):
    _fake_distribution(fake_site, "broken-dist", {"broken": "module_that_does_not_exist_xyz"})
    host = xb.get_host()
    with pytest.warns(PluginLoadWarning, match=r"plugin broken \(broken-dist 0\.1\) failed at import"):
        names = [s.name for s in xb.list_explainers()]
    assert "gradcam" in names  # everything else still loads
    assert [f.provider.plugin for f in host.failures] == ["broken"]
    assert "ModuleNotFoundError" in host.failures[0].error


def test_strict_mode_re_raises(fake_site, monkeypatch):
    _fake_distribution(fake_site, "broken-dist", {"broken": "module_that_does_not_exist_xyz"})
    monkeypatch.setenv("XAI_BRIDGE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin broken") as info:
        xb.list_explainers()
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_plugin_whose_hook_raises_registers_nothing(fake_site):
    _fake_distribution(
        fake_site,
        "half-dist",
        {"half": "half_plugin"},
        {
            "half_plugin": """
            from xai_bridge import hookimpl
            @hookimpl
            def register_explainers(register):
                register("half-one", lambda model: None)
                raise RuntimeError("boom")
            """
        },
    )
    with pytest.warns(PluginLoadWarning, match="register_explainers"):
        names = [s.name for s in xb.list_explainers()]
    assert "half-one" not in names


def test_two_third_party_plugins_claiming_one_name_both_lose_it(fake_site, monkeypatch):
    source = """
    from xai_bridge import hookimpl
    @hookimpl
    def register_explainers(register):
        register("shared-name", lambda model: None)
        register("{own}", lambda model: None)
    """
    _fake_distribution(
        fake_site / "a",
        "first-dist",
        {"first": "first_plugin"},
        {"first_plugin": source.replace("{own}", "only-first")},
    )
    _fake_distribution(
        fake_site / "b",
        "second-dist",
        {"second": "second_plugin"},
        {"second_plugin": source.replace("{own}", "only-second")},
    )
    sys.path[:0] = [str(fake_site / "a"), str(fake_site / "b")]
    try:
        with pytest.warns(
            PluginLoadWarning, match=r"first \(first-dist 0\.1\).*second \(second-dist 0\.1\).*Neither gets it"
        ):
            names = {s.name for s in xb.list_explainers()}
        assert "shared-name" not in names
        assert {"only-first", "only-second", "gradcam"} <= names  # the rest of both plugins still loads
        monkeypatch.setenv("XAI_BRIDGE_STRICT_PLUGINS", "1")
        xb.get_host()._registry = None
        with pytest.raises(NameConflictError, match="shared-name"):
            xb.list_explainers()
    finally:
        sys.path.remove(str(fake_site / "a"))
        sys.path.remove(str(fake_site / "b"))


@pytest.mark.parametrize("plugin_name", ["aaa-first", "zzz-last"])  # before and after the built-ins load
def test_a_third_party_plugin_claiming_a_builtin_name_is_skipped_the_builtin_keeps_it(xai_bridge_plugin, plugin_name):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_explainers(register):
        register("my-cam", lambda model: None, aliases=("gradcam",))

    plugin.register_explainers = register_explainers
    xai_bridge_plugin(plugin, name=plugin_name)
    with pytest.warns(
        PluginLoadWarning, match=rf"'gradcam'.*built-in keeps it.*XAI_BRIDGE_DISABLE_PLUGINS={plugin_name}"
    ):
        names = {s.name for s in xb.list_explainers()}
    assert "my-cam" not in names
    assert xb.explainer_spec("gradcam").provider.plugin == "toolkit"


def test_plugins_command_reports_a_conflict_in_one_line(xai_bridge_plugin, capsys):
    from xai_bridge.cli import main

    plugin = types.SimpleNamespace()

    @hookimpl
    def register_metrics(register):
        register("average_gain", lambda **o: None, higher_is_better=True)

    plugin.register_metrics = register_metrics
    xai_bridge_plugin(plugin, name="squat-metric")
    with pytest.warns(PluginLoadWarning):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "squat-metric" in line]
    assert len(lines) == 1 and "built-in keeps it" in lines[0] and "Traceback" not in out


def test_fixture_registers_for_one_test_only(xai_bridge_plugin):
    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register("mask_area", lambda **o: object(), higher_is_better=False, category="Complexity")

    xai_bridge_plugin(Plugin(), name="mask-area-plugin")
    spec = xb.metric_spec("mask_area")
    assert spec.score_direction == "lower" and spec.category == "Complexity"
    assert spec.provider.plugin == "mask-area-plugin"


def test_fixture_cleaned_up_after_previous_test():
    with pytest.raises(UnknownNameError):
        xb.metric_spec("mask_area")


def test_registration_order_does_not_change_listing(xai_bridge_isolated):
    def plugin(names):
        class P:
            @hookimpl
            def register_explainers(self, register):
                for n in names:
                    register(n, lambda model: None)

        return P()

    host = xai_bridge_isolated
    host.register(plugin(["zz-last", "aa-first"]), name="p2")
    host.register(plugin(["mm-middle"]), name="p1")
    listed = [s.name for s in xb.list_explainers() if s.name in {"zz-last", "aa-first", "mm-middle"}]
    assert listed == ["aa-first", "mm-middle", "zz-last"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "Bad Name"}, "not allowed"),
        ({"name": "ok", "family": "weird"}, "family 'weird'"),
        ({"name": "ok", "factory": 3}, "not callable"),
    ],
)
def test_invalid_registrations_are_reported(xai_bridge_isolated, kwargs, message, monkeypatch):
    monkeypatch.setenv("XAI_BRIDGE_STRICT_PLUGINS", "1")
    args = {"factory": lambda model: None, **kwargs}

    class P:
        @hookimpl
        def register_explainers(self, register):
            register(args.pop("name"), args.pop("factory"), **args)

    xai_bridge_isolated.register(P(), name="invalid")
    with pytest.raises(PluginError, match=message):
        xb.list_explainers()


def test_metric_category_must_be_quantus_vocabulary(xai_bridge_isolated, monkeypatch):
    monkeypatch.setenv("XAI_BRIDGE_STRICT_PLUGINS", "1")

    class P:
        @hookimpl
        def register_metrics(self, register):
            register("my_metric", lambda **o: None, higher_is_better=True, category="Speed")

    xai_bridge_isolated.register(P(), name="cat")
    with pytest.raises(PluginError, match="Quantus's categories"):
        xb.list_metrics()


def test_disable_plugins_env_skips_an_entry_point(xai_bridge_isolated, monkeypatch):
    from importlib.metadata import entry_points

    assert "example" in {ep.name for ep in entry_points(group="xai_bridge")}, "install the example plugin first"
    monkeypatch.setenv("XAI_BRIDGE_DISABLE_PLUGINS", "example")
    names = [s.name for s in xb.list_explainers()]
    assert "edges" not in names and "gradcam" in names


def test_resolve_target_layer_hook_teaches_a_new_architecture(xai_bridge_plugin):
    import torch

    class MyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    net = MyNet().eval()
    with pytest.raises(ValueError, match="resolve_target_layer"):
        xb.find_layer(net)

    class Teach:
        @hookimpl
        def resolve_target_layer(self, model):
            return model.body if isinstance(model, MyNet) else None

    xai_bridge_plugin(Teach(), name="teach")
    layer = xb.find_layer(net)
    assert layer.module is net.body and layer.name == "body"
    maps = xb.get_explainer("gradcam", net).explain(torch.rand(2, 3, 16, 16))
    assert maps.shape == (2, 16, 16)


def test_every_hook_is_documented_with_an_example():
    from xai_bridge import hookspecs

    hooks = [name for name in dir(hookspecs) if name.startswith(("register_", "resolve_"))]
    assert set(hooks) == {"register_commands", "register_explainers", "register_metrics", "resolve_target_layer"}
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "Example" in doc and "@hookimpl" in doc, name


def test_plugins_command_json_lists_providers(capsys):
    from xai_bridge.cli import main

    assert main(["plugins", "--json"]) == 0
    import json

    payload = json.loads(capsys.readouterr().out)
    by_name = {e["name"]: e for e in payload["explainers"]}
    assert by_name["scorecam"]["distribution"] == "xai-bridge"
    assert by_name["edges"]["distribution"] == "xai-bridge-example-plugin"
    assert {"toolkit", "architectures", "example"} <= {p["plugin"] for p in payload["plugins"]}


def test_no_warnings_from_a_clean_install():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        host = PluginHost()
        assert len(host.registry.explainers.sorted()) > 0
        assert host.failures == []


def test_register_commands_adds_a_subcommand_and_usage_errors_are_one_line(xai_bridge_plugin, capsys):
    from xai_bridge.cli import main
    from xai_bridge.errors import UsageError

    def hello(args):
        if args.times < 1:
            raise UsageError(f"--times {args.times}: expected at least 1")
        print("hello " * args.times)
        return 0

    class Hello:
        @hookimpl
        def register_commands(self, subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.add_argument("--times", type=int, default=1)
            p.set_defaults(func=hello)

    xai_bridge_plugin(Hello(), name="hello-plugin")
    assert main(["hello", "--times", "2"]) == 0
    assert capsys.readouterr().out.strip() == "hello hello"
    assert main(["hello", "--times", "0"]) == 2
    assert "xai-bridge hello: error: --times 0: expected at least 1" in capsys.readouterr().err


def test_a_command_name_taken_by_the_host_is_skipped_with_a_warning(xai_bridge_plugin, capsys):
    from xai_bridge.cli import main

    class Squatter:
        @hookimpl
        def register_commands(self, subparsers):
            p = subparsers.add_parser("plugins", help="not the real one")
            p.set_defaults(func=lambda args: 99)

    xai_bridge_plugin(Squatter(), name="squatter")
    with pytest.warns(PluginLoadWarning, match=r"'plugins'.*squatter.*XAI_BRIDGE_DISABLE_PLUGINS=squatter"):
        assert main(["plugins"]) == 0  # the host's command still runs


def test_a_command_hook_that_raises_is_reported_and_skipped(xai_bridge_plugin):
    from xai_bridge.cli import build_parser

    class Broken:
        @hookimpl
        def register_commands(self, subparsers):
            raise RuntimeError("boom")

    xai_bridge_plugin(Broken(), name="broken-commands")
    with pytest.warns(PluginLoadWarning, match="broken-commands.*register_commands.*boom"):
        parser = build_parser()
    assert parser.parse_args(["plugins"]).command == "plugins"
