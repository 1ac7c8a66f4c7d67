"""The handlers of TF Serving's REST API (`/v1`), plus pulsecast's `:forecast` and model contract.

    POST :predict / :classify / :regress    TF Serving's JSON in and out (`serve.wire.json_tensor`)
    POST :forecast                          a raw signal in, a forecast out (`serve.http.forecast`)
    GET  status, /metadata                  TF Serving's model status and SignatureDefs
    GET  /pulsecast/models/<m>[...]         the public keys of the version's pulsecast.json

The URL grammar is `serve.http.routes`; these are the handlers it calls, each answering an
`Outcome` or raising `ServingError` with TF Serving's texts. The hot path (`:predict`) decodes a
small numeric body on the event loop and, for a batching servable, queues it from there: no
worker-thread hand-off. Everything else, the element-by-element decode included, runs on the
worker pool; a request's tensors are weighed against `max_tensor_bytes` before they are decoded.
"""

from __future__ import annotations

from typing import Any

import orjson

from models.layout import SIGNATURE_KEY
from serve.errors import Code, ServingError, invalid
from serve.http import forecast as forecast_mod
from serve.http.forecast_body import parse_forecast_request
from serve.http.plumbing import Outcome, Workers, model_ref
from serve.wire import json_tensor as jt

# :predict bodies up to this size are parsed on the event loop and, when the one-`np.asarray`
# path takes every tensor, decoded and (for a batching servable) queued from there: no
# worker-thread hand-off per request. 16 KiB keeps the worst such body under a millisecond of
# loop time (64-deep nesting: 0.55 ms to parse and quote in the error; 64 KiB took 4.7 ms).
# The element-by-element path (bools, strings, bad values: about a microsecond a value) always
# runs on the worker pool.
INLINE_BODY_BYTES = 16 * 1024
# pulsecast.json keys the metadata route exposes (not local paths, configs or param tables)
PUBLIC_METADATA_KEYS = (
    "model_name", "channels", "units", "targets", "target_units", "fs", "input_steps",
    "horizon", "quantiles", "created_at", "exported_at", "parent_version", "metrics",
    "serving_signature",
)


class TfServingHandlers:
    """The `/v1` handlers over a model manager (`serve.versions.manager.ModelManager` or one
    like it), running blocking work on `workers`; a :predict request's tensors may weigh
    `max_tensor_bytes` in all."""

    def __init__(self, manager: Any, workers: Workers,
                 max_tensor_bytes: int = jt.MAX_REQUEST_TENSOR_BYTES) -> None:
        self.manager = manager
        self.workers = workers
        self.max_tensor_bytes = max_tensor_bytes

    # -- predict ---------------------------------------------------------------------------

    async def predict(self, name: str, version: int | None, label: str | None,
                      body: bytes) -> Outcome:
        """:predict. A small numeric body is decoded here on the loop; for a batching servable
        the request is queued from here and its batch awaited, so no worker thread is involved.
        Otherwise (a large body, one that needs the element-by-element decode, a servable that
        does not batch) the work runs on the worker pool."""
        if len(body) > INLINE_BODY_BYTES:
            return await self.workers.run(self._predict_body, name, version, label, body)
        doc = jt.parse_json(body)
        jt.signature_name_of(doc)
        fast = _fast_decode(body)
        with self.manager.acquire(name, version, label) as servable:
            submit = getattr(servable, "submit_async", None)
            if submit is not None and fast:
                try:
                    request = jt.decode_predict_request(
                        doc, lambda sig: signature_of(servable, sig).inputs,
                        max_tensor_bytes=self.max_tensor_bytes, reference=False)
                except jt.SlowPathNeeded:
                    request = None  # decoded again on the worker pool below
                future = None if request is None else submit(request.signature_name,
                                                             request.inputs)
                if future is not None:
                    outputs = await self.workers.bounded(future)
                    return Outcome(200, jt.encode_predict_response(outputs, request.row),
                                   name, "predict")
        return await self.workers.run(self._predict_doc, name, version, label, doc, fast)

    def _predict_body(self, name: str, version: int | None, label: str | None,
                      body: bytes) -> Outcome:
        doc = jt.parse_json(body)
        jt.signature_name_of(doc)
        return self._predict_doc(name, version, label, doc, _fast_decode(body))

    def _predict_doc(self, name: str, version: int | None, label: str | None, doc: Any,
                     fast: bool) -> Outcome:
        with self.manager.acquire(name, version, label) as servable:
            request = jt.decode_predict_request(
                doc, lambda sig: signature_of(servable, sig).inputs, fast=fast,
                max_tensor_bytes=self.max_tensor_bytes)
            outputs = servable.predict(request.signature_name, request.inputs)
        return Outcome(200, jt.encode_predict_response(outputs, request.row), name, "predict")

    # -- classify / regress / forecast (on the worker pool) --------------------------------

    def examples(self, method: str, name: str, version: int | None, label: str | None,
                 body: bytes) -> Outcome:
        """:classify or :regress (`method`): tf.Examples in, `{"results": ...}` out."""
        doc = jt.parse_json(body)
        jt.signature_name_of(doc)
        with self.manager.acquire(name, version, label) as servable:
            request = jt.decode_examples_request(doc, method)
            run = servable.classify if method == "classify" else servable.regress
            result = run(request.signature_name, request.examples, request.context)
        encode = (jt.encode_classify_response if method == "classify"
                  else jt.encode_regress_response)
        return Outcome(200, encode(result), name, method)

    def forecast(self, name: str, version: int | None, label: str | None,
                 body: bytes) -> Outcome:
        """:forecast: the request's signal as the model's window, its forecast with times."""
        request = parse_forecast_request(jt.parse_json(body))
        with self.manager.acquire(name, version, label) as servable:
            metadata = forecast_mod.check_metadata(name, servable.metadata)
            window = forecast_mod.make_window(request, metadata)
            signature = signature_of(servable, SIGNATURE_KEY)
            if len(signature.inputs) != 1:
                raise invalid(f"model {name} must take one input tensor for :forecast")
            alias = next(iter(signature.inputs))
            outputs = servable.predict(SIGNATURE_KEY, {alias: window[None]})
            served_version = servable.version
        doc = forecast_mod.make_forecast_response(name, served_version, metadata, outputs,
                                                  request)
        return Outcome(200, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), name,
                       "forecast")

    # -- status and metadata ---------------------------------------------------------------

    def status(self, name: str, version: int | None, label: str | None) -> Outcome:
        statuses = self.manager.status(name, version, label)
        doc = {"model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.name,
                "status": {"error_code": s.error_code.name, "error_message": s.error_message},
            }
            for s in statuses
        ]}
        return Outcome(200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), name, "status")

    def metadata(self, name: str, version: int | None, label: str | None) -> Outcome:
        with self.manager.acquire(name, version, label) as servable:
            doc = {
                "model_spec": {"name": name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": {"signature_def": {
                    key: signature_def_json(sig) for key, sig in servable.signatures.items()
                }}},
            }
        return Outcome(200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), name, "metadata")

    def pulsecast_metadata(self, name: str, version: str | None) -> Outcome:
        """The public part of the served version's pulsecast.json (NOT_FOUND without one)."""
        name, version_num, _ = model_ref(name, version, None, invalid("Malformed model name"))
        with self.manager.acquire(name, version_num, None) as servable:
            meta = servable.metadata
            served = servable.version
        if not meta:
            raise ServingError(Code.NOT_FOUND, f"model {name} version {served} has no "
                                               "pulsecast.json metadata")
        doc = {"model_name": name, "version": served,
               "metadata": {k: meta[k] for k in PUBLIC_METADATA_KEYS if k in meta}}
        return Outcome(200, orjson.dumps(doc), name, "pulsecast")


def _fast_decode(body: bytes) -> bool:
    """Whether the body has no JSON booleans (numbers only: the fast numeric decode applies)."""
    return b"true" not in body and b"false" not in body


def signature_of(servable: Any, name: str) -> Any:
    """The servable's SignatureInfo `name`; TF Serving's 400 when it has none."""
    sig = servable.signatures.get(name)
    if sig is None:
        raise invalid(f'Serving signature name: "{name}" not found in signature def')
    return sig


def signature_def_json(sig: Any) -> dict:
    """A SignatureDef as protobuf JSON (preserved field names, int64 as strings)."""
    return {
        "inputs": {k: _tensor_info_json(v) for k, v in sig.inputs.items()},
        "outputs": {k: _tensor_info_json(v) for k, v in sig.outputs.items()},
        "method_name": sig.method_name,
        "defaults": {},
    }


def _tensor_info_json(info: Any) -> dict:
    if info.shape is None:
        shape = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in info.shape],
                 "unknown_rank": False}
    return {"dtype": info.dtype, "tensor_shape": shape, "name": info.name}
