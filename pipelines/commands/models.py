"""`pulsecast models`: a store's versions with creation time, data, metrics and parent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "list published model versions (creation time, dataset, metrics, parent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", help="one model (default: every model in the store)")
    parser.add_argument("--model-store", default="data/model_store",
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from models import store

    root = Path(args.model_store)
    if not root.is_dir():
        raise FileNotFoundError(f"model store does not exist: {root}")
    names = [args.model_name] if args.model_name else sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for name in names:
        base = store.model_base_path(root, name)
        if not base.is_dir():
            raise FileNotFoundError(f"no model {name!r} in {root}")
        infos = store.read_version_infos(base)
        out[name] = infos
        if not args.json:
            print(f"{name}:")
            print(store.format_versions_table(infos))
    if args.json:
        print(json.dumps({n: [i.__dict__ for i in v] for n, v in out.items()}, default=str))
    return 0
