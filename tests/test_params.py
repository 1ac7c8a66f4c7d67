"""Parameter-count formulas equal Keras count_params() per layer, on TF (and JAX if present)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

keras = pytest.importorskip("keras")

from models import params  # noqa: E402
from models.architectures import build_model  # noqa: E402
from models.params import ParamCountError, check, cudnn_status, expected_params  # noqa: E402
from models.spec import ARCHS, ModelSpec  # noqa: E402

DS = (1, 2, 3, 7)
HS = (1, 4, 32, 64)


def _bare_layers(h: int) -> dict[str, keras.layers.Layer]:
    """Every layer kind the builders use, unbuilt."""
    L = keras.layers
    return {
        "lstm": L.LSTM(h),
        "lstm_nobias": L.LSTM(h, use_bias=False),
        "gru": L.GRU(h),
        "gru_reset_before": L.GRU(h, reset_after=False),
        "simplernn": L.SimpleRNN(h),
        "irnn": L.SimpleRNN(h, activation="relu", recurrent_initializer="identity"),
        "dense": L.Dense(h),
        "bi_lstm": L.Bidirectional(L.LSTM(h)),
        "bi_gru": L.Bidirectional(L.GRU(h)),
        "bi_simplernn": L.Bidirectional(L.SimpleRNN(h)),
    }


@pytest.mark.parametrize("h", HS)
@pytest.mark.parametrize("d", DS)
def test_every_layer_formula_equals_keras_count_for_bare_layers(d: int, h: int) -> None:
    for kind, layer in _bare_layers(h).items():
        layer.build((None, 5, d))
        _, _, text, count = expected_params(layer, d)
        assert count == layer.count_params(), f"{kind} d={d} h={h}: {text}"


def test_textbook_lstm_counts_4352_and_its_dense_head_33() -> None:
    model = build_model(ModelSpec(arch="lstm", units=(32,), input_steps=5, horizon=1))
    rows = {row.name: row for row in check(model)}
    assert (rows["lstm_1"].expected, rows["lstm_1"].keras) == (4352, 4352)
    assert (rows["head"].expected, rows["head"].keras) == (33, 33)
    assert rows["normalize"].keras == 2  # mean and std of one channel, non-trainable


def test_known_counts_from_the_keras_notes() -> None:
    assert params.lstm_params(1, 32) == 4352
    assert params.lstm_params(3, 64) == 17408
    assert params.gru_params(1, 32) == 3360
    assert params.gru_params(1, 32, reset_after=False) == 3264
    assert params.simplernn_params(3, 64) == 4352
    assert params.dense_params(64, 32) == 2080


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("depth", (1, 2, 3))
def test_every_architecture_matches_its_formulas_at_every_depth(arch: str, depth: int) -> None:
    for d in DS:
        for h in (4, 32):
            # Shrinking widths, so a swapped d and h in any formula would show.
            units = tuple(max(1, h // 2**i) for i in range(depth))
            spec = ModelSpec(arch=arch, units=units, input_steps=6, horizon=3, n_channels=d,
                             n_targets=min(d, 2))
            model = build_model(spec)
            rows = check(model)  # raises on any per-layer disagreement
            assert sum(r.expected for r in rows) == model.count_params()


@pytest.mark.parametrize("arch", ("lstm", "gru", "simplernn", "irnn"))
def test_bidirectional_and_quantile_variants_match_their_formulas(arch: str) -> None:
    spec = ModelSpec(arch=arch, units=(8, 4), input_steps=6, horizon=3, n_channels=3,
                     n_targets=2, bidirectional=True, quantiles=(0.1, 0.5, 0.9))
    model = build_model(spec)
    rows = check(model)
    assert sum(r.keras for r in rows) == model.count_params()
    assert rows[2].d == 16  # the second layer sees both directions concatenated


def test_check_raises_naming_the_layer_when_a_formula_disagrees(monkeypatch) -> None:
    model = build_model(ModelSpec(arch="lstm", units=(32,), input_steps=5, horizon=1))
    off_by_one = lambda d, h, use_bias=True: 4 * ((d + h) * h + h) + 1  # noqa: E731
    monkeypatch.setattr(params, "lstm_params", off_by_one)
    with pytest.raises(ParamCountError) as err:
        check(model)
    assert str(err.value) == (
        "layer 'lstm_1' (LSTM, d=1, h=32): formula 4·((1+32)·32+32) = 4353 but Keras counts 4352"
    )
    assert isinstance(err.value, ValueError)


def test_check_refuses_a_layer_kind_with_weights_and_no_formula() -> None:
    x = keras.Input((8, 2))
    model = keras.Model(x, keras.layers.Conv1D(3, 2, name="conv")(x))
    message = "layer 'conv' of kind Conv1D has no parameter formula"
    with pytest.raises(ParamCountError, match=message):
        check(model)


def test_default_recurrent_layers_are_cudnn_eligible() -> None:
    for arch in ("lstm", "gru", "seq2seq"):
        rows = check(build_model(ModelSpec(arch=arch, units=(8, 8), input_steps=5, horizon=2)))
        recurrent = [r for r in rows if r.cudnn is not None]
        assert recurrent and all(r.cudnn for r in recurrent), arch


def test_cudnn_status_says_why_a_layer_is_not_eligible() -> None:
    L = keras.layers
    assert cudnn_status(L.LSTM(4, recurrent_dropout=0.1)) == (False, "recurrent_dropout=0.1")
    assert cudnn_status(L.LSTM(4, unroll=True, use_bias=False)) == (
        False, "unroll=True; use_bias=False"
    )
    assert cudnn_status(L.GRU(4, reset_after=False)) == (False, "reset_after=False")
    assert cudnn_status(L.LSTM(4, activation="relu")) == (False, "activation=relu")
    assert cudnn_status(L.SimpleRNN(4)) == (False, "SimpleRNN has no fused kernel")
    assert cudnn_status(L.Bidirectional(L.LSTM(4))) == (True, "")
    assert cudnn_status(L.Dense(4)) == (None, "")


_JAX_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from models.architectures import build_model
    from models.diagnose import input_gradient_norms, make_sine_windows
    from models.params import check, expected_params
    from models.spec import ARCHS, ModelSpec

    # Variable creation is slow on JAX (the orthogonal initializer compiles per shape), so the
    # grid here is a corner sample of the TF one: bare layers at the extremes of d and h, every
    # architecture at every depth.
    L = keras.layers
    for d in (1, 7):
        for h in (4, 32):
            for layer in (L.LSTM(h), L.GRU(h), L.GRU(h, reset_after=False), L.SimpleRNN(h),
                          L.Dense(h), L.Bidirectional(L.LSTM(h))):
                layer.build((None, 5, d))
                assert expected_params(layer, d)[3] == layer.count_params(), (layer, d, h)
    counts = {}
    for arch in ARCHS:
        for depth in (1, 2, 3):
            units = tuple(max(1, 8 // 2**i) for i in range(depth))
            spec = ModelSpec(arch=arch, units=units, input_steps=6, horizon=3, n_channels=3,
                             n_targets=1, quantiles=(0.1, 0.5, 0.9))
            model = build_model(spec)
            counts[f"{arch}/{depth}"] = [r.keras for r in check(model)]
        # One forward pass per arch (each JAX call compiles: keep them few).
        out = model.predict_on_batch(np.random.randn(4, 6, 3).astype("float32"))
        q = np.asarray(out["quantiles"])
        assert out["forecast"].shape == (4, 3, 1), out["forecast"].shape
        assert q.shape == (4, 3, 1, 3) and (np.diff(q, axis=-1) >= 0).all()
    x, y = make_sine_windows(8, 12, 2)
    g = input_gradient_norms(build_model(ModelSpec(units=(4,), input_steps=12, horizon=2)), x, y)
    assert g.shape == (12,) and np.isfinite(g).all()
    print(json.dumps(counts))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed: the JAX-backend count check needs it")
def test_formulas_hold_on_the_jax_backend_too(tmp_path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "jax_check.py"
    script.write_text(_JAX_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], env={**env, "PYTHONPATH": root},
                          capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jax_counts = json.loads(proc.stdout.strip().splitlines()[-1])
    # Same models on TensorFlow (this process): identical per-layer counts.
    for arch in ARCHS:
        for depth in (1, 2, 3):
            units = tuple(max(1, 8 // 2**i) for i in range(depth))
            spec = ModelSpec(arch=arch, units=units, input_steps=6, horizon=3, n_channels=3,
                             n_targets=1, quantiles=(0.1, 0.5, 0.9))
            got = [r.keras for r in check(build_model(spec))]
            assert got == jax_counts[f"{arch}/{depth}"], (arch, depth)


@pytest.mark.parametrize("arch", ("lstm", "gru", "direct"))
def test_cycle_residual_models_match_their_formulas_and_stay_cudnn_eligible(arch: str) -> None:
    spec = ModelSpec(arch=arch, units=(8,), input_steps=120, horizon=10, head="cycle_residual",
                     min_period_steps=5, max_period_steps=40, cycle_candidates=2, encoder_pool=2)
    model = build_model(spec)
    rows = {r.name: r for r in check(model)}
    assert rows["cycle_mix"].expected == params.cycle_mix_params(10, 1, 2) == 20
    assert rows["cycle_candidates"].expected == 0
    assert sum(r.keras for r in rows.values()) == model.count_params()
    assert all(r.cudnn for r in rows.values() if r.cudnn is not None)


@pytest.mark.parametrize("arch", ("lstm", "gru", "simplernn", "irnn", "direct"))
def test_event_heads_match_their_formula_on_every_single_state_core(arch: str) -> None:
    for quantiles in ((), (0.1, 0.5, 0.9)):
        spec = ModelSpec(arch=arch, units=(8, 5), input_steps=60, horizon=60, n_channels=2,
                         quantiles=quantiles, anchor="last", events=("ahe",))
        model = build_model(spec)
        rows = {row.name: row for row in check(model)}  # raises on any disagreement
        head = rows["ahe_probability"]
        assert head.expected == params.event_head_params(5, len(quantiles)) == head.keras
        assert sum(r.keras for r in rows.values()) == model.count_params()
