"""serve.model_config: TF Serving's config files and the model-store shortcut."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.model_config import (
    ModelConfigError,
    configs_from_store,
    parse_batching_parameters,
    parse_model_config,
    read_batching_parameters_file,
    read_model_config_file,
    single_model_config,
)
from serve.types import BatchingParams, VersionPolicy

SERVING_CONFIG_EXAMPLE = """
model_config_list {
  config {
    name: 'lstm_sales'
    base_path: '/models/lstm_sales/'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config { name: 'lstm_energy' base_path: '/models/lstm_energy/' model_platform: 'tensorflow' }
  config {
    name: 'ecg'
    base_path: 'relative/ecg'
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: 'abp' base_path: '/m/abp' model_version_policy { all {} } }
  config { name: 'zero' base_path: '/m/z' model_version_policy { latest { num_versions: 0 } } }
}
"""


def test_the_serving_config_example_parses_with_policies_and_labels(tmp_path: Path) -> None:
    file = tmp_path / "models.config"
    file.write_text(SERVING_CONFIG_EXAMPLE)
    configs = {c.name: c for c in read_model_config_file(file)}
    assert list(configs) == ["lstm_sales", "lstm_energy", "ecg", "abp", "zero"]
    sales = configs["lstm_sales"]
    assert sales.base_path == Path("/models/lstm_sales")
    assert sales.policy == VersionPolicy("specific", versions=(42, 43))
    assert dict(sales.labels) == {"canary": 43, "stable": 42}
    assert configs["lstm_energy"].policy == VersionPolicy()
    assert configs["ecg"].policy == VersionPolicy("latest", num_versions=2)
    assert configs["ecg"].base_path == Path("relative/ecg")
    assert configs["abp"].policy.kind == "all"
    assert configs["zero"].policy.num_versions == 1  # 0 is treated as 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' base_path: '/x' bogus: 1 } }",
         "f.config: not a text ModelServerConfig"),
        ("model_config_list { config { name: 'a' } }",
         "f.config: config #1 (a): base_path is required, got ''"),
        ("model_config_list { config { name: 'a/b' base_path: '/x' } }",
         "f.config: config #1: name must be non-empty without '/' or ':', got 'a/b'"),
        ("model_config_list { config { name: 'a' base_path: '/x' } "
         "config { name: 'a' base_path: '/y' } }",
         "f.config: config #2: duplicate model name 'a'"),
        ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
         "f.config: config #1 (a): model_platform must be 'tensorflow', got 'onnx'"),
        ("model_config_list { config { name: 'a' base_path: '/x' "
         "model_version_policy { specific { } } } }",
         "f.config: config #1 (a): specific policy needs versions, got none"),
    ],
)
def test_bad_model_configs_name_the_file_and_the_value(text: str, message: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        parse_model_config(text, "f.config")
    assert str(info.value).startswith(message)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"cannot read model config file .*nope.config"):
        read_model_config_file(tmp_path / "nope.config")


def test_batching_parameters_parse_with_tf_defaults_for_unset_fields(tmp_path: Path) -> None:
    file = tmp_path / "batching.config"
    file.write_text(
        "# tuned for CPU\n"
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\n"
        "num_batch_threads { value: 8 }\n"
        "allowed_batch_sizes: 32\n"
        "allowed_batch_sizes: 128\n"
        "thread_pool_name { value: 'pool' }\n"
    )
    params = read_batching_parameters_file(file)
    assert params == BatchingParams(
        max_batch_size=128, batch_timeout_micros=0, max_enqueued_batches=1_000_000,
        num_batch_threads=8, allowed_batch_sizes=(32, 128),
    )
    defaults = parse_batching_parameters("batch_timeout_micros { value: 500 }")
    assert (defaults.max_batch_size, defaults.max_enqueued_batches) == (1000, 10)
    assert defaults.batch_timeout_micros == 500


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: many }", "b.config: max_batch_size must be int, got 'many'"),
        ("max_batch_siz { value: 1 }",
         "b.config: unknown BatchingParameters field 'max_batch_siz'"),
        ("max_batch_size { value: 0 }", "b.config: max_batch_size must be >= 1, got 0"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4",
         "b.config: Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
         "4; expected 8"),
        ("max_batch_size { value: 8", "b.config: expected }, got 'end of file'"),
        ("max_batch_size { value: 8 } ;", "b.config: cannot parse BatchingParameters near ';'"),
    ],
)
def test_bad_batching_parameters_name_the_file_and_the_value(text: str, message: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        parse_batching_parameters(text, "b.config")
    assert str(info.value) == message


def test_configs_from_store_has_one_model_per_folder_with_versions(tmp_path: Path) -> None:
    for rel in ("ecg/1", "ecg/.2.staging-x", "abp/007", "empty", "notes/readme", ".hidden/1"):
        (tmp_path / rel).mkdir(parents=True)
    configs = configs_from_store(tmp_path, labels={"ecg": {"stable": 1}})
    assert [c.name for c in configs] == ["abp", "ecg"]
    assert configs[1].base_path == tmp_path / "ecg" and dict(configs[1].labels) == {"stable": 1}
    assert configs[0].policy == VersionPolicy()
    with pytest.raises(ModelConfigError, match="is not a folder"):
        configs_from_store(tmp_path / "nope")


def test_single_model_config_is_the_model_name_and_base_path_flags() -> None:
    (config,) = single_model_config("default", "/models/default")
    assert (config.name, config.base_path) == ("default", Path("/models/default"))
    with pytest.raises(ModelConfigError, match="got 'a:b'"):
        single_model_config("a:b", "/x")
