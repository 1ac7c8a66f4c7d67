"""In-graph cycle layers: period search, cycle-aligned candidates, per-window scaling, the head."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models.architectures import build_model  # noqa: E402
from models.cycle import (  # noqa: E402
    CycleCandidates,
    CycleMedian,
    CycleMix,
    period_search_indices,
)
from models.normalization import NormStats  # noqa: E402
from models.params import check  # noqa: E402
from models.spec import ModelSpec, SpecError, model_spec_from_config  # noqa: E402
from models.window_scale import WindowScale, WindowUnscale  # noqa: E402
from pipelines.evaluation.baselines import estimate_periods  # noqa: E402


def _wave(n: int, period: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) + phase
    return np.sin(2 * np.pi * t / period) + 0.5 * np.sin(4 * np.pi * t / period + 1.0)


def _spec(**kwargs) -> ModelSpec:
    base = dict(arch="lstm", units=(4,), input_steps=400, horizon=50, head="cycle_residual",
                min_period_steps=20, max_period_steps=120, cycle_candidates=3, encoder_pool=4)
    return ModelSpec(**{**base, **kwargs})


def test_the_gather_matrix_holds_every_lagged_copy_of_the_last_segment() -> None:
    idx = period_search_indices(input_steps=10, min_lag=3, max_lag=4, steps=4)
    # lags 2..5: segment of 4 samples ending `lag` before the end
    assert idx.tolist() == [[4, 5, 6, 7], [3, 4, 5, 6], [2, 3, 4, 5], [1, 2, 3, 4]]


def test_a_window_too_short_for_the_period_search_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="input_steps=10 is too short"):
        period_search_indices(input_steps=10, min_lag=3, max_lag=6, steps=5)


@pytest.mark.parametrize("period", (25, 37, 60, 97))
def test_the_in_graph_period_matches_the_numpy_baseline(period: int) -> None:
    x = np.stack([_wave(400, period, phase) for phase in (0.0, 7.0, 13.0)])  # (B, T)
    layer = CycleCandidates(horizon=5, min_lag=20, max_lag=120, steps=120)
    layer.build((None, 400, 1))
    got = np.asarray(layer.periods(x[..., None].astype("float32")))[:, 0]
    want = estimate_periods(x, 20, 120)
    assert got.tolist() == [period] * 3
    assert want.tolist() == [period] * 3


def test_candidates_copy_the_last_cycles_forward() -> None:
    period, steps, horizon = 40, 300, 90
    series = _wave(steps + horizon, period) + np.random.default_rng(0).normal(0, 1e-3, 390)
    x = series[None, :steps, None].astype("float32")
    cands = np.asarray(CycleCandidates(horizon, 20, 100, 100, n_candidates=3)(x))
    assert cands.shape == (1, horizon, 1, 3)
    h = np.arange(horizon)
    for k in (1, 2, 3):
        want = x[0, steps - k * period + h % period, 0]
        np.testing.assert_array_equal(cands[0, :, 0, k - 1], want)


def test_window_scaling_round_trips_and_uses_the_last_steps_only() -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2, 50, 2)) * [3.0, 0.5] + [10.0, -2.0]).astype("float32")
    scaled, loc, scale = (np.asarray(a) for a in WindowScale(20, target_positions=(1,))(x))
    tail = x[:, -20:, :]
    np.testing.assert_allclose(loc[:, 0, 0], tail[:, :, 1].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(scale[:, 0, 0], tail[:, :, 1].std(axis=1), rtol=1e-4)
    back = np.asarray(WindowUnscale()([scaled[..., 1:], loc, scale]))
    np.testing.assert_allclose(back, x[..., 1:], rtol=1e-5, atol=1e-5)


def test_the_mix_starts_as_the_mean_of_the_candidates() -> None:
    cands = np.random.default_rng(2).normal(size=(3, 5, 1, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(CycleMix()(cands)), cands.mean(axis=-1), atol=1e-6)


def test_an_untrained_cycle_model_forecasts_a_periodic_signal_in_raw_units() -> None:
    model = build_model(_spec())
    series = 80.0 + 20.0 * _wave(450, 50)  # e.g. mmHg around 80
    out = np.asarray(model(series[None, :400, None].astype("float32"))["forecast"])
    np.testing.assert_allclose(out[0, :, 0], series[400:], atol=1e-3)


def test_the_cycle_head_is_shift_and_scale_equivariant() -> None:
    model = build_model(_spec())
    rng = np.random.default_rng(3)
    for w in model.trainable_weights:
        w.assign(rng.normal(scale=0.1, size=w.shape).astype("float32"))
    x = (_wave(400, 45) + rng.normal(0, 0.1, 400))[None, :, None].astype("float32")
    y1 = np.asarray(model(x)["forecast"])
    y2 = np.asarray(model(3.0 * x + 7.0)["forecast"])
    np.testing.assert_allclose(y2, 3.0 * y1 + 7.0, rtol=1e-3, atol=1e-3)


def test_cycle_models_pass_the_parameter_check_with_quantiles_and_several_channels() -> None:
    spec = _spec(n_channels=3, n_targets=2, target_positions=(2, 0), quantiles=(0.1, 0.5, 0.9))
    model = build_model(spec)
    rows = {r.name: r for r in check(model)}
    assert rows["cycle_mix"].expected == 50 * 2 * 3
    assert sum(r.keras for r in rows.values()) == model.count_params()
    q = np.asarray(model(np.random.default_rng(4).normal(size=(2, 400, 3)).astype("float32"))
                   ["quantiles"])
    assert q.shape == (2, 50, 2, 3)
    assert (np.diff(q, axis=-1) >= 0).all()


def test_cycle_models_survive_a_keras_save_and_load(tmp_path) -> None:
    model = build_model(_spec())
    x = np.random.default_rng(5).normal(size=(2, 400, 1)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x)["forecast"]), np.asarray(model(x)["forecast"]),
                               atol=1e-6)


def test_a_window_shorter_than_two_longest_cycles_is_refused_with_the_numbers() -> None:
    with pytest.raises(SpecError, match=r"input_steps=200 must be >= 2 \* max_period_steps \+ 1"):
        _spec(input_steps=200)


def test_the_config_gives_the_cycle_range_in_seconds_at_the_data_rate() -> None:
    config = {"data": {"channels": ["II", "ABP"], "fs": 125},
              "window": {"input_steps": 1000, "horizon": 125, "inputs": ["II", "ABP"],
                         "targets": ["ABP"]},
              "model": {"head": "cycle_residual", "min_period_s": 0.3, "max_period_s": 1.5}}
    spec = model_spec_from_config(config)
    assert (spec.min_period_steps, spec.max_period_steps) == (37, 188)
    assert spec.target_positions == (1,)


@pytest.mark.parametrize("options", [{"period_search_steps": 250, "residual_dropout": 0.3}])
def test_a_cycle_head_with_residual_dropout_checks_saves_and_starts_as_the_mean(tmp_path,
                                                                             options) -> None:
    model = build_model(_spec(**options))
    rows = check(model)
    names = {r.name for r in rows}
    assert ("cycle_shift" in names) == ("max_shift_steps" in options)
    assert ("cycle_mix_logits" in names) == ("cycle_mix" in options)
    assert ("residual_dropout" in names) == ("residual_dropout" in options)
    series = 80.0 + 20.0 * _wave(450, 50)
    x = series[None, :400, None].astype("float32")
    out = np.asarray(model(x)["forecast"])
    np.testing.assert_allclose(out[0, :, 0], series[400:], atol=1e-3)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x)["forecast"]), out, atol=1e-5)


def test_an_unknown_cycle_mix_or_alignment_is_refused_naming_the_value() -> None:
    with pytest.raises(SpecError, match="cycle_mix must be one of static, median, got 'soft'"):
        _spec(cycle_mix="soft")
    with pytest.raises(SpecError, match="cycle_align must be one of period, lag, got 'peak'"):
        _spec(cycle_align="peak")


def test_a_period_search_longer_than_the_window_allows_is_refused_with_the_limit() -> None:
    with pytest.raises(SpecError, match="period_search_steps must be <= input_steps - "
                                        "max_period_steps - 1 = 279, got 300"):
        _spec(period_search_steps=300)


def test_lag_aligned_candidates_read_a_non_integer_period_between_samples() -> None:
    # A period of 40.4 samples: whole-sample copies k periods back drift by 0.4 k samples,
    # the sub-sample lags found by correlation do not.
    period, steps, horizon = 40.4, 400, 60
    series = _wave(steps + horizon, period)
    x, y = series[None, :steps, None].astype("float32"), series[steps:]
    err = {}
    for align in ("period", "lag"):
        c = np.asarray(CycleCandidates(horizon, 20, 100, 100, n_candidates=4, align=align,
                                       match_steps=30)(x))
        err[align] = np.abs(c[0, :, 0, :] - y[:, None]).mean()
    assert err["lag"] < 0.5 * err["period"]
    assert err["lag"] < 0.02


def test_lag_aligned_candidates_equal_period_ones_on_a_whole_sample_period() -> None:
    # (to the parabola's sub-sample rounding: a hundredth of the wave's amplitude)
    periodic = _wave(300, 40)[None, :, None].astype("float32")
    np.testing.assert_allclose(
        np.asarray(CycleCandidates(60, 20, 100, 100, n_candidates=3, align="lag")(periodic)),
        np.asarray(CycleCandidates(60, 20, 100, 100, n_candidates=3)(periodic)), atol=1e-2)


def test_the_level_correction_closes_the_gap_at_the_origin_and_fades() -> None:
    # The last 10 samples sit 1.0 higher than the cycle they repeat (a baseline step): the
    # corrected copy starts 1.0 higher and fades back towards the plain copy.
    series = _wave(300, 40)
    series[-10:] += 1.0
    x = series[None, :, None].astype("float32")
    plain = np.asarray(CycleCandidates(80, 20, 100, 100, n_candidates=1)(x))[0, :, 0, 0]
    moved = np.asarray(CycleCandidates(80, 20, 100, 100, n_candidates=1,
                                       level_decay=10.0)(x))[0, :, 0, 0]
    np.testing.assert_allclose(moved - plain, np.exp(-np.arange(80) / 10.0), atol=1e-4)
    periodic = _wave(300, 40)[None, :, None].astype("float32")
    np.testing.assert_allclose(  # no gap, no change
        np.asarray(CycleCandidates(80, 20, 100, 100, level_decay=10.0)(periodic)),
        np.asarray(CycleCandidates(80, 20, 100, 100)(periodic)), atol=1e-5)


def test_the_median_mix_takes_the_middle_candidate_and_ignores_one_odd_beat() -> None:
    cands = np.zeros((1, 2, 1, 5), dtype="float32")
    cands[..., :] = [1.0, 2.0, 3.0, 4.0, 100.0]
    np.testing.assert_allclose(np.asarray(CycleMedian()(cands)), [[[3.0], [3.0]]])
    np.testing.assert_allclose(np.asarray(CycleMedian()(cands[..., :4])), [[[2.5], [2.5]]])


def test_a_lag_aligned_median_head_checks_saves_and_starts_as_the_cycle(tmp_path) -> None:
    model = build_model(_spec(cycle_align="lag", match_steps=30, cycle_mix="median",
                              level_decay_steps=10))
    rows = {r.name: r for r in check(model)}
    assert rows["cycle_mix"].expected == 0
    series = 80.0 + 20.0 * _wave(450, 50)
    x = series[None, :400, None].astype("float32")
    out = np.asarray(model(x)["forecast"])
    np.testing.assert_allclose(out[0, :, 0], series[400:], atol=0.2)  # 1% of the amplitude
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)["forecast"]), out, atol=1e-5)


def test_a_lag_match_longer_than_the_window_allows_is_refused_with_the_limit() -> None:
    with pytest.raises(SpecError, match=r"match_steps must be in \[2, input_steps - "
                                        r"max_period_steps - 1 = 279\], got 300"):
        _spec(cycle_align="lag", match_steps=300)
    with pytest.raises(SpecError, match="level_decay_steps must be an integer >= 0, got -1"):
        _spec(level_decay_steps=-1)


def test_a_head_without_residual_is_the_mix_of_the_candidates_alone() -> None:
    model = build_model(_spec(cycle_align="lag", match_steps=30, cycle_mix="static",
                              residual=False))
    names = {r.name for r in check(model)}
    assert "residual_head" not in names
    series = 80.0 + 20.0 * _wave(450, 50)
    out = np.asarray(model(series[None, :400, None].astype("float32"))["forecast"])
    np.testing.assert_allclose(out[0, :, 0], series[400:], atol=0.2)
    flat = np.full((1, 400, 1), -17.6, dtype="float32")  # a transducer off: stays flat, exactly
    np.testing.assert_allclose(np.asarray(model(flat)["forecast"]), -17.6, atol=1e-4)
    plain = build_model(_spec(cycle_align="lag", match_steps=30, cycle_mix="median",
                              residual=False))
    assert not plain.trainable_weights  # the lag-aligned median alone: nothing to learn
    with pytest.raises(SpecError, match="residual must be true or false, got 'no'"):
        _spec(residual="no")


def test_the_cycle_head_returns_a_copied_sample_unchanged_whatever_the_target_stats() -> None:
    # Input and target statistics differ a little in practice (other windows); the cycle head
    # copies input samples, so a periodic wave far from the mean must come back unchanged.
    stats = NormStats(input_mean=(90.0,), input_std=(20.0,), target_mean=(95.0,),
                      target_std=(25.0,))
    model = build_model(_spec(cycle_mix="median", residual=False), stats)
    series = -20.0 + 10.0 * _wave(450, 50)
    out = np.asarray(model(series[None, :400, None].astype("float32"))["forecast"])
    np.testing.assert_allclose(out[0, :, 0], series[400:], atol=1e-3)
