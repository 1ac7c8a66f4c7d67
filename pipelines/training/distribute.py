"""Distributed training: which `tf.distribute` strategy a run uses, and what that changes.

`make_strategy(name)`:

- `"default"`: no strategy (`None`): one device, any Keras backend;
- `"mirrored"`: `tf.distribute.MirroredStrategy` over the GPUs of this host (the CPU when none);
- `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy` over the hosts named in the
  `TF_CONFIG` environment variable (JSON: `{"cluster": {"worker": ["host:port", ...]},
  "task": {"type": "worker", "index": i}}`); every worker runs the same command, and gradients
  are all-reduced each step, so all workers hold the same weights.

Both need the TensorFlow backend. The multi-worker strategy must be made before TensorFlow runs
any op (collective ops are configured at start-up), so `train` makes it first.

Keras 3.15 on TF 2.21 does not run `fit` under `MultiWorkerMirroredStrategy` as shipped
(keras-team/keras#20585); `_fix_keras_multiworker` mends the two places, see its docstring.
After `fit`, `local_model` gives a strategy-free copy for evaluation and export: a model made
under a strategy answers `predict_on_batch` with every replica's copy of the batch concatenated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "STRATEGIES",
    "StrategyError",
    "is_chief",
    "local_model",
    "make_strategy",
    "parse_tf_config",
    "strategy_scope",
    "worker_name",
]

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multiworker")


class StrategyError(ValueError):
    """A strategy that cannot run here as asked; the message names the value."""


def parse_tf_config(text: str | None) -> dict[str, Any]:
    """`TF_CONFIG` as a dict, checked: a `cluster` with `worker` addresses and this `task`."""
    if not text:
        raise StrategyError(
            "strategy 'multiworker' needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
            '"task": {"type": "worker", "index": 0}}; got none'
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise StrategyError(f"TF_CONFIG is not JSON ({err}): {text!r}") from err
    cluster = config.get("cluster") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(workers, list) or not workers:
        raise StrategyError(f"TF_CONFIG needs cluster.worker, a list of host:port, got {text!r}")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise StrategyError(f"TF_CONFIG task.type must name a job in cluster, got {text!r}")
    index = task.get("index")
    size = len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise StrategyError(
            f"TF_CONFIG task.index must be in 0..{size - 1} for {size} {task['type']}(s), "
            f"got {index!r}"
        )
    return config


def make_strategy(name: str, env: Mapping[str, str] | None = None):
    """The `tf.distribute.Strategy` for `name`, or `None` for `"default"`.

    `env` (default `os.environ`) is where `TF_CONFIG` is read for `"multiworker"`.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "default":
        return None
    import keras

    backend = keras.config.backend()
    if backend != "tensorflow":
        raise StrategyError(
            f"strategy {name!r} needs the tensorflow backend (tf.distribute), got "
            f"KERAS_BACKEND={backend!r}; use --strategy default"
        )
    import tensorflow as tf

    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        config = parse_tf_config((os.environ if env is None else env).get("TF_CONFIG"))
        if env is not None:  # TensorFlow reads TF_CONFIG from the process environment
            os.environ["TF_CONFIG"] = json.dumps(config)
        _fix_keras_multiworker()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    log.info("strategy %s: %d replicas in sync", name, strategy.num_replicas_in_sync)
    return strategy


def strategy_scope(strategy) -> contextlib.AbstractContextManager:
    """`strategy.scope()`, or a no-op without a strategy: create variables inside it."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def is_chief(strategy, env: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes shared outputs: always, except a multi-worker non-chief.

    The chief is the `chief` task when the cluster has one, else worker 0 (TF's convention).
    """
    if strategy is None:
        return True
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    config = parse_tf_config((os.environ if env is None else env).get("TF_CONFIG"))
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def worker_name(env: Mapping[str, str] | None = None) -> str:
    """`worker-<i>` (or `chief`) for this process under `TF_CONFIG`: keeps run folders apart."""
    task = parse_tf_config((os.environ if env is None else env).get("TF_CONFIG"))["task"]
    return task["type"] if task["type"] == "chief" else f"{task['type']}-{task['index']}"


def local_model(model, strategy):
    """A copy of `model` made outside any strategy, with the same weights (itself when none)."""
    if strategy is None:
        return model
    import keras

    copy = keras.models.clone_model(model)  # call outside `strategy_scope`: a plain model
    copy.set_weights(model.get_weights())
    return copy


def _fix_keras_multiworker() -> None:
    """Mend Keras 3's TF trainer for `MultiWorkerMirroredStrategy` (idempotent, TF backend only).

    Measured with keras 3.15.1 / TF 2.21 on two CPU workers, `fit` fails twice as shipped:

    1. `TensorFlowTrainer._maybe_symbolic_build` calls `strategy.reduce("MEAN", batch, axis=None)`
       on the whole `(x, y)` batch to learn its shapes: "ValueError: Attempt to convert a value
       (PerReplica:{...}) with an unsupported type (<class '...values.PerReplica'>) to a Tensor."
       Fix: take this worker's local batch (`experimental_local_results`); only shapes are used.
    2. `reduce_per_replica` averages the step's logs with `strategy.reduce("MEAN", v, axis=0)`,
       but the logs are scalars: "ValueError: Invalid reduction dimension 0 for input with 0
       dimensions." Fix: `axis=None` (the mean over replicas) for scalars.
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_pulsecast_multiworker_fixed", False):
        return
    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker",
              "_is_per_replica_instance", "TensorFlowTrainer")
    missing = [n for n in needed if not hasattr(tf_trainer, n)]
    if missing:
        raise StrategyError(
            f"strategy 'multiworker': this Keras lacks {missing} in its TF trainer; the fixes in "
            "pipelines.training.distribute were written for keras 3.15"
        )
    import tensorflow as tf

    shipped_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            def mean(v):
                local = (strategy.experimental_local_results(v)[0]
                         if tf_trainer._is_per_replica_instance(v) else v)
                return strategy.reduce("MEAN", v, axis=0 if local.shape.rank else None)

            return tree.map_structure(mean, values)
        return shipped_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda v: (self.distribute_strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v),
                    next(it),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._pulsecast_multiworker_fixed = True
