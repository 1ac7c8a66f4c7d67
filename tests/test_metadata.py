"""`pulsecast.json` through `VersionMetadata`: round trips, named errors, older and newer files."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.metadata import (
    REQUIRED_KEYS,
    MetadataError,
    VersionMetadata,
    read_metadata,
    read_pulsecast_json,
    write_metadata,
    write_pulsecast_json,
)


def _published() -> dict:
    """What the training pipeline's publish step and the export write today."""
    return {
        "model_name": "ecg",
        "created_at": "2026-01-02T03:04:05+00:00",
        "channels": ["II", "ABP"],
        "targets": ["II"],
        "units": ["mV", "mmHg"],
        "target_units": ["mV"],
        "fs": 125.0,
        "input_steps": 1000,
        "horizon": 125,
        "quantiles": [0.1, 0.5, 0.9],
        "dataset": "data/datasets/ecg",
        "dataset_sha256": "0123456789abcdef",
        "metrics": {"model": {"mae": 0.12}, "skill_mae_vs_best_baseline": 0.25},
        "parent_version": None,
        "params": [{"name": "lstm_1", "expected": 4480, "keras": 4480}],
        "config": {"name": "ecg", "window": {"input_steps": 1000}},
        "ridge_ar": None,
        "exported_at": "2026-01-02T03:04:09+00:00",
        "keras_version": "3.8.0",
        "tensorflow_version": "2.18.0",
        "serving_signature": {"inputs": {"signal": [None, 1000, 2]},
                              "outputs": {"forecast": [None, 125, 1]}},
        "warmup_records": 2,
    }


def test_a_published_document_round_trips_unchanged() -> None:
    doc = _published()
    meta = VersionMetadata.from_dict(doc)
    assert meta.channels == ("II", "ABP") and meta.fs == 125.0 and meta.input_steps == 1000
    assert meta.quantiles == (0.1, 0.5, 0.9) and meta.parent_version is None
    assert meta.to_dict() == doc


def test_a_retrain_and_a_rollback_keep_their_lineage_keys() -> None:
    retrained = {**_published(), "parent_version": 1,
                 "retrain": {"champion_version": 1, "new_patients": ["p5"]}}
    assert VersionMetadata.from_dict(retrained).to_dict() == retrained
    rolled = VersionMetadata.from_dict(retrained).replace(
        parent_version=1, rolled_back_from=1, rolled_back_at="2026-02-01T00:00:00+00:00",
        retrain=None)
    doc = rolled.to_dict()
    assert doc["rolled_back_from"] == 1 and "retrain" not in doc  # unset lineage: no key at all


def test_a_missing_required_key_is_named() -> None:
    for key in REQUIRED_KEYS:
        doc = {k: v for k, v in _published().items() if k != key}
        with pytest.raises(MetadataError, match=f"missing required key '{key}'"):
            VersionMetadata.from_dict(doc)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input_steps", "1000", "'input_steps' must be an integer >= 1, got '1000'"),
        ("horizon", 0, "'horizon' must be an integer >= 1, got 0"),
        ("input_steps", True, "'input_steps' must be an integer >= 1, got True"),
        ("fs", "125", "'fs' must be a number of samples per second > 0, got '125'"),
        ("fs", -1, "'fs' must be a number of samples per second > 0, got -1"),
        ("channels", "II", "'channels' must be a non-empty list of strings, got 'II'"),
        ("channels", [], "'channels' must be a non-empty list of strings, got []"),
        ("targets", [1], "'targets' must be a non-empty list of strings, got [1]"),
        ("units", ["mV"], "'units' must be empty or one unit per channel (2), got ['mV']"),
        ("quantiles", [0.9, 0.1], "'quantiles' must be a list of increasing levels in (0, 1)"),
        ("parent_version", "1", "'parent_version' must be an integer >= 0 or null, got '1'"),
        ("metrics", [1, 2], "'metrics' must be an object or null, got [1, 2]"),
        ("created_at", 20260102, "'created_at' must be a string or null, got 20260102"),
        ("params", {"a": 1}, "'params' must be a list of objects or null"),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_its_key(key, value, message) -> None:
    with pytest.raises(MetadataError) as info:
        VersionMetadata.from_dict({**_published(), key: value})
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_an_older_file_is_still_read_and_loses_nothing() -> None:
    # the first publish step wrote no ridge_ar, and no export stamps existed
    old = {k: v for k, v in _published().items()
           if k not in ("ridge_ar", "exported_at", "keras_version", "tensorflow_version",
                        "serving_signature", "warmup_records")}
    meta = VersionMetadata.from_dict(old)
    assert meta.ridge_ar is None and meta.exported_at is None
    doc = meta.to_dict()
    assert {k: doc[k] for k in old} == old
    assert set(doc) - set(old) == {"ridge_ar"}  # always written, as null


def test_unknown_keys_from_other_writers_are_kept() -> None:
    newer = {**_published(), "calibration": {"coverage": 0.8}, "schema": 2}
    meta = VersionMetadata.from_dict(newer)
    assert meta.extra == {"calibration": {"coverage": 0.8}, "schema": 2}
    assert meta.to_dict() == newer


def test_the_minimal_contract_is_enough_and_fills_defaults() -> None:
    meta = VersionMetadata(channels=("II",), fs=50, input_steps=16, horizon=4, targets=("II",))
    assert meta.fs == 50.0 and isinstance(meta.fs, float)
    assert meta.quantiles == () and meta.units == () and meta.units_of_targets() == ("",)
    doc = meta.to_dict()
    assert doc["parent_version"] is None and "exported_at" not in doc


def test_target_units_fall_back_to_the_units_of_the_target_channels() -> None:
    meta = VersionMetadata.from_dict({**_published(), "target_units": [], "targets": ["ABP"]})
    assert meta.units_of_targets() == ("mmHg",)


def test_extra_may_not_shadow_a_known_key() -> None:
    with pytest.raises(MetadataError, match="known key 'fs'"):
        VersionMetadata(channels=("II",), fs=50, input_steps=16, horizon=4, targets=("II",),
                        extra={"fs": 1})


def test_written_and_read_back_through_the_version_folder(tmp_path: Path) -> None:
    meta = VersionMetadata.from_dict(_published())
    path = write_metadata(tmp_path, meta)
    assert path == tmp_path / "assets.extra" / "pulsecast.json"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.index('"channels"') < text.index('"fs"')  # sorted
    assert read_metadata(tmp_path) == meta
    assert read_pulsecast_json(tmp_path) == _published()


def test_a_folder_without_pulsecast_json_has_no_metadata(tmp_path: Path) -> None:
    assert read_metadata(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        read_pulsecast_json(tmp_path)


def test_a_broken_file_is_named(tmp_path: Path) -> None:
    write_pulsecast_json(tmp_path, {"channels": ["II"]})
    with pytest.raises(MetadataError, match=r"pulsecast.json: .*missing required key 'fs'"):
        read_metadata(tmp_path)
    (tmp_path / "assets.extra" / "pulsecast.json").write_text("[1, 2]")
    with pytest.raises(MetadataError, match="pulsecast.json must hold a JSON object, got list"):
        read_pulsecast_json(tmp_path)
    (tmp_path / "assets.extra" / "pulsecast.json").write_text("{")
    with pytest.raises(MetadataError, match="is not valid JSON"):
        read_metadata(tmp_path)


def test_nan_is_refused_on_write(tmp_path: Path) -> None:
    meta = VersionMetadata.from_dict({**_published(), "metrics": {"mae": float("nan")}})
    with pytest.raises(ValueError, match="JSON compliant"):
        write_metadata(tmp_path, meta)
    assert not (tmp_path / "assets.extra").exists()  # nothing half-written


def _ahe(**change) -> dict:
    return {"ahe": {"output": "ahe_probability", "threshold": 0.37, "horizon_min": 60,
                    "chosen_on": "train", **change}}


def test_event_thresholds_round_trip_and_a_version_without_events_writes_none() -> None:
    doc = {**_published(), "events": _ahe()}
    meta = VersionMetadata.from_dict(doc)
    assert meta.events == _ahe() and meta.to_dict() == doc
    assert "events" not in VersionMetadata.from_dict(_published()).to_dict()
    # a threshold of 0 or 1 (an int in JSON) is a probability too, stored as a float
    meta = VersionMetadata.from_dict({**_published(), "events": _ahe(threshold=1)})
    assert meta.events["ahe"]["threshold"] == 1.0 and isinstance(
        meta.to_dict()["events"]["ahe"]["threshold"], float)


def test_an_event_entry_of_an_unknown_event_is_kept_as_written() -> None:
    other = {"sepsis": {"output": "sepsis_probability", "threshold": 0.2, "horizon_min": 360,
                        "chosen_on": "train", "note": "newer writer"}}
    doc = {**_published(), "events": {**_ahe(), **other}}
    assert VersionMetadata.from_dict(doc).to_dict() == doc


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([1], "'events' must be an object of events, got [1]"),
        ({"ahe": 0.4}, "'events.ahe' must be an object with keys ['output', 'threshold', "
                       "'horizon_min', 'chosen_on'], got 0.4"),
        ({"ahe": {"output": "ahe_probability", "threshold": 0.4}},
         "'events.ahe' must be an object with keys ['output', 'threshold', 'horizon_min', "
         "'chosen_on']"),
        (_ahe(threshold=1.5), "'events.ahe.threshold' must be a probability in [0, 1], got 1.5"),
        (_ahe(threshold="0.4"),
         "'events.ahe.threshold' must be a probability in [0, 1], got '0.4'"),
        (_ahe(threshold=True), "'events.ahe.threshold' must be a probability in [0, 1], got True"),
        (_ahe(horizon_min=30), "'events.ahe.horizon_min' must be 60 (the ahe rule's), got 30"),
        (_ahe(horizon_min=0), "'events.ahe.horizon_min' must be an integer >= 1, got 0"),
        (_ahe(output="forecast_probability"),
         "'events.ahe.output' must be 'ahe_probability' (the ahe rule's), got "
         "'forecast_probability'"),
        (_ahe(chosen_on=""), "'events.ahe.chosen_on' must be the name of a split, got ''"),
    ],
)
def test_a_bad_event_entry_is_named_with_its_key(events, message) -> None:
    with pytest.raises(MetadataError) as info:
        VersionMetadata.from_dict({**_published(), "events": events})
    assert message in str(info.value)


def test_event_thresholds_are_written_and_read_back_through_the_version_folder(
        tmp_path: Path) -> None:
    meta = VersionMetadata(channels=("ABPMEAN",), fs=1 / 60, input_steps=120, horizon=60,
                           targets=("ABPMEAN",), events=_ahe())
    write_metadata(tmp_path, meta)
    assert read_pulsecast_json(tmp_path)["events"] == _ahe()
    assert read_metadata(tmp_path) == meta


def test_a_valid_range_round_trips_and_a_version_without_one_writes_the_same_bytes(
        tmp_path: Path) -> None:
    doc = {**_published(), "valid_range": [10.0, 300.0]}
    meta = VersionMetadata.from_dict(doc)
    assert meta.valid_range == (10.0, 300.0) and meta.to_dict() == doc
    write_metadata(tmp_path / "with", meta)
    assert read_pulsecast_json(tmp_path / "with")["valid_range"] == [10.0, 300.0]
    assert read_metadata(tmp_path / "with") == meta
    # a file written before the field existed loads, and is written back byte for byte
    write_pulsecast_json(tmp_path / "old", _published())
    before = (tmp_path / "old" / "assets.extra" / "pulsecast.json").read_bytes()
    old = read_metadata(tmp_path / "old")
    assert old is not None and old.valid_range is None
    write_metadata(tmp_path / "again", old)
    assert (tmp_path / "again" / "assets.extra" / "pulsecast.json").read_bytes() == before
    # integers in JSON are numbers too, kept as floats
    assert VersionMetadata.from_dict({**_published(), "valid_range": [10, 300]}).valid_range \
        == (10.0, 300.0)


@pytest.mark.parametrize(
    "valid_range",
    [[300.0, 10.0], [10.0, 10.0], [10.0], [10.0, 300.0, 400.0], "10..300", [10.0, float("inf")],
     [float("nan"), 300.0], [True, 300.0], ["10", 300.0], {"low": 10.0}],
)
def test_a_bad_valid_range_is_named_with_its_key(valid_range) -> None:
    with pytest.raises(MetadataError) as info:
        VersionMetadata.from_dict({**_published(), "valid_range": valid_range})
    assert str(info.value).startswith(
        "pulsecast.json key 'valid_range' must be [low, high], two finite numbers with low < "
        "high, or null, got ")
