"""Signal conditioning shared by ingest and `:forecast`: rate ratios, NaN-safe resampling, the
resampled tail, gap filling, and the server's window equal to what ingest made."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import models.resampling as resampling
from models.conditioning import (
    GapTooLongError,
    condition_tail,
    fill_gaps,
    fill_short_gaps,
    nan_runs,
)
from models.resampling import (
    MAX_DRIFT,
    FilterCache,
    RatioTooCoarseError,
    finite_runs,
    lowpass_filter,
    rational_ratio,
    resample_channel,
    resample_tail,
    resampled_length,
)

# --- rate ratio (ported from tests/test_resample.py) ---------------------------------------


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


# --- NaN-safe resampling (ported from tests/test_resample.py) ------------------------------


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


# --- the resampled tail --------------------------------------------------------------------


def _gappy(n: int, seed: int, gaps: tuple[tuple[int, int], ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) / 7.0) + 0.1 * rng.normal(size=n) + 0.002 * np.arange(n)
    for a, b in gaps:
        x[a:b] = np.nan
    return x


@pytest.mark.parametrize("rates", [(360, 125), (500, 125), (125, 500), (250, 125), (128, 125),
                                   (249.89, 125), (125, 125)])
@pytest.mark.parametrize("gaps", [(), ((5000, 5003),), ((6950, 6960),), ((6995, 7000),),
                                  ((0, 6900),)])
def test_the_tail_equals_the_end_of_the_whole_resampled_signal_exactly(rates, gaps) -> None:
    fs_in, fs_out = rates
    x = _gappy(7000, 0, gaps)
    whole = resample_channel(x, fs_in, fs_out)[: resampled_length(len(x), fs_in, fs_out)]
    for n_out in (1, 100, 1000):
        # padtype "line" extends a run along the line through its first and last samples: the
        # tail is extended along the whole run's line, so even the last samples agree
        np.testing.assert_array_equal(resample_tail(x, fs_in, fs_out, n_out), whole[-n_out:])


def test_a_tail_longer_than_the_signal_is_the_whole_signal() -> None:
    x = _gappy(50, 1, ())
    np.testing.assert_array_equal(resample_tail(x, 250, 125, 1000), resample_channel(x, 250, 125))


def test_ingest_keeps_the_signals_duration_rounded() -> None:
    assert resampled_length(1000, 360, 125) == 347  # 347.2: the last output starts in the input
    assert len(resample_channel(np.zeros(1000), 360, 125)) == 348
    assert len(resample_tail(np.zeros(1000), 360, 125, 10_000)) == 347


# --- the bounded tail (`:forecast`'s `max_term`) ---------------------------------------------

SERVER_MAX_TERM = 5000  # serve.http.forecast.MAX_RATIO_TERM (models imports nothing from serve)


def _smooth(n: int, fs: float) -> np.ndarray:
    """A heartbeat-like band-limited signal (1.2 Hz and 7.3 Hz, peak about 1.3) with a slow
    trend, so the last run's line extension is not flat."""
    t = np.arange(n) / fs
    return np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 7.3 * t + 0.5) + 0.002 * t


@pytest.mark.parametrize("fs_in", [360.0, 500.0, 250.0, 100.0, 128.0])
def test_a_bounded_tail_whose_ratio_fits_the_bound_is_the_exact_tail_bit_for_bit(fs_in) -> None:
    x = _gappy(7000, 5, ((6800, 6810),))
    want = resample_tail(x, fs_in, 125.0, 700)
    np.testing.assert_array_equal(resample_tail(x, fs_in, 125.0, 700, max_term=SERVER_MAX_TERM),
                                  want)


# Rates whose exact ratio needs terms above the bound, yet whose exact filter a test affords:
# MIMIC's 249.89 Hz (3409/6815), 62.4725 Hz (15909/7951: upsampling), a probe's 7.123456789 Hz
# (10125/577: 17.5x upsampling) at the server's bound, and 360.1 Hz (1250/3601) at 1000.
BOUNDED_CASES = [(249.89, SERVER_MAX_TERM), (62.4725, SERVER_MAX_TERM),
                 (7.123456789, SERVER_MAX_TERM), (360.1, 1000)]


@pytest.mark.parametrize(("fs_in", "max_term"), BOUNDED_CASES)
@pytest.mark.parametrize("gap", [False, True])
def test_a_bounded_tail_agrees_with_the_exact_tail_within_1e_3(fs_in, max_term, gap) -> None:
    # MAX_DRIFT (0.05 samples at 125 Hz) bounds the error by 2 pi (1.2 + 0.3 * 7.3) 0.05 / 125
    # = 8.5e-3 here; the approximate grid lands far closer (under 3e-4 over many rates)
    n = int(40 * fs_in)
    x = _smooth(n, fs_in)
    if gap:  # 80 ms missing 2 s before the end: runs padded and extended as the exact method does
        a = n - int(2 * fs_in)
        x[a : a + max(int(0.08 * fs_in), 1)] = np.nan
    up, down = rational_ratio(125.0, fs_in)
    assert max(up, down) > max_term  # the approximate grid, not the exact one
    exact = resample_tail(x, fs_in, 125.0, 625)
    bounded = resample_tail(x, fs_in, 125.0, 625, max_term=max_term)
    assert bounded.shape == exact.shape == (625,)
    np.testing.assert_array_equal(np.isnan(bounded), np.isnan(exact))
    np.testing.assert_allclose(bounded, exact, rtol=0, atol=1e-3)


def test_the_5_8_hz_probe_resamples_in_milliseconds_on_the_clock_of_its_signal() -> None:
    fs_in = 5.813946611267183  # exactly 2,113,517/98,303 of 125 Hz: 42 million taps unbounded
    x = np.sin(2 * np.pi * 0.5 * np.arange(49) / fs_in)
    t0 = time.perf_counter()
    y = resample_tail(x, fs_in, 125.0, 625, max_term=SERVER_MAX_TERM)
    assert time.perf_counter() - t0 < 5.0  # about 10 ms; 8.5 s and 2 GB unbounded
    end = resampled_length(49, fs_in, 125.0)  # 1054: the clock of the whole signal
    t = np.arange(end - 625, end) / 125
    # away from the end, where the filter reaches past the signal, it is the sine itself
    np.testing.assert_allclose(y[:-250], np.sin(2 * np.pi * 0.5 * t[:-250]), atol=2e-3)


def test_a_ratio_no_bounded_one_places_closely_is_refused_naming_the_rates() -> None:
    x = _smooth(10_000, 249.89)
    with pytest.raises(RatioTooCoarseError,
                       match=r"^resampling 249.89 Hz to 125.0 Hz with ratio terms up to 1000: "
                             r"the closest ratio, 1/2, puts 625 samples up to 0.138 samples off "
                             r"their times, more than 0.05$") as info:
        resample_tail(x, 249.89, 125.0, 625, max_term=1000)
    assert isinstance(info.value, ValueError) and info.value.drift > MAX_DRIFT
    with pytest.raises(RatioTooCoarseError, match="no positive ratio"):
        resample_tail(np.zeros(100_000), 4e6, 125.0, 10, max_term=1000)  # 1/32000


def test_ingest_is_never_bounded() -> None:
    x = _smooth(2000, 249.89)
    np.testing.assert_array_equal(condition_tail(x, 249.89, 125.0, 100, 0.1, "II"),
                                  resample_tail(x, 249.89, 125.0, 100))


# --- the filter cache --------------------------------------------------------------------------


def test_the_filter_cache_stays_under_its_byte_bound_whatever_the_ratios(monkeypatch) -> None:
    cache = FilterCache(max_bytes=1_000_000)
    monkeypatch.setattr(resampling, "FILTER_CACHE", cache)
    for down in range(2, 400):  # 320 B to 64 KB each, 13 MB in all
        h = lowpass_filter(1, down)
        assert h.shape == (20 * down + 1,)
        assert cache.nbytes <= 1_000_000
    assert 0 < len(cache) < 398  # the oldest went
    assert cache.nbytes > 1_000_000 - 64_000  # and only as many as the bound needed
    assert lowpass_filter(1, 399) is lowpass_filter(1, 399)  # the newest is kept


def test_a_filter_bigger_than_the_whole_cache_is_made_but_not_kept(monkeypatch) -> None:
    cache = FilterCache(max_bytes=10_000)
    monkeypatch.setattr(resampling, "FILTER_CACHE", cache)
    h = lowpass_filter(25, 72)  # 1,441 taps, 11.5 KB
    assert h.shape == (1441,) and len(cache) == 0 and cache.nbytes == 0


def test_the_least_recently_used_filter_goes_first() -> None:
    cache = FilterCache(max_bytes=3 * 800)
    for key in (1, 2, 3):
        cache.get(key, lambda: np.zeros(100))
    cache.get(1, lambda: pytest.fail("1 was kept"))  # 1 is now the most recent
    cache.get(4, lambda: np.zeros(100))
    assert cache.get(1, lambda: np.ones(1)).shape == (100,)  # kept
    assert cache.get(2, lambda: np.ones(1)).shape == (1,)  # dropped: designed anew


# --- gap filling ----------------------------------------------------------------------------


def test_nan_runs_are_half_open_index_pairs() -> None:
    starts, stops = nan_runs(np.array([np.nan, 1, np.nan, np.nan, 3, np.nan]))
    assert starts.tolist() == [0, 2, 5] and stops.tolist() == [1, 4, 6]


def test_ingest_fills_short_inner_gaps_and_leaves_the_edges_alone() -> None:
    x = np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]], dtype=np.float32)
    assert fill_short_gaps(x, 1) == 1
    np.testing.assert_array_equal(x[1:4, 0], [1.0, 2.0, 3.0])
    assert np.isnan(x[0, 0]) and np.isnan(x[4, 0])  # nothing to interpolate from outside


def test_ingest_leaves_a_gap_longer_than_allowed_as_nan_per_channel() -> None:
    x = np.array([[0.0, 0.0], [np.nan, np.nan], [np.nan, 5.0], [3.0, 6.0]])
    assert fill_short_gaps(x, 1) == 1  # channel 1's one-sample gap only
    assert np.isnan(x[1:3, 0]).all()
    np.testing.assert_array_equal(x[:, 1], [0.0, 2.5, 5.0, 6.0])
    assert fill_short_gaps(x, 0) == 0


def test_the_server_fills_short_gaps_linearly_and_holds_the_edges() -> None:
    x = np.array([np.nan, 1.0, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(fill_gaps(x, fs=10, max_gap_s=0.1, channel="II"),
                                  [1.0, 1.0, 2.0, 3.0, 3.0])
    assert np.isnan(x[0])  # a copy: the input is left alone
    clean = np.arange(3.0)
    assert fill_gaps(clean, fs=10, max_gap_s=0.1, channel="II") is clean


def test_inner_gaps_get_the_same_numbers_on_both_sides() -> None:
    x = _gappy(300, 2, ((40, 47), (100, 101), (200, 230)))
    ingest = x.copy()[:, None]
    fill_short_gaps(ingest, 30)
    np.testing.assert_array_equal(fill_gaps(x, fs=100, max_gap_s=0.3, channel="II"),
                                  ingest[:, 0])


def test_a_long_gap_names_the_channel_its_length_and_where_it_starts() -> None:
    x = np.r_[np.ones(10), np.full(6, np.nan), np.ones(10)]
    with pytest.raises(GapTooLongError,
                       match=r"channel 'ABP' has a gap of 0.600 s \(6 samples\) starting "
                             r"1.000 s .*max_gap_s=0.5 s") as info:
        fill_gaps(x, fs=10, max_gap_s=0.5, channel="ABP")
    assert isinstance(info.value, ValueError)
    assert (info.value.channel, info.value.n_samples, info.value.start) == ("ABP", 6, 10)


def test_a_channel_without_data_is_refused_whatever_the_limit() -> None:
    with pytest.raises(GapTooLongError, match=r"channel 'II' has a gap of 0.300 s \(3 samples\)"):
        fill_gaps(np.full(3, np.nan), fs=10, max_gap_s=100.0, channel="II")


# --- the server's window is what ingest made -------------------------------------------------


def _ingested(x: np.ndarray, fs_in: float, fs: float, fill_gap_s: float) -> np.ndarray:
    """What ingest stores for one gapless-edged record: resampled, cut, float32, gaps filled."""
    signal = resample_channel(x, fs_in, fs)[: resampled_length(len(x), fs_in, fs)]
    signal = signal.astype(np.float32)[:, None]
    fill_short_gaps(signal, int(fill_gap_s * fs))
    return signal[:, 0]


@pytest.mark.parametrize("fs_in", [360.0, 500.0, 250.0, 100.0])
def test_the_servers_window_on_a_raw_record_is_the_ingested_window(fs_in: float) -> None:
    fs, input_steps, max_gap_s = 125.0, 500, 0.1
    n = int(30 * fs_in)
    x = _gappy(n, 3, ((n - int(2.0 * fs_in), n - int(1.96 * fs_in)),))  # 40 ms, 2 s before the end
    want = _ingested(x, fs_in, fs, max_gap_s)[-input_steps:]
    got = condition_tail(x, fs_in, fs, input_steps, max_gap_s, "II")
    assert got.shape == (input_steps,) and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # float32 storage of ingest


def test_the_servers_window_refuses_a_gap_ingest_would_not_fill() -> None:
    x = _gappy(3600, 4, ((3000, 3100),))  # 0.28 s at 360 Hz
    with pytest.raises(GapTooLongError, match="channel 'V' has a gap of 0.2"):
        condition_tail(x, 360, 125, 500, 0.1, "V")


def test_a_signal_a_rounding_short_repeats_its_first_sample() -> None:
    x = np.arange(7.0)  # 7 samples at 62.5 Hz: 14 at 125 Hz, the window wants 15
    got = condition_tail(x, 62.5, 125, 15, 0.1, "II", margin_s=0.0)
    assert got.shape == (15,) and got[0] == got[1]


def test_importing_conditioning_pulls_in_no_tensorflow() -> None:
    code = "import sys, models.conditioning; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
