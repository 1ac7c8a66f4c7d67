"""The online part: REST and gRPC servers speaking TensorFlow Serving's wire protocol.

    server.py        the process: settings -> version manager + REST + gRPC, graceful drain
    settings.py      ServerSettings: every `pulsecast serve` flag, its default, its type
    model_config.py  TF Serving's --model_config_file / --batching_parameters_file; the store
    http/            REST: routes (http/routes.py), /v1 handlers, KServe V2, :forecast, plumbing
    grpc/            gRPC: PredictionService and ModelService
    versions/        which versions are loaded: disk scans, the unload rule, the manager
    batching/        batching concurrent requests: TF Serving's scheduler, pulsecast's adaptive
    runtime/         one SavedModel version as a servable: signatures, XLA, warmup
    wire/            dtypes and the JSON / TensorProto tensor codecs (pure, no TensorFlow)
    errors.py        canonical codes and TF Serving's error mapping
    auth.py          the bearer token, one rule for REST and gRPC
    types.py         the values crossing these modules (configs, policies, signatures, states)
    metrics.py       Prometheus metrics

Reads model base paths (TF Serving's layout of numbered SavedModel folders, `models.layout`) and
writes nothing to disk. `serve` imports `models`, never `pipelines`.
"""
