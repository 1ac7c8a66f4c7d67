"""The `pulsecast` command line: one sub-command per module in `pipelines/commands/`.

Each command module exposes `HELP: str`, `add_arguments(parser)` and `run(args) -> int`, and keeps
its imports cheap (heavy libraries load inside `run`). `main(argv)` returns the exit code, so tests
call it directly.

The dialect every command speaks (docs: `pipelines.report_format` for figures and JSON):

- one name per concept: `--out` (where results go), `--model-store`, `--model-name`,
  `--timeout-s` (client timeouts), `--api-token-file`; an older spelling stays a hidden alias
  (`add_alias`) for one release;
- every option has help text, and an option with a default says it (`(default X)`); a switch
  (`--json`, `--dry-run`) is off unless given;
- `--json` prints one JSON document on stdout and nothing else: while it runs, anything else
  written to stdout (progress bars) goes to stderr, as the logs do;
- an error the user can fix (a bad flag value, a missing file or model store, a bad recipe, a
  port in use) is one line on stderr, `12:00:00 ERROR pulsecast: <what>: <what to do>`, and exit
  code 1 (2 for a command line argparse refuses); `--verbose` adds the traceback. Any other
  exception is a bug and keeps its traceback;
- TensorFlow's C++ start-up logs (`I0000 ... cudart_stub.cc`, `E0000 ... failed call to cuInit`
  on a machine without a GPU) and gRPC's are silenced unless `--verbose` is given or the user's
  own environment sets `TF_CPP_MIN_LOG_LEVEL` (`quiet_tensorflow_logs`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# sub-command name -> module under pipelines.commands
COMMANDS: dict[str, str] = {
    "synth": "synth",
    "pull": "pull",
    "ingest": "ingest",
    "inspect": "inspect",
    "diagnose": "diagnose",
    "train": "train",
    "evaluate": "evaluate",
    "models": "models",
    "demo": "demo",
    "serve": "serve",
    "predict": "predict",
    "retrain": "retrain",
    "rollback": "rollback",
}

log = logging.getLogger("pulsecast")


def add_alias(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs) -> None:
    """Accept `old`, an option's former spelling, for one release: same `dest`, hidden from
    `--help` (its default is the new option's, so it takes none of its own)."""
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                        **kwargs)


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser of a `build_parser()` parser, by command name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsecast", description="Physiological time-series forecasting from WFDB records."
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, tracebacks with errors, and TensorFlow's own "
                             "start-up logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"pipelines.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"pipelines.commands.{module_name}":
                raise
            continue  # a command still being built is simply not offered
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def configure_logging(verbose: bool) -> None:
    """Log lines to stderr; called by `main` only, never at import."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


# --- TensorFlow's C++ logs ---------------------------------------------------------------------

# What TensorFlow (and the absl logging it uses) writes to stderr from C++: `I0000 00:00:17.. 123
# port.cc:153] ...` (absl), `2025-09-17 14:44:05.157831: I external/...cc:32] ...` (older tsl),
# and absl's notice that it logs before being initialised.
_NATIVE_LOG = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
# A line that continues the message before it (cpu_feature_guard's second line).
_NATIVE_CONTINUATION = re.compile(rb"^To enable the following instructions:")


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` with fd 2 captured, then replays what was written except TensorFlow's
    C++ log lines: those are printed while its shared libraries load, before the C++ logging reads
    `TF_CPP_MIN_LOG_LEVEL` (TensorFlow 2.19+), so the variable alone does not hide them."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_logs_filtered():
            self.loader.exec_module(module)

    def __getattr__(self, name: str):  # is_package, get_resource_reader, ... of the real one
        return getattr(self.loader, name)


@contextlib.contextmanager
def native_logs_filtered() -> Iterator[None]:
    """Capture fd 2 for the block, then write back every line that is not a C++ log line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept, dropped = [], False
            for line in captured.read().splitlines(keepends=True):
                if _NATIVE_LOG.match(line) or (dropped and _NATIVE_CONTINUATION.match(line)):
                    dropped = True
                    continue
                dropped = False
                kept.append(line)
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()


@contextlib.contextmanager
def quiet_tensorflow_logs(verbose: bool) -> Iterator[None]:
    """Silence TensorFlow's C++ logs for the block, unless `verbose` or the user's environment
    sets `TF_CPP_MIN_LOG_LEVEL` (their choice stands). Sets `TF_CPP_MIN_LOG_LEVEL=3` (after
    start-up: errors such as `failed call to cuInit` on a machine without a GPU) and filters the
    lines printed while TensorFlow loads; `CUDA_VISIBLE_DEVICES` is left alone, so a GPU is
    still used. Everything is put back as it was when the block ends."""
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    finder = _QuietImport()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # gRPC's C core logs the same way (`E1208 ... add_port.cc] Failed to add port`, beside the
    # one-line error `serve` ends with); the user's own GRPC_VERBOSITY stands
    grpc_set = "GRPC_VERBOSITY" not in os.environ
    if grpc_set:
        os.environ["GRPC_VERBOSITY"] = "NONE"
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        if grpc_set:
            os.environ.pop("GRPC_VERBOSITY", None)


# --- errors ------------------------------------------------------------------------------------


def _cause_errno(err: BaseException) -> int | None:
    while err is not None:
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        err = err.__cause__ or err.__context__
    return None


def _in_use(err: OSError) -> bool:
    return _cause_errno(err) == errno.EADDRINUSE or any(
        text in str(err) for text in ("Address already in use", "Failed to bind"))


def _port_in_use(err: OSError) -> str:
    """`cannot bind the REST server to 127.0.0.1:8501: the port is in use: ...what to do`."""
    head = str(err).split(": ")[0]  # "cannot bind the gRPC server to host:port"
    flag = "--port" if "gRPC" in head else "--rest-api-port"
    # gRPC says only "Failed to bind": in use, most likely, but it does not say why
    why = "in use" if _cause_errno(err) == errno.EADDRINUSE else "in use (or not ours to bind)"
    return (f"{head}: the port is {why}: stop the process using it, or pass another {flag} "
            "(0 turns that API off)")


def what_to_do(err: BaseException, command: str) -> str:
    """A hint for an error the user can fix ("" when the message says it already)."""
    text = str(err)
    if "model store" in text or "has no versions" in text or text.startswith("no model "):
        return ("pass --model-store with the folder `pulsecast train` publishes to "
                "(default data/model_store), or train a model first")
    if isinstance(err, FileNotFoundError) and text.startswith("recipe not found"):
        return "pass --config with a recipe file, e.g. configs/ecg.toml"
    if type(err).__name__ == "ConfigError":
        return "fix the recipe (configs/ecg.toml shows every table and key)"
    if type(err).__name__ == "SettingsError":
        return f"see `pulsecast {command} --help` for each flag and its default"
    return ""


def report_error(err: BaseException, command: str, verbose: bool) -> None:
    """One log line on stderr: the error (its lines joined) and what to do; with `verbose`, the
    traceback after it."""
    if isinstance(err, OSError) and _in_use(err):
        message = _port_in_use(err)
    else:
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        message = message or type(err).__name__
        hint = what_to_do(err, command)
        if hint and hint not in message:
            message = f"{message}: {hint}"
    log.error("%s", message, exc_info=err if verbose else None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    from pipelines.report_format import stdout_for_json_only

    json_only = stdout_for_json_only() if getattr(args, "json", False) else contextlib.nullcontext()
    try:
        with quiet_tensorflow_logs(args.verbose), json_only:
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (ValueError, OSError) as err:
        # Project errors subclass ValueError and carry the bad value in their message; OSError:
        # a missing or unreadable file, a port in use. Anything else is a bug: its traceback shows.
        report_error(err, args.command, args.verbose)
        return 1


if __name__ == "__main__":
    sys.exit(main())
