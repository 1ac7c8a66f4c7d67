"""`pulsecast serve`: a TensorFlow-Serving-compatible model server (REST 8501, gRPC 8500).

    pulsecast serve --model-base-path data/model_store/ecg --model-name ecg
    pulsecast serve --model-store data/model_store          # every model in the store
    pulsecast serve --model_config_file models.config --rest_api_port 8501 --port 8500

Flags, meanings and defaults follow tensorflow_model_server; the underscore spellings
(`--rest_api_port`, `--model_base_path`, ...) are accepted too. Each flag is a field of
`serve.settings.ServerSettings`, whose default is the flag's default. Binds 127.0.0.1 by default.
SIGTERM/SIGINT drain in-flight requests and exit 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "serve models over TensorFlow Serving's REST and gRPC APIs (plus :forecast, KServe V2)"


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add `--a-b` and its TF Serving spelling `--a_b`; a `ServerSettings` field's default is
    the flag's default."""
    from serve.settings import ServerSettings, default_of

    dashed = "--" + name.replace("_", "-")
    underscored = "--" + name
    names = [dashed] if dashed == underscored else [dashed, underscored]
    if name in ServerSettings.model_fields:
        kwargs["default"] = default_of(name)
    parser.add_argument(*names, dest=name, **kwargs)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"allowed batch sizes must be integers, got {text!r}"
        ) from None


def _paths(text: str) -> tuple[Path, ...]:
    paths = tuple(Path(p.strip()) for p in text.split(",") if p.strip())
    if not paths:
        raise argparse.ArgumentTypeError(f"expected comma-separated folders, got {text!r}")
    return paths


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from serve.runtime import RUNTIMES
    from serve.settings import MIB
    from serve.settings import default_of as d

    models = parser.add_argument_group("models")
    _flag(models, "model_name", help="model name for --model_base_path (TF Serving: 'default')")
    _flag(models, "model_base_path", type=Path, help="folder of numbered version folders")
    _flag(models, "model_config_file", type=Path, help="ModelServerConfig text proto")
    _flag(models, "model_store", type=Path, help="serve every model of a pulsecast model store")
    _flag(models, "file_system_poll_wait_seconds", type=float,
          help="seconds between scans for new versions "
               f"(default {d('file_system_poll_wait_seconds'):g})")
    _flag(models, "runtime", choices=RUNTIMES,
          help="auto: XLA for pulsecast models when it matches the SavedModel "
               f"(default {d('runtime')})")
    _flag(models, "auto_batching", type=int,
          help="pulsecast models without --enable_batching: batch what is queued when the "
               f"model frees up, at most this many rows (default {d('auto_batching')}, the "
               "largest XLA bucket; 0 = off). A lone request runs at once; answers are unchanged")
    _flag(models, "tensorflow_intra_op_parallelism", type=int,
          help="threads for one TensorFlow op (0 = TensorFlow picks; default "
               f"{d('tensorflow_intra_op_parallelism')})")
    _flag(models, "tensorflow_inter_op_parallelism", type=int,
          help="threads running TensorFlow ops in parallel (0 = TensorFlow picks; default "
               f"{d('tensorflow_inter_op_parallelism')})")
    _flag(models, "enable_model_warmup", type=_bool, nargs="?", const=True,
          help="replay assets.extra/tf_serving_warmup_requests before serving (default "
               f"{str(d('enable_model_warmup')).lower()})")
    _flag(models, "model_config_roots", type=_paths,
          help="folders a gRPC config reload may load models from, comma-separated (default: "
               "the folders holding the base paths given at start; for --model-store, the "
               "store)")
    _flag(models, "allow_version_links", type=_bool, nargs="?", const=True,
          help="serve a version folder that is a link to a folder outside its model's base "
               f"path (default {str(d('allow_version_links')).lower()}: refused, status says "
               "why)")

    net = parser.add_argument_group("network")
    _flag(net, "port", type=int, help=f"gRPC port (0 = no gRPC; default {d('port')})")
    _flag(net, "rest_api_port", type=int,
          help=f"REST port (0 = no REST; default {d('rest_api_port')})")
    _flag(net, "host", help=f"address to bind (default {d('host')})")
    _flag(net, "rest_api_num_threads", type=int,
          help="worker threads for REST requests (default 4 x CPUs)")
    _flag(net, "rest_api_timeout_in_ms", type=int,
          help=f"REST request deadline, 504 past it (default {d('rest_api_timeout_in_ms')})")
    _flag(net, "rest_api_enable_cors_support", type=_bool, nargs="?", const=True,
          help="send CORS headers and answer preflights (default "
               f"{str(d('rest_api_enable_cors_support')).lower()})")
    _flag(net, "api_token_file", type=Path,
          help="file holding a bearer token every non-health route requires")
    _flag(net, "max_body_bytes", type=int,
          help="largest request body, before and after gzip "
               f"(default {d('max_body_bytes') // MIB} MiB; 413 past it)")
    _flag(net, "max_request_tensor_bytes", type=int,
          help="most bytes one request's input tensors may decode to, all protocols, checked "
               f"before allocating (default {d('max_request_tensor_bytes') // MIB} MiB; 400 / "
               "INVALID_ARGUMENT past it)")
    _flag(net, "grpc_max_receive_bytes", type=int,
          help="largest gRPC request message (default: --max-body-bytes)")
    _flag(net, "drain_timeout_s", type=float,
          help="seconds in-flight requests get to finish on SIGTERM "
               f"(default {d('drain_timeout_s'):g})")
    _flag(net, "header_timeout_s", type=float,
          help="seconds a REST request's headers may take from its first byte (or a new "
               "connection's first byte from connecting); the socket is closed past it "
               f"(default {d('header_timeout_s'):g})")
    _flag(net, "body_timeout_s", type=float,
          help="seconds a REST request's body may take, in all, after its headers; 408 and "
               f"close past it (default {d('body_timeout_s'):g})")

    batching = parser.add_argument_group("batching (TF Serving's BatchingParameters)")
    _flag(batching, "enable_batching", type=_bool, nargs="?", const=True,
          help="dynamic server-side batching (default "
               f"{str(d('enable_batching')).lower()})")
    _flag(batching, "batching_parameters_file", type=Path, help="BatchingParameters text proto")
    _flag(batching, "max_batch_size", type=int, help="default 1000")
    _flag(batching, "batch_timeout_micros", type=int, help="default 0")
    _flag(batching, "num_batch_threads", type=int, help="default: number of CPUs")
    _flag(batching, "max_enqueued_batches", type=int, help="default 10")
    _flag(batching, "allowed_batch_sizes", type=_sizes, help="e.g. '1,2,4,8'")


def settings_from_args(args: argparse.Namespace):
    """A `serve.settings.ServerSettings` from parsed flags, the token read from
    `--api_token_file` (a ValueError names a bad value or combination)."""
    from serve.settings import ServerSettings, read_api_token

    values = {name: getattr(args, name) for name in ServerSettings.model_fields
              if hasattr(args, name)}
    return ServerSettings(**values, api_token=read_api_token(args.api_token_file))


def run(args: argparse.Namespace) -> int:
    from serve.server import run_server

    return run_server(settings_from_args(args))
