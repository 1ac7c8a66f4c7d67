"""serve.runtime: loading SavedModels as servables, TF Serving's predict/classify/regress
semantics and error texts, warmup replay, and the verified XLA runtime for pulsecast models."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_models import half_plus_two_dir, write_warmup

from models.layout import WARMUP_RELPATH
from serve.errors import Code, ServingError
from serve.runtime import LoadError
from serve.runtime.load import load_servable
from serve.wire.examples import make_example

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def hp(tmp_path_factory: pytest.TempPathFactory):
    return load_servable("hp", 1, half_plus_two_dir(tmp_path_factory.mktemp("hp") / "1"))


@pytest.fixture(scope="module")
def lstm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serve_models import write_pulsecast_lstm

    return write_pulsecast_lstm(tmp_path_factory.mktemp("lstm") / "1")


def _error(fn, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args, **kwargs)
    return info.value


def test_signatures_are_described_as_tf_serving_metadata_lists_them(hp) -> None:
    sigs = hp.signatures
    assert set(sigs) == {"serving_default", "two_inputs", "tagged", "classify_x_to_y",
                         "regress_x_to_y", "__saved_model_init_op"}
    default = sigs["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == "DT_FLOAT"
    assert default.inputs["x"].shape == (-1, 1)
    assert default.inputs["x"].name == "serving_default_x:0"
    assert default.outputs["y"].shape == (-1, 1)
    assert sigs["two_inputs"].inputs["b"].dtype == "DT_INT64"
    assert sigs["tagged"].inputs["text"].dtype == "DT_STRING"
    assert sigs["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert sigs["regress_x_to_y"].inputs["inputs"].dtype == "DT_STRING"
    init = sigs["__saved_model_init_op"]
    assert init.method_name == "" and init.outputs["__saved_model_init_op"].dtype == "DT_INVALID"
    assert init.outputs["__saved_model_init_op"].shape is None
    assert hp.runtime == "savedmodel" and hp.metadata is None


def test_predict_returns_half_plus_two_and_empty_signature_means_serving_default(hp) -> None:
    out = hp.predict("", {"x": np.array([[1.0], [2.0], [3.0], [4.0]])})  # float64 is cast
    assert list(out) == ["y"]
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"][:, 0], [2.5, 3.0, 3.5, 4.0])
    assert hp.predict("serving_default", {"x": [[0]]})["y"][0, 0] == 2.0  # int list -> float


def test_multi_input_int_and_string_signatures_run(hp) -> None:
    out = hp.predict("two_inputs", {"a": [[1.0, 2.0]], "b": np.array([[3, 4]], np.int32)})
    np.testing.assert_array_equal(out["sum"], [[4.0, 6.0]])
    assert out["b_twice"].dtype == np.int64
    np.testing.assert_array_equal(out["b_twice"], [[6, 8]])
    assert list(hp.predict("two_inputs", {"a": [[1.0, 2.0]], "b": [[3, 4]]}, ("sum",))) == ["sum"]
    lengths = hp.predict("tagged", {"text": np.array(["ab", "abcd"])})["length"]
    np.testing.assert_array_equal(lengths, [2, 4])
    assert hp.predict("tagged", {"text": np.array([b"xyz"], dtype=object)})["length"][0] == 3


def test_request_errors_use_tf_servings_texts(hp) -> None:
    x = [[1.0]]
    err = _error(hp.predict, "nope", {"x": x})
    assert (err.code, err.message) == (
        Code.INVALID_ARGUMENT, 'Serving signature name: "nope" not found in signature def'
    )
    assert _error(hp.predict, "two_inputs", {"a": [[1.0, 2.0]]}).message == (
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). "
        "Sent extra: {}. Missing but required: {b}."
    )
    assert _error(hp.predict, "", {"x": x, "z": x}).message == (
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
        "Sent extra: {z}. Missing but required: {}."
    )
    assert _error(hp.predict, "", {"z": x}).message == (
        "input tensor alias not found in signature: z. Inputs expected to be in the set {x}."
    )
    assert _error(hp.predict, "", {"x": x}, ("q",)).message == (
        "output tensor alias not found in signature: q Outputs expected to be in the set {y}."
    )


def test_inputs_of_the_wrong_kind_or_shape_are_invalid_argument_not_crashes(hp) -> None:
    assert _error(hp.predict, "", {"x": np.array([["a"]])}).message == (
        "Expects arg[x] to be float but string is provided"
    )
    assert _error(hp.predict, "two_inputs", {"a": [[1.0, 2.0]], "b": [[1.5, 2.0]]}).message == (
        "Expects arg[b] to be int64 but double is provided"
    )
    assert _error(hp.predict, "tagged", {"text": [1, 2]}).code == Code.INVALID_ARGUMENT
    # shapes are the graph's to judge, as in TF Serving: x (-1, 1) takes [1,2] (0.5 x + 2 is
    # elementwise), while a + b refuses shapes that do not broadcast, with TensorFlow's text
    np.testing.assert_array_equal(hp.predict("", {"x": [[1.0, 2.0]]})["y"], [[2.5, 3.0]])
    err = _error(hp.predict, "two_inputs", {"a": [[1.0, 2.0]], "b": [[1, 2, 3]]})
    assert err.code == Code.INVALID_ARGUMENT and "Incompatible shapes" in err.message
    # a TensorFlow runtime failure (a float feature sent as int64) is a 400, never a crash
    err = _error(hp.regress, "regress_x_to_y", [{"x": 1}])
    assert err.code == Code.INVALID_ARGUMENT and "Data types don't match" in err.message


def test_regress_and_classify_take_examples_like_tf_serving_half_plus_two(hp) -> None:
    assert hp.regress("regress_x_to_y", [{"x": 80.0}, {"x": [10.0]}]) == [42.0, 7.0]
    assert hp.classify("classify_x_to_y", [{"x": 20.0}]) == [[("", 12.0)]]
    # context features are merged into every example
    assert hp.regress("regress_x_to_y", [{}, {}], context={"x": 2.0}) == [3.0, 3.0]
    err = _error(hp.regress, "", [{"x": 1.0}])
    assert err.message == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict"
    )
    assert _error(hp.classify, "nope", [{"x": 1.0}]).message == (
        "No signature was found with the name: nope"
    )


def test_make_example_maps_python_types_to_feature_lists() -> None:
    import tensorflow as tf

    example = tf.train.Example.FromString(
        make_example({"f": 1.5, "i": [1, 2], "s": "abc", "b": b"\x00"}, {"c": 3})
    )
    feats = example.features.feature
    assert list(feats["f"].float_list.value) == [1.5]
    assert list(feats["i"].int64_list.value) == [1, 2]
    assert list(feats["s"].bytes_list.value) == [b"abc"]
    assert list(feats["b"].bytes_list.value) == [b"\x00"]
    assert list(feats["c"].int64_list.value) == [3]
    assert tf.train.Example.FromString(make_example(example.SerializeToString())) == example
    with pytest.raises(ServingError, match="all numbers or all strings"):
        make_example({"m": [1, "a"]})


def test_warmup_records_are_replayed_at_load(tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    path = half_plus_two_dir(tmp_path / "1")
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((3, 1), np.float32)))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.add().ParseFromString(make_example({"x": 1.0}))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.add().ParseFromString(make_example({"x": 1.0}))
    write_warmup(path, [
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict)),
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        ),
    ])
    assert load_servable("hp", 1, path).warmup_records == 3
    assert load_servable("hp", 1, path, enable_warmup=False).warmup_records == 0


def test_a_failing_or_oversized_warmup_file_fails_the_load(tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path = half_plus_two_dir(tmp_path / "1")
    bad = predict_pb2.PredictRequest()
    bad.inputs["nope"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=bad))
    write_warmup(path, [log])
    with pytest.raises(LoadError, match="warmup record 0 failed: input tensor alias not found"):
        load_servable("hp", 1, path)
    (path / WARMUP_RELPATH).unlink()
    good = predict_pb2.PredictRequest()
    good.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    ok = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=good))
    write_warmup(path, [ok] * 1001)
    with pytest.raises(LoadError, match=r"exceeds the maximum \(1000\)"):
        load_servable("hp", 1, path)


def test_missing_or_corrupt_savedmodel_is_a_load_error_with_a_code(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    err = _error(load_servable, "m", 1, tmp_path / "1")
    assert isinstance(err, LoadError) and err.code == Code.NOT_FOUND
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"garbage, not a proto")
    err = _error(load_servable, "m", 1, tmp_path / "1")
    assert err.code == Code.DATA_LOSS and str(tmp_path / "1") in err.message
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_servable("m", 1, tmp_path / "1", runtime="onnx")


def test_pulsecast_models_get_the_xla_runtime_equal_to_the_savedmodel(lstm_dir: Path) -> None:
    fast = load_servable("lstm", 1, lstm_dir)
    plain = load_servable("lstm", 1, lstm_dir, runtime="savedmodel")
    # XLA is compiled in the background after the load: adopted eventually, not at load
    assert fast.wait_for_runtime(120) == "xla" and plain.runtime == "savedmodel"
    assert fast.warmup_records == 2 and fast.metadata["model_name"] == "test"
    rng = np.random.default_rng(1)
    for n in (1, 3, 8, 12, 70):  # 70 is above the largest bucket: served by the SavedModel
        x = rng.standard_normal((n, 16, 1)).astype(np.float32)
        got = fast.predict("", {"signal": x})["forecast"]
        want = plain.predict("", {"signal": x})["forecast"]
        assert got.shape == (n, 4, 1)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    err = _error(fast.predict, "", {"signal": np.zeros((1, 15, 1), np.float32)})
    assert err.code == Code.INVALID_ARGUMENT


def test_xla_runtime_falls_back_to_the_savedmodel_when_verification_fails(
    lstm_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import serve.runtime.xla

    monkeypatch.setattr(serve.runtime.xla, "_outputs_match", lambda got, want: "forced mismatch")
    with caplog.at_level(logging.WARNING, logger="serve.runtime"):
        servable = load_servable("lstm", 1, lstm_dir)
        assert servable.wait_for_runtime(120) == "savedmodel"
    assert servable._xla_job.outcome == "rejected"
    assert "XLA runtime rejected, forced mismatch; serving the SavedModel" in caplog.text
    assert servable.predict("", {"signal": np.zeros((2, 16, 1))})["forecast"].shape == (2, 4, 1)


def test_outputs_match_uses_a_tolerance_relative_to_scale() -> None:
    from serve.runtime.xla import _outputs_match

    want = {"y": np.array([100.0, -50.0], np.float32)}
    assert _outputs_match({"y": want["y"] + 0.009}, want) is None
    assert "differs by" in _outputs_match({"y": want["y"] + 0.02}, want)
    assert "shape" in _outputs_match({"y": want["y"][:1]}, want)


def test_xla_can_be_asked_for_on_any_fixed_shape_model(hp, tmp_path: Path) -> None:
    servable = load_servable("hp", 1, half_plus_two_dir(tmp_path / "1"), runtime="xla")
    assert servable.wait_for_runtime(120) == "xla"
    out = servable.predict("", {"x": [[1.0], [2.0], [3.0]]})["y"]
    np.testing.assert_allclose(out[:, 0], [2.5, 3.0, 3.5])


# ---- the XLA runtime is compiled in the background: serving never waits for it ---------------


class _Hold:
    """Holds the background XLA job just before bucket `at` goes live, until `release`."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.reached = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def hold_xla(monkeypatch: pytest.MonkeyPatch):
    import serve.runtime.xla

    holds: list[_Hold] = []
    original = serve.runtime.xla.XlaPredict.mark_ready

    def mark_ready(self, size: int) -> None:
        for hold in holds:
            if size == hold.at:
                hold.reached.set()
                assert hold.release.wait(60)
        original(self, size)

    monkeypatch.setattr(serve.runtime.xla.XlaPredict, "mark_ready", mark_ready)

    def make(at: int = 1) -> _Hold:
        holds.append(_Hold(at))
        return holds[-1]

    yield make
    for hold in holds:
        hold.release.set()


def _compile_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"xla-compile-{name}-")]


def test_the_savedmodel_answers_while_xla_compiles_and_the_swap_keeps_the_answers(
    lstm_dir: Path, hold_xla
) -> None:
    hold = hold_xla(at=1)
    plain = load_servable("lstm", 1, lstm_dir, runtime="savedmodel")
    fast = load_servable("lstm", 1, lstm_dir)  # returns at once: the compile is held
    try:
        assert fast.warmup_records == 2  # replayed (through the SavedModel) before serving
        assert hold.reached.wait(60)
        rng = np.random.default_rng(2)
        xs = [rng.standard_normal((n, 16, 1)).astype(np.float32) for n in (1, 3, 8, 32)]
        want = [plain.predict("", {"signal": x})["forecast"] for x in xs]
        # the first requests: answered by the SavedModel, not waiting for the held compile
        assert fast.runtime == "savedmodel" and fast._xla is None
        for x, w in zip(xs, want, strict=True):
            np.testing.assert_array_equal(fast.predict("", {"signal": x})["forecast"], w)
        # requests running across the swap all get the SavedModel's answers
        errors: list[str] = []
        stop = threading.Event()

        def hammer(i: int) -> None:
            while not stop.is_set():
                got = fast.predict("", {"signal": xs[i]})["forecast"]
                if not np.allclose(got, want[i], atol=1e-5, rtol=0):
                    errors.append(f"batch {len(xs[i])}: max diff {np.abs(got - want[i]).max()}")

        threads = [threading.Thread(target=hammer, args=(i % len(xs),)) for i in range(4)]
        for t in threads:
            t.start()
        hold.release.set()
        assert fast.wait_for_runtime(120) == "xla"
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
        assert errors == []
        assert fast._xla_job.outcome == "adopted" and fast._xla.ready == (1, 2, 4, 8, 16, 32)
        for x, w in zip(xs, want, strict=True):  # now through XLA: equal to float32 tolerance
            np.testing.assert_allclose(fast.predict("", {"signal": x})["forecast"], w,
                                       atol=1e-5, rtol=0)
    finally:
        fast.close()
    assert _compile_threads("lstm") == []


@pytest.mark.parametrize("at", [1, 4], ids=["before-adoption", "after-adoption"])
def test_closing_during_a_background_compile_cancels_it_cleanly(
    lstm_dir: Path, hold_xla, at: int, caplog: pytest.LogCaptureFixture
) -> None:
    hold = hold_xla(at=at)
    servable = load_servable("lstm", 1, lstm_dir)
    assert hold.reached.wait(60)
    assert servable.runtime == ("savedmodel" if at == 1 else "xla")  # bucket 1 live at 4
    job = servable._xla_job
    closer = threading.Thread(target=servable.close)
    with caplog.at_level(logging.INFO, logger="serve.runtime"):
        closer.start()
        time.sleep(0.2)
        assert closer.is_alive()  # close waits for the step in progress, then stops the job
        hold.release.set()
        closer.join(60)
    assert not closer.is_alive()
    assert job.outcome == "cancelled" and not job.running
    assert _compile_threads("lstm") == []
    assert servable.runtime == "savedmodel" and servable._xla is None
    assert "lstm v1: XLA compile cancelled (unloading)" in caplog.text
    servable.close()  # twice is fine
    # a closed servable never starts another compile
    assert servable.start_xla([]).outcome == "cancelled" and servable.runtime == "savedmodel"


def test_two_versions_compiling_at_once_take_turns(
    lstm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serve.runtime.xla

    active, peak, both, lock = [0], [0], [False], threading.Lock()
    original = serve.runtime.xla.XlaPredict.__call__

    def call(self, inputs):
        if threading.current_thread().name.startswith("xla-compile-"):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                both[0] = both[0] or len(_compile_threads("lstm")) == 2
            try:
                time.sleep(0.2)  # a slow compile: the second load starts while it runs
                return original(self, inputs)
            finally:
                with lock:
                    active[0] -= 1
        return original(self, inputs)

    monkeypatch.setattr(serve.runtime.xla.XlaPredict, "__call__", call)
    servables = [load_servable("lstm", v, lstm_dir) for v in (1, 2)]
    try:
        assert [s.wait_for_runtime(120) for s in servables] == ["xla", "xla"]
        assert both[0]  # the two jobs ran at the same time...
        assert peak[0] == 1  # ...but one bucket compiled at a time: requests keep a core
    finally:
        for s in servables:
            s.close()
