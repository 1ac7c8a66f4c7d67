"""The `cycle_mix` head: shapes, its start at the cycle median, parameter formulas, knobs and
export."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models import params  # noqa: E402
from models.architectures import build_model  # noqa: E402
from models.cycle_mix import MEDIAN_LOGIT, ResidualFade  # noqa: E402
from models.normalization import fit_norm_stats  # noqa: E402
from models.params import check  # noqa: E402
from models.spec import ModelSpec, SpecError, model_spec_from_config  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _spec(**kwargs) -> ModelSpec:
    base = dict(arch="lstm", units=(4,), input_steps=400, horizon=50, head="cycle_mix",
                min_period_steps=20, max_period_steps=120, cycle_candidates=3, encoder_pool=4,
                cycle_align="lag", match_steps=30, level_decay_steps=10, bidirectional=True)
    return ModelSpec(**{**base, **kwargs})


def _pulses(n: int, steps: int, channels: int = 1, level: float = 90.0, gain: float = 20.0,
            seed: int = 0) -> np.ndarray:
    """Beat-like periodic windows `(n, steps, channels)` in "physical" units (mmHg-like)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[None, :] + rng.uniform(0, 100, (n, 1))
    period = rng.uniform(40, 90, (n, 1))
    wave = np.sin(np.pi * (t % period) / period) ** 6
    x = level + gain * wave[..., None] + rng.normal(0, 0.02 * gain, (n, steps, channels))
    return x.astype(np.float32)


def test_the_head_maps_raw_windows_to_forecasts_and_quantiles_of_the_right_shape() -> None:
    spec = _spec(n_channels=2, n_targets=2, target_positions=(1, 0), quantiles=(0.1, 0.5, 0.9))
    out = build_model(spec)(_pulses(3, 400, channels=2))
    assert tuple(out["forecast"].shape) == (3, 50, 2)
    assert tuple(out["quantiles"].shape) == (3, 50, 2, 3)
    assert (np.diff(np.asarray(out["quantiles"]), axis=-1) >= 0).all()


def test_an_untrained_model_is_the_softmax_of_the_bias_over_copies_median_and_last_value() -> None:
    spec = _spec()
    model = build_model(spec)
    x = _pulses(4, 400)
    probe = keras.Model(model.input, [model.get_layer("horizon_features").output[1],
                                      model.get_layer("mix_plus_residual").output])
    pool, centre = (np.asarray(v) for v in probe(x))  # (B, H, 1, N + 2), (B, H, 1)
    n = spec.cycle_candidates
    logits = np.array([0.0] * n + [MEDIAN_LOGIT, 0.0])
    weights = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(centre, pool @ weights, rtol=1e-5, atol=1e-5)
    # the median slot holds the median of the copies, the last slot the last observed value
    np.testing.assert_allclose(pool[..., n], np.median(pool[..., :n], axis=-1), atol=1e-6)
    assert weights[n] == pytest.approx(math.exp(3) / (math.exp(3) + n + 1))


def test_an_untrained_model_forecasts_close_to_the_cycle_median_in_raw_units() -> None:
    x = _pulses(16, 400)
    norm = fit_norm_stats(x, x[:, -50:])
    mix = build_model(_spec(), norm)(x)["forecast"]
    median = build_model(_spec(head="cycle_residual", bidirectional=False, residual=False,
                               cycle_mix="median"), norm)(x)["forecast"]
    persistence = np.repeat(x[:, -1:], 50, axis=1)
    off = np.abs(np.asarray(mix) - np.asarray(median)).mean()
    assert off < 0.1 * np.abs(persistence - np.asarray(median)).mean()


def test_the_residual_fades_in_from_zero_at_the_origin() -> None:
    fade = np.asarray(ResidualFade(10.0)(np.ones((2, 50, 1), "float32")))[0, :, 0]
    assert fade[0] == 0.0
    np.testing.assert_allclose(fade[10], 1 - math.exp(-1), rtol=1e-6)
    assert (np.diff(fade) > 0).all() and fade[-1] > 0.99
    with pytest.raises(ValueError, match="fade_steps must be > 0 samples, got 0"):
        ResidualFade(0)


@pytest.mark.parametrize("bidirectional", (True, False))
@pytest.mark.parametrize("residual", (True, False))
def test_every_layer_and_the_head_match_their_formulas(bidirectional: bool,
                                                       residual: bool) -> None:
    spec = _spec(n_channels=2, n_targets=1, units=(6,), bidirectional=bidirectional,
                 residual=residual, residual_fade_steps=5 if residual else 0)
    model = build_model(spec)
    rows = {r.name: r for r in check(model)}  # raises on any layer that disagrees
    head = sum(r.keras for r in rows.values() if r.kind in ("LSTM", "Dense"))
    assert head == params.cycle_mix_head_params(2, 1, 3, 6, bidirectional, residual)
    assert rows["lstm_1"].expected == params.lstm_params(2, 6)
    per_step = 2 * 3 + 2 + 1 + 6  # copies and sorted copies, median, last - median, h/H, context
    assert rows["decoder"].expected == params.lstm_params(per_step, 6)
    assert ("decoder_backward" in rows) is bidirectional
    assert ("residual_head" in rows) is residual
    assert sum(r.keras for r in rows.values()) == model.count_params()
    assert all(r.cudnn for r in rows.values() if r.cudnn is not None)


@pytest.mark.parametrize("arch", ("gru", "simplernn"))
def test_other_recurrent_archs_build_the_same_head_and_match_their_formulas(arch: str) -> None:
    model = build_model(_spec(arch=arch, units=(5,)))
    rows = {r.name: r for r in check(model)}
    head = sum(r.keras for r in rows.values() if r.kind in ("GRU", "SimpleRNN", "Dense"))
    assert head == params.cycle_mix_head_params(1, 1, 3, 5, True, arch=arch)
    assert f"{arch}_1" in rows and rows["decoder"].kind == type(model.get_layer("decoder")).__name__


def test_the_shipped_recipes_build_the_26571_weight_head_of_the_research() -> None:
    for name in ("ecg", "abp"):
        config = tomllib.loads((REPO_ROOT / "configs" / f"{name}.toml").read_text())
        spec = model_spec_from_config(config)
        assert spec.head == "cycle_mix" and spec.units == (32,) and spec.bidirectional
        assert params.cycle_mix_head_params(1, 1, 8, 32, True) == 26571
        rows = check(build_model(spec))
        assert sum(r.keras for r in rows if r.kind in ("LSTM", "Dense")) == 26571


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"arch": "direct", "bidirectional": False},
     "head 'cycle_mix' needs a single-layer recurrent arch (lstm, gru, simplernn, irnn), "
     "got 'direct'"),
    ({"units": (4, 4)}, "head 'cycle_mix' takes one width (its encoder and decoder), got units "
                        "(4, 4)"),
    ({"cycle_mix": "median"}, "cycle_mix applies to head 'cycle_residual'; head 'cycle_mix' "
                              "learns its own mix, got cycle_mix 'median'"),
    ({"residual_dropout": 0.5}, "residual_dropout applies to head 'cycle_residual', got 0.5 "
                                "with head 'cycle_mix'"),
    ({"residual_fade_steps": -1}, "residual_fade_steps must be an integer >= 0, got -1"),
    ({"head": "cycle_residual", "residual_fade_steps": 5},
     "residual_fade_steps applies to head 'cycle_mix', not 'cycle_residual'"),
    ({"input_steps": 200}, "input_steps=200 must be >= 2 * max_period_steps + 1 = 241 for head "
                           "'cycle_mix'"),
])
def test_knobs_that_do_not_fit_the_head_are_refused_naming_the_value(kwargs: dict,
                                                                     message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(**kwargs)
    assert str(err.value) == message


def test_a_cycle_mix_head_on_a_target_that_is_no_input_is_refused() -> None:
    config = {"data": {"channels": ["II", "ABP"]},
              "window": {"input_steps": 400, "horizon": 50, "inputs": ["II"], "targets": ["ABP"]},
              "model": {"head": "cycle_mix"}}
    with pytest.raises(SpecError, match="head 'cycle_mix' needs every target among the inputs"):
        model_spec_from_config(config)


def test_a_few_steps_of_training_move_both_lstms_and_lower_the_loss(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    x = _pulses(64, 450)
    inputs, targets = x[:, :400], x[:, 400:]
    model = build_model(_spec(units=(8,)), fit_norm_stats(inputs, targets))
    model.compile(keras.optimizers.Adam(3e-3), loss={"forecast": "mae"})
    before = {n: model.get_layer(n).get_weights()[0].copy()
              for n in ("lstm_1", "decoder", "decoder_backward", "mix_logits")}
    first = model.evaluate(inputs, {"forecast": targets}, verbose=0)
    model.fit(inputs, {"forecast": targets}, batch_size=16, epochs=3, verbose=0)
    assert model.evaluate(inputs, {"forecast": targets}, verbose=0) < first
    for name, weights in before.items():
        assert not np.allclose(model.get_layer(name).get_weights()[0], weights), name
    model.save(tmp_path / "m.keras")  # the checkpoint `--resume` and `retrain` read
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(inputs[:4])["forecast"]),
                               np.asarray(model(inputs[:4])["forecast"]), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export needs TF")
def test_the_exported_saved_model_takes_and_returns_raw_units(tmp_path: Path) -> None:
    import tensorflow as tf

    from models.export import export_savedmodel, verify_savedmodel

    x = _pulses(6, 450)
    inputs, targets = x[:, :400], x[:, 400:]
    model = build_model(_spec(residual_fade_steps=5), fit_norm_stats(inputs, targets))
    expected = {"forecast": np.asarray(model.predict_on_batch(inputs)["forecast"])}
    export_savedmodel(model, tmp_path / "1", {"fs": 125.0, "targets": ["ABP"]}, inputs[:2])
    verify_savedmodel(tmp_path / "1", inputs, expected)  # in a fresh process
    served = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"](
        signal=tf.constant(inputs))
    np.testing.assert_allclose(served["forecast"].numpy(), expected["forecast"], rtol=1e-5,
                               atol=1e-3)
    # mmHg in, mmHg out: the untrained forecast lives where the pulses do, not near 0
    assert 85.0 < served["forecast"].numpy().mean() < 105.0


_OTHER_BACKEND = """
import sys
import keras
import numpy as np
import models.architectures  # noqa: F401  (registers the custom layers)
d = np.load(sys.argv[1])
model = keras.saving.load_model(sys.argv[2])
got = np.asarray(model.predict_on_batch(d["x"])["forecast"])
model.compile(keras.optimizers.Adam(1e-3), loss={"forecast": "mae"})
before = model.evaluate(d["x"], {"forecast": d["y"]}, verbose=0)
model.fit(d["x"], {"forecast": d["y"]}, epochs=2, batch_size=4, verbose=0)
after = model.evaluate(d["x"], {"forecast": d["y"]}, verbose=0)
print(keras.backend.backend(), float(np.abs(got - d["forecast"]).max()), before, after)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ("jax", "torch"))
def test_the_head_predicts_the_same_and_trains_on_jax_and_torch(tmp_path: Path,
                                                                 backend: str) -> None:
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    x = _pulses(8, 450)
    inputs, targets = x[:, :400], x[:, 400:]
    model = build_model(_spec(units=(6,), residual_fade_steps=5), fit_norm_stats(inputs, targets))
    rng = np.random.default_rng(1)
    for layer in model.layers:  # learned-looking weights, not the init's exact median
        if layer.trainable and layer.weights:
            layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype("float32")
                               for w in layer.get_weights()])
    model.save(tmp_path / "m.keras")
    forecast = np.asarray(model.predict_on_batch(inputs)["forecast"])
    np.savez(tmp_path / "d.npz", x=inputs, y=targets, forecast=forecast)
    (tmp_path / "check.py").write_text(_OTHER_BACKEND)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path / "d.npz"),
                           str(tmp_path / "m.keras")], env=env, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    name, diff, before, after = done.stdout.split()[-4:]
    assert name == backend
    assert float(diff) < 1e-4 * np.abs(forecast).max()  # mmHg-sized forecasts, float32 maths
    assert float(after) < float(before)
