"""Drift of new records against the training data: per-channel statistics and KS warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.dataset.drift import QUANTILES, compute_drift, sample_channel


def signals(rng, n, mean, std, length=5000, channels=2):
    return [rng.normal(mean, std, size=(length, channels)).astype(np.float32) for _ in range(n)]


def test_the_same_distribution_raises_no_warning():
    rng = np.random.default_rng(0)
    report = compute_drift(signals(rng, 3, 0.0, 1.0), signals(rng, 2, 0.0, 1.0), ["II", "ABP"])
    assert report.warnings == []
    for c in report.channels:
        assert c.ks_statistic < 0.05
        assert abs(c.standardized_mean_diff) < 0.05
        assert c.reference.n == 15000 and c.new.n == 10000
        assert len(c.reference.quantiles) == len(QUANTILES)


def test_a_shifted_channel_warns_with_its_name_and_the_shift():
    rng = np.random.default_rng(1)
    ref = signals(rng, 3, 0.0, 1.0)
    new = signals(rng, 2, 0.0, 1.0)
    for s in new:
        s[:, 1] += 2.0  # ABP moved up by two reference std
    report = compute_drift(ref, new, ["II", "ABP"])
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert warning.startswith("ABP: KS 0.") and "mean shifted by +2.0" in warning
    assert report.channels[1].ks_statistic > 0.6


def test_nan_gaps_are_dropped_and_counted():
    ref = [np.array([[1.0], [np.nan], [2.0], [3.0]], dtype=np.float32)]
    values, nan_fraction = sample_channel(ref, 0)
    assert values.tolist() == [1.0, 2.0, 3.0]
    assert nan_fraction == pytest.approx(0.25)


def test_samples_are_capped_evenly():
    values, _ = sample_channel([np.arange(1000.0)[:, None]], 0, max_samples=100)
    assert len(values) == 100 and values[1] - values[0] == 10


def test_an_empty_side_warns_instead_of_failing():
    rng = np.random.default_rng(2)
    report = compute_drift(signals(rng, 1, 0, 1, channels=1), [np.full((10, 1), np.nan)], ["II"])
    assert "no finite samples" in report.warnings[0]
    json.dumps(report.to_dict(), allow_nan=False)  # NaN statistics become null


def test_the_report_renders_as_json_and_markdown():
    rng = np.random.default_rng(3)
    report = compute_drift(signals(rng, 2, 0, 1), signals(rng, 1, 5, 1), ["II", "ABP"])
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["n_reference_records"] == 2 and data["n_new_records"] == 1
    assert [c["channel"] for c in data["channels"]] == ["II", "ABP"]
    md = report.to_markdown()
    assert "| II |" in md and "| ABP |" in md and "KS" in md


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="ks_threshold must be finite and >= 0, got -1"):
        compute_drift([], [], ["II"], ks_threshold=-1)
