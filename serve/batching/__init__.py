"""Batching concurrent predict requests into one model call, without changing any answer.

    scheduler.py  BatchScheduler: TF Serving's dynamic batching (`--enable_batching` and its
                  BatchingParameters: max_batch_size, batch_timeout_micros, queues, padding)
    adaptive.py   AdaptiveBatcher: pulsecast's automatic mode for its own models
    batched.py    the servable face both show: predict / submit / submit_async over a queue
    futures.py    where a request's answer goes: a thread's Future or an event loop's

The version manager (`serve.versions.manager`) wraps each loaded servable in one of them.
In memory only; nothing touches disk.
"""
