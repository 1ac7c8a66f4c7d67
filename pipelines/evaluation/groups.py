"""Group labels of records: PhysioNet's `ALARMS` file, or any `record,group` file.

The PhysioNet/CinC Challenge 2015 folder holds `ALARMS`, one line per record:
`record,alarm,label` (`a103l,Asystole,0`; label 1: a true alarm, 0: a false one). It gives two
groupings: `alarm` (Asystole, Bradycardia, Tachycardia, Ventricular_Tachycardia,
Ventricular_Flutter_Fib) and `alarm_label` (`true` / `false`). A file of `record,group` lines gives
one grouping, `group`. Blank lines and `#` comments are skipped.

`read_dataset_groups` finds the labels of a dataset's records by itself: `dataset.json` names the
raw folder it was ingested from (`raw_dir`) and the manifest each record's source path, and an
`ALARMS` file in either folder is read. Records are matched by their WFDB record name (the source
path's last part), so the pieces of a record cut at a long gap share its labels.
`--groups FILE` (`pulsecast evaluate`) names the file instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipelines.dataset.contract import Dataset

GroupLabels = Mapping[str, Mapping[str, str]]  # grouping -> record -> group
ALARMS = "ALARMS"
_TRUTH = {"1": "true", "0": "false"}


def parse_group_lines(text: str, source: str = "groups") -> dict[str, dict[str, str]]:
    """`{grouping: {record name: group}}` from `record,alarm,label` or `record,group` lines.

    Every line has the same number of fields; a wrong count or an alarm label other than 0 or 1
    is a ValueError naming the source, the line number and the line.
    """
    out: dict[str, dict[str, str]] = {}
    width = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if width is None and fields[0].lower() == "record":  # a header line
            width = len(fields)
            continue
        width = width or len(fields)
        if len(fields) != width or width not in (2, 3) or not all(fields):
            raise ValueError(f"{source} line {number}: expected 'record,alarm,label' or "
                             f"'record,group', got {raw.strip()!r}")
        record = fields[0]
        if width == 2:
            out.setdefault("group", {})[record] = fields[1]
            continue
        if fields[2] not in _TRUTH:
            raise ValueError(f"{source} line {number}: alarm label must be 1 (true alarm) or 0 "
                             f"(false alarm), got {fields[2]!r}")
        out.setdefault("alarm", {})[record] = fields[1]
        out.setdefault("alarm_label", {})[record] = _TRUTH[fields[2]]
    return out


def read_group_file(path: str | Path) -> dict[str, dict[str, str]]:
    """`parse_group_lines` of a file; FileNotFoundError naming it when it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"groups file not found: {path}")
    return parse_group_lines(path.read_text(encoding="utf-8"), source=str(path))


def _record_names(dataset: Dataset) -> dict[str, tuple[str, ...]]:
    """record_id -> the names it may go by in a labels file (its WFDB name first)."""
    names: dict[str, tuple[str, ...]] = {}
    for rid, source in zip(dataset.manifest["record_id"], dataset.manifest["source_path"],
                           strict=True):
        wfdb_name = Path(str(source)).name if source else ""
        names[str(rid)] = tuple(n for n in (wfdb_name, str(rid)) if n)
    return names


def label_records(labels: GroupLabels, dataset: Dataset) -> dict[str, dict[str, str]]:
    """`{grouping: {record_id: group}}` for the dataset's records that `labels` names."""
    names = _record_names(dataset)
    out: dict[str, dict[str, str]] = {}
    for grouping, by_name in labels.items():
        for rid, aliases in names.items():
            group = next((by_name[n] for n in aliases if n in by_name), None)
            if group is not None:
                out.setdefault(grouping, {})[rid] = group
    return out


def find_alarms_files(dataset: Dataset) -> list[Path]:
    """`ALARMS` files beside the dataset's records or in the raw folder it was ingested from."""
    folders: list[Path] = []
    raw = dataset.config.get("raw_dir")
    if raw:
        folders.append(Path(raw))
    for source in dataset.manifest["source_path"]:
        if source:
            folders.append(Path(str(source)).parent)
    seen: list[Path] = []
    for folder in dict.fromkeys(folders):
        path = folder / ALARMS
        if path.is_file() and path not in seen:
            seen.append(path)
    return seen


def read_dataset_groups(dataset: Dataset,
                        groups_file: str | Path | None = None) -> tuple[dict, str | None]:
    """The group labels of the dataset's records and where they came from (None: no labels).

    With `groups_file` that file is read; else every `ALARMS` file `find_alarms_files` finds.
    """
    files = [Path(groups_file)] if groups_file is not None else find_alarms_files(dataset)
    merged: dict[str, dict[str, str]] = {}
    for path in files:
        for grouping, by_name in read_group_file(path).items():
            merged.setdefault(grouping, {}).update(by_name)
    labelled = label_records(merged, dataset)
    if not labelled:
        return {}, None
    return labelled, ", ".join(str(p) for p in files)
