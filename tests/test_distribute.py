"""Distributed training: strategy choice and its refusals, and two CPU workers training one model.

The two-worker test starts two processes on 127.0.0.1 with their own `TF_CONFIG`; each feeds
*different* data, so equal final weights can only come from gradients all-reduced every step.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.training.distribute import (
    StrategyError,
    is_chief,
    local_model,
    make_strategy,
    parse_tf_config,
    strategy_scope,
    worker_name,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def tf_config(index: int, ports: tuple[int, ...] = (2222, 2223), chief: bool = False) -> str:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    if chief:
        cluster["chief"] = ["127.0.0.1:2221"]
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def test_the_default_strategy_is_none_and_its_scope_does_nothing() -> None:
    assert make_strategy("default") is None
    with strategy_scope(None):
        pass
    assert is_chief(None)
    marker = object()
    assert local_model(marker, None) is marker


def test_an_unknown_strategy_is_named() -> None:
    with pytest.raises(StrategyError) as err:
        make_strategy("horovod")
    assert str(err.value) == (
        "strategy must be one of ('default', 'mirrored', 'multiworker'), got 'horovod'")


def test_multiworker_without_tf_config_says_what_to_set() -> None:
    with pytest.raises(StrategyError, match="strategy 'multiworker' needs TF_CONFIG, e.g. "):
        make_strategy("multiworker", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "TF_CONFIG is not JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}',
         "TF_CONFIG needs cluster.worker, a list of host:port"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
         "TF_CONFIG task.type must name a job in cluster"),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
         "TF_CONFIG task.index must be in 0..1 for 2 worker(s), got 2"),
    ],
)
def test_a_bad_tf_config_is_named(text: str, message: str) -> None:
    with pytest.raises(StrategyError, match=re.escape(message)):
        parse_tf_config(text)


def test_worker_names_and_the_chief_follow_tf_conventions() -> None:
    assert worker_name({"TF_CONFIG": tf_config(1)}) == "worker-1"
    assert parse_tf_config(tf_config(0, chief=True))["cluster"]["chief"] == ["127.0.0.1:2221"]


def test_a_strategy_on_a_non_tensorflow_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    with pytest.raises(StrategyError) as err:
        make_strategy("mirrored")
    assert str(err.value) == ("strategy 'mirrored' needs the tensorflow backend (tf.distribute), "
                              "got KERAS_BACKEND='jax'; use --strategy default")


def test_the_train_cli_refuses_an_unknown_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--config", "x.toml", "--strategy", "horovod"])
    assert "invalid choice: 'horovod'" in capsys.readouterr().err


def _tiny_model():
    import keras

    inputs = keras.Input((16, 1), name="window")
    hidden = keras.layers.LSTM(8)(inputs)
    # Named outputs, as `models.architectures` builds them (targets come as {"forecast": y}).
    return keras.Model(inputs, {"forecast": keras.layers.Dense(2, name="forecast")(hidden)})


@pytest.mark.slow
def test_mirrored_on_one_cpu_trains_and_the_local_copy_predicts_whole_batches() -> None:
    import keras

    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync >= 1
    with strategy_scope(strategy):
        model = _tiny_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"forecast": "mse"})
    x = np.random.default_rng(0).standard_normal((256, 16, 1)).astype("float32")
    y = np.stack([x[:, -1, 0], x[:, -2, 0]], axis=1)
    losses = model.fit(x, {"forecast": y}, batch_size=64, epochs=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    plain = local_model(model, strategy)
    assert plain.predict_on_batch(x[:5])["forecast"].shape == (5, 2)
    np.testing.assert_allclose(plain.predict_on_batch(x[:5])["forecast"],
                               model.predict(x[:5], verbose=0)["forecast"], atol=1e-6)


WORKER = r"""
import hashlib, json, os, sys
import numpy as np
from pipelines.training.distribute import make_strategy, strategy_scope, local_model

strategy = make_strategy("multiworker")  # before any other TensorFlow op
import keras

index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]


class Windows(keras.utils.PyDataset):
    # (x, {"forecast": y}) batches, as `pipelines.training.fit._keyed` gives; different data per
    # worker.
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(100 + index)
        self.x = rng.standard_normal((512, 16, 1)).astype("float32")
        self.y = np.stack([self.x[:, -1, 0], self.x[:, -2, 0]], axis=1)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        s = slice(64 * i, 64 * (i + 1))
        return self.x[s], {"forecast": self.y[s]}


keras.utils.set_random_seed(0)
with strategy_scope(strategy):
    inputs = keras.Input((16, 1), name="window")
    hidden = keras.layers.LSTM(8)(inputs)
    model = keras.Model(inputs, {"forecast": keras.layers.Dense(2, name="forecast")(hidden)})
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"forecast": "mse"})
losses = model.fit(Windows(), epochs=4, verbose=0, shuffle=False).history["loss"]
weights = np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in model.get_weights()])
plain = local_model(model, strategy)
json.dump({
    "replicas": strategy.num_replicas_in_sync,
    "losses": losses,
    "sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
    "predict_shape": list(plain.predict_on_batch(Windows()[0][0][:5])["forecast"].shape),
}, open(sys.argv[1], "w"))
"""


def free_ports(n: int) -> tuple[int, ...]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_cpu_workers_train_one_model_together(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="MultiWorkerMirroredStrategy needs TensorFlow")
    ports = free_ports(2)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": tf_config(index, ports), "TF_CPP_MIN_LOG_LEVEL": "3",
               "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "-1",
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"worker{index}.json")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=90)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    w0, w1 = (json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2))
    assert w0["replicas"] == w1["replicas"] == 2
    assert w0["losses"][-1] < 0.75 * w0["losses"][0]  # it learns
    assert w0["losses"] == w1["losses"]  # logs are averaged over both workers
    assert w0["sha256"] == w1["sha256"]  # one model: different data, identical weights
    assert w0["predict_shape"] == w1["predict_shape"] == [5, 2]
