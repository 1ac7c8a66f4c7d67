"""`pulsecast pull`: WFDB records from PhysioNet, or from a mirror of its layout (URL or folder)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines.cli import add_alias
from pipelines.sources.pull import PHYSIONET_URL  # stdlib-only module: cheap to import

HELP = ("download WFDB records of a PhysioNet database (e.g. mitdb/1.0.0), or copy them from a "
        "mirror of its layout (a URL or a local folder)")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True,
                        help="database with its version, as PhysioNet names it: mitdb/1.0.0")
    parser.add_argument("--records", default=None,
                        help="comma-separated record names (default: the database's RECORDS)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the files (default: data/raw/<database slug>)")
    parser.add_argument("--mirror", default=PHYSIONET_URL,
                        help="where the database lives, laid out as <mirror>/<db>/<version>/: "
                        "an http(s) URL or a local folder (a path or a file:// URL) "
                        f"(default {PHYSIONET_URL})")
    parser.add_argument("--no-annotations", action="store_true",
                        help="skip annotation files listed in the database's ANNOTATORS")
    parser.add_argument("--timeout-s", type=float, default=60.0,
                        help="seconds to wait on the server per request (default 60)")
    add_alias(parser, "--timeout", "timeout_s", type=float)
    parser.add_argument("--no-verify", action="store_true",
                        help="do not check files against the database's SHA256SUMS")


def run(args: argparse.Namespace) -> int:
    from pipelines.sources.pull import PullConfig, pull

    records = None
    if args.records is not None:
        records = tuple(r.strip() for r in args.records.split(",") if r.strip())
    out = args.out or Path("data/raw") / args.db.strip("/").split("/")[0]
    config = PullConfig(db=args.db, out=out, records=records, mirror=args.mirror,
                        annotations=not args.no_annotations, timeout_s=args.timeout_s,
                        verify=not args.no_verify)
    result = pull(config)
    checked = f", {result.verified} checked against SHA256SUMS" if result.verified else ""
    log.info("%d file(s) in %s (%d copied now%s)", len(result.files), out, result.downloaded,
             checked)
    if result.failed:
        log.error("%d record(s) failed: %s", len(result.failed), ", ".join(result.failed))
        return 1
    return 0
