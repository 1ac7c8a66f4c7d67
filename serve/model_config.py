"""Server configuration files, read as TensorFlow Serving reads them.

- `--model_config_file`: a text-format `ModelServerConfig` (`model_config_list { config { name
  base_path model_platform model_version_policy version_labels } }`), parsed with
  tensorflow-serving-api's proto and `google.protobuf.text_format`.
- `--batching_parameters_file`: a text-format `BatchingParameters` (`max_batch_size { value:
  128 }` ...). tensorflow-serving-api does not ship `session_bundle_config_pb2`, so a small
  parser reads the wrapper-typed fields (`name { value: N }`) and `allowed_batch_sizes: N`.
- `configs_from_store`: every folder of a model store that holds numbered versions is a model.

Every error is a `ModelConfigError` naming the file and the bad value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from models.layout import parse_version_name
from serve.types import BatchingParams, ModelConfig, VersionPolicy


class ModelConfigError(ValueError):
    """A config file that cannot be read or breaks TF Serving's rules."""


def _read(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ModelConfigError(f"cannot read {what} {path}: {err.strerror or err}") from err


def parse_model_config(text: str, source: str = "<model config>") -> list[ModelConfig]:
    """ModelConfig list from the text of a ModelServerConfig."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ModelConfigError(f"{source}: not a text ModelServerConfig: {err}") from err
    if proto.WhichOneof("config") == "custom_model_config":
        raise ModelConfigError(f"{source}: custom_model_config is not supported")
    configs = []
    seen: set[str] = set()
    for i, c in enumerate(proto.model_config_list.config):
        where = f"{source}: config #{i + 1}"
        if not c.name or "/" in c.name or ":" in c.name:
            raise ModelConfigError(f"{where}: name must be non-empty without '/' or ':', "
                                   f"got {c.name!r}")
        if c.name in seen:
            raise ModelConfigError(f"{where}: duplicate model name {c.name!r}")
        seen.add(c.name)
        if not c.base_path:
            raise ModelConfigError(f"{where} ({c.name}): base_path is required, got ''")
        platform = c.model_platform or "tensorflow"
        if platform != "tensorflow":
            raise ModelConfigError(
                f"{where} ({c.name}): model_platform must be 'tensorflow', got {platform!r}"
            )
        configs.append(ModelConfig(
            name=c.name,
            base_path=Path(c.base_path),
            policy=_policy(c.model_version_policy, f"{where} ({c.name})"),
            labels=dict(sorted((str(k), int(v)) for k, v in c.version_labels.items())),
            platform=platform,
        ))
    return configs


def _policy(proto, where: str) -> VersionPolicy:
    kind = proto.WhichOneof("policy_choice")
    if kind is None or kind == "latest":
        n = proto.latest.num_versions
        if n < 0:
            raise ModelConfigError(f"{where}: latest.num_versions must be >= 0, got {n}")
        return VersionPolicy("latest", num_versions=max(1, n))
    if kind == "all":
        return VersionPolicy("all")
    versions = tuple(int(v) for v in proto.specific.versions)
    if not versions:
        raise ModelConfigError(f"{where}: specific policy needs versions, got none")
    return VersionPolicy("specific", versions=versions)


def read_model_config_file(path: str | Path) -> list[ModelConfig]:
    """Parse `--model_config_file`. Relative base paths stay as written (TF Serving resolves
    them against its working directory)."""
    return parse_model_config(_read(path, "model config file"), str(path))


_BATCH_FIELDS = {
    "max_batch_size": int, "batch_timeout_micros": int, "max_enqueued_batches": int,
    "num_batch_threads": int, "thread_pool_name": str, "allowed_batch_sizes": int,
    "pad_variable_length_inputs": bool, "enable_large_batch_splitting": bool,
    "max_execution_batch_size": int,
}
_TOKEN = re.compile(
    r"\s*(?:(#[^\n]*)|[A-Za-z_][A-Za-z0-9_]*|[{}:]|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
    r"|[-+]?[0-9][0-9.eE+-]*)"
)


def _tokens(text: str, source: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ModelConfigError(f"{source}: cannot parse BatchingParameters near "
                                   f"{text[pos:pos + 30].strip()!r}")
        pos = m.end()
        if m.group(1) is None:
            out.append(m.group(0).strip())
    return out


def _scalar(field: str, raw: str, source: str) -> object:
    kind = _BATCH_FIELDS[field]
    try:
        if kind is bool:
            if raw not in ("true", "false", "True", "False", "1", "0"):
                raise ValueError(raw)
            return raw in ("true", "True", "1")
        if kind is str:
            return raw.strip("'\"")
        return int(raw)
    except ValueError as err:
        raise ModelConfigError(f"{source}: {field} must be {kind.__name__}, got {raw!r}") from err


def parse_batching_parameters(text: str, source: str = "<batching parameters>"
                              ) -> BatchingParams:
    """BatchingParams from the text of a BatchingParameters proto (unset fields: TF defaults)."""
    tokens = _tokens(text, source)
    values: dict[str, object] = {}
    allowed: list[int] = []
    i = 0

    def take(expected: str | None = None) -> str:
        nonlocal i
        if i >= len(tokens) or (expected is not None and tokens[i] != expected):
            got = tokens[i] if i < len(tokens) else "end of file"
            raise ModelConfigError(f"{source}: expected {expected or 'a value'}, got {got!r}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        field = take()
        if field not in _BATCH_FIELDS:
            raise ModelConfigError(f"{source}: unknown BatchingParameters field {field!r}")
        if i < len(tokens) and tokens[i] == ":":
            take(":")
        if i < len(tokens) and tokens[i] == "{":  # a wrapper message: { value: N }
            take("{")
            take("value")
            take(":")
            value = _scalar(field, take(), source)
            take("}")
        else:  # a plain scalar (allowed_batch_sizes is a repeated int64)
            value = _scalar(field, take(), source)
        if field == "allowed_batch_sizes":
            allowed.append(int(value))  # type: ignore[arg-type]
        else:
            values[field] = value
    kwargs: dict[str, object] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads", "pad_variable_length_inputs"):
        if name in values:
            kwargs[name] = values[name]
    if allowed:
        kwargs["allowed_batch_sizes"] = tuple(allowed)
    try:
        return BatchingParams(**kwargs)  # type: ignore[arg-type]
    except ValueError as err:
        raise ModelConfigError(f"{source}: {err}") from err


def read_batching_parameters_file(path: str | Path) -> BatchingParams:
    """Parse `--batching_parameters_file`."""
    return parse_batching_parameters(_read(path, "batching parameters file"), str(path))


def configs_from_store(model_store_dir: str | Path,
                       labels: Mapping[str, Mapping[str, int]] | None = None
                       ) -> list[ModelConfig]:
    """One latest-1 ModelConfig per sub-folder of a model store that holds numbered versions
    (hidden folders skipped), sorted by name. `labels` optionally gives {model: {label: v}}."""
    root = Path(model_store_dir)
    if not root.is_dir():
        raise ModelConfigError(f"model store {root} is not a folder")
    configs = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if any(parse_version_name(v.name) is not None and v.is_dir() for v in child.iterdir()):
            configs.append(ModelConfig(
                name=child.name, base_path=child,
                labels=dict((labels or {}).get(child.name, {})),
            ))
    return configs


def single_model_config(model_name: str, model_base_path: str | Path) -> list[ModelConfig]:
    """`--model_name` + `--model_base_path` as a one-model config (BuildSingleModelConfig)."""
    if not model_name or "/" in model_name or ":" in model_name:
        raise ModelConfigError(f"model_name must be non-empty without '/' or ':', "
                               f"got {model_name!r}")
    return [ModelConfig(name=model_name, base_path=Path(model_base_path))]


# -- where a config reload may point ------------------------------------------------------------


def default_config_roots(configs: Sequence[ModelConfig],
                         extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """The roots a gRPC config reload may name base paths under, when none were given at start:
    the folders holding the configured base paths (for `--model-store`, the store), plus
    `extra` (the store itself, so an empty store can still be reloaded into). Real paths."""
    roots = {Path(c.base_path).resolve().parent for c in configs}
    roots.update(Path(p).resolve() for p in extra)
    return tuple(sorted(roots))


def check_under_roots(configs: Sequence[ModelConfig], roots: Sequence[Path],
                      source: str = "ReloadConfigRequest") -> None:
    """Raise `ModelConfigError` unless every config's base path, links followed, lies under one
    of `roots`: a reload must not load a SavedModel (a program) from anywhere on the machine.
    The text names the model and the path the client sent, never the roots."""
    real_roots = [Path(r).resolve() for r in roots]
    for i, config in enumerate(configs, start=1):
        real = Path(config.base_path).resolve()
        if not any(real == root or real.is_relative_to(root) for root in real_roots):
            raise ModelConfigError(
                f"{source}: config #{i} ({config.name}): base_path {str(config.base_path)!r} is "
                "outside the folders this server may load models from (--model_config_roots)"
            )
