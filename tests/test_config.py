"""Recipes: TOML into validated, frozen dataclasses; every bad key or value named in the error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipelines.config import ConfigError, TrainConfig, load_recipe, parse_recipe, with_overrides

REPO = Path(__file__).resolve().parents[1]


def minimal(**sections):
    raw = {"name": "ecg", "data": {"channels": ["II"], "fs": 125},
           "window": {"inputs": ["II"], "targets": ["II"]}}
    raw.update(sections)
    return raw


def test_a_minimal_recipe_gets_the_documented_defaults():
    recipe = parse_recipe(minimal())
    assert recipe.window.input_steps == 500
    assert recipe.train.loss == "mse"
    assert recipe.data.channels == ("II",)


def test_an_unknown_key_is_named_in_the_error():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epochz'\] in \[train\]"):
        parse_recipe(minimal(train={"epochz": 3}))


def test_an_unknown_top_level_table_is_named_in_the_error():
    with pytest.raises(ConfigError, match="'serving'"):
        parse_recipe(minimal(serving={}))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("window", "stride", 0, r"\[window\] stride must be >= 1, got 0"),
        ("window", "horizon", -5, r"\[window\] horizon must be >= 1, got -5"),
        ("train", "loss", "l7", r"\[train\] loss must be one of .*got 'l7'"),
        ("train", "learning_rate", 0.0, r"learning_rate must be > 0, got 0.0"),
        ("data", "fs", -1, r"\[data\] fs must be > 0, got -1"),
        # wrong types, named with their table and key
        ("train", "jit_compile", 1, r"\[train\] jit_compile must be true, false or 'auto', got 1"),
        ("data", "numerics", "yes", r"\[data\] numerics must be true or false, got 'yes'"),
        ("data", "channels", "II", r"\[data\] channels must be an array, got 'II'"),
        ("window", "targets", ["II", 2], r"\[window\] targets\[1\] must be a string, got 2"),
        ("data", "fs", float("nan"), r"\[data\] fs must be a finite number, got nan"),
    ],
)
def test_an_impossible_value_is_rejected_with_the_value(section, key, value, message):
    raw = minimal()
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_recipe(raw)


def test_a_string_where_an_int_is_needed_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"\[window\] input_steps must be an int, got '500'"):
        parse_recipe(minimal(window={"inputs": ["II"], "targets": ["II"], "input_steps": "500"}))


def test_a_float_where_an_int_is_needed_is_rejected_not_truncated():
    with pytest.raises(ConfigError, match=r"\[train\] epochs must be an int, got 2.5"):
        parse_recipe(minimal(train={"epochs": 2.5}))
    with pytest.raises(ConfigError, match=r"\[window\] stride must be an int, got 25.0"):
        parse_recipe(minimal(window={"inputs": ["II"], "targets": ["II"], "stride": 25.0}))


def test_an_int_where_a_float_is_meant_is_accepted():
    recipe = parse_recipe(minimal(train={"learning_rate": 1}))
    assert recipe.train.learning_rate == 1.0 and recipe.data.fs == 125.0


def test_an_unknown_key_in_a_section_is_named_with_its_section_and_the_known_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['strides'\] in \[window\]; "
                                          r"known keys: \[.*'stride'"):
        parse_recipe(minimal(window={"inputs": ["II"], "targets": ["II"], "strides": 4}))


def test_every_problem_gets_its_own_line_naming_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[data]\nchannels = ["II"]\nfs = "125"\n'
                    '[train]\nepochs = 2.5\nbatch_size = 0\nlos = "mae"\n')
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).splitlines() == [
        f"{path}: [data] fs must be a number, got '125'",
        f"{path}: [train] batch_size must be >= 1, got 0",
        f"{path}: [train] epochs must be an int, got 2.5",
        f"{path}: unknown key(s) ['los'] in [train]; known keys: ['batch_size', 'clipnorm', "
        "'epochs', 'event_loss_weight', 'huber_delta', 'jit_compile', 'learning_rate', 'loss', "
        "'max_val_windows', 'max_windows_per_epoch', 'optimizer', 'patience', 'precision', "
        "'schedule', 'seed', 'steps_per_execution', 'tbptt_steps']",
    ]


def test_window_rules_are_the_window_specs_own():
    """[window] is checked by building a WindowSpec: its rules, prefixed with the table."""
    with pytest.raises(ConfigError, match=r"\[window\] inputs must not repeat a channel"):
        parse_recipe(minimal(window={"inputs": ["II", "II"], "targets": ["II"]}))
    with pytest.raises(ConfigError, match=r"\[window\] gap_policy must be one of .*got 'fill'"):
        parse_recipe(minimal(window={"inputs": ["II"], "targets": ["II"], "gap_policy": "fill"}))


def test_a_table_built_directly_raises_config_error_too():
    with pytest.raises(ConfigError, match=r"\[train\] batch_size must be >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"\[train\] epochs must be an int, got '3'"):
        dataclasses.replace(TrainConfig(), epochs="3")


def test_recipes_are_frozen_and_round_trip_through_to_dict():
    recipe = parse_recipe(minimal(model={"arch": "lstm", "units": [8]}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.window.stride = 1  # type: ignore[misc]
    assert parse_recipe(recipe.to_dict()) == recipe
    assert recipe.to_dict()["window"]["inputs"] == ["II"]


def test_a_target_channel_not_ingested_is_rejected():
    with pytest.raises(ConfigError, match=r"channels \['ABP'\] are not in \[data\] channels"):
        parse_recipe(minimal(window={"inputs": ["II"], "targets": ["ABP"]}))


def test_cli_overrides_replace_only_operational_fields():
    recipe = with_overrides(parse_recipe(minimal()), epochs=2, model_name="ecg2", dataset="d/x")
    assert (recipe.train.epochs, recipe.name, recipe.data.dataset) == (2, "ecg2", "d/x")
    assert recipe.window.input_steps == 500


def test_a_missing_recipe_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_recipe(tmp_path / "nope.toml")


def test_every_shipped_recipe_parses():
    recipes = sorted((REPO / "configs").glob("*.toml"))
    assert recipes, "configs/ holds no recipes"
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.name == path.stem
