"""NaN-safe polyphase resampling: rate ratios, the common clock, and gaps that stay put."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.resample import finite_runs, rational_ratio, resample_channel


def test_common_rate_ratios_are_exact_in_lowest_terms() -> None:
    assert rational_ratio(125, 360) == (25, 72)
    assert rational_ratio(125, 500) == (1, 4)
    assert rational_ratio(500, 125) == (4, 1)
    assert rational_ratio(1 / 60, 0.0166666666667) == (1, 1)


def test_a_non_integer_rate_ratio_is_within_one_part_per_million() -> None:
    up, down = rational_ratio(125, 62.4725 * 4)
    assert abs((up / down) / (125 / 249.89) - 1) <= 1e-6


def test_a_rate_that_is_not_positive_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"fs_in=0, fs_out=125"):
        rational_ratio(125, 0)


def test_equal_rates_return_the_input_unchanged() -> None:
    x = np.array([1.0, np.nan, 3.0])
    np.testing.assert_array_equal(resample_channel(x, 125, 125), x)


def test_downsampling_a_slow_sine_keeps_its_values_on_the_same_clock() -> None:
    t_in = np.arange(5000) / 500
    y = resample_channel(np.sin(2 * np.pi * 2 * t_in), 500, 125)
    t_out = np.arange(len(y)) / 125
    assert len(y) == 1250
    np.testing.assert_allclose(y[20:-20], np.sin(2 * np.pi * 2 * t_out)[20:-20], atol=1e-3)


def test_upsampling_puts_the_original_samples_back_at_their_times() -> None:
    x = np.sin(2 * np.pi * 1.5 * np.arange(1000) / 125)
    y = resample_channel(x, 125, 500)
    assert len(y) == 4000
    np.testing.assert_allclose(y[::4][10:-10], x[10:-10], atol=1e-3)


def test_a_nan_run_stays_nan_at_the_same_time_in_the_output() -> None:
    x = np.ones(2000)
    x[100:150] = np.nan  # 0.2 s to 0.3 s at 500 Hz
    y = resample_channel(x, 500, 125)
    nan_times = np.flatnonzero(np.isnan(y)) / 125
    assert nan_times.min() >= 0.2 and nan_times.max() < 0.3
    assert np.isnan(y[25:38]).all() and np.isfinite(y[24]) and np.isfinite(y[38])


def test_samples_next_to_a_gap_are_not_smeared_by_the_other_side() -> None:
    x = np.concatenate([np.zeros(600), np.full(40, np.nan), np.full(600, 100.0)])
    y = resample_channel(x, 360, 125)
    left, right = y[: int(600 * 125 / 360)], y[int(640 * 125 / 360) + 1 :]
    np.testing.assert_allclose(left, 0.0, atol=1e-9)
    # within the filter's passband ripple of 100 (smearing would pull these towards 0)
    np.testing.assert_allclose(right[np.isfinite(right)], 100.0, atol=0.01)
    assert np.isfinite(right).sum() >= len(right) - 1


def test_a_leading_nan_does_not_spread_over_the_whole_output() -> None:
    x = np.sin(np.arange(1000) / 10.0)
    x[0] = np.nan
    y = resample_channel(x, 250, 125)
    assert np.isnan(y[0]) and np.isfinite(y[1:]).all()


def test_finite_runs_are_half_open_index_pairs() -> None:
    x = np.array([np.nan, 1, 2, np.nan, np.nan, 3])
    assert finite_runs(x).tolist() == [[1, 3], [5, 6]]


def test_a_two_dimensional_input_is_refused_with_its_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        resample_channel(np.zeros((3, 2)), 125, 250)
