"""Every setting of the server process, once: `ServerSettings`, one field per serve flag.

The field names are the flags' (TF Serving's spelling: `rest_api_port`, `model_base_path`...)
and their defaults are the only defaults: `pipelines/commands/serve.py` builds its argparse
flags from them, `serve.server.run_server` and the REST app (`serve.http.app.RestApp`) read
them. An unknown key or a value of the wrong type is a `SettingsError` (a ValueError) naming the
key and the value. The one field that is not a flag is `api_token`, the bearer token itself: the
CLI reads it from `--api_token_file` (`read_api_token`). Which models to serve (exactly one of
`model_base_path`, `model_config_file`, `model_store`) is checked where the model configs are
built, `serve.server.build_configs`, so settings for a REST app alone need none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from models.validation import read_problems
from serve.runtime import RUNTIMES

MIB = 1024 * 1024
# A path may be given as text: strict everywhere else, but "a/b" is not a wrong type for a path.
LaxPath = Annotated[Path, Field(strict=False)]


class SettingsError(ValueError):
    """Settings that cannot be used: each bad key with its value."""


def _cpu_threads() -> int:
    return 4 * (os.cpu_count() or 1)  # TF Serving's default for its REST and gRPC pools


class ServerSettings(BaseModel):
    """Every flag of `pulsecast serve`; names and defaults follow tensorflow_model_server."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # -- models ---------------------------------------------------------------------------
    model_name: str | None = None  # with model_base_path; None reads "default" (TF Serving)
    model_base_path: LaxPath | None = None
    model_config_file: LaxPath | None = None
    model_store: LaxPath | None = None
    file_system_poll_wait_seconds: float = 1.0
    runtime: str = "auto"  # one of serve.runtime.RUNTIMES
    # pulsecast: batch concurrent requests to pulsecast models when --enable_batching is off
    # (largest batch; 0 = off). Answers are unchanged; see serve.batching.adaptive.
    # On by default: a lone request still runs at once (no timeout), and queued ones share one
    # model call (bench/serve.py: 2.7x the requests/s at 64 clients, same batch-1 p50).
    auto_batching: int = Field(32, ge=0)
    # TF Serving's --tensorflow_{intra,inter}_op_parallelism (0 = TensorFlow picks)
    tensorflow_intra_op_parallelism: int = Field(0, ge=0)
    tensorflow_inter_op_parallelism: int = Field(0, ge=0)
    enable_model_warmup: bool = True

    # -- network --------------------------------------------------------------------------
    port: int = Field(8500, ge=0, le=65535)  # gRPC; 0 = none
    rest_api_port: int = Field(8501, ge=0, le=65535)  # 0 = none
    host: str = "127.0.0.1"
    rest_api_num_threads: int = Field(default_factory=_cpu_threads, ge=1)
    rest_api_timeout_in_ms: int = Field(30_000, ge=1)
    rest_api_enable_cors_support: bool = False
    api_token: SecretStr | None = None  # the bearer token itself (from --api_token_file)
    max_body_bytes: int = Field(16 * MIB, ge=1)  # before and after gzip
    drain_timeout_s: float = 30.0

    # -- what one request may cost (docs/reliability.md, threat model) ----------------------
    # The decoded input tensors of one request, summed, on every protocol (REST row and
    # columnar, KServe V2, gRPC TensorProto, a one-value broadcast included), checked before
    # anything is allocated. 64 MiB holds the largest request a 16 MiB body can carry (8 M
    # values of at least 2 characters each, as int64 or float64).
    max_request_tensor_bytes: int = Field(64 * MIB, ge=1)
    # The gRPC receive limit; None = max_body_bytes (the same weight on both protocols).
    grpc_max_receive_bytes: int | None = Field(None, ge=1)
    # Slow clients: a REST request's headers must arrive within header_timeout_s of its first
    # byte, its body within body_timeout_s of the headers; past either the socket is closed.
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(60.0, gt=0)
    # Where a gRPC config reload may point base paths; None = the folders holding the base
    # paths configured at start (for --model-store: the store itself).
    model_config_roots: tuple[LaxPath, ...] | None = None
    # Serve a version folder whose real path leaves its model's base path (a link elsewhere).
    allow_version_links: bool = False

    # -- batching (TF Serving's BatchingParameters; None = the file's value or TF's default) --
    enable_batching: bool = False
    batching_parameters_file: LaxPath | None = None
    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    num_batch_threads: int | None = None
    max_enqueued_batches: int | None = None
    allowed_batch_sizes: tuple[int, ...] | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise SettingsError(_error_text(err)) from None

    @model_validator(mode="after")
    def _check_combinations(self) -> ServerSettings:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.port and self.port == self.rest_api_port:
            raise ValueError(f"--rest_api_port must differ from --port, both are {self.port}")
        if self.batching_parameters_file is not None and not self.enable_batching:
            raise ValueError("--batching_parameters_file requires --enable_batching")
        if self.api_token is not None and not self.api_token.get_secret_value():
            raise ValueError("api_token must be non-empty when set")
        return self

    @property
    def grpc_receive_bytes(self) -> int:
        """The gRPC receive limit: `grpc_max_receive_bytes`, else the REST body limit."""
        return self.grpc_max_receive_bytes or self.max_body_bytes

    @property
    def rest_timeout_s(self) -> float:
        """`rest_api_timeout_in_ms` in seconds: a REST request's deadline (504 past it)."""
        return self.rest_api_timeout_in_ms / 1000.0


def default_of(name: str) -> Any:
    """A field's default value (a factory's result for `rest_api_num_threads`): what the CLI
    shows and uses when a flag is not given."""
    return ServerSettings.model_fields[name].get_default(call_default_factory=True)


def read_api_token(path: Path | None) -> str | None:
    """The bearer token in `path` (surrounding whitespace stripped), or None without a file."""
    if path is None:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"api token file {path} is empty")
    return token


def _error_text(err: ValidationError) -> str:
    """One line per bad key: `port: Input should be a valid integer, got 'x'`."""
    lines = []
    for problem in read_problems(err):
        key = ".".join(str(part) for part in problem.loc)
        if problem.kind == "unknown":
            lines.append(f"unknown setting {key!r} (value {problem.value!r})")
        elif problem.kind == "rule":  # our own checks: the text names the values
            lines.append(problem.says)
        else:
            lines.append(f"{key}: {problem.says}, got {problem.value!r}")
    return "invalid server settings: " + "; ".join(lines)
