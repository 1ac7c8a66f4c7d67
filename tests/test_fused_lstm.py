"""models.fused_lstm: the native CPU training kernel gives Keras' LSTM numbers and gradients.

These tests build the op (g++ and TensorFlow's headers; `make install` builds it ahead). They do
not skip when it cannot be built: CI's machine has a compiler, and a fallback there is a failure.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from models import fused_lstm  # noqa: E402


@pytest.fixture(autouse=True)
def _require_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fused_lstm.ENV_MODE, "require")


def _twins(units: int, steps: int, channels: int, rng: np.random.Generator, **kwargs):
    """A Keras LSTM and a pulsecast LSTM holding the same (perturbed) weights."""
    ref = keras.layers.LSTM(units, **kwargs)
    ours = fused_lstm.LSTM(units, **kwargs)
    ref.build((None, steps, channels))
    ours.build((None, steps, channels))
    for mine, theirs in zip(ours.weights, ref.weights, strict=True):
        value = theirs.numpy() + 0.1 * rng.normal(size=theirs.shape).astype("float32")
        mine.assign(value)
        theirs.assign(value)
    return ref, ours


def _outputs_and_gradients(layer, x, h0, c0):
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        out = layer(x, initial_state=[h0, c0], training=True)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        # a loss that weighs every output element differently, so each gradient path is tested
        loss = sum(tf.reduce_sum(tf.sin(3.0 * o + k)) for k, o in enumerate(outs))
    grads = tape.gradient(loss, [x, h0, c0, *layer.trainable_weights])
    return [o.numpy() for o in outs], [g.numpy() for g in grads]


@pytest.mark.parametrize(
    "batch, steps, channels, units, return_sequences, return_state",
    [
        (5, 7, 1, 4, False, False),  # one shard
        (64, 33, 1, 16, True, False),  # two shards, the sequence's gradient
        (64, 20, 12, 8, False, True),  # wide input: the sgemm input projection; c's gradient
        (40, 10, 3, 64, True, True),
    ],
)
def test_fused_lstm_matches_keras_outputs_and_every_gradient(
        batch, steps, channels, units, return_sequences, return_state):
    rng = np.random.default_rng(batch + steps)
    ref, ours = _twins(units, steps, channels, rng, return_sequences=return_sequences,
                       return_state=return_state)
    x = tf.constant(rng.normal(size=(batch, steps, channels)).astype("float32"))
    h0 = tf.constant(rng.normal(size=(batch, units)).astype("float32"))
    c0 = tf.constant(rng.normal(size=(batch, units)).astype("float32"))
    ref_out, ref_grads = _outputs_and_gradients(ref, x, h0, c0)
    our_out, our_grads = _outputs_and_gradients(ours, x, h0, c0)
    assert len(our_grads) == 3 + 3  # x, h0, c0, kernel, recurrent kernel, bias
    for mine, theirs in zip(our_out + our_grads, ref_out + ref_grads, strict=True):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=2e-5 * np.abs(theirs).max())


def test_training_pass_runs_the_native_op_and_inference_runs_keras_ops():
    layer = fused_lstm.LSTM(8)
    layer.build((None, 6, 1))
    x = tf.zeros((4, 6, 1))

    def op_types(training: bool) -> set[str]:
        graph = tf.function(lambda v: layer(v, training=training)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "PulsecastLstm" in op_types(True)
    assert not any(t.startswith("PulsecastLstm") for t in op_types(False))


def test_a_nan_input_gives_a_nan_output_and_a_huge_one_a_finite_output():
    layer = fused_lstm.LSTM(4)
    x = np.zeros((3, 5, 1), np.float32)
    x[1, 2, 0] = np.nan
    x[2, :, 0] = -1e30  # saturated gates: finite, not NaN
    h = layer(tf.constant(x), training=True).numpy()
    assert np.isnan(h[1]).all()
    assert np.isfinite(h[[0, 2]]).all()


def test_a_dropout_layer_still_trains_and_drops_inputs(monkeypatch: pytest.MonkeyPatch):
    keras.utils.set_random_seed(0)
    layer = fused_lstm.LSTM(4, dropout=0.5)
    x = tf.ones((8, 5, 1))
    a = layer(x, training=True).numpy()
    b = layer(x, training=True).numpy()
    assert not np.allclose(a, b)  # a fresh mask per call
    np.testing.assert_allclose(layer(x).numpy(), layer(x).numpy())  # none at inference


def test_off_mode_uses_keras_ops_and_a_bad_mode_names_the_value(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(fused_lstm.ENV_MODE, "off")
    assert fused_lstm.unavailable_reason() == "PULSECAST_FUSED_LSTM=off"
    layer = fused_lstm.LSTM(4)
    layer.build((None, 3, 1))
    graph = tf.function(lambda v: layer(v, training=True)).get_concrete_function(
        tf.zeros((2, 3, 1))).graph
    assert "PulsecastLstm" not in {op.type for op in graph.get_operations()}
    monkeypatch.setenv(fused_lstm.ENV_MODE, "fast")
    with pytest.raises(ValueError, match="PULSECAST_FUSED_LSTM must be one of auto, off, require, "
                                         "got 'fast'"):
        fused_lstm.mode()


@pytest.mark.slow
def test_the_library_is_cached_by_content_and_rebuilt_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(fused_lstm.ENV_CACHE, str(tmp_path))
    path = fused_lstm.library_path()
    assert path.parent == tmp_path and path.name.startswith("fused_lstm-")
    assert not path.exists()
    assert fused_lstm.build_library() == path and path.exists()
    stamp = path.stat().st_mtime_ns
    assert fused_lstm.build_library() == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_missing_compiler_is_reported_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv(fused_lstm.ENV_CACHE, str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(fused_lstm.FusedLSTMUnavailable, match="'no-such-compiler-xyz' not found"):
        fused_lstm.build_library()
    assert list(tmp_path.iterdir()) == []


def test_loading_the_op_leaves_subnormal_floats_alone():
    """-ffast-math on a link line would flush denormals to zero in the whole process."""
    fused_lstm.load_ops()
    tiny = np.float32(1e-40)  # subnormal in float32
    assert tiny != 0 and tiny * np.float32(2) > tiny


def test_the_op_names_a_mis_shaped_weight():
    ops = fused_lstm.load_ops()
    x, state = tf.zeros((2, 3, 1)), tf.zeros((2, 4))
    bad = tf.errors.InvalidArgumentError
    with pytest.raises(bad, match=r"kernel must be \(1, 16\), got \[2,16\]"):
        ops.pulsecast_lstm(x, state, state, tf.zeros((2, 16)), tf.zeros((4, 16)), tf.zeros(16))
    with pytest.raises(bad, match=r"recurrent_kernel must be \(H, 4H\)"):
        ops.pulsecast_lstm(x, state, state, tf.zeros((1, 16)), tf.zeros((4, 12)), tf.zeros(16))
