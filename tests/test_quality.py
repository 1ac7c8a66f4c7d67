"""Quality flags: a clean signal has none; NaN, flat, clipped and empty channels are named."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.quality import compute_quality, nan_fraction

FS = 125.0
T = np.arange(int(30 * FS)) / FS


def _ecg_like() -> np.ndarray:
    return np.sin(2 * np.pi * 1.2 * T) + 0.3 * np.sin(2 * np.pi * 7.0 * T)


def test_a_clean_two_channel_signal_has_no_flags() -> None:
    signal = np.stack([_ecg_like(), 90 + 20 * np.sin(2 * np.pi * 1.2 * T)], axis=1)
    assert compute_quality(signal, ("II", "ABP"), FS) == ()


def test_more_than_half_nan_is_flagged_high_nan() -> None:
    signal = _ecg_like()[:, None].copy()
    signal[: int(0.6 * len(signal))] = np.nan
    assert compute_quality(signal, ("II",), FS) == ("high_nan",)
    assert nan_fraction(signal) == pytest.approx(0.6, abs=1e-3)


def test_a_channel_stuck_flat_for_most_of_the_row_is_flagged_with_its_name() -> None:
    abp = 90 + 20 * np.sin(2 * np.pi * 1.2 * T)
    abp[int(5 * FS) :] = 80.0  # transducer disconnected after 5 s
    signal = np.stack([_ecg_like(), abp], axis=1)
    assert compute_quality(signal, ("II", "ABP"), FS) == ("flat:ABP",)


def test_a_clipped_channel_is_flagged_with_its_name() -> None:
    ii = np.clip(1.5 * _ecg_like(), -1.0, 1.0)  # saturated amplifier
    assert compute_quality(ii[:, None], ("II",), FS) == ("clipped:II",)


def test_a_smooth_sine_touching_its_peak_is_not_called_clipped() -> None:
    sine = np.sin(2 * np.pi * 8.0 * np.arange(12_000) / 200.0)
    assert compute_quality(sine[:, None], ("sine",), 200.0) == ()


def test_a_channel_without_any_value_is_flagged_empty() -> None:
    signal = np.stack([_ecg_like(), np.full(len(T), np.nan)], axis=1)
    assert compute_quality(signal, ("II", "ABP"), FS) == ("empty:ABP",)


def test_a_shape_that_does_not_match_the_channels_is_named() -> None:
    with pytest.raises(ValueError, match=r"shape \(10, 2\) does not match 1 channels"):
        compute_quality(np.zeros((10, 2)), ("II",), FS)
