"""TensorFlow Serving's gRPC services on the stock stubs: PredictionService and ModelService.

Wire contract (`specs/tf-serving.md` §2): package `tensorflow.serving`, the generated servicers of
`tensorflow-serving-api`, so any unmodified TF Serving client works. What this module promises:

- Predict: inputs in `tensor_content` or the typed `*_val` fields (`serve.wire.tensor_proto`);
  outputs in the typed fields (TF Serving's default) or, with `tensor_content_outputs`, in
  `tensor_content`; `model_spec` echoed with name, version and the resolved signature name
  (`serving_default` when the request left it empty); `version` / `version_label` honored;
  `output_filter` honored with TF's error text.
- Classify / Regress on signatures taking serialized tf.Examples; GetModelMetadata with
  `metadata_field: "signature_def"` (a `SignatureDefMap` packed in an `Any`); GetModelStatus;
  HandleReloadConfigRequest through `manager.reload_config` when the manager has one.
  MultiInference answers UNIMPLEMENTED.
- Every failure is `context.abort(code, message)` with TF Serving's canonical code and text
  (`serve.errors`); a malformed request never takes the server down. Tensor values are never
  logged.

The server around these servicers (threads, port, message sizes) is `serve.grpc.server`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from models.layout import SIGNATURE_KEY
from serve.errors import Code, ServingError, invalid
from serve.types import ModelConfig, SignatureInfo, TensorInfo
from serve.wire.dtypes import dtype_enum
from serve.wire.examples import examples_of
from serve.wire.tensor_proto import (
    DEFAULT_MAX_TENSOR_BYTES,
    check_request_bytes,
    decode_tensor,
    encode_tensor,
)

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
INTERNAL_TEXT = "Internal error (the server's log has the details)"


# --------------------------------------------------------------------------------------------
# request helpers


def _version_of(spec: Any) -> tuple[int | None, str | None]:
    """(version, label) from a ModelSpec's `version_choice` oneof."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _fill_model_spec(out: Any, name: str, version: int, signature_name: str | None) -> None:
    """util.cc MakeModelSpec: name, version and (when given) the signature, empty -> default."""
    out.name = name
    out.version.value = version
    if signature_name is not None:
        out.signature_name = signature_name or SIGNATURE_KEY


def _tensor_info_proto(info: TensorInfo, out: Any) -> None:
    out.name = info.name
    out.dtype = dtype_enum(info.dtype)
    if info.shape is None:
        out.tensor_shape.unknown_rank = True
    else:
        for size in info.shape:
            out.tensor_shape.dim.add(size=size)


def make_signature_def_map(signatures: Mapping[str, SignatureInfo]) -> Any:
    """The `tensorflow.serving.SignatureDefMap` of a servable's signatures."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in signatures.items():
        out = sig_map.signature_def[key]
        out.method_name = sig.method_name
        for alias, info in sig.inputs.items():
            _tensor_info_proto(info, out.inputs[alias])
        for alias, info in sig.outputs.items():
            _tensor_info_proto(info, out.outputs[alias])
    return sig_map


def configs_from_proto(server_config: Any) -> list[ModelConfig]:
    """A `tensorflow.serving.ModelServerConfig` as `ModelConfig`s, by the same rules as
    `--model_config_file` (`serve.model_config`); raises `ModelConfigError` (a ValueError)."""
    from google.protobuf import text_format

    from serve.model_config import parse_model_config

    return parse_model_config(text_format.MessageToString(server_config), "ReloadConfigRequest")


# --------------------------------------------------------------------------------------------
# the servicers


# (model name, RPC, status code name, latency in seconds), e.g. ServingMetrics.observe_grpc
Observer = Callable[[str, str, str, float], None]


@contextmanager
def _errors_to_status(context: grpc.ServicerContext, method: str,
                      observe: Observer | None = None, model: str = "") -> Iterator[None]:
    """Turn failures into gRPC statuses: ServingError keeps its code and text, anything else is
    INTERNAL (and logged, without request contents). With `observe`, every call is recorded with
    its status and latency before it answers."""
    t0 = time.perf_counter()
    try:
        yield
    except ServingError as err:
        log.debug("%s failed: %s %s", method, err.code.name, err.message[:300])
        if observe is not None:
            observe(model, method, err.code.name, time.perf_counter() - t0)
        context.abort(grpc.StatusCode[err.code.name], err.message)
    except Exception:  # a bug or TF failure must answer, never kill the worker
        # the text stays in the log: an exception's text can name files and internals
        log.exception("%s failed unexpectedly", method)
        if observe is not None:
            observe(model, method, "INTERNAL", time.perf_counter() - t0)
        context.abort(grpc.StatusCode.INTERNAL, INTERNAL_TEXT)
    else:
        if observe is not None:
            observe(model, method, "OK", time.perf_counter() - t0)


def _observed(manager: Any, metrics: Any, context: grpc.ServicerContext, method: str,
              model: str):
    """`_errors_to_status` recording into `metrics` (a `serve.metrics.ServingMetrics`) when
    given; a name the manager does not serve is recorded as "" so that unknown names from
    clients cannot grow the label sets."""
    if metrics is None:
        return _errors_to_status(context, method)
    if model not in manager.model_names():
        model = ""
    return _errors_to_status(context, method, metrics.observe_grpc, model)


class PredictionServicer:
    """tensorflow.serving.PredictionService over a `serve.versions.manager.ModelManager`."""

    def __init__(self, manager: Any, tensor_content_outputs: bool = False,
                 max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
                 metrics: Any = None, max_broadcast_bytes: int | None = None) -> None:
        self.manager = manager
        self.tensor_content_outputs = tensor_content_outputs
        self.max_tensor_bytes = max_tensor_bytes
        self.max_broadcast_bytes = max_broadcast_bytes
        self.metrics = metrics

    def _calls(self, context: grpc.ServicerContext, method: str, model: str):
        return _observed(self.manager, self.metrics, context, method, model)

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import predict_pb2

        response = predict_pb2.PredictResponse()
        with self._calls(context, "Predict", request.model_spec.name):
            spec = request.model_spec
            version, label = _version_of(spec)
            with self.manager.acquire(spec.name, version, label) as servable:
                signature_name = spec.signature_name or SIGNATURE_KEY
                if signature_name not in servable.signatures:
                    raise ServingError(
                        Code.FAILED_PRECONDITION,
                        f'Serving signature key "{signature_name}" not found.',
                    )
                # the whole request's weight first: nothing is allocated for a refused one
                check_request_bytes(request.inputs, self.max_tensor_bytes)
                inputs = {
                    alias: decode_tensor(proto, alias, self.max_tensor_bytes,
                                         self.max_broadcast_bytes)
                    for alias, proto in request.inputs.items()
                }
                outputs = servable.predict(signature_name, inputs, tuple(request.output_filter))
                served_version = servable.version
            for alias, array in outputs.items():
                encode_tensor(array, self.tensor_content_outputs, out=response.outputs[alias])
            _fill_model_spec(response.model_spec, spec.name, served_version, signature_name)
        return response

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import classification_pb2

        return self._on_examples(request, context, "Classify",
                                 classification_pb2.ClassificationResponse())

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import regression_pb2

        return self._on_examples(request, context, "Regress",
                                 regression_pb2.RegressionResponse())

    def _on_examples(self, request: Any, context: grpc.ServicerContext, rpc: str,
                     response: Any) -> Any:
        """Classify or Regress (`rpc`): the request's tf.Examples through the servable's
        `classify` / `regress`, the results into `response`, the model spec echoed."""
        with self._calls(context, rpc, request.model_spec.name):
            spec = request.model_spec
            version, label = _version_of(spec)
            with self.manager.acquire(spec.name, version, label) as servable:
                examples, features = examples_of(request.input)
                if not examples:
                    raise invalid("Input is empty")
                run = servable.classify if rpc == "Classify" else servable.regress
                results = run(spec.signature_name, examples, features)
                served_version = servable.version
            if rpc == "Classify":
                for row in results:
                    classes = response.result.classifications.add()
                    for class_label, score in row:
                        classes.classes.add(label=class_label, score=score)
            else:
                for value in results:
                    response.result.regressions.add(value=value)
            _fill_model_spec(response.model_spec, spec.name, served_version, spec.signature_name)
        return response

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported")

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = get_model_metadata_pb2.GetModelMetadataResponse()
        with self._calls(context, "GetModelMetadata", request.model_spec.name):
            # get_model_metadata_impl.cc checks the fields before looking the model up
            if not request.metadata_field:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise invalid(f"Metadata field {field} is not supported")
            spec = request.model_spec
            version, label = _version_of(spec)
            with self.manager.acquire(spec.name, version, label) as servable:
                sig_map = make_signature_def_map(servable.signatures)
                served_version = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
            # name and version only: signature_name stays "" as in TF Serving's metadata
            _fill_model_spec(response.model_spec, spec.name, served_version, None)
        return response


class ModelServicer:
    """tensorflow.serving.ModelService: version status and config reloads.

    A reload may only name base paths under `config_roots` (real paths; None: the folders
    holding the base paths configured now, `serve.model_config.default_config_roots`); any other
    is INVALID_ARGUMENT and nothing is unloaded.
    """

    def __init__(self, manager: Any, metrics: Any = None,
                 config_roots: Sequence[Path] | None = None) -> None:
        self.manager = manager
        self.metrics = metrics
        if config_roots is None:
            from serve.model_config import default_config_roots

            config_of = getattr(manager, "config", None)
            configs = [config_of(n) for n in manager.model_names()] if config_of else []
            config_roots = default_config_roots(configs)
        self.config_roots = tuple(config_roots)

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        with _observed(self.manager, self.metrics, context, "GetModelStatus",
                       request.model_spec.name):
            spec = request.model_spec
            version, label = _version_of(spec)
            for status in self.manager.status(spec.name, version, label):
                entry = response.model_version_status.add(
                    version=status.version, state=int(status.state)
                )
                entry.status.error_code = int(status.error_code)
                entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request: Any,  # noqa: N802
                                  context: grpc.ServicerContext) -> Any:
        from tensorflow_serving.apis import model_management_pb2

        reload_config = getattr(self.manager, "reload_config", None)
        if reload_config is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          "this server cannot reload its model config")
        response = model_management_pb2.ReloadConfigResponse()
        with _errors_to_status(context, "HandleReloadConfigRequest"):
            if request.config.WhichOneof("config") is None:
                # server_core.cc: an empty config is no action, so a later real one still works
                log.info("Taking no action for empty config.")
            else:
                from serve.model_config import check_under_roots

                try:
                    configs = configs_from_proto(request.config)
                    check_under_roots(configs, self.config_roots)  # before anything unloads
                    reload_config(configs)
                except ValueError as err:  # a ModelConfigError, duplicate names...
                    raise invalid(str(err)) from err
                log.info("model config reloaded: %s", [c.name for c in configs])
            response.status.error_code = int(Code.OK)
        return response
