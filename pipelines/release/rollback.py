"""Rollback: serve an earlier version again by re-publishing it as the newest version.

`rollback(model_store, model_name, to)` copies version `to`'s folder (SavedModel, warmup file,
`assets.extra/model.keras`) through `models.store.publish` (stage, then one rename) as version
N+1, with `rolled_back_from` = `to`, `parent_version` = `to` and `rolled_back_at` in its
`pulsecast.json`. Why a copy and not a deletion of the newer versions: history stays append-only
(every version ever served is still there to inspect or roll forward to), and every TF Serving
client on the default "latest" version policy gets the old model within one file-system poll,
with load-new-before-unload-old, exactly as for any new version.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.metadata import read_metadata, write_metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the served (latest) version went from `from_version` to a copy of
    `to_version`, published as `published_as` at `path`."""

    model_name: str
    from_version: int  # the latest version before the rollback
    to_version: int  # the version served again
    published_as: int  # the number of its copy, now the latest
    path: Path

    def to_dict(self) -> dict:
        return {"model_name": self.model_name, "from_version": self.from_version,
                "to_version": self.to_version, "published_as": self.published_as,
                "version_dir": str(self.path)}


def rollback(model_store: str | Path, model_name: str, to: int) -> Rollback:
    """Re-publish version `to` of `model_name` as the next version."""
    from models import store

    base = store.model_base_path(model_store, model_name)
    versions = store.list_versions(base)
    if not versions:
        raise FileNotFoundError(f"model {model_name!r} has no versions in {base}")
    if to not in versions:
        raise ValueError(f"model {model_name!r} has no version {to} (has {versions})")
    if to == versions[-1]:
        raise ValueError(f"version {to} of {model_name!r} is already the latest: nothing to roll "
                         "back to")
    source = store.version_path(base, to)

    def build(staging: Path) -> None:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        meta = read_metadata(staging)
        if meta is None:  # a SavedModel pulsecast did not make: copy it as it is
            log.warning("version %d has no pulsecast.json: re-published without lineage", to)
            return
        # `retrain=None`: that comparison was about version `to`, not a retrain now
        write_metadata(staging, meta.replace(
            parent_version=to, rolled_back_from=to,
            rolled_back_at=datetime.now(UTC).isoformat(timespec="seconds"), retrain=None))

    version, path = store.publish(base, build)
    log.info("rolled %s back to version %d: published as version %d", model_name, to, version)
    return Rollback(model_name, versions[-1], to, version, path)
