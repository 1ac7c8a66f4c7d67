"""Tiny SavedModels for the server tests, made at test time (no checked-in binaries).

- `write_half_plus_two(path, offset)`: a `tf.Module` like TF Serving's saved_model_half_plus_two:
  `serving_default` x (-1, 1) float -> y = 0.5 x + offset; `two_inputs` (a float, b int64) -> sum;
  `tagged` string -> length; `classify_x_to_y` and `regress_x_to_y` taking serialized tf.Example
  with feature x (float), their method names rewritten to tensorflow/serving/classify|regress
  (tf.saved_model.save writes `predict` for every signature).
- `write_pulsecast_lstm(path, ...)`: a real Keras LSTM forecaster exported with
  `models.export.export_savedmodel` (pulsecast.json + warmup file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_half_plus_two(path: str | Path, offset: float = 2.0) -> Path:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(path)

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(float(offset))

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None, 2], tf.int64, name="b"),
        ])
        def two_inputs(self, a, b):
            return {"sum": a + tf.cast(b, tf.float32), "b_twice": b * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def tagged(self, text):
            return {"length": tf.strings.length(text)}

        def _y_of_examples(self, inputs):
            parsed = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})
            return self.a * parsed["x"] + self.b

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self._y_of_examples(inputs)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self._y_of_examples(inputs)}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.predict,
        "two_inputs": module.two_inputs,
        "tagged": module.tagged,
        "classify_x_to_y": module.classify,
        "regress_x_to_y": module.regress,
    })
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    sigs = proto.meta_graphs[0].signature_def
    sigs["classify_x_to_y"].method_name = "tensorflow/serving/classify"
    sigs["regress_x_to_y"].method_name = "tensorflow/serving/regress"
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    return path


def write_pulsecast_lstm(
    path: str | Path, input_steps: int = 16, units: int = 4, horizon: int = 4, seed: int = 0,
    n_warmup: int = 5,
) -> Path:
    """Input(name="signal", (input_steps, 1)) -> LSTM(units) -> Dense(horizon) -> Reshape."""
    import keras

    from models.export import export_savedmodel

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(input_steps, 1), name="signal")
    hidden = keras.layers.LSTM(units)(inp)
    out = keras.layers.Reshape((horizon, 1), name="forecast")(keras.layers.Dense(horizon)(hidden))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    warm = rng.standard_normal((n_warmup, input_steps, 1)).astype(np.float32)
    return export_savedmodel(model, path, {"model_name": "test"}, warm)


_TEMPLATES: dict[float, Path] = {}


def half_plus_two_dir(path: str | Path, offset: float = 2.0) -> Path:
    """`write_half_plus_two` into `path`, copied from a pristine per-process template after the
    first call (a TF save costs ~0.3 s, a copy ~1 ms)."""
    import atexit
    import shutil
    import tempfile

    path = Path(path)
    template = _TEMPLATES.get(offset)
    if template is None:
        root = Path(tempfile.mkdtemp(prefix="pulsecast-hp-template-"))
        atexit.register(shutil.rmtree, root, True)
        template = write_half_plus_two(root / "model", offset)
        _TEMPLATES[offset] = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, path)
    return path


def write_warmup(path: str | Path, logs: list) -> Path:
    """Write PredictionLog protos as `<path>/assets.extra/tf_serving_warmup_requests`."""
    import tensorflow as tf

    file = Path(path) / "assets.extra" / "tf_serving_warmup_requests"
    file.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(file)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return file
