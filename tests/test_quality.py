"""Quality flags: a clean signal has none; NaN, flat, clipped and empty channels are named."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.ingest.quality import (
    RecordRules,
    _float_at_or_above,
    _float_at_or_below,
    _still_steps,
    channel_problem,
    compute_quality,
    nan_fraction,
    record_problems,
    window_still_fraction,
)

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


def _reference_quality(signal: np.ndarray, channels: tuple[str, ...], fs: float) -> tuple[str, ...]:
    """The first, plain implementation (float64 copies, one run-length pass per mask)."""

    def run_lengths(mask: np.ndarray) -> np.ndarray:
        edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
        return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)

    flags = ["high_nan"] if np.isnan(signal).mean() > 0.5 else []
    for j, name in enumerate(channels):
        x = np.asarray(signal[:, j], dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            flags.append(f"empty:{name}")
            continue
        lo, hi = float(finite.min()), float(finite.max())
        value_range = hi - lo
        if value_range == 0.0:
            flags.append(f"flat:{name}")
            continue
        min_len = max(2, int(round(1.0 * fs)))
        if len(finite) >= min_len:
            lengths = run_lengths(np.abs(np.diff(finite)) <= 1e-3 * value_range) + 1
            if lengths[lengths >= min_len].sum() / len(finite) > 0.5:
                flags.append(f"flat:{name}")
        tol = 1e-3 * value_range
        top, bottom = run_lengths(finite >= hi - tol), run_lengths(finite <= lo + tol)
        at_top, at_bottom = top[top >= 3].sum(), bottom[bottom >= 3].sum()
        if max(at_top, at_bottom) / finite.size > 0.01:
            flags.append(f"clipped:{name}")
    return tuple(flags)


def _messy_channel(rng: np.random.Generator, n: int) -> np.ndarray:
    """A channel with some of: ADC quantisation, flat stretches, clipping, NaN runs, empty."""
    kind = rng.integers(5)
    if kind == 0:  # ADC counts over a gain: steps land exactly on the flat tolerance
        x = rng.integers(-500, 501, size=n).cumsum() % 1001 / rng.choice([200.0, 3.3, 0.7])
    elif kind == 1:
        x = rng.normal(size=n).cumsum() * 10.0 ** rng.integers(-6, 6)
    else:
        x = np.sin(np.arange(n) * rng.uniform(0.01, 0.5)) + rng.normal(scale=1e-4, size=n)
    x = x + rng.uniform(-1e3, 1e3)
    for _ in range(rng.integers(0, 4)):  # flat stretches, exact or within tolerance
        a = int(rng.integers(n))
        b = a + int(rng.integers(1, n // 2))
        x[a:b] = x[a] + rng.choice([0.0, 1e-7, 1e-4]) * rng.normal(size=len(x[a:b]))
    if rng.random() < 0.4:
        lo, hi = np.quantile(x, [rng.uniform(0, 0.05), rng.uniform(0.95, 1.0)])
        x = np.clip(x, lo, hi)
    for _ in range(rng.integers(0, 4)):
        a = int(rng.integers(n))
        x[a : a + int(rng.integers(1, n))] = np.nan
    if rng.random() < 0.05:
        x[:] = rng.choice([np.nan, 3.0])
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flags_match_the_plain_reference_on_messy_random_signals(dtype: type) -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        n, fs = int(rng.integers(2, 3000)), float(rng.choice([1.0, 10.0, 25.0, 125.0]))
        channels = tuple(f"c{j}" for j in range(int(rng.integers(1, 4))))
        signal = np.stack([_messy_channel(rng, n) for _ in channels], axis=1).astype(dtype)
        assert compute_quality(signal, channels, fs) == _reference_quality(signal, channels, fs)
        assert nan_fraction(signal) == pytest.approx(np.isnan(signal).mean(), abs=1e-12)


def test_float32_steps_and_thresholds_are_judged_exactly_as_in_float64() -> None:
    # ADC counts over a gain: many steps land on flat_tol x range and many samples on the clip
    # thresholds, where a float32 comparison with a rounded threshold would decide differently.
    rng = np.random.default_rng(11)
    counts = np.concatenate([np.arange(400), np.arange(400, 0, -1), [1000], np.arange(50)])
    for _ in range(300):
        x = (rng.uniform(-1e4, 1e4) + rng.uniform(1e-3, 10.0) * counts).astype(np.float32)
        x64 = x.astype(np.float64)
        limit = 1e-3 * (x64.max() - x64.min())
        np.testing.assert_array_equal(_still_steps(x, limit), np.abs(np.diff(x64)) <= limit)
        for value in rng.choice(x64, 5) + limit * rng.choice([-1.0, 0.0, 1.0], 5):
            assert ((x >= _float_at_or_above(value, x.dtype)) == (x64 >= value)).all()
            assert ((x <= _float_at_or_below(value, x.dtype)) == (x64 <= value)).all()


def _square_wave(n: int, held: int = 4) -> np.ndarray:
    """A transducer's calibration signal: two levels, each held `held` samples."""
    return np.where((np.arange(n) // held) % 2 == 0, -24.0, -72.0)


def test_moving_waveforms_are_almost_never_still_and_flat_or_stepped_ones_mostly_are() -> None:
    t = np.arange(1125) / 125.0
    sine = np.sin(2 * np.pi * 1.2 * t)
    windows = np.stack([sine, np.full_like(t, 80.0), _square_wave(len(t))])[..., None]
    frac = window_still_fraction(windows.astype(np.float32))
    assert frac[0] < 0.05
    assert frac[1] == 1.0  # constant over the window
    assert frac[2] == pytest.approx(3 / 4, abs=0.01)  # 3 of every 4 steps hold the level


def test_the_stillest_channel_decides_and_a_step_into_a_gap_is_not_still() -> None:
    t = np.arange(200) / 125.0
    both = np.stack([np.sin(2 * np.pi * t), _square_wave(200)], axis=-1)[None]  # (1, 200, 2)
    assert window_still_fraction(both)[0] == pytest.approx(window_still_fraction(both[..., 1:])[0])
    gappy = np.array([[[1.0], [1.0], [np.nan], [1.0], [2.0]]])
    assert window_still_fraction(gappy)[0] == pytest.approx(1 / 4)  # only 1.0 -> 1.0 holds


def test_window_still_fraction_names_a_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"\(n, time, channels\), got shape \(5, 3\)"):
        window_still_fraction(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="got 1"):
        window_still_fraction(np.zeros((5, 1, 2)))


# --- bad input for a whole record: absent, flat, stuck or clipped channels (ingest skips) ---

RNG = np.random.default_rng(7)
MINUTES = np.arange(int(300 * FS)) / FS  # a five-minute record, as in Challenge 2015


def _abp(t: np.ndarray = MINUTES) -> np.ndarray:
    return 90 + 20 * np.sin(2 * np.pi * 1.2 * t) + 5 * np.sin(2 * np.pi * 2.4 * t)


def _ecg(t: np.ndarray = MINUTES) -> np.ndarray:
    return 0.1 * np.sin(2 * np.pi * 1.2 * t) + 0.8 * np.sin(2 * np.pi * 1.2 * t) ** 31


def test_physiological_channels_are_usable() -> None:
    assert channel_problem(_abp(), "ABP", "mmHg") is None
    assert channel_problem(_ecg(), "II", "mV") is None
    low = 0.5 + 0.03 * np.sin(2 * np.pi * 1.2 * MINUTES) + 0.001 * RNG.standard_normal(len(MINUTES))
    assert channel_problem(low, "PLETH", "NU") is None  # no floor for its unit: only constant


def test_a_channel_with_no_value_is_absent_for_the_whole_record() -> None:
    assert channel_problem(np.full(1000, np.nan), "ABP", "mmHg") == (
        "ABP is absent for the whole record (no valid sample)")


def test_a_constant_channel_is_flat_whatever_its_unit() -> None:
    assert channel_problem(np.zeros(1000), "ABP", "mmHg") == (
        "ABP is flat for the whole record (std 0 mmHg, at most 0.5)")
    assert channel_problem(np.full(1000, 4224.0), "RESP", "NU") == (
        "RESP is flat for the whole record (std 0 NU)")
    # float noise of a constant after resampling is still flat
    assert "is flat" in channel_problem(np.full(1000, 184.2) + 1e-13 * RNG.random(1000), "ABP",
                                        "mmHg")


def test_a_disconnected_transducer_reading_noise_is_flat_by_its_units_floor() -> None:
    # Challenge 2015 f346s: an arterial line open to air, std 0.024 mmHg over 0.5 mmHg of noise
    noise = -14.8 + 0.1 * RNG.standard_normal(len(MINUTES))
    reason = channel_problem(noise, "ABP", "mmHg")
    assert reason is not None and reason.startswith("ABP is flat for the whole record (std 0.1")
    assert reason.endswith(" mmHg, at most 0.5)")
    assert channel_problem(0.005 * RNG.standard_normal(5000), "II", "mV").startswith("II is flat")
    # the floor is per unit, case-insensitively, and configurable
    assert channel_problem(noise, "ABP", "MMHG") is not None
    assert channel_problem(noise, "ABP", "mmHg", RecordRules(min_std=(("mmHg", 0.05),))) is None


def test_a_lead_off_for_most_of_the_record_holds_one_value() -> None:
    # Challenge 2015 f530s: lead II at 0 mV for 96% of the record, a few seconds of ECG
    ecg = _ecg()
    ecg[: int(0.96 * len(ecg))] = 0.0
    assert channel_problem(ecg, "II", "mV") == "II holds one value (0 mV) for 96% of the record"


def test_a_channel_pinned_at_an_adc_limit_is_clipped_there() -> None:
    abp = _abp()
    abp[int(0.05 * len(abp)):] = abp.max() + 50  # saturated high after 15 s
    assert channel_problem(abp, "ABP", "mmHg") == (
        f"ABP is clipped at its maximum ({abp.max():.3g} mmHg) for 95% of the record")
    abp = _abp()
    abp[: int(0.92 * len(abp))] = -50.0
    assert channel_problem(abp, "ABP", "mmHg") == (
        "ABP is clipped at its minimum (-50 mmHg) for 92% of the record")


def test_a_signal_saturating_at_both_rails_is_clipped_at_its_limits() -> None:
    square = np.where(np.sin(2 * np.pi * 0.5 * MINUTES) > 0, 5.0, -5.0)
    square[: int(0.05 * len(square))] = _ecg()[: int(0.05 * len(square))]
    assert channel_problem(square, "II", "mV") == (
        "II is clipped at its limits (-5 and 5 mV) for 94.9% of the record")


def test_a_channel_stuck_or_clipped_for_part_of_the_record_is_kept() -> None:
    # Challenge 2015 b286s: ABP pinned at 184 mmHg for 45% of the record, real pulses elsewhere;
    # windows of the still part are left out later (`window_still_fraction`), not the record
    abp = _abp()
    abp[: int(0.45 * len(abp))] = 184.3
    assert channel_problem(abp, "ABP", "mmHg") is None
    assert channel_problem(abp, "ABP", "mmHg", RecordRules(max_stuck_fraction=0.4)) is not None


def test_gaps_do_not_count_against_a_channel() -> None:
    abp = _abp()
    abp[: len(abp) // 2] = np.nan
    assert channel_problem(abp, "ABP", "mmHg") is None


def test_every_unusable_channel_of_a_record_is_named() -> None:
    signal = np.stack([_ecg(), np.zeros(len(MINUTES)), np.full(len(MINUTES), np.nan)], axis=1)
    assert record_problems(signal, ("II", "ABP", "PLETH"), ("mV", "mmHg", "NU")) == (
        "ABP is flat for the whole record (std 0 mmHg, at most 0.5)",
        "PLETH is absent for the whole record (no valid sample)",
    )
    with pytest.raises(ValueError, match=r"does not match 2 channels"):
        record_problems(signal, ("II", "ABP"), ("mV", "mmHg"))
