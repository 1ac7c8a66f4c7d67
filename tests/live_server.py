"""A real `pulsecast serve` subprocess and the small model store it serves, for the reliability
tests (`test_fuzz_rest`, `test_load`, `test_faults`, `test_access`) and `bench/soak.py`.

`write_store(root)` makes `half` (TF Serving's half_plus_two: `x` (-1, 1) -> `y`) and `ecg` (a
Keras LSTM exported with `models.export.export_savedmodel`: `signal` (-1, 16, 1) -> `forecast`
(-1, 4, 1), with a full pulsecast.json so `:forecast` works). `LiveServer` starts the server on
free ports of 127.0.0.1, keeps every stderr line (the server's log) and reads its RSS from
`/proc/<pid>/status`. `LOAD_BODIES` are the requests the load clients send.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "reliability-token-7f3a"
TIMEOUT_S = 15.0  # a load client's socket time-out: an answer slower than this is an error
ECG_META = {
    "model_name": "ecg", "channels": ["II"], "targets": ["II"], "units": ["mV"],
    "target_units": ["mV"], "fs": 50.0, "input_steps": 16, "horizon": 4, "quantiles": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lstm(path: Path, input_steps: int = 16, units: int = 4, horizon: int = 4) -> Path:
    """Input(name="signal", (input_steps, 1)) -> LSTM(units) -> Dense -> (horizon, 1)."""
    import keras

    from models.export import export_savedmodel

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(input_steps, 1), name="signal")
    z = keras.layers.Dense(horizon)(keras.layers.LSTM(units)(inputs))
    model = keras.Model(inputs, keras.layers.Reshape((horizon, 1), name="forecast")(z))
    warmup = np.random.default_rng(0).normal(size=(2, input_steps, 1)).astype("float32")
    meta = {**ECG_META, "input_steps": input_steps, "horizon": horizon}
    return export_savedmodel(model, path, meta, warmup)


def write_store(root: Path) -> Path:
    """`<root>/half/1` and `<root>/ecg/1`; returns `root`."""
    from serve_models import half_plus_two_dir

    half_plus_two_dir(root / "half" / "1")
    write_lstm(root / "ecg" / "1")
    return root


def ecg_window(n: int = 16) -> list:
    return [[float(np.sin(i / 3.0))] for i in range(n)]


# What the load clients of `test_load` and `bench/soak.py` send, round-robin: :predict on the
# LSTM, :predict on half_plus_two, :forecast from a 100 Hz signal (resampled to the model's 50).
LOAD_BODIES = [
    ("/v1/models/ecg:predict", json.dumps({"instances": [ecg_window()]}).encode()),
    ("/v1/models/half:predict", b'{"instances": [[1.0], [2.0]]}'),
    ("/v1/models/ecg:forecast",
     json.dumps({"signal": {"II": [float(np.sin(i / 5)) for i in range(200)]},
                 "fs": 100}).encode()),
]


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from `/proc/<pid>/status` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS line in /proc/{pid}/status")


class LiveServer:
    """`python -m pipelines.cli serve --model-store <store> ...` on free ports of 127.0.0.1.

    `extra` flags are appended as given; `host=None` leaves `--host` out (the default bind).
    """

    def __init__(self, store: Path, *extra: str, token_file: Path | None = None,
                 host: str | None = "127.0.0.1", start_timeout_s: float = 180.0) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--model-store", str(store),
               "--rest-api-port", str(self.rest_port), "--port", str(self.grpc_port),
               "--file_system_poll_wait_seconds", "0.2", "--drain-timeout-s", "5"]
        if host is not None:
            cmd += ["--host", host]
        if token_file is not None:
            cmd += ["--api-token-file", str(token_file)]
        cmd += list(extra)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self.lines: list[str] = []
        self.info: dict = {}
        self._listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(start_timeout_s) or not self.info:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-40:]))
        self.url = f"http://127.0.0.1:{self.rest_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "LISTENING" in line and not self._listening.is_set():
                self.info = json.loads(line.split("LISTENING", 1)[1])
                self._listening.set()
        self._listening.set()  # exited before listening: the constructor reports the log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_text(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LoadResult:
    statuses: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)
    latencies: dict = field(default_factory=dict)  # status -> [seconds]
    rss_kib: list = field(default_factory=list)  # (t, kib)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def run_load(port: int, pid: int, clients: int, seconds: float,
             bodies: list[tuple[str, bytes]]) -> LoadResult:
    """`clients` threads posting `bodies` round-robin for `seconds`; samples the server's RSS."""
    result = LoadResult()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        start.wait()
        i = k
        while time.monotonic() < deadline[0]:
            path, body = bodies[i % len(bodies)]
            i += 1
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status: int | str = resp.status
            except (OSError, http.client.HTTPException) as err:  # time-outs included
                status = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
            took = time.monotonic() - t0
            with lock:
                result.statuses[status] += 1
                result.latencies.setdefault(status, []).append(took)
                if not isinstance(status, int) or status != 200 and status != 503:
                    result.errors.append((path, status))
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    t_start = time.monotonic()
    deadline[0] = t_start + seconds
    start.wait()
    while time.monotonic() < deadline[0]:
        result.rss_kib.append((time.monotonic() - t_start, rss_kib(pid)))
        time.sleep(0.25)
    for t in threads:
        t.join(TIMEOUT_S + 5)
    result.rss_kib.append((time.monotonic() - t_start, rss_kib(pid)))
    return result


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
