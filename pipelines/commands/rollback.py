"""`pulsecast rollback --model-name ecg --to 1`: re-publish an earlier version as the newest.

The copy (`pipelines.release.rollback`) gets the next version number, so servers on TF Serving's
default "latest" policy switch to it within one poll and the store's history stays append-only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "serve an earlier version again: re-publish version N as the newest (history kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--to", type=int, required=True, help="the version to serve again")
    parser.add_argument("--model-store", default="data/model_store",
                        help="folder with one sub-folder per model (default data/model_store)")


def run(args: argparse.Namespace) -> int:
    from pipelines.release.rollback import rollback

    version, path = rollback(Path(args.model_store), args.model_name, args.to)
    print(f"version {args.to} of {args.model_name} re-published as version {version} at {path}")
    print(json.dumps({"model_name": args.model_name, "version": version,
                      "rolled_back_from": args.to}))
    return 0
