"""The model store: versioned model folders laid out as TensorFlow Serving's model base path.

On disk:

    <model_store>/<model_name>/            the model base path (one per model)
        1/  2/  ...                        versions: integer folder names, TF Serving serves these
            saved_model.pb, variables/, fingerprint.pb
            assets.extra/pulsecast.json    metadata (channels, fs, metrics, dataset sha, parent...)
            assets.extra/tf_serving_warmup_requests
        .3.staging-k2j9x/                  a version being written: TF Serving ignores non-numeric
                                           names, and so does `list_versions`

What a version folder holds and which names are versions is `models.layout` (TF Serving's rule,
shared with the server); `pulsecast.json` is read and written through `models.metadata`.

A version appears only by one atomic `os.rename` of a complete staging folder (`publish`), so a
server polling the base path never sees a half-written model. Staging folders left by a killed
publisher stay hidden; `remove_stale_staging` clears them.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.layout import scan_versions, version_dir_name
from models.metadata import MetadataError, read_pulsecast_json

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Staging folders are hidden names: no version name starts with "." (models.layout).
_STAGING_PREFIX = "."
_MAX_CLAIM_ATTEMPTS = 1000


class ModelStoreError(ValueError):
    """A model name, version folder or metadata file that breaks the store's contract."""


def validate_model_name(model_name: str) -> str:
    """Return `model_name` if it is a safe single folder name, else raise `ModelStoreError`.

    Allowed: a letter or digit, then up to 63 letters, digits, `_`, `.` or `-`. No separators, so
    no name can escape the store (`../x`, `/abs`), and none is hidden (`.x`).
    """
    if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
        raise ModelStoreError(
            f"model_name must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}, got {model_name!r}"
        )
    return model_name


# Where `pulsecast train` publishes and every command looks unless told otherwise (`--model-store`).
DEFAULT_MODEL_STORE = Path("data/model_store")


def model_base_path(model_store: str | Path, model_name: str) -> Path:
    """`<model_store>/<model_name>`, after validating the name (no I/O)."""
    return Path(model_store) / validate_model_name(model_name)


def list_versions(base: str | Path) -> list[int]:
    """Version numbers under a model base path, ascending; [] when the path does not exist.

    Folders whose name reads as a version by TF Serving's rule count (`007` is 7,
    `models.layout.parse_version_name`); staging folders (leading `.`) and anything else are
    ignored.
    """
    return sorted(_scan_or_empty(base))


def _scan_or_empty(base: str | Path) -> dict[int, Path]:
    try:
        return scan_versions(base)
    except FileNotFoundError:
        return {}


def next_version(base: str | Path) -> int:
    """One above the highest version present (1 for an empty or missing base path)."""
    versions = list_versions(base)
    return versions[-1] + 1 if versions else 1


def version_path(base: str | Path, version: int) -> Path:
    """The folder of `version` under `base` (`7/`, or `007/` when that is how it is named);
    `FileNotFoundError` naming it when absent."""
    path = Path(base) / str(int(version))
    if path.is_dir():
        return path
    found = _scan_or_empty(base).get(int(version))
    if found is None:
        raise FileNotFoundError(f"version {version} not found under {base} (no folder {path})")
    return found


def publish(base: str | Path, build_fn: Callable[[Path], object]) -> tuple[int, Path]:
    """Write a new version with `build_fn(staging_path)` and make it appear atomically.

    Steps: create `<base>/.<n>.staging-XXXX` (n = `next_version` at the start), let `build_fn`
    write the whole version into it, then `os.rename` it to the first free number >= n. A rename
    onto an existing non-empty version folder fails (EEXIST/ENOTEMPTY), so concurrent publishers
    each get a distinct number: the loser retries with the next one. The number is claimed at the
    end, so the version numbers follow completion order.

    If `build_fn` raises (or the process is interrupted) the staging folder is removed and nothing
    appears under a numeric name. A hard kill can leave the hidden staging folder behind; it is
    never served, and the next publish removes it once it is an hour old (no export takes that
    long). Returns `(version, path)`.
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_staging(base):  # left by a publisher killed over an hour ago
        log.warning("removed stale staging folder %s", stale)
    first_guess = next_version(base)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{first_guess}.staging-", dir=base))
    try:
        build_fn(staging)
        if not any(staging.iterdir()):
            raise ModelStoreError(f"build_fn wrote nothing into {staging}; refusing to publish")
        version = _claim(base, staging, first_guess)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    path = base / version_dir_name(version)
    log.info("published version %d at %s", version, path)
    return version, path


def _claim(base: Path, staging: Path, start: int) -> int:
    version = max(start, next_version(base))
    for _ in range(_MAX_CLAIM_ATTEMPTS):
        target = base / version_dir_name(version)
        if not os.path.lexists(target):
            try:
                os.rename(staging, target)
                return version
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    raise
        version = max(version + 1, next_version(base))
    raise ModelStoreError(f"could not claim a version number under {base} after many attempts")


def remove_stale_staging(base: str | Path, older_than_s: float = 3600.0) -> list[Path]:
    """Delete staging folders (`.<n>.staging-*`) older than `older_than_s`; returns them."""
    removed: list[Path] = []
    now = time.time()
    for path in Path(base).glob(f"{_STAGING_PREFIX}*.staging-*"):
        if path.is_dir() and now - path.stat().st_mtime > older_than_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@dataclass(frozen=True)
class VersionInfo:
    """One row of `pulsecast models`: what a version's metadata says about it (None = unknown)."""

    version: int
    created: str | None
    dataset_sha256: str | None
    mae: float | None
    skill: float | None
    parent_version: int | None
    lineage: str | None = None  # "retrain of 1" or "rollback to 1"


def _first(mapping: Mapping, *paths: str) -> object:
    """The value at the first dotted path present in nested `mapping`, else None."""
    for dotted in paths:
        node: object = mapping
        for key in dotted.split("."):
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            return node
    return None


def make_version_info(version: int, metadata: Mapping | None) -> VersionInfo:
    """Pick the table's fields out of a `pulsecast.json` dict (None when there is no metadata).

    Read keys: `exported_at` (or `created_at`), `dataset_sha256` (or `dataset.sha256`),
    `metrics.model.mae` (or `metrics.mae`), `metrics.skill_mae_vs_best_baseline` (or
    `metrics.skill`), `parent_version`.
    """
    meta = metadata or {}
    mae = _first(meta, "metrics.model.mae", "metrics.mae")
    skill = _first(meta, "metrics.skill_mae_vs_best_baseline", "metrics.skill")
    parent = _first(meta, "parent_version")
    created = _first(meta, "exported_at", "created_at")
    sha = _first(meta, "dataset_sha256", "dataset.sha256")
    lineage = None
    if meta.get("rolled_back_from") is not None:
        lineage = f"rollback to {meta['rolled_back_from']}"
    elif isinstance(meta.get("retrain"), Mapping):
        lineage = f"retrain of {meta['retrain'].get('champion_version')}"
    return VersionInfo(
        version=int(version),
        created=str(created) if created is not None else None,
        dataset_sha256=str(sha) if sha is not None else None,
        mae=float(mae) if isinstance(mae, int | float) else None,
        skill=float(skill) if isinstance(skill, int | float) else None,
        parent_version=int(parent)
        if isinstance(parent, int | str) and str(parent).isdigit()
        else None,
        lineage=lineage,
    )


def read_version_infos(base: str | Path) -> list[VersionInfo]:
    """`VersionInfo` for every version under `base`, ascending. A version without (readable)
    metadata still gets a row, with its folder's modification time as `created`."""
    infos = []
    for version, path in sorted(_scan_or_empty(base).items()):
        try:
            meta: dict | None = read_pulsecast_json(path)
        except (FileNotFoundError, MetadataError):
            meta = None
        info = make_version_info(version, meta)
        if info.created is None:
            mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
            info = VersionInfo(
                version,
                mtime.isoformat(timespec="seconds"),
                info.dataset_sha256,
                info.mae,
                info.skill,
                info.parent_version,
                info.lineage,
            )
        infos.append(info)
    return infos


def format_versions_table(
    infos: Sequence[VersionInfo],
    state: Mapping[int, str] | None = None,
) -> str:
    """A plain-text table, one row per version: version, created, dataset sha (12 chars), MAE,
    skill, parent, `lineage` (only when some version was retrained or rolled back) and `state`
    (e.g. "AVAILABLE", "champion") when given. Unknown values are `-`.
    """
    header = ["version", "created", "dataset_sha", "mae", "skill", "parent"]
    with_lineage = any(info.lineage for info in infos)
    if with_lineage:
        header.append("lineage")
    if state is not None:
        header.append("state")
    rows = [header]
    for info in infos:
        row = [
            str(info.version),
            info.created or "-",
            info.dataset_sha256[:12] if info.dataset_sha256 else "-",
            f"{info.mae:.4g}" if info.mae is not None else "-",
            f"{info.skill:+.3f}" if info.skill is not None else "-",
            str(info.parent_version) if info.parent_version is not None else "-",
        ]
        if with_lineage:
            row.append(info.lineage or "-")
        if state is not None:
            row.append(state.get(info.version, "-"))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines) + "\n"
