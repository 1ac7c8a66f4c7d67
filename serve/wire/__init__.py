"""What crosses the wire: TensorFlow's dtypes and the two tensor codecs, pure and TF-free.

    dtypes.py        the one DataType table (name, number, numpy form, TensorProto field, V2 name)
    json_tensor/     TF Serving's JSON codec (REST): requests -> numpy, numpy -> responses
    tensor_proto.py  TensorProto <-> numpy (gRPC requests and responses, warmup records)
    examples.py      tf.Example for classify/regress: from JSON features, from serving.Input

Nothing here imports TensorFlow at import time or touches disk; the HTTP and gRPC front ends
(`serve.http`, `serve.grpc`) and the runtime's warmup replay call these codecs.
"""
