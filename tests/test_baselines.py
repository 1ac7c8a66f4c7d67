"""Baselines: persistence, last_cycle (seasonal naive with a per-window period) and ridge AR."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.baselines import (
    estimate_periods,
    fit_ridge_ar,
    last_cycle,
    make_baseline_forecasts,
    mean_last,
    persistence,
)
from pipelines.evaluation.metrics import mae


def _periodic_batch(periods: list[int], n: int, seed: int = 0) -> np.ndarray:
    """One row per period: a random smooth waveform repeated exactly every `period` samples."""
    rng = np.random.default_rng(seed)
    rows = []
    for period in periods:
        cycle = np.convolve(rng.normal(size=period + 4), np.ones(5) / 5, mode="valid")
        rows.append(10.0 + cycle[np.arange(n) % period])
    return np.stack(rows)


def test_persistence_repeats_the_last_value_of_each_target_channel() -> None:
    x = np.array(
        [[[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]], [[3.0, 30.0, 300.0], [4.0, 40.0, 400.0]]]
    )

    y_hat = persistence(x, horizon=3, target_idx=[2, 0])

    assert y_hat.shape == (2, 3, 2)
    np.testing.assert_array_equal(y_hat[0], [[200.0, 2.0]] * 3)
    np.testing.assert_array_equal(y_hat[1], [[400.0, 4.0]] * 3)


def test_persistence_rejects_a_target_channel_out_of_range_naming_it() -> None:
    with pytest.raises(ValueError, match="target_idx 3 is out of range for x with 3 channels"):
        persistence(np.zeros((1, 4, 3)), horizon=2, target_idx=3)


def test_mean_last_holds_the_mean_of_the_last_minutes_of_each_target_flat() -> None:
    x = np.array([[[90.0, 1.0], [80.0, 2.0], [70.0, 3.0], [60.0, 4.0], [55.0, 5.0],
                   [65.0, 6.0]]])  # (1, 6, 2): one window, six minutes, two channels

    y_hat = mean_last(x, horizon=4, target_idx=[0, 1], steps=5)

    assert y_hat.shape == (1, 4, 2)
    np.testing.assert_allclose(y_hat[0], [[66.0, 4.0]] * 4)  # (80+70+60+55+65)/5, (2+..+6)/5


def test_mean_last_of_one_step_is_persistence() -> None:
    x = np.random.default_rng(0).normal(80.0, 10.0, size=(3, 12, 1))

    np.testing.assert_array_equal(mean_last(x, 7, 0, steps=1), persistence(x, 7, 0))


def test_mean_last_rejects_more_steps_than_the_window_naming_both() -> None:
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, input_steps=4\], "
                                         r"got 5"):
        mean_last(np.zeros((1, 4, 1)), horizon=2, target_idx=0, steps=5)


def test_last_cycle_recovers_a_pure_periodic_signal_exactly() -> None:
    steps, horizon = 200, 60
    signal = _periodic_batch([25], steps + horizon)  # (1, time)
    x, y = signal[:, :steps, None], signal[:, steps:, None]

    y_hat = last_cycle(x, horizon, 0, fs=50.0, min_period_s=0.2, max_period_s=2.0)

    np.testing.assert_allclose(y_hat, y, atol=1e-12)


def test_estimate_periods_finds_a_different_period_in_each_window_of_one_batch() -> None:
    periods = [7, 20, 33, 50, 71, 100]
    rows = _periodic_batch(periods, 256)

    found = estimate_periods(rows, min_lag=3, max_lag=128)

    np.testing.assert_array_equal(found, periods)


def test_last_cycle_forecasts_every_window_of_a_mixed_batch_exactly() -> None:
    steps, horizon = 256, 90
    periods = [12, 40, 64, 100]
    signal = _periodic_batch(periods, steps + horizon, seed=3)
    x, y = signal[:, :steps, None], signal[:, steps:, None]

    y_hat = last_cycle(x, horizon, 0, fs=100.0, min_period_s=0.05, max_period_s=2.0)

    np.testing.assert_allclose(y_hat, y, atol=1e-12)


def test_last_cycle_falls_back_to_persistence_on_noise_and_flat_lines() -> None:
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(size=256), np.full(256, 5.0)])[:, :, None]

    y_hat = last_cycle(x, 10, 0, fs=100.0, min_period_s=0.05, max_period_s=1.0)

    np.testing.assert_array_equal(y_hat, persistence(x, 10, 0))


def test_last_cycle_rejects_a_window_too_short_for_two_cycles() -> None:
    with pytest.raises(ValueError, match="input_steps=100 is too short for min_period_s=1.0"):
        last_cycle(np.zeros((1, 100, 1)), 5, 0, fs=100.0, min_period_s=1.0, max_period_s=2.0)


def _ar2_windows(n_windows: int, steps: int, horizon: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    total = n_windows * (steps + horizon) + 500
    series = np.zeros(total)
    noise = rng.normal(scale=0.5, size=total)
    for t in range(2, total):  # a damped oscillation: AR(2) with complex roots
        series[t] = 1.6 * series[t - 1] - 0.8 * series[t - 2] + noise[t]
    series = series[500:] + 80.0
    span = steps + horizon
    windows = np.stack([series[i * span : (i + 1) * span] for i in range(n_windows)])
    return windows[:, :steps, None], windows[:, steps:, None]


def test_ridge_ar_on_an_ar2_process_beats_persistence() -> None:
    x_train, y_train = _ar2_windows(400, 32, 8, seed=0)
    x_test, y_test = _ar2_windows(200, 32, 8, seed=1)

    model = fit_ridge_ar(x_train, y_train, target_idx=0, n_lags=8, alpha=1.0)
    y_hat = model.predict(x_test)

    assert y_hat.shape == y_test.shape
    assert mae(y_test, y_hat) < 0.8 * mae(y_test, persistence(x_test, 8, 0))


def test_make_baseline_forecasts_names_every_applicable_baseline() -> None:
    x, y = _ar2_windows(50, 64, 4, seed=2)
    ridge = fit_ridge_ar(x, y, 0, n_lags=4)

    forecasts = make_baseline_forecasts(
        x, 4, 0, fs=10.0, min_period_s=0.3, max_period_s=3.0, ridge=ridge
    )

    assert sorted(forecasts) == ["last_cycle", "persistence", "ridge_ar"]
    assert all(f.shape == y.shape for f in forecasts.values())


# cycle_median: the cycle head of models.cycle with nothing learned.

def _beats(n: int, rr: float, hrv: float, amp: float, level: float, noise: float,
           seed: int) -> np.ndarray:
    """An ECG-like series: narrow spikes and a broad wave at jittered beat times, wander, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    beats = np.cumsum(rng.normal(rr, hrv, size=int(n / rr) + 4)) - rr
    spikes = sum(amp * np.exp(-0.5 * ((t - b) / 3.0) ** 2)
                 - 0.3 * amp * np.exp(-0.5 * ((t - b - 25) / 10.0) ** 2) for b in beats)
    return level + spikes + 0.05 * amp * np.sin(2 * np.pi * t / 500) + rng.normal(0, noise, n)


def test_cycle_median_equals_the_keras_cycle_head_without_its_residual() -> None:
    pytest.importorskip("keras")
    from models.architectures import build_model
    from models.spec import ModelSpec
    from pipelines.evaluation.baselines import CycleSteps, cycle_median

    steps, horizon = 1000, 125  # the ecg recipe's window and head, at 125 Hz
    x = np.stack([_beats(steps, rr, hrv, amp, level, noise, seed) for seed, (rr, hrv, amp, level,
                  noise) in enumerate([(100, 2, 1.0, 0.0, 0.01), (60, 1, 2.0, 5.0, 0.02),
                                       (137.3, 3, 0.5, -1.0, 0.01), (45, 0.5, 1.0, 80.0, 0.05),
                                       (180, 5, 30.0, 90.0, 0.5), (75.5, 0, 1.0, 0.0, 0.001)])])
    x = x[:, :, None].astype(np.float32)
    spec = ModelSpec(arch="lstm", units=(4,), input_steps=steps, horizon=horizon,
                     head="cycle_residual", min_period_steps=37, max_period_steps=188,
                     cycle_candidates=8, encoder_pool=4, period_search_steps=400,
                     cycle_align="lag", match_steps=60, level_decay_steps=30,
                     cycle_mix="median", residual=False)
    keras_head = build_model(spec).predict(x, verbose=0)["forecast"]

    ours = cycle_median(x, horizon, 0, CycleSteps(min_lag=37, max_lag=188, search_steps=400,
                                                  match_steps=60, n_copies=8, level_decay=30.0))

    # float32 (Keras) against float64 (numpy): the same discrete choices, rounding apart
    scale = x.std(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(ours / scale, keras_head / scale, atol=2e-4)


def test_cycle_median_continues_a_periodic_signal_closely() -> None:
    from pipelines.evaluation.baselines import CycleSteps, cycle_median

    steps, horizon = 400, 60
    signal = _periodic_batch([25, 40], steps + horizon, seed=4)
    x, y = signal[:, :steps, None], signal[:, steps:, None]

    y_hat = cycle_median(x, horizon, 0, CycleSteps(10, 100, 150, 30, n_copies=5,
                                                   level_decay=20.0))

    # Not exact: each lag is refined between samples by a parabola through the correlations,
    # which a finite window makes slightly lopsided even for a whole-sample period.
    assert mae(y, y_hat) < 0.02 * mae(y, persistence(x, horizon, 0))


def test_cycle_median_of_a_flat_window_is_its_level() -> None:
    from pipelines.evaluation.baselines import CycleSteps, cycle_median

    x = np.full((2, 300, 2), 7.5)
    x[1, :, 1] = -2.0

    y_hat = cycle_median(x, 20, [1, 0], CycleSteps(10, 100, 100, 30))

    np.testing.assert_array_equal(y_hat[0], np.full((20, 2), 7.5))
    np.testing.assert_array_equal(y_hat[1], np.tile([-2.0, 7.5], (20, 1)))


def test_cycle_median_shrugs_off_one_odd_beat_that_last_cycle_copies() -> None:
    from pipelines.evaluation.baselines import CycleSteps, cycle_median

    steps, horizon, period = 400, 40, 40
    signal = _periodic_batch([period], steps + horizon, seed=5)[0]
    x = signal[None, :steps, None].copy()
    x[0, steps - period : steps - period + 10, 0] += 3.0  # an ectopic bump in the last cycle

    median = cycle_median(x, horizon, 0, CycleSteps(10, 100, 150, 30, n_copies=5))
    naive = last_cycle(x, horizon, 0, fs=100.0, min_period_s=0.1, max_period_s=1.0)

    truth = signal[None, steps:, None]
    assert mae(truth, median) < 0.1 * mae(truth, naive)


def test_cycle_steps_fit_the_window_and_refuse_one_without_two_cycles() -> None:
    from pipelines.evaluation.baselines import cycle_steps

    ecg = cycle_steps(125.0, 1000, 0.3, 2.0, 3.2, 0.48, 8, 0.24)
    assert (ecg.min_lag, ecg.max_lag, ecg.search_steps, ecg.match_steps) == (37, 250, 400, 60)
    assert (ecg.n_copies, ecg.level_decay) == (8, pytest.approx(30.0))
    short = cycle_steps(125.0, 128, 0.3, 2.0, 3.2, 0.48, 8, 0.24)  # two cycles of <= 63 samples
    assert (short.max_lag, short.search_steps, short.match_steps) == (63, 64, 60)
    with pytest.raises(ValueError, match=r"input_steps=60 is too short for cycle_median: a cycle "
                                         r"of min_period_s=0.3 at fs=125.0 needs at least 75"):
        cycle_steps(125.0, 60, 0.3, 2.0, 3.2, 0.48, 8, 0.24)


def test_make_baseline_forecasts_adds_cycle_median_when_asked() -> None:
    from pipelines.evaluation.baselines import CycleSteps

    x, y = _ar2_windows(20, 256, 4, seed=3)

    forecasts = make_baseline_forecasts(x, 4, 0, cycle=CycleSteps(10, 100, 100, 30))

    assert sorted(forecasts) == ["cycle_median", "persistence"]
    assert forecasts["cycle_median"].shape == y.shape
