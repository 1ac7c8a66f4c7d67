"""Export to a TF-Serving SavedModel: signature keys, numbers, metadata, warmup file, verification.

The exporting tests are `slow` (a real Keras trace and save, and a fresh Python process per
verification); the model is tiny so each takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import store
from models.export import (
    ExportError,
    ExportVerificationError,
    export_in_subprocess,
    export_savedmodel,
    find_gpu_only_ops,
    verify_savedmodel,
)
from models.metadata import read_pulsecast_json

STEPS, HORIZON = 16, 8


def _single_output_model():
    import keras

    keras.utils.set_random_seed(0)
    signal = keras.Input(shape=(STEPS, 1), name="signal")
    h = keras.layers.LSTM(4)(signal)
    forecast = keras.layers.Reshape((HORIZON, 1), name="forecast")(keras.layers.Dense(HORIZON)(h))
    return keras.Model(signal, forecast)


def _two_output_model():
    import keras

    keras.utils.set_random_seed(1)
    window = keras.Input(shape=(STEPS, 2), name="window")  # the signature still says `signal`
    h = keras.layers.LSTM(4)(window)
    forecast = keras.layers.Reshape((HORIZON, 1), name="forecast")(keras.layers.Dense(HORIZON)(h))
    quantiles = keras.layers.Reshape((HORIZON, 1, 3), name="quantiles")(
        keras.layers.Dense(HORIZON * 3)(h)
    )
    return keras.Model(window, [forecast, quantiles])


def _batch(channels: int, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (80.0 + 10.0 * rng.normal(size=(n, STEPS, channels))).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """One single-output model published through the store the intended way: exported from a
    process with no visible GPU, then verified in a fresh process."""
    model = _single_output_model()
    x = _batch(1)
    expected = model.predict(x, verbose=0)
    base = tmp_path_factory.mktemp("store") / "ecg"

    def build(staging: Path) -> None:
        export_in_subprocess(
            model, staging, {"fs": 125.0, "targets": ["II"]}, x[:3], import_modules=()
        )
        verify_savedmodel(staging, x, expected)

    _, path = store.publish(base, build)
    return path, x, expected


@pytest.mark.slow
def test_serving_default_takes_signal_and_returns_predict_numbers(exported) -> None:
    import tensorflow as tf

    path, x, expected = exported
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]

    inputs = fn.structured_input_signature[1]
    assert list(inputs) == ["signal"]
    assert inputs["signal"].shape.as_list() == [None, STEPS, 1]
    assert inputs["signal"].dtype == tf.float32
    assert sorted(fn.structured_outputs) == ["forecast"]
    np.testing.assert_allclose(fn(signal=tf.constant(x))["forecast"].numpy(), expected, atol=1e-5)


@pytest.mark.slow
def test_metadata_json_holds_the_callers_fields_versions_and_signature(exported) -> None:
    path = exported[0]
    meta = read_pulsecast_json(path)

    assert meta["fs"] == 125.0 and meta["targets"] == ["II"]
    assert {"exported_at", "keras_version", "tensorflow_version"} <= set(meta)
    assert meta["serving_signature"] == {
        "inputs": {"signal": [None, STEPS, 1]},
        "outputs": {"forecast": [None, HORIZON, 1]},
    }


@pytest.mark.slow
def test_warmup_file_is_a_tfrecord_of_prediction_logs_for_serving_default(exported) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path, x, _ = exported
    records = list(
        tf.data.TFRecordDataset(
            str(path / "assets.extra" / "tf_serving_warmup_requests")
        ).as_numpy_iterator()
    )

    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    shapes = []
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["signal"]
        tensor = tf.make_ndarray(request.inputs["signal"])
        assert tensor.dtype == np.float32
        shapes.append(tensor.shape)
    assert shapes == [(1, STEPS, 1), (3, STEPS, 1)]
    np.testing.assert_array_equal(
        tf.make_ndarray(logs[1].predict_log.request.inputs["signal"]), x[:3]
    )


@pytest.mark.slow
def test_a_model_failing_verification_raises_and_is_never_published(tmp_path: Path) -> None:
    model = _single_output_model()
    x = _batch(1)
    wrong = model.predict(x, verbose=0) + 1e-3

    def build(staging: Path) -> None:
        export_savedmodel(model, staging, {}, x)
        verify_savedmodel(staging, x, wrong)

    with pytest.raises(ExportVerificationError, match="output 'forecast' of .* differs .* 0.001"):
        store.publish(tmp_path, build)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_output_model_keeps_its_output_names(tmp_path: Path) -> None:
    import tensorflow as tf

    model = _two_output_model()
    x = _batch(2)
    forecast, quantiles = model.predict(x, verbose=0)

    export_savedmodel(model, tmp_path / "v", {}, x)
    fn = tf.saved_model.load(str(tmp_path / "v")).signatures["serving_default"]
    got = fn(signal=tf.constant(x))

    assert list(fn.structured_input_signature[1]) == ["signal"]
    assert sorted(got) == ["forecast", "quantiles"]
    np.testing.assert_allclose(got["forecast"].numpy(), forecast, atol=1e-5)
    np.testing.assert_allclose(got["quantiles"].numpy(), quantiles, atol=1e-5)
    meta = json.loads((tmp_path / "v" / "assets.extra" / "pulsecast.json").read_text())
    assert meta["serving_signature"]["outputs"] == {
        "forecast": [None, HORIZON, 1],
        "quantiles": [None, HORIZON, 1, 3],
    }


def test_export_rejects_a_warmup_batch_of_the_wrong_shape(tmp_path: Path) -> None:
    model = _single_output_model()
    message = r"warmup_batch must be \(n >= 1, 16, 1\), got \(2, 16, 3\)"
    with pytest.raises(ExportError, match=message):
        export_savedmodel(model, tmp_path / "v", {}, np.zeros((2, STEPS, 3)))
    assert not (tmp_path / "v").exists()


def test_gpu_only_ops_are_found_inside_graph_functions(tmp_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    graph = proto.meta_graphs.add().graph_def
    graph.node.add(name="x", op="Placeholder")
    graph.library.function.add().node_def.add(name="lstm", op="CudnnRNNV3")
    (tmp_path / "saved_model.pb").write_bytes(proto.SerializeToString())

    assert find_gpu_only_ops(tmp_path) == ["CudnnRNNV3"]


@pytest.mark.slow
def test_typed_metadata_is_written_with_the_export_stamps_in_process_and_in_a_child(
    tmp_path: Path,
) -> None:
    from models.metadata import VersionMetadata, read_metadata

    model = _single_output_model()
    x = _batch(1)
    meta = VersionMetadata(channels=("II",), fs=125.0, input_steps=STEPS, horizon=HORIZON,
                           targets=("II",), units=("mV",), extra={"note": "kept"})
    export_savedmodel(model, tmp_path / "here", meta, x[:2])
    export_in_subprocess(model, tmp_path / "child", meta, x[:2], import_modules=())
    for folder in ("here", "child"):
        got = read_metadata(tmp_path / folder)
        assert got.replace(exported_at=None, keras_version=None, tensorflow_version=None,
                           serving_signature=None, warmup_records=None) == meta
        assert got.serving_signature["outputs"] == {"forecast": [None, HORIZON, 1]}
        assert got.warmup_records == 2 and got.extra == {"note": "kept"}
