"""`SavedModelServable`: one loaded SavedModel version answering predict, classify and regress.

Two runtimes run `predict` (chosen at load, see `serve.runtime.load`):

- `savedmodel`: the loaded signature's concrete function, as TF Serving runs it.
- `xla`: `serving_default` compiled (`serve.runtime.xla`), swapped in by a background job once
  verified (`start_xla`; the SavedModel serves until then), for batches up to the largest bucket
  whose inputs have the signature's declared shapes; larger batches, other shapes and other
  signatures use the SavedModel.

Inputs are checked (aliases, output filter) and cast to the signature's dtypes first
(`serve.runtime.signatures`); their shapes are the graph's to judge, as in TF Serving, except a
pulsecast model's window: a version with a `pulsecast.json` refuses a `serving_default` input of
another shape than `(batch, input_steps, len(channels))`, naming both (`ModelWindow`), in
`prepare_inputs`, which every protocol and both batchers go through. Errors are
`ServingError`s carrying TF Serving's codes and texts (`specs/tf-serving.md` §1.3); a TensorFlow
failure on a request is a 4xx, never a crash. TensorFlow is imported inside functions.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY
from serve.errors import Code, ServingError, invalid
from serve.runtime.signatures import (
    ModelWindow,
    cast_input,
    check_aliases,
    check_output_filter,
    check_window_shape,
    fits_declared_shapes,
    shape_text,
)
from serve.runtime.xla import XLA_BUCKETS, XlaBackground, XlaPredict, batch_size
from serve.types import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    SignatureInfo,
)
from serve.wire.examples import make_example


def _tf_error(err: Exception) -> ServingError:
    """A TensorFlow runtime failure as a request error: never a crash, never a 500 for input."""
    import tensorflow as tf

    if isinstance(err, ServingError):
        return err
    if isinstance(err, tf.errors.ResourceExhaustedError):
        return ServingError(Code.RESOURCE_EXHAUSTED, _runtime_message(err.message))
    if isinstance(err, tf.errors.OpError):
        return invalid(_runtime_message(err.message))
    return invalid(f"{type(err).__name__}: {err}")


def _runtime_message(message: str) -> str:
    """The op's own error text, as TF Serving answers it, without the lines TensorFlow's Python
    function call puts first ("Graph execution error:", "Detected at node ... defined at (most
    recent call last):" and the Python frames that built the graph, which name server files)."""
    lines = message.split("\n")
    if lines[0] != "Graph execution error:":
        return message
    i = 1
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(
            ("Detected at node ", "<stack traces unavailable>", "  "))):
        i += 1
    return "\n".join(lines[i:]) or message


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
        self.window = ModelWindow.of(metadata, signatures)  # None: not a pulsecast model
        self.warmup_records = 0
        self.load_seconds = 0.0
        self._loaded = loaded
        self._functions = dict(loaded.signatures)
        self._xla: XlaPredict | None = None
        self._xla_job: XlaBackground | None = None
        self._xla_lock = threading.Lock()  # adopt_xla against close
        self._closed = False

    def __repr__(self) -> str:
        return f"SavedModelServable({self.name!r}, {self.version}, runtime={self.runtime!r})"

    # -- lookup ---------------------------------------------------------------------------

    def _signature(self, signature_name: str) -> tuple[SignatureInfo, Any]:
        key = signature_name or SIGNATURE_KEY
        sig = self.signatures.get(key)
        fn = self._functions.get(key)
        if sig is None or fn is None:
            raise invalid(f'Serving signature name: "{key}" not found in signature def')
        return sig, fn

    def _method_signature(self, signature_name: str, method: str, what: str
                          ) -> tuple[SignatureInfo, Any]:
        key = signature_name or SIGNATURE_KEY
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
        """Validate a predict request and cast its inputs to the signature's dtypes; a pulsecast
        model's window input must have the window's shape (module doc)."""
        sig, _ = self._signature(signature_name)
        check_aliases(list(inputs), sig)
        check_output_filter(output_filter, sig)
        arrays = {k: cast_input(k, v, sig.inputs[k]) for k, v in inputs.items()}
        if self.window is not None and sig.name == SIGNATURE_KEY:
            check_window_shape(arrays, self.window, self.name, self.version)
        return sig, arrays

    def predict(
        self, signature_name: str, inputs: Mapping[str, Any], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run a predict signature on {alias: array}; returns {output alias: array}."""
        sig, arrays = self.prepare_inputs(signature_name, inputs, output_filter)
        xla = self._xla
        n = batch_size(arrays)
        # XLA was compiled for the declared shapes: any other shape goes to the SavedModel,
        # which answers it or refuses it with TensorFlow's message, as TF Serving would.
        if (xla is not None and sig.name == SIGNATURE_KEY and n is not None and xla.covers(n)
                and fits_declared_shapes(arrays, sig)):
            try:
                out = xla(arrays)
            except Exception as err:  # a TF failure is a request error
                raise _tf_error(err) from err
        else:
            out = self.run_savedmodel(sig.name, arrays)
        keys = output_filter or tuple(out)
        return {k: out[k] for k in keys}

    def run_savedmodel(self, key: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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

    def function(self, signature_name: str) -> Any | None:
        """The loaded concrete function of a signature, or None."""
        return self._functions.get(signature_name)

    def start_xla(self, check_batches: Sequence[Mapping[str, np.ndarray]],
                  buckets: Sequence[int] = XLA_BUCKETS) -> XlaBackground:
        """Compile and verify the XLA runtime for `serving_default` in a background thread
        (`serve.runtime.xla.XlaBackground`): this returns at once, the SavedModel answers until
        a bucket is verified against it on `check_batches`, and no request waits for a compile."""
        job = XlaBackground(self, check_batches, buckets)
        with self._xla_lock:
            if self._closed:
                job.cancel()  # never started: "cancelled"
            else:
                self._xla_job = job.start()
        return job

    def try_xla(self, check_batches: Sequence[Mapping[str, np.ndarray]],
                buckets: Sequence[int] = XLA_BUCKETS) -> bool:
        """`start_xla`, then wait for it: whether the XLA runtime was adopted."""
        self.start_xla(check_batches, buckets).wait()
        return self.runtime == "xla"

    def wait_for_runtime(self, timeout: float | None = None) -> str:
        """Wait up to `timeout` for the background XLA job (if any) to end; the runtime then."""
        job = self._xla_job
        if job is not None:
            job.wait(timeout)
        return self.runtime

    def adopt_xla(self, xla: XlaPredict) -> bool:
        """Serve `serving_default` through `xla` from now on (for the buckets it covers);
        False once the servable is closed. Called by the background job."""
        with self._xla_lock:
            if self._closed:
                return False
            self._xla, self.runtime = xla, "xla"
            return True

    def drop_xla(self) -> None:
        """Back to the SavedModel for every request (a bucket failed its check)."""
        with self._xla_lock:
            self._xla, self.runtime = None, "savedmodel"

    def close(self) -> None:
        """Called by the manager once no request holds this version: cancel a background XLA
        compile (waiting for the step in progress) and drop the compiled function."""
        with self._xla_lock:
            self._closed = True
            job, self._xla_job = self._xla_job, None
        if job is not None:
            job.cancel()
        self.drop_xla()


def _to_numpy(t: Any) -> np.ndarray:
    arr = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    return np.asarray(arr)
