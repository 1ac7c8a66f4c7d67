"""The `pulsecast` command line: one sub-command per module in `pipelines/commands/`.

Each command module exposes `HELP: str`, `add_arguments(parser)` and `run(args) -> int`, and keeps
its imports cheap (heavy libraries load inside `run`). `main(argv)` returns the exit code, so tests
call it directly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsecast", description="Physiological time-series forecasting from WFDB records."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("pulsecast").error("interrupted")
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        # Project errors subclass built-ins and carry the bad value in their message.
        logging.getLogger("pulsecast").error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
