"""`pulsecast models`: a store's versions, grouped by the test set they were scored on.

Each version's `pulsecast.json` says when it was published (`created_at`; a rollback copy:
`rolled_back_at`), its lineage, its dataset and its metrics, among them the test records it was
scored on (`metrics.records`, `metrics.n_records`). Versions scored on the same records of the same
dataset form one test set; MAE and skill are only comparable inside one, so the table lists one
block per test set, each named by its dataset and number of records. A rollback copy carries the
metrics of the version it copies, so it sits in that version's test set.

`--json`: `{"models": {name: {"test_sets": [...], "versions": [...], "figure_units": {...}}}}`, each
version naming its `test_set` (numbered from 1, as in `test_sets` and the table; null when the
version stores no evaluation).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.store import DEFAULT_MODEL_STORE

HELP = "list published model versions by test set (when published, lineage, MAE, skill)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", help="one model (default: every model in the store)")
    parser.add_argument("--model-store", default=str(DEFAULT_MODEL_STORE),
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead "
                                                            "of a table")


def run(args: argparse.Namespace) -> int:
    from models import store
    from pipelines.report_format import print_json

    root = Path(args.model_store)
    if not root.is_dir():
        raise FileNotFoundError(f"model store {root} does not exist")
    names = [args.model_name] if args.model_name else sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for name in names:
        base = store.model_base_path(root, name)
        if not base.is_dir():
            raise FileNotFoundError(f"no model {name!r} in model store {root}")
        out[name] = describe_model(read_version_docs(base))
        if not args.json:
            print(render_model(name, out[name]))
    if args.json:
        print_json({"models": out})
    return 0


def read_version_docs(base: Path) -> list[tuple[int, dict | None, Path]]:
    """(version, its `pulsecast.json` as a dict or None, folder) for every version, ascending."""
    from models import store
    from models.metadata import MetadataError, read_pulsecast_json

    docs = []
    for version in store.list_versions(base):
        path = store.version_path(base, version)
        try:
            meta: dict | None = read_pulsecast_json(path)
        except (FileNotFoundError, MetadataError):
            meta = None
        docs.append((version, meta, path))
    return docs


def _test_set(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a version was scored on: dataset, split, records (as stored)."""
    metrics = meta.get("metrics") or {}
    records = [r.get("record_id") for r in metrics.get("records") or [] if isinstance(r, Mapping)]
    n_records = metrics.get("n_records", len(records) if records else None)
    return {"dataset": meta.get("dataset"), "split": "test", "n_records": n_records,
            "n_patients": metrics.get("n_patients"), "record_ids": sorted(records),
            "dataset_sha256": meta.get("dataset_sha256")}


def _same_key(test_set: Mapping[str, Any]) -> tuple:
    # the records say it when stored; without them the dataset's hash and the counts must
    if test_set["record_ids"]:
        return (test_set["dataset"], tuple(test_set["record_ids"]))
    return (test_set["dataset"], test_set["dataset_sha256"], test_set["n_records"],
            test_set["n_patients"])


def _published(version_dir: Path, meta: Mapping[str, Any]) -> str:
    """When this version folder appeared: a rollback copy's `rolled_back_at`, else
    `created_at` (or `exported_at`), else the folder's modification time."""
    stamp = (meta.get("rolled_back_at") if meta.get("rolled_back_from") is not None
             else meta.get("created_at") or meta.get("exported_at"))
    if stamp:
        return str(stamp)
    mtime = datetime.fromtimestamp(version_dir.stat().st_mtime, tz=UTC)
    return mtime.isoformat(timespec="seconds")


def describe_model(docs: list[tuple[int, dict | None, Path]]) -> dict[str, Any]:
    """The JSON form of one model: its test sets (first appearance order) and its versions."""
    from pipelines.report_format import FRACTION, pooled_unit

    test_sets: list[dict[str, Any]] = []
    keys: list[tuple] = []
    versions = []
    units: list[str | None] = []
    for version, meta, path in docs:
        meta = meta or {}
        metrics = meta.get("metrics") or {}
        model = metrics.get("model") if isinstance(metrics.get("model"), Mapping) else {}
        index = None
        if metrics:
            test_set = _test_set(meta)
            key = _same_key(test_set)
            if key not in keys:
                keys.append(key)
                test_sets.append({"test_set": len(keys), **test_set, "versions": []})
            index = keys.index(key) + 1  # numbered from 1, as the table names them
            test_sets[index - 1]["versions"].append(version)
        units.append(pooled_unit(meta.get("target_units") or ()))
        rolled_from = meta.get("rolled_back_from")
        retrain = meta.get("retrain") if isinstance(meta.get("retrain"), Mapping) else None
        versions.append({
            "version": version, "published_at": _published(path, meta),
            "created_at": meta.get("created_at"), "republished": rolled_from is not None,
            "rolled_back_from": rolled_from,
            "retrain_of": retrain.get("champion_version") if retrain else None,
            "parent_version": meta.get("parent_version"), "test_set": index,
            "mae": model.get("mae"),
            "skill": metrics.get("skill_mae_vs_best_baseline", metrics.get("skill")),
            "best_baseline": metrics.get("best_baseline"),
        })
    return {"test_sets": test_sets, "versions": versions,
            "figure_units": {"mae": pooled_unit(units), "skill": FRACTION}}


def _lineage(row: Mapping[str, Any]) -> str:
    if row["rolled_back_from"] is not None:
        return f"re-published copy of {row['rolled_back_from']} (rollback)"
    if row["retrain_of"] is not None:
        return f"retrain of {row['retrain_of']}"
    return "-"


def render_model(name: str, model: Mapping[str, Any]) -> str:
    """One block per test set: its dataset and records, then a row per version."""
    from pipelines.report_format import FRACTION, format_figure

    unit = model["figure_units"]["mae"]
    sets = model["test_sets"]
    rows = {row["version"]: row for row in model["versions"]}
    blocks = [(f"test set {s['test_set']}: {_describe_set(s)}", s["versions"]) for s in sets]
    unscored = [v for v, row in rows.items() if row["test_set"] is None]
    if unscored:
        blocks.append(("no evaluation stored", unscored))
    lines = [f"{name}: {len(rows)} version(s) on {len(sets)} test set(s)"
             + ("; MAE and skill compare versions within one test set only"
                if len(sets) > 1 else "")]
    header = ["version", "published", f"MAE ({unit})" if unit else "MAE", "skill", "parent",
              "lineage"]
    cells = {v: [str(v), row["published_at"], format_figure(row["mae"], None),
                 format_figure(row["skill"], FRACTION),
                 "-" if row["parent_version"] is None else str(row["parent_version"]),
                 _lineage(row)] for v, row in rows.items()}
    widths = [max(len(r[i]) for r in [header, *cells.values()]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "    " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    for title, members in blocks:
        lines += [f"  {title}", line(header), *(line(cells[v]) for v in members)]
    return "\n".join(lines) + "\n"


def _describe_set(test_set: Mapping[str, Any]) -> str:
    n = test_set["n_records"]
    records = "? records" if n is None else f"{n} record{'s' if n != 1 else ''}"
    sha = test_set["dataset_sha256"]
    dataset = test_set["dataset"] or "(dataset unknown)"
    return (f"{records} of split {test_set['split']} of {dataset}"
            + (f" (dataset sha256 {sha[:12]})" if sha else ""))
