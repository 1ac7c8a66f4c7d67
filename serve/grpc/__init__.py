"""The gRPC front end: TensorFlow Serving's PredictionService and ModelService (port 8500).

    service.py  the servicers: Predict, Classify, Regress, GetModelMetadata, GetModelStatus,
                HandleReloadConfigRequest, with TF Serving's status codes and texts
    server.py   make_grpc_server / start_grpc_server: threads, port, message sizes, limits
    auth.py     the bearer token on every method but health (an interceptor)
    health.py   grpc.health.v1.Health: readiness, open without a token

Tensors are coded by `serve.wire.tensor_proto`; models come from `serve.versions`.
"""
