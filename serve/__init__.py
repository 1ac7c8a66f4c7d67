"""The online part: REST and gRPC servers speaking TensorFlow Serving's wire protocol.

`serve` imports `models`, never `pipelines`.
"""
