"""Recipes: TOML into validated, frozen dataclasses; every bad key or value named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import ConfigError, load_recipe, parse_recipe, with_overrides

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
    ],
)
def test_an_impossible_value_is_rejected_with_the_value(section, key, value, message):
    raw = minimal()
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_recipe(raw)


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
