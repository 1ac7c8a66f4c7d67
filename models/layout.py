"""The version-folder contract: where things live in a model version, and what names a version.

One model base path, as TensorFlow Serving lays it out (`specs/tf-serving.md` §3.1):

    <base_path>/                         one per model
        <version>/                       a folder whose name reads as a version (below)
            saved_model.pb | saved_model.pbtxt, variables/, fingerprint.pb
                                         the SavedModel; tag `serve`, signature `serving_default`
                                         taking `signal` and returning `forecast` (+ `quantiles`)
            assets.extra/pulsecast.json  pulsecast's metadata (`models.metadata`)
            assets.extra/tf_serving_warmup_requests
                                         PredictionLog records TF Serving replays before serving
            assets.extra/model.keras     the Keras model, for warm-starting a retrain

Version names follow TF Serving's rule (`absl::SimpleAtoi` into an int64): surrounding
whitespace and one leading `+` are allowed, `007` is 7, anything else (staging folders that
start with `.`, `12b`, negatives, past int64) is not a version. The server keeps that rule, and
the store reads folders by the same rule: a store that saw fewer versions than the server could
publish a second 5 beside a `005` the server already serves. The store writes only canonical
names (`version_dir_name`). Pure: pathlib and `os.scandir`, nothing heavy.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

ASSETS_EXTRA = Path("assets.extra")  # TF Serving ignores it, and copies it along with the model
METADATA_RELPATH = ASSETS_EXTRA / "pulsecast.json"
WARMUP_RELPATH = ASSETS_EXTRA / "tf_serving_warmup_requests"
KERAS_RELPATH = ASSETS_EXTRA / "model.keras"
VARIABLES_DIR = "variables"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")  # either makes a SavedModel folder
SERVE_TAG = "serve"
SIGNATURE_KEY = "serving_default"
INPUT_KEY = "signal"  # (batch, input_steps, channels) float32, physical units
FORECAST_KEY = "forecast"  # (batch, horizon, targets)
QUANTILES_KEY = "quantiles"  # (batch, horizon, targets, levels), probabilistic recipes only

_INT64_MAX = 2**63 - 1
_SIMPLE_ATOI = re.compile(r"\s*\+?([0-9]+)\s*")


def parse_version_name(name: str) -> int | None:
    """A version folder name as TF Serving reads it (`007` -> 7, ` 3` -> 3, `+5` -> 5); None for
    anything else: hidden names (staging folders), negatives, int64 overflow, `12b`."""
    if name.startswith("."):
        return None
    match = _SIMPLE_ATOI.fullmatch(name)
    if not match:
        return None
    value = int(match.group(1))
    return value if value <= _INT64_MAX else None


def version_dir_name(version: int) -> str:
    """The canonical folder name of `version` (`7` -> "7"), the only form the store writes."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= _INT64_MAX:
        raise ValueError(f"version must be an integer in [0, 2**63 - 1], got {version!r}")
    return str(version)


def scan_versions(base_path: str | Path) -> dict[int, Path]:
    """{version: folder} of the version folders under a model base path.

    Only directories count. Duplicates (`1` and `001`) keep the name that sorts last, with a
    warning, as TF Serving does. Raises `FileNotFoundError` when the base path is missing.
    """
    found: dict[int, Path] = {}
    for entry in sorted(os.scandir(base_path), key=lambda e: e.name):
        version = parse_version_name(entry.name)
        if version is None or not entry.is_dir():
            continue
        if version in found:
            log.warning("duplicate version %d under %s: %s and %s; using %s", version, base_path,
                        found[version].name, entry.name, entry.name)
        found[version] = Path(entry.path)
    return found


def find_saved_model_file(version_dir: str | Path) -> Path | None:
    """The `saved_model.pb` (preferred, as TensorFlow's loader) or `saved_model.pbtxt` of a
    version folder; None when it has neither."""
    for name in SAVED_MODEL_FILES:
        path = Path(version_dir) / name
        if path.is_file():
            return path
    return None


def is_saved_model_dir(version_dir: str | Path) -> bool:
    """Whether a folder holds a SavedModel graph file (`SAVED_MODEL_FILES`)."""
    return find_saved_model_file(version_dir) is not None
