"""`pulsecast rollback --model-name ecg --to 1`: re-publish an earlier version as the newest.

The copy (`pipelines.release.rollback`) gets the next version number, so servers on TF Serving's
default "latest" policy switch to it within one poll and the store's history stays append-only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.store import DEFAULT_MODEL_STORE

HELP = "serve an earlier version again: re-publish version N as the newest (history kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True, help="the model to roll back")
    parser.add_argument("--to", type=int, required=True, help="the version to serve again")
    parser.add_argument("--model-store", default=str(DEFAULT_MODEL_STORE),
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (model_name, from_version, to_version, "
                             "published_as, version_dir) instead of text")


def run(args: argparse.Namespace) -> int:
    from pipelines.release.rollback import rollback
    from pipelines.report_format import print_json

    done = rollback(Path(args.model_store), args.model_name, args.to)
    if args.json:
        print_json(done.to_dict())
    else:
        print(f"rolled {done.model_name} back from version {done.from_version} to version "
              f"{done.to_version}: published as version {done.published_as} at {done.path}")
    return 0
