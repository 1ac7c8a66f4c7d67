"""`pulsecast.json`: the typed metadata of one model version, written and read only through here.

On disk: `<version>/assets.extra/pulsecast.json` (`models.layout.METADATA_RELPATH`), one JSON
object, indented, keys sorted, no NaN or infinity. `VersionMetadata` is its typed form:

- the model's contract, required: `channels`, `fs` (Hz), `input_steps`, `horizon`, `targets`;
  what `:forecast` and evaluation need to feed the model and read its answer;
- what the training pipeline's publish step writes (`units`, `target_units`, `quantiles`,
  `model_name`, `created_at`, `dataset`, `dataset_sha256`, `metrics`, `parent_version`,
  `params`, `config`, `ridge_ar`): always written, `null` when unknown;
- lineage (`retrain`, `rolled_back_from`, `rolled_back_at`) and export stamps (`exported_at`,
  `keras_version`, `tensorflow_version`, `serving_signature`, `warmup_records`): written only
  when set, so a rolled-back version has no `retrain` key at all;
- `events`: written only when the model warns of events (`[model] events`), one entry per
  event, e.g. `{"ahe": {"output": "ahe_probability", "threshold": 0.37, "horizon_min": 60,
  "chosen_on": "train"}}`: the SavedModel output holding its probability `(batch, 1)`, the alarm
  threshold (alarm when probability >= threshold; chosen on the split `chosen_on`) and the
  minutes after the cut point the rule looks at (`models.events`);
- `valid_range`: written only when the recipe set one (`[data] valid_range`), `[low, high]` in
  the channels' units: at ingest a value at or below `low` was no reading and one above `high`
  an artefact, so the server reads the same (`serve.http.forecast`);
- `extra`: keys this code does not know (older or newer writers), kept as read and written back.

A missing required key or a value of the wrong type is a `MetadataError` (a `ValueError`) naming
the key and the value. Reading an older file and writing it back adds the always-written keys
it lacked, as `null` or empty; nothing read is lost. SavedModels that pulsecast did not make have
no `pulsecast.json` (`read_metadata` gives None). `read_metadata` is the one reader of a
version's metadata; beneath it `read_pulsecast_json` / `write_pulsecast_json` are the file format
itself, untyped, for the few callers that must take a document the typed contract refuses: the
server loads such a version and answers `:forecast` with the reason, `pulsecast models` lists it.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from models.events import EVENTS
from models.layout import METADATA_RELPATH

REQUIRED_KEYS = ("channels", "fs", "input_steps", "horizon", "targets")
_OMIT_WHEN_NONE = {"omit_when_none": True}
_OMIT_WHEN_EMPTY = {"omit_when_empty": True}
EVENT_KEYS = ("output", "threshold", "horizon_min", "chosen_on")  # each `events` entry has them
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 8, 6


class MetadataError(ValueError):
    """A `pulsecast.json` that breaks the contract; the message names the key and the value."""


def _bad(key: str, expected: str, value: Any) -> MetadataError:
    return MetadataError(f"pulsecast.json key {key!r} must be {expected}, got {_short.repr(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass(frozen=True)
class VersionMetadata:
    """One version's `pulsecast.json`. Shapes: the model maps `signal` `(batch, input_steps,
    len(channels))` at `fs` Hz to `forecast` `(batch, horizon, len(targets))`, plus `quantiles`
    `(batch, horizon, len(targets), len(quantiles))` when `quantiles` is non-empty."""

    channels: tuple[str, ...]
    fs: float
    input_steps: int
    horizon: int
    targets: tuple[str, ...]
    model_name: str | None = None
    created_at: str | None = None  # UTC ISO 8601, when the publish step built the metadata
    units: tuple[str, ...] = ()  # one per channel, or empty
    target_units: tuple[str, ...] = ()  # one per target, or empty
    quantiles: tuple[float, ...] = ()  # increasing levels in (0, 1)
    dataset: str | None = None  # the dataset folder it was trained on
    dataset_sha256: str | None = None
    metrics: dict[str, Any] | None = None  # the evaluation on held-out patients
    parent_version: int | None = None  # None: first of its line
    params: list[dict[str, Any]] | None = None  # models.params rows
    config: dict[str, Any] | None = None  # the recipe
    ridge_ar: dict[str, Any] | None = None  # the ridge baseline fitted on its training split
    retrain: dict[str, Any] | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    rolled_back_from: int | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    rolled_back_at: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    exported_at: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    keras_version: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    tensorflow_version: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    serving_signature: dict[str, Any] | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    warmup_records: int | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    # {event name: {"output", "threshold", "horizon_min", "chosen_on"}}; empty: no event outputs
    events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict,
                                                    metadata=_OMIT_WHEN_EMPTY)
    # (low, high), low < high, finite: at or below low is no reading, above high an artefact
    valid_range: tuple[float, float] | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("channels", "targets", "units", "target_units"):
            required = name in REQUIRED_KEYS
            self._set(name, self._names(name, getattr(self, name), required))
        for name, per, n in (("units", "channel", len(self.channels)),
                             ("target_units", "target", len(self.targets))):
            value = getattr(self, name)
            if value and len(value) != n:
                raise _bad(name, f"empty or one unit per {per} ({n})", list(value))
        if not _is_number(self.fs) or self.fs <= 0:
            raise _bad("fs", "a number of samples per second > 0", self.fs)
        self._set("fs", float(self.fs))
        for name in ("input_steps", "horizon"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise _bad(name, "an integer >= 1", getattr(self, name))
        self._check_quantiles()
        for name in ("parent_version", "rolled_back_from", "warmup_records"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise _bad(name, "an integer >= 0 or null", value)
        for name in ("model_name", "created_at", "dataset", "dataset_sha256", "rolled_back_at",
                     "exported_at", "keras_version", "tensorflow_version"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise _bad(name, "a string or null", value)
        for name in ("metrics", "config", "ridge_ar", "retrain", "serving_signature"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise _bad(name, "an object or null", value)
            if value is not None:
                self._set(name, dict(value))
        if self.params is not None:
            if not isinstance(self.params, list | tuple) or not all(
                    isinstance(row, Mapping) for row in self.params):
                raise _bad("params", "a list of objects or null", self.params)
            self._set("params", [dict(row) for row in self.params])
        self._check_events()
        self._check_valid_range()
        if not isinstance(self.extra, Mapping):
            raise MetadataError(f"extra must be a mapping, got {_short.repr(self.extra)}")
        self._set("extra", dict(self.extra))
        clash = sorted(set(self.extra) & _KNOWN)
        if clash:
            raise MetadataError(f"extra must hold unknown keys only, got known key {clash[0]!r}")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @staticmethod
    def _names(key: str, value: Any, required: bool) -> tuple[str, ...]:
        if value is None and not required:
            return ()
        if (isinstance(value, str) or not isinstance(value, list | tuple)
                or not all(isinstance(v, str) for v in value) or (required and not value)):
            what = "a non-empty list of strings" if required else "a list of strings"
            raise _bad(key, what, value)
        return tuple(value)

    def _check_quantiles(self) -> None:
        levels = () if self.quantiles is None else self.quantiles
        if (isinstance(levels, str) or not isinstance(levels, list | tuple)
                or not all(_is_number(q) and 0 < q < 1 for q in levels)
                or any(b <= a for a, b in zip(levels, levels[1:], strict=False))):
            raise _bad("quantiles", "a list of increasing levels in (0, 1)", self.quantiles)
        self._set("quantiles", tuple(float(q) for q in levels))

    def _check_events(self) -> None:
        events = {} if self.events is None else self.events
        if not isinstance(events, Mapping):
            raise _bad("events", "an object of events", self.events)
        checked: dict[str, dict[str, Any]] = {}
        outputs: set[str] = set()
        for name, entry in events.items():
            key = f"events.{name}"
            if not isinstance(name, str) or not name:
                raise _bad("events", "an object keyed by event names", dict(events))
            if not isinstance(entry, Mapping) or any(k not in entry for k in EVENT_KEYS):
                raise _bad(key, f"an object with keys {list(EVENT_KEYS)}", entry)
            output, threshold = entry["output"], entry["threshold"]
            if not isinstance(output, str) or not output or output in outputs:
                raise _bad(f"{key}.output", "a SavedModel output name of its own", output)
            if not _is_number(threshold) or not 0 <= threshold <= 1:
                raise _bad(f"{key}.threshold", "a probability in [0, 1]", threshold)
            if not _is_int(entry["horizon_min"]) or entry["horizon_min"] < 1:
                raise _bad(f"{key}.horizon_min", "an integer >= 1", entry["horizon_min"])
            if not isinstance(entry["chosen_on"], str) or not entry["chosen_on"]:
                raise _bad(f"{key}.chosen_on", "the name of a split", entry["chosen_on"])
            rule = EVENTS.get(name)  # a known rule: its output and horizon are not free
            for field_name in ("output", "horizon_min"):
                if rule is not None and entry[field_name] != getattr(rule, field_name):
                    raise _bad(f"{key}.{field_name}", f"{getattr(rule, field_name)!r} (the "
                               f"{name} rule's)", entry[field_name])
            outputs.add(output)
            checked[name] = {**entry, "threshold": float(threshold)}
        self._set("events", checked)

    def _check_valid_range(self) -> None:
        pair = self.valid_range
        if pair is None:
            return
        if (isinstance(pair, str) or not isinstance(pair, list | tuple) or len(pair) != 2
                or not all(_is_number(v) for v in pair) or not pair[0] < pair[1]):
            raise _bad("valid_range", "[low, high], two finite numbers with low < high, or null",
                       pair)
        self._set("valid_range", (float(pair[0]), float(pair[1])))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> VersionMetadata:
        """The typed form of a parsed `pulsecast.json`; unknown keys land in `extra`."""
        if not isinstance(doc, Mapping):
            raise MetadataError(f"pulsecast.json must hold a JSON object, got "
                                f"{type(doc).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in doc]
        if missing:
            raise MetadataError(f"pulsecast.json is missing required key {missing[0]!r} "
                                f"(has {sorted(doc)})")
        known = {key: value for key, value in doc.items() if key in _KNOWN}
        extra = {key: value for key, value in doc.items() if key not in _KNOWN}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document: lists for tuples, `extra` merged back in."""
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.metadata.get("omit_when_none")):
                continue
            if not value and f.metadata.get("omit_when_empty"):
                continue
            if f.name == "events":  # fresh dicts: the document is the caller's to change
                value = {name: dict(entry) for name, entry in value.items()}
            doc[f.name] = list(value) if isinstance(value, tuple) else value
        doc.update(self.extra)
        return doc

    def replace(self, **changes: Any) -> VersionMetadata:
        """A copy with `changes` applied (validated again), e.g. the export stamps."""
        return replace(self, **changes)

    def units_of_targets(self) -> tuple[str, ...]:
        """`target_units`, else each target's unit among `channels`/`units` ("" when unknown)."""
        if self.target_units:
            return self.target_units
        by_channel = dict(zip(self.channels, self.units, strict=False))
        return tuple(by_channel.get(t, "") for t in self.targets)


_KNOWN = frozenset(f.name for f in fields(VersionMetadata)) - {"extra"}


def metadata_path(version_dir: str | Path) -> Path:
    """`<version_dir>/assets.extra/pulsecast.json` (no I/O)."""
    return Path(version_dir) / METADATA_RELPATH


def read_pulsecast_json(version_dir: str | Path) -> dict[str, Any]:
    """The `pulsecast.json` of a version folder as a plain dict, untyped.

    `FileNotFoundError` when absent; `MetadataError` naming the file when it is not valid JSON or
    not a JSON object.
    """
    path = metadata_path(version_dir)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MetadataError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_metadata(version_dir: str | Path) -> VersionMetadata | None:
    """The typed `pulsecast.json` of a version folder; None when the folder has none (a
    SavedModel pulsecast did not make). `MetadataError` when it breaks the contract."""
    try:
        doc = read_pulsecast_json(version_dir)
    except FileNotFoundError:
        return None
    try:
        return VersionMetadata.from_dict(doc)
    except MetadataError as exc:
        raise MetadataError(f"{metadata_path(version_dir)}: {exc}") from exc


def write_pulsecast_json(version_dir: str | Path, doc: Mapping[str, Any]) -> Path:
    """Write a plain document as a version's `pulsecast.json` (creating `assets.extra/`).

    The one file format: indent 2, sorted keys, a final newline; NaN or infinity is a
    `ValueError` (JSON has neither). Write into a staging folder (`models.store.publish`).
    """
    path = metadata_path(version_dir)
    text = json.dumps(dict(doc), indent=2, sort_keys=True, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_metadata(version_dir: str | Path, meta: VersionMetadata) -> Path:
    """Write `meta` as the version's `pulsecast.json`; returns its path."""
    if not isinstance(meta, VersionMetadata):
        raise TypeError(f"meta must be a VersionMetadata, got {type(meta).__name__}")
    return write_pulsecast_json(version_dir, meta.to_dict())
