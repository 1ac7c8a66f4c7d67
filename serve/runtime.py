"""Load one SavedModel version as a `Servable`: signatures, predict/classify/regress, warmup, XLA.

What a servable reads from a version folder (TF Serving's layout, see `models.store`):

    saved_model.pb, variables/          loaded with `tf.saved_model.load` (tag `serve`)
    assets.extra/tf_serving_warmup_requests
                                        TFRecord of `tensorflow.serving.PredictionLog`, replayed
                                        once before the servable is returned (at most 1000)
    assets.extra/pulsecast.json         present only in pulsecast exports: enables the compiled
                                        (XLA) runtime for `serving_default`

Two runtimes run `predict`:

- `savedmodel`: the loaded signature's concrete function, as TF Serving runs it.
- `xla`: for pulsecast models, `tf.function(jit_compile=True)` around the loaded
  `serving_default` (~10x faster at small batches on CPU, see `specs/keras-notes.md` §4-5). XLA
  compiles once per concrete shape, so batches are zero-padded up to a bucket (1, 2, 4, 8, 16,
  32, all compiled at load) and the outputs sliced back; larger batches use the SavedModel,
  which is faster per forecast there (batch 48-64: ~0.19 vs ~0.22 ms on 2 cores).
  It is adopted only when it reproduces the SavedModel on the warmup inputs to float32 tolerance;
  otherwise the servable logs why and stays on `savedmodel`.

Errors are `ServingError`s carrying TF Serving's codes and texts (`specs/tf-serving.md` §1.3).
TensorFlow is imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serve.errors import Code, ServingError, invalid
from serve.signatures import (
    NUMPY_DTYPES,
    cast_input,
    check_aliases,
    check_output_filter,
    make_example,
    read_signatures,
    shape_text,
)
from serve.types import SignatureInfo

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_RELPATH = Path("assets.extra") / "tf_serving_warmup_requests"
METADATA_RELPATH = Path("assets.extra") / "pulsecast.json"
MAX_WARMUP_RECORDS = 1000  # kMaxNumRecords in saved_model_warmup_util.cc
RUNTIMES = ("auto", "savedmodel", "xla")
# Measured on 2 CPU cores for Input(256, 1) -> LSTM(64) -> Dense(32), ms per forecast: XLA
# 0.38 / 0.27 / 0.23 / 0.22 at batch 1 / 4 / 16 / 32 against 3.4 / 0.95 / 0.32 / 0.26 for the
# SavedModel; from 48 the SavedModel wins (0.19 vs 0.22 at 48, 0.17 vs 0.22 at 64).
XLA_BUCKETS = (1, 2, 4, 8, 16, 32)
XLA_RTOL = 1e-4  # tolerance relative to the output's scale (max |value|, at least 1)


class LoadError(ServingError):
    """A version folder that cannot become a servable (bad SavedModel, failed warmup)."""


# --------------------------------------------------------------------------------------------
# errors


def _tf_error(err: Exception) -> ServingError:
    """A TensorFlow runtime failure as a request error: never a crash, never a 500 for input."""
    import tensorflow as tf

    if isinstance(err, ServingError):
        return err
    if isinstance(err, tf.errors.ResourceExhaustedError):
        return ServingError(Code.RESOURCE_EXHAUSTED, err.message)
    if isinstance(err, tf.errors.OpError):
        return invalid(err.message)
    return invalid(f"{type(err).__name__}: {err}")



# --------------------------------------------------------------------------------------------
# the servable


def _outputs_match(
    got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], rtol: float = XLA_RTOL
) -> str | None:
    """None when every output agrees to `rtol` x max(1, max |want|); else why not."""
    for key, ref in want.items():
        if key not in got:
            return f"output {key!r} missing"
        if got[key].shape != ref.shape:
            return f"output {key!r} has shape {got[key].shape}, expected {ref.shape}"
        ref64 = ref.astype(np.float64)
        if not np.isfinite(ref64).all():
            return f"output {key!r} of the SavedModel is not finite on the check batch"
        diff = float(np.max(np.abs(got[key].astype(np.float64) - ref64))) if ref.size else 0.0
        scale = max(1.0, float(np.max(np.abs(ref64))) if ref.size else 1.0)
        if not diff <= rtol * scale:
            return f"output {key!r} differs by {diff:.3g} (tolerance {rtol * scale:.3g})"
    return None


def _bucket(n: int, buckets: Sequence[int]) -> int | None:
    return next((b for b in buckets if b >= n), None)


class _XlaPredict:
    """`serving_default` compiled with XLA, batch zero-padded up to a bucket."""

    def __init__(self, fn: Any, sig: SignatureInfo, buckets: Sequence[int]) -> None:
        import tensorflow as tf

        self.buckets = tuple(buckets)
        self.sig = sig
        self._keys = tuple(sorted(sig.inputs))
        specs = [
            tf.TensorSpec([None, *sig.inputs[k].shape[1:]],
                          tf.as_dtype(NUMPY_DTYPES[sig.inputs[k].dtype]), name=f"in{i}")
            for i, k in enumerate(self._keys)
        ]

        def call(*tensors):
            return fn(**dict(zip(self._keys, tensors, strict=True)))

        # The concrete function of positional tensors: calling it skips tf.function's
        # argument binding and dict canonicalization, ~0.2 ms of Python per call (a third of
        # a batch-1 forecast of the reference model on 2 cores).
        self._fn = tf.function(call, jit_compile=True,
                               input_signature=specs).get_concrete_function()

    @staticmethod
    def supports(sig: SignatureInfo) -> bool:
        return bool(sig.inputs) and all(
            info.shape is not None and len(info.shape) >= 1
            and all(d >= 0 for d in info.shape[1:])
            and info.dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64")
            for info in sig.inputs.values()
        )

    def covers(self, n: int) -> bool:
        return 1 <= n <= self.buckets[-1]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        n = len(next(iter(inputs.values())))
        size = _bucket(n, self.buckets)
        assert size is not None  # callers check covers()
        padded = []
        for k in self._keys:
            arr = inputs[k]
            if len(arr) != n:
                raise invalid("Batching input tensors must have equal 0th-dimension size")
            if size > n:
                arr = np.concatenate([arr, np.zeros((size - n, *arr.shape[1:]), arr.dtype)])
            padded.append(tf.constant(arr))
        out = self._fn(*padded)
        return {k: v.numpy()[:n] for k, v in out.items()}

    def compile(self, n: int) -> None:
        """Trigger XLA compilation for `n`'s bucket."""
        self({k: np.zeros((n, *info.shape[1:]), NUMPY_DTYPES[info.dtype])
              for k, info in self.sig.inputs.items()})


class SavedModelServable:
    """One loaded SavedModel version; implements `serve.types.Servable`. Thread-safe."""

    def __init__(self, name: str, version: int, path: Path, loaded: Any,
                 signatures: Mapping[str, SignatureInfo], metadata: Mapping[str, Any] | None
                 ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.runtime = "savedmodel"
        self.signatures = signatures
        self.metadata = metadata
        self.warmup_records = 0
        self.load_seconds = 0.0
        self._loaded = loaded
        self._functions = dict(loaded.signatures)
        self._xla: _XlaPredict | None = None

    def __repr__(self) -> str:
        return f"SavedModelServable({self.name!r}, {self.version}, runtime={self.runtime!r})"

    # -- lookup ---------------------------------------------------------------------------

    def _signature(self, signature_name: str) -> tuple[SignatureInfo, Any]:
        key = signature_name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        fn = self._functions.get(key)
        if sig is None or fn is None:
            raise invalid(f'Serving signature name: "{key}" not found in signature def')
        return sig, fn

    def _method_signature(self, signature_name: str, method: str, what: str
                          ) -> tuple[SignatureInfo, Any]:
        key = signature_name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        fn = self._functions.get(key)
        if sig is None or fn is None:
            raise invalid(f"No signature was found with the name: {key}")
        if sig.method_name != method:
            raise invalid(
                f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}"
            )
        return sig, fn

    # -- predict --------------------------------------------------------------------------

    def prepare_inputs(
        self, signature_name: str, inputs: Mapping[str, Any], output_filter: Sequence[str] = ()
    ) -> tuple[SignatureInfo, dict[str, np.ndarray]]:
        """Validate a predict request and cast its inputs to the signature's dtypes."""
        sig, _ = self._signature(signature_name)
        check_aliases(list(inputs), sig)
        check_output_filter(output_filter, sig)
        return sig, {k: cast_input(k, v, sig.inputs[k]) for k, v in inputs.items()}

    def predict(
        self, signature_name: str, inputs: Mapping[str, Any], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run a predict signature on {alias: array}; returns {output alias: array}."""
        sig, arrays = self.prepare_inputs(signature_name, inputs, output_filter)
        xla = self._xla
        n = _batch_size(arrays)
        if xla is not None and sig.name == DEFAULT_SIGNATURE and n is not None and xla.covers(n):
            try:
                out = xla(arrays)
            except Exception as err:  # a TF failure is a request error
                raise _tf_error(err) from err
        else:
            out = self._run_savedmodel(sig.name, arrays)
        keys = output_filter or tuple(out)
        return {k: out[k] for k in keys}

    def _run_savedmodel(self, key: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        _, fn = self._signature(key)
        try:
            feed = {k: tf.constant(v) for k, v in arrays.items()}
            out = fn(**feed)
            return {k: _to_numpy(v) for k, v in out.items()}
        except Exception as err:  # a TF failure is a request error
            raise _tf_error(err) from err

    # -- classify / regress ---------------------------------------------------------------

    def _run_examples(self, sig: SignatureInfo, fn: Any, examples: Sequence[Any],
                      context: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if not examples:
            raise invalid("Input is empty")
        serialized = np.array([make_example(e, context) for e in examples], dtype=object)
        (alias,) = sig.inputs  # "inputs" in TF Serving's signatures
        try:
            out = fn(**{alias: tf.constant(serialized, dtype=tf.string)})
            return {k: _to_numpy(v) for k, v in out.items()}
        except Exception as err:
            raise _tf_error(err) from err

    def classify(self, signature_name: str, examples: Sequence[Any],
                 context: Mapping[str, Any] | None = None) -> list[list[tuple[str, float]]]:
        """Per example, its (label, score) pairs; a signature without `classes` gives label ""
        and one without `scores` gives score 0.0 (TF Serving's ClassificationResult)."""
        sig, fn = self._method_signature(signature_name, CLASSIFY_METHOD, "classification")
        out = self._run_examples(sig, fn, examples, context)
        classes, scores = out.get("classes"), out.get("scores")
        if classes is None and scores is None:
            raise invalid("Expected classification signature outputs classes or scores")
        n = len(examples)
        for key, arr in (("classes", classes), ("scores", scores)):
            if arr is not None and (arr.ndim != 2 or arr.shape[0] != n):
                raise invalid(
                    f"Expected Tensor shape: [batch_size num_classes] but got "
                    f"{shape_text(arr.shape)} for {key}"
                )
        k = (classes if classes is not None else scores).shape[1]
        result = []
        for i in range(n):
            row = []
            for j in range(k):
                label = classes[i, j] if classes is not None else b""
                label = label.decode("utf-8", "replace") if isinstance(label, bytes) else label
                row.append((str(label), float(scores[i, j]) if scores is not None else 0.0))
            result.append(row)
        return result

    def regress(self, signature_name: str, examples: Sequence[Any],
                context: Mapping[str, Any] | None = None) -> list[float]:
        """One float per example (TF Serving's RegressionResult)."""
        sig, fn = self._method_signature(signature_name, REGRESS_METHOD, "regression")
        out = self._run_examples(sig, fn, examples, context)
        values = out.get("outputs", next(iter(out.values())) if len(out) == 1 else None)
        n = len(examples)
        if values is None:
            raise invalid("No output tensor named outputs in the regression signature")
        if not (values.shape == (n,) or values.shape == (n, 1)):
            raise invalid(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                f"but got {shape_text(values.shape)}"
            )
        return [float(v) for v in values.reshape(n)]

    # -- load-time steps ------------------------------------------------------------------

    def try_xla(self, check_batches: Sequence[Mapping[str, np.ndarray]],
                buckets: Sequence[int] = XLA_BUCKETS) -> bool:
        """Adopt the XLA runtime for `serving_default` if it matches the SavedModel on
        `check_batches`; log why not otherwise. Returns whether it was adopted."""
        sig = self.signatures.get(DEFAULT_SIGNATURE)
        fn = self._functions.get(DEFAULT_SIGNATURE)
        if sig is None or fn is None or not _XlaPredict.supports(sig):
            log.info("%s v%d: no XLA runtime (serving_default not a fixed-shape numeric signature)",
                     self.name, self.version)
            return False
        rng = np.random.default_rng(0)
        fallback = {k: rng.standard_normal((3, *i.shape[1:])).astype(NUMPY_DTYPES[i.dtype])
                    for k, i in sig.inputs.items()}  # only when there is no warmup batch
        t0 = time.perf_counter()
        try:
            xla = _XlaPredict(fn, sig, buckets)
            checked = 0
            for batch in [*check_batches, fallback]:
                if checked and batch is fallback:
                    break
                _, arrays = self.prepare_inputs(DEFAULT_SIGNATURE, batch)
                if _batch_size(arrays) in (None, 0):
                    continue
                arrays = {k: v[: xla.buckets[-1]] for k, v in arrays.items()}
                checked += 1
                why = _outputs_match(xla(arrays), self._run_savedmodel(DEFAULT_SIGNATURE, arrays))
                if why is not None:
                    log.warning("%s v%d: XLA runtime rejected, %s; serving the SavedModel",
                                self.name, self.version, why)
                    return False
            for size in xla.buckets:  # compile every bucket now, not on a request
                xla.compile(size)
        except Exception as err:  # any compile failure means: keep the SavedModel
            log.warning("%s v%d: XLA runtime failed (%s: %s); serving the SavedModel",
                        self.name, self.version, type(err).__name__, str(err)[:300])
            return False
        self._xla = xla
        self.runtime = "xla"
        log.info("%s v%d: XLA runtime verified in %.2f s (buckets %s)", self.name, self.version,
                 time.perf_counter() - t0, list(buckets))
        return True

    def warmup(self, records: Sequence[Any]) -> int:
        """Replay PredictionLog records (predict, classify, regress, multi_inference)."""
        import tensorflow as tf

        for i, record in enumerate(records):
            kind = record.WhichOneof("log_type")
            try:
                if kind == "predict_log":
                    req = record.predict_log.request
                    inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
                    self.predict(req.model_spec.signature_name, inputs, tuple(req.output_filter))
                elif kind in ("classify_log", "regress_log"):
                    req = getattr(record, kind).request
                    run = self.classify if kind == "classify_log" else self.regress
                    run(req.model_spec.signature_name, *_examples_of(req.input))
                elif kind == "multi_inference_log":
                    req = record.multi_inference_log.request
                    examples, context = _examples_of(req.input)
                    for task in req.tasks:
                        run = self.classify if task.method_name == CLASSIFY_METHOD else self.regress
                        run(task.model_spec.signature_name, examples, context)
                else:
                    raise invalid(f"Unsupported log_type for warmup: {kind}")
            except ServingError as err:
                raise LoadError(
                    Code.INVALID_ARGUMENT, f"warmup record {i} failed: {err.message}"
                ) from err
        return len(records)


def _examples_of(model_input: Any) -> tuple[list[Any], Any]:
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return list(model_input.example_list.examples), None
    if kind == "example_list_with_context":
        lst = model_input.example_list_with_context
        return list(lst.examples), dict(lst.context.features.feature)
    raise invalid("Input is empty")


def _batch_size(arrays: Mapping[str, np.ndarray]) -> int | None:
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    return sizes.pop() if len(sizes) == 1 else None


def _to_numpy(t: Any) -> np.ndarray:
    arr = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    return np.asarray(arr)


def read_warmup_records(path: str | Path) -> list[Any]:
    """The PredictionLog records of `<path>/assets.extra/tf_serving_warmup_requests`; [] when
    absent. More than 1000 records is a load error, as in TF Serving."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    file = Path(path) / WARMUP_RELPATH
    if not file.is_file():
        log.info("No warmup data file found at %s", file)
        return []
    records = []
    try:
        for raw in tf.data.TFRecordDataset(str(file)).as_numpy_iterator():
            if len(records) == MAX_WARMUP_RECORDS:
                raise LoadError(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                    f"at {file}",
                )
            records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    except tf.errors.OpError as err:
        raise LoadError(Code.DATA_LOSS, f"Failed to read warmup data file {file}: {err.message}"
                        ) from err
    return records


def _read_metadata(path: Path) -> dict | None:
    file = path / METADATA_RELPATH
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s: %s", file, err)
        return None


def _predict_batches(records: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    import tensorflow as tf

    batches = []
    for r in records:
        if r.WhichOneof("log_type") == "predict_log":
            req = r.predict_log.request
            if (req.model_spec.signature_name or DEFAULT_SIGNATURE) == DEFAULT_SIGNATURE:
                batches.append({k: tf.make_ndarray(v) for k, v in req.inputs.items()})
    return batches


def load_servable(
    name: str,
    version: int,
    path: str | Path,
    *,
    runtime: str = "auto",
    enable_warmup: bool = True,
) -> SavedModelServable:
    """Load the SavedModel in `path` as version `version` of model `name`.

    `runtime`: "savedmodel" (plain), "xla" (compiled `serving_default` for any model whose
    serving_default is fixed-shape numeric, verified, falling back to the SavedModel), or
    "auto" (= "xla" for pulsecast exports, "savedmodel" otherwise). Warmup records are replayed
    after the runtime is chosen. Raises `LoadError` (a `ServingError`) with the failure's code.
    """
    import tensorflow as tf

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    path = Path(path)
    t0 = time.perf_counter()
    if not (path / "saved_model.pb").is_file():
        raise LoadError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
        )
    try:
        signatures = read_signatures(path)
        loaded = tf.saved_model.load(str(path), tags=["serve"])
    except ServingError as err:
        raise LoadError(err.code, err.message) from err
    except tf.errors.OpError as err:
        raise LoadError(Code(err.error_code), err.message) from err
    except Exception as err:  # a corrupt proto raises DecodeError: that is data loss
        code = Code.DATA_LOSS if type(err).__name__ == "DecodeError" else Code.UNKNOWN
        raise LoadError(code, f"Failed to load SavedModel at {path}: "
                        f"{type(err).__name__}: {err}") from err
    servable = SavedModelServable(name, version, path, loaded, signatures, _read_metadata(path))
    records = read_warmup_records(path) if enable_warmup else []
    if runtime == "xla" or (runtime == "auto" and servable.metadata is not None):
        servable.try_xla(_predict_batches(records))
    if records:
        servable.warmup_records = servable.warmup(records)
    servable.load_seconds = time.perf_counter() - t0
    return servable
