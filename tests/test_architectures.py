"""Builders: shapes, names, in-graph normalization, ordered quantiles, losses, serialization."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models.architectures import build_model, compile_losses  # noqa: E402
from models.losses import PinballLoss, pinball_loss  # noqa: E402
from models.normalization import (  # noqa: E402
    NormStats,
    Standardize,
    fit_norm_stats,
)
from models.output_layers import OrderedQuantiles  # noqa: E402
from models.spec import ARCHS, ModelSpec, SpecError, model_spec_from_config  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _x(batch: int, steps: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, steps, channels)).astype(np.float32)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_builder_maps_windows_to_forecasts_of_the_right_shape(arch: str) -> None:
    spec = ModelSpec(arch=arch, units=(6, 3), input_steps=9, horizon=4, n_channels=3, n_targets=2)
    model = build_model(spec)
    out = model(_x(5, 9, 3))
    assert set(out) == {"forecast"}
    assert tuple(out["forecast"].shape) == (5, 4, 2)
    assert model.inputs[0].name == "signal"
    assert model.output_names == ["forecast"]


@pytest.mark.parametrize("arch", ARCHS)
def test_probabilistic_recipes_add_ordered_quantiles(arch: str) -> None:
    spec = ModelSpec(arch=arch, units=(5,), input_steps=7, horizon=3, n_channels=2, n_targets=2,
                     quantiles=(0.05, 0.5, 0.95))
    model = build_model(spec)
    # Large random weights: ordering must hold by construction, not by luck of the init.
    rng = np.random.default_rng(1)
    for w in model.trainable_weights:  # the statistics (std > 0) stay as fitted
        w.assign(rng.normal(scale=3.0, size=w.shape).astype("float32"))
    out = model(_x(16, 7, 2, seed=2) * 10)
    q = np.asarray(out["quantiles"])
    assert q.shape == (16, 3, 2, 3)
    assert (np.diff(q, axis=-1) >= 0).all()
    assert sorted(model.output_names) == ["forecast", "quantiles"]


def test_ordered_quantiles_are_a_base_plus_cumulative_softplus() -> None:
    scores = np.array([[0.0, -50.0, 2.0]], dtype=np.float32)
    q = np.asarray(OrderedQuantiles()(scores))
    sp = np.log1p(np.exp([-50.0, 2.0]))
    np.testing.assert_allclose(q, [[0.0, sp[0], sp[0] + sp[1]]], rtol=1e-5, atol=1e-6)


def test_standardize_then_invert_returns_the_raw_signal() -> None:
    stats = NormStats((100.0, -2.0), (15.0, 0.5), (100.0, -2.0), (15.0, 0.5))
    raw = _x(4, 6, 2) * [15.0, 0.5] + [100.0, -2.0]
    z = Standardize(stats.input_mean, stats.input_std)(raw)
    np.testing.assert_allclose(np.asarray(z).mean(axis=(0, 1)), (raw.mean((0, 1)) - [100, -2])
                               / [15.0, 0.5], rtol=1e-4, atol=1e-5)
    back = Standardize(stats.target_mean, stats.target_std, invert=True)(z)
    np.testing.assert_allclose(np.asarray(back), raw, rtol=1e-5, atol=1e-4)


def test_a_model_takes_and_returns_physical_units() -> None:
    # Zero the head: the standardized forecast is 0, so the physical forecast is the target mean.
    x = _x(64, 8, 2) * [20.0, 3.0] + [80.0, 5.0]  # e.g. mmHg and mV
    y = _x(64, 4, 1, seed=3) * 20.0 + 80.0
    stats = fit_norm_stats(x, y)
    model = build_model(ModelSpec(units=(4,), input_steps=8, horizon=4, n_channels=2), stats)
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    np.testing.assert_allclose(np.asarray(model(x)["forecast"]), stats.target_mean[0], rtol=1e-5)
    # The first layer sees unit-scale inputs.
    z = keras.Model(model.input, model.get_layer("normalize").output)(x)
    np.testing.assert_allclose(np.asarray(z).std(axis=(0, 1)), [1.0, 1.0], rtol=1e-3)


def test_norm_stats_are_nan_aware_and_floor_a_flat_channel() -> None:
    x = np.ones((3, 5, 2), dtype=np.float32)
    x[..., 1] = np.arange(15, dtype=np.float32).reshape(3, 5)
    x[0, 0, 1] = np.nan
    stats = fit_norm_stats(x, x[:, :2, :1])
    assert stats.input_mean[0] == 1.0 and stats.input_std[0] == 1.0  # flat: centred only
    assert stats.input_mean[1] == pytest.approx(np.arange(1, 15).mean())
    with pytest.raises(ValueError, match=r"y has a channel with no finite value \(column 0\)"):
        fit_norm_stats(x, np.full((3, 2, 1), np.nan))


def test_norm_stats_must_match_the_spec() -> None:
    with pytest.raises(ValueError, match="norm has 1 input channels, spec has 2"):
        build_model(ModelSpec(units=(2,), input_steps=3, horizon=1, n_channels=2),
                    NormStats.identity(1, 1))


def test_pinball_loss_weights_under_and_over_forecasts_by_the_level() -> None:
    y = np.zeros((1, 1, 1), dtype=np.float32)
    pred = np.array([[[[-1.0, 1.0]]]], dtype=np.float32)  # level 0.1 under by 1, 0.9 over by 1
    # e = y - pred: +1 for level 0.1 -> 0.1; -1 for level 0.9 -> (0.9 - 1) * -1 = 0.1
    assert float(pinball_loss(y, pred, (0.1, 0.9))) == pytest.approx(0.1)
    median = float(pinball_loss(y, np.full((1, 1, 1, 1), 2.0, np.float32), (0.5,)))
    assert median == pytest.approx(1.0)  # half the absolute error
    loss = PinballLoss((0.1, 0.9))
    assert float(loss(y, pred)) == pytest.approx(0.1)
    assert PinballLoss.from_config(loss.get_config()).quantiles == (0.1, 0.9)


def test_forget_gate_starts_open_and_irnn_starts_as_identity() -> None:
    lstm = build_model(ModelSpec(units=(4,), input_steps=3, horizon=1)).get_layer("lstm_1")
    bias = lstm.get_weights()[2]
    np.testing.assert_array_equal(bias[4:8], 1.0)
    irnn = build_model(ModelSpec(arch="irnn", units=(4,), input_steps=3, horizon=1))
    cfg = irnn.get_layer("irnn_1").get_config()
    assert cfg["activation"] == "relu"
    np.testing.assert_array_equal(irnn.get_layer("irnn_1").get_weights()[1], np.eye(4))


def test_spec_errors_name_the_bad_value() -> None:
    cases = [
        (dict(arch="transformer"), "arch must be one of lstm, gru, simplernn, irnn, seq2seq, "
                                   "direct, got 'transformer'"),
        (dict(units=()), "units must name at least one layer width, got ()"),
        (dict(units=(32, 0)), "units must be integers >= 1, got (32, 0)"),
        (dict(horizon=0), "horizon must be an integer >= 1, got 0"),
        (dict(dropout=1.0), "dropout must be in [0, 1), got 1.0"),
        (dict(quantiles=(0.9, 0.1)), "quantiles must be strictly increasing, got (0.9, 0.1)"),
        (dict(quantiles=(0.0,)), "quantiles must lie in (0, 1), got 0.0"),
        (dict(arch="seq2seq", bidirectional=True),
         "bidirectional applies to stacked recurrent archs, not 'seq2seq'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SpecError) as err:
            ModelSpec(**kwargs)
        assert str(err.value) == message


def test_the_hypotension_config_loads_into_an_anchored_spec_with_the_ahe_output() -> None:
    config = tomllib.loads((REPO_ROOT / "configs" / "hypotension.toml").read_text())
    spec = model_spec_from_config(config)
    assert spec == ModelSpec(arch="lstm", units=(32,), input_steps=120, horizon=60,
                             n_channels=1, n_targets=1, dropout=0.0, quantiles=(0.1, 0.5, 0.9),
                             anchor="last", target_positions=(0,), events=("ahe",))
    model = build_model(spec)
    assert sorted(model.output_names) == ["ahe_probability", "forecast", "quantiles"]
    assert tuple(model.get_layer("ahe_probability").output.shape) == (None, 1)


@pytest.mark.parametrize("name", ("ecg", "abp"))
def test_the_shipped_configs_load_into_cycle_mix_specs(name: str) -> None:
    config = tomllib.loads((REPO_ROOT / "configs" / f"{name}.toml").read_text())
    spec = model_spec_from_config(config)
    # Both: an LSTM mix, learned on real records, of eight lag-aligned, level-matched copies plus
    # a residual; they differ in how long the copies take to meet the last sample.
    assert spec == ModelSpec(arch="lstm", units=(32,), input_steps=1000, horizon=125,
                             n_channels=1, n_targets=1, dropout=0.0, quantiles=(),
                             head="cycle_mix", bidirectional=True, cycle_candidates=8,
                             min_period_steps=37, max_period_steps=188, encoder_pool=8,
                             target_positions=(0,), period_search_steps=400, cycle_align="lag",
                             match_steps=60, level_decay_steps=30 if name == "ecg" else 100,
                             residual=True, residual_fade_steps=10)


def test_an_unknown_head_is_named() -> None:
    with pytest.raises(SpecError,
                       match="head must be one of direct, cycle_residual, cycle_mix, got 'x'"):
        ModelSpec(head="x")


def test_the_cycle_head_refuses_seq2seq() -> None:
    with pytest.raises(SpecError, match="needs a single-state core, not 'seq2seq'"):
        ModelSpec(arch="seq2seq", head="cycle_residual", input_steps=400)


def test_an_unknown_model_key_is_named() -> None:
    config = {"window": {"input_steps": 5, "horizon": 1, "inputs": ["II"]},
              "model": {"arch": "lstm", "layers": 2}}
    with pytest.raises(SpecError, match=r"unknown key in \[model\]: 'layers'"):
        model_spec_from_config(config)


def test_a_probabilistic_model_trains_one_step_with_its_losses() -> None:
    spec = ModelSpec(units=(4,), input_steps=6, horizon=2, quantiles=(0.1, 0.5, 0.9))
    x, y = _x(32, 6, 1), _x(32, 2, 1, seed=1)
    model = build_model(spec, fit_norm_stats(x, y))
    model.compile(optimizer="adam", loss=compile_losses(spec))
    history = model.fit(x, {"forecast": y, "quantiles": y}, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_saved_keras_model_reloads_with_its_statistics(tmp_path: Path) -> None:
    x, y = _x(16, 6, 2) + 50.0, _x(16, 3, 1) * 4.0
    spec = ModelSpec(arch="gru", units=(4,), input_steps=6, horizon=3, n_channels=2,
                     quantiles=(0.25, 0.75))
    model = build_model(spec, fit_norm_stats(x, y))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    for key in ("forecast", "quantiles"):
        np.testing.assert_allclose(np.asarray(again(x)[key]), np.asarray(model(x)[key]),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export needs TF")
def test_an_exported_saved_model_returns_the_same_numbers(tmp_path: Path) -> None:
    import tensorflow as tf

    x, y = _x(8, 10, 1) * 0.5 + 1.0, _x(8, 4, 1) * 0.5 + 1.0
    spec = ModelSpec(units=(8,), input_steps=10, horizon=4, quantiles=(0.1, 0.9))
    model = build_model(spec, fit_norm_stats(x, y))
    model.export(str(tmp_path / "1"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    served = loaded.signatures["serving_default"](signal=tf.constant(x))
    assert set(served) == {"forecast", "quantiles"}
    for key in ("forecast", "quantiles"):
        np.testing.assert_allclose(served[key].numpy(), np.asarray(model(x)[key]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ("lstm", "gru", "direct"))
def test_an_anchored_model_starts_as_persistence_in_physical_units(arch: str) -> None:
    # Channels in different units, targets in another order than the inputs and target windows
    # with statistics of their own: each forecast starts at its own channel's last value.
    x = _x(64, 8, 3) * np.array([5.0, 1.0, 20.0], "float32") + np.array([80, 97, 70], "float32")
    y = _x(64, 4, 2, seed=1) + 75.0
    spec = ModelSpec(arch=arch, units=(6,), input_steps=8, horizon=4, n_channels=3, n_targets=2,
                     target_positions=(2, 0), anchor="last", quantiles=(0.1, 0.5, 0.9))
    model = build_model(spec, fit_norm_stats(x, y))
    out = model(x)
    last = x[:, -1:, [2, 0]]  # (B, 1, K)
    np.testing.assert_allclose(np.asarray(out["forecast"]),
                               np.broadcast_to(last, (64, 4, 2)), rtol=1e-5)
    q = np.asarray(out["quantiles"])
    assert (np.diff(q, axis=-1) >= 0).all()
    assert not np.allclose(q[..., 0], q[..., 2])  # the quantile head is not anchored to zero


def test_an_anchored_model_trains_reloads_and_counts_its_parameters(tmp_path: Path) -> None:
    from models.params import check

    x, y = _x(32, 6, 1) + 3.0, _x(32, 2, 1, seed=1) + 3.0
    spec = ModelSpec(units=(4,), input_steps=6, horizon=2, anchor="last", target_positions=(0,))
    model = build_model(spec, fit_norm_stats(x, y))
    check(model)  # AnchorLast owns no weights; every other layer matches its formula
    model.compile(optimizer="adam", loss=compile_losses(spec))
    model.fit(x, {"forecast": y}, epochs=2, batch_size=16, verbose=0)
    moved = np.asarray(model(x)["forecast"]) - x[:, -1:, :]
    assert np.abs(moved).max() > 0  # the head learned a change from the last value
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)["forecast"]),
                               np.asarray(model(x)["forecast"]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"anchor": "first"}, "anchor must be one of none, last, got 'first'"),
    ({"anchor": "last", "arch": "seq2seq"},
     "anchor 'last' applies to head 'direct' of a single-state core, not head 'direct' with "
     "arch 'seq2seq'"),
    ({"anchor": "last", "head": "cycle_residual", "input_steps": 400},
     "anchor 'last' applies to head 'direct' of a single-state core, not head "
     "'cycle_residual' with arch 'lstm'"),
])
def test_anchor_errors_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        ModelSpec(**kwargs)
    assert str(err.value) == message


def test_an_anchor_on_a_target_that_is_no_input_is_refused() -> None:
    config = {"window": {"input_steps": 5, "horizon": 1, "inputs": ["II"], "targets": ["ABP"]},
              "model": {"anchor": "last"}}
    with pytest.raises(SpecError, match=r"anchor 'last' needs every target among the inputs"):
        model_spec_from_config(config)


def test_an_anchored_model_has_no_stateful_twin() -> None:
    from models.architectures import stateful_refusal

    assert stateful_refusal(ModelSpec(anchor="last")) == (
        "anchor 'last' has no stateful twin (only anchor 'none')")
