"""Serving benchmark: pulsecast's REST server against the SavedModel in process and a naive peer.

One run, one published model of the reference shape (window 256, 1 channel, LSTM 64 units,
horizon 32), exported with `models.export.export_savedmodel` into a temp model base path as
version 1. Three ways to serve it, measured with load from separate client processes (threads
on keep-alive connections of an asyncio client, requests serialized once), all on 127.0.0.1:

- `http`: `pulsecast serve` started as a subprocess on free ports. p50/p99 latency at batch 1,
  one request at a time; throughput (requests/s, one forecast each) at 1, 8 and 64 concurrent
  clients. Skipped with a note while `pulsecast serve` does not run.
- `inprocess`: the SavedModel's `serving_default` called in this process (the graph TF Serving
  itself would run): latency at batch 1, forecasts/s at batch 64.
- `naive`: a FastAPI app calling `model.predict` per request, served by uvicorn in a
  subprocess: p50 at batch 1, throughput at 64 concurrent clients.

The goals: `http_p50_vs_inprocess` (http p50 / in-process p50) <= 1/3, `rps_64_vs_batch64`
(rps at 64 clients / in-process batch-64 forecasts/s) >= 0.5, and `rps_64_vs_naive` as large as
it gets. The report ends with one JSON line. Run it as a script:

    python bench/serve.py                 # ~2 minutes
    python bench/serve.py --quick         # ~40 s, rougher numbers
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/serve.py` from anywhere
    sys.path.insert(0, str(REPO))

INPUT_STEPS, CHANNELS, UNITS, HORIZON = 256, 1, 64, 32
MODEL_NAME = "forecaster"
HOST = "127.0.0.1"
CONCURRENCY = (1, 8, 64)
MAX_CLIENT_PROCESSES = 4
READY_TIMEOUT_S = 180.0

NAIVE_APP = '''
"""A naive forecast server: FastAPI + model.predict per request (the bench's baseline)."""
import os

import keras
import numpy as np
from fastapi import FastAPI, Request

model = keras.saving.load_model(os.environ["NAIVE_MODEL_PATH"])
app = FastAPI()


@app.get("/ready")
def ready() -> dict:
    return {"ready": True}


@app.post("/predict")
async def predict(request: Request) -> dict:
    doc = await request.json()
    x = np.asarray(doc["instances"], dtype=np.float32)
    return {"predictions": model.predict(x, verbose=0).tolist()}
'''


# ---------------------------------------------------------------------------------- the model


def build_model(seed: int = 0) -> Any:
    """`Input(256, 1) "signal" -> LSTM(64) -> Dense(32) -> Reshape(32, 1) "forecast"`."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(INPUT_STEPS, CHANNELS), name="signal")
    hidden = keras.layers.LSTM(UNITS)(inputs)
    flat = keras.layers.Dense(HORIZON)(hidden)
    outputs = keras.layers.Reshape((HORIZON, CHANNELS), name="forecast")(flat)
    return keras.Model(inputs, outputs, name="bench_lstm")


def publish_model(model: Any, store: Path, x: np.ndarray) -> Path:
    """Export as version 1 of `<store>/forecaster` with pulsecast.json-like metadata."""
    from models.export import export_savedmodel

    metadata = {
        "model_name": MODEL_NAME,
        "channels": ["sig"],
        "targets": ["sig"],
        "units": ["mV"],
        "target_units": ["mV"],
        "fs": 125.0,
        "input_steps": INPUT_STEPS,
        "horizon": HORIZON,
        "quantiles": [],
        "parent_version": None,
        "config": {"arch": "lstm", "units": [UNITS]},
    }
    version = store / MODEL_NAME / "1"
    export_savedmodel(model, version, metadata, x[:8])
    return version


# ------------------------------------------------------------------------------ load clients


def _request_bytes(port: int, path: str, body: bytes) -> bytes:
    """One keep-alive HTTP/1.1 POST, serialized once and sent as is for every request."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


async def _read_response(reader: Any) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length (all the server sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at < 0:
        raise OSError(f"response without Content-Length: {head[:200]!r}")
    length = int(lower[at + 15:lower.index(b"\r\n", at)])
    return status, await reader.readexactly(length)


async def _client(port: int, request: bytes, deadline: float, max_requests: int | None,
                  lat: list, errors: list) -> int:
    """One keep-alive connection sending `request` back to back; returns the count done."""
    import asyncio

    reader, writer = await asyncio.open_connection(HOST, port)
    done = 0
    try:
        while (t0 := time.perf_counter()) < deadline and done != max_requests:
            writer.write(request)
            status, data = await _read_response(reader)
            if status != 200:
                errors.append(f"HTTP {status}: {data[:200]!r}")
                break
            lat.append(time.perf_counter() - t0)
            done += 1
    except (OSError, EOFError) as err:  # asyncio.IncompleteReadError is an EOFError
        errors.append(f"{type(err).__name__}: {err}")
    finally:
        writer.close()
    return done


def _client_process(port: int, path: str, body: bytes, clients: int, seconds: float,
                    delay_s: float, max_requests: int | None, queue: Any) -> None:
    """One load-generating process: `clients` keep-alive connections on one event loop (uvloop
    when installed: a few tens of microseconds of client CPU per request, so the server, not the
    load generator, is what is measured) for `seconds`, or `max_requests` each; puts (count,
    latencies, errors)."""
    import asyncio

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    request = _request_bytes(port, path, body)
    lat: list = []
    errors: list = []

    async def main() -> int:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        counts = await asyncio.gather(*(_client(port, request, deadline, max_requests, lat,
                                                errors) for _ in range(clients)))
        return sum(counts)

    start_at = time.perf_counter() + delay_s
    deadline = float("inf") if max_requests is not None else start_at + seconds
    count = asyncio.run(main())
    queue.put((count, lat, errors))


def run_load(port: int, path: str, body: bytes, clients: int, seconds: float,
             max_requests: int | None = None, processes: int = MAX_CLIENT_PROCESSES) -> dict:
    """Drive `clients` concurrent keep-alive clients from up to `processes` separate processes
    (connections sharing one event loop within each)."""
    ctx = mp.get_context("spawn")
    n_proc = 1 if max_requests is not None else max(1, min(clients, processes))
    per = [clients // n_proc + (i < clients % n_proc) for i in range(n_proc)]
    queue = ctx.Queue()
    procs = [ctx.Process(target=_client_process,
                         args=(port, path, body, n, seconds, 1.0, max_requests, queue))
             for n in per]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120 if max_requests is None else 600) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [e for _, _, errs in results for e in errs]
    if errors:
        raise RuntimeError(f"load against port {port}{path} failed: {errors[0]}")
    count = sum(c for c, _, _ in results)
    lat_ms = np.array([x for _, lat, _ in results for x in lat]) * 1000.0
    return {
        "requests": count,
        "rps": count / seconds if max_requests is None else None,
        "p50_ms": float(np.percentile(lat_ms, 50)) if len(lat_ms) else None,
        "p99_ms": float(np.percentile(lat_ms, 99)) if len(lat_ms) else None,
    }


# -------------------------------------------------------------------------------- subprocesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_http(port: int, path: str, proc: subprocess.Popen, log: Path, ok: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200 and ok(body):
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready on port {port} after {READY_TIMEOUT_S} s:\n"
                       f"{_tail(log)}")


def _tail(log: Path, n: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pulsecast_command() -> list[str] | None:
    """How to run `pulsecast serve`: the console script next to this Python, else the module."""
    script = Path(sys.executable).with_name("pulsecast")
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "pipelines.cli"]
    probe = subprocess.run([*base, "serve", "--help"], capture_output=True, text=True,
                           env=_env(), timeout=120)
    return base if probe.returncode == 0 else None


def start_pulsecast(base: list[str], store: Path, workdir: Path, extra: list[str]
                    ) -> tuple[subprocess.Popen, int, Path]:
    rest_port, grpc_port = free_port(), free_port()
    log = workdir / "pulsecast-serve.log"
    cmd = [*base, "serve", "--model_name", MODEL_NAME,
           "--model_base_path", str(store / MODEL_NAME),
           "--rest_api_port", str(rest_port), "--port", str(grpc_port), *extra]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=_env(),
                            cwd=workdir)

    def available(body: bytes) -> bool:
        return b'"AVAILABLE"' in body

    _wait_http(rest_port, f"/v1/models/{MODEL_NAME}", proc, log, available)
    return proc, rest_port, log


def start_naive(model_path: Path, workdir: Path) -> tuple[subprocess.Popen, int, Path]:
    app = workdir / "naive_app.py"
    app.write_text(textwrap.dedent(NAIVE_APP), encoding="utf-8")
    port = free_port()
    log = workdir / "naive.log"
    env = _env()
    env["NAIVE_MODEL_PATH"] = str(model_path)
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), env["PYTHONPATH"]])
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "naive_app:app", "--host", HOST, "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )
    _wait_http_get(port, proc, log)
    return proc, port, log


def _wait_http_get(port: int, proc: subprocess.Popen, log: Path) -> None:
    _wait_http(port, "/ready", proc, log, lambda body: True)


# ---------------------------------------------------------------------------------- in-process


def bench_inprocess(version: Path, x: np.ndarray, seconds: float, n_latency: int) -> dict:
    """`serving_default` of the loaded SavedModel, fed numpy as a server would."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(version)).signatures["serving_default"]
    one, batch = x[:1], x[:64]
    for _ in range(20):
        fn(signal=tf.constant(one))
        fn(signal=tf.constant(batch))
    lat = []
    for _ in range(n_latency):
        t0 = time.perf_counter()
        fn(signal=tf.constant(one))["forecast"].numpy()
        lat.append(time.perf_counter() - t0)
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn(signal=tf.constant(batch))["forecast"].numpy()
        calls += 1
    return {
        "p50_ms": float(np.percentile(np.array(lat) * 1000, 50)),
        "batch64_rps": calls * len(batch) / elapsed,
    }


# ---------------------------------------------------------------------------------------- main


def _body(window: np.ndarray) -> bytes:
    return json.dumps({"instances": window.tolist()}).encode()


def _http_part(store: Path, workdir: Path, body: bytes, args: argparse.Namespace) -> dict:
    base = pulsecast_command()
    if base is None:
        print("http: `pulsecast serve` is not available yet; skipped", flush=True)
        return {}
    proc, port, log = start_pulsecast(base, store, workdir, shlex.split(args.server_args))
    path = f"/v1/models/{MODEL_NAME}:predict"
    try:
        run_load(port, path, body, 1, 0, max_requests=args.warmup)
        seq = run_load(port, path, body, 1, 0, max_requests=args.requests)
        out = {"http_p50_ms": seq["p50_ms"], "http_p99_ms": seq["p99_ms"]}
        print(f"http: p50 {seq['p50_ms']:.2f} ms, p99 {seq['p99_ms']:.2f} ms "
              f"({seq['requests']} sequential requests)", flush=True)
        for clients in CONCURRENCY:
            load = run_load(port, path, body, clients, args.seconds,
                            processes=args.client_processes)
            out[f"rps_{clients}"] = load["rps"]
            print(f"http: {clients:>2} clients {load['rps']:8.1f} req/s "
                  f"(p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms)", flush=True)
    except Exception:
        print(_tail(log), file=sys.stderr)
        raise
    finally:
        _stop(proc)
    return out


def _naive_part(model_path: Path, workdir: Path, body: bytes, args: argparse.Namespace) -> dict:
    proc, port, log = start_naive(model_path, workdir)
    try:
        run_load(port, "/predict", body, 1, 0, max_requests=min(args.warmup, 20))
        seq = run_load(port, "/predict", body, 1, 0, max_requests=max(20, args.requests // 5))
        load = run_load(port, "/predict", body, 64, args.seconds,
                        processes=args.client_processes)
    except Exception:
        print(_tail(log), file=sys.stderr)
        raise
    finally:
        _stop(proc)
    print(f"naive: p50 {seq['p50_ms']:.2f} ms, 64 clients {load['rps']:.1f} req/s", flush=True)
    return {"naive_p50_ms": seq["p50_ms"], "naive_rps_64": load["rps"]}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0,
                   help="duration of each throughput measurement")
    p.add_argument("--requests", type=int, default=500,
                   help="sequential requests for the latency percentiles")
    p.add_argument("--warmup", type=int, default=50, help="requests before each measurement")
    p.add_argument("--paths", default="http,inprocess,naive",
                   help="comma-separated subset of http,inprocess,naive")
    p.add_argument("--server-args", default="",
                   help="extra `pulsecast serve` flags, e.g. '--enable_batching'")
    p.add_argument("--client-processes", type=int, default=MAX_CLIENT_PROCESSES,
                   help=f"most load-generating processes (default {MAX_CLIENT_PROCESSES})")
    p.add_argument("--quick", action="store_true",
                   help="short run: 2 s per throughput point, 200 latency requests")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (model, logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.requests, args.warmup = 2.0, 200, 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = set(args.paths.split(","))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # the server runs on CPU, as deployed
    workdir = Path(tempfile.mkdtemp(prefix="pulsecast-bench-serve-"))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        x = np.sin(np.linspace(0, 60, 64 * INPUT_STEPS, dtype=np.float32)).reshape(
            64, INPUT_STEPS, CHANNELS)
        model = build_model()
        store = workdir / "store"
        version = publish_model(model, store, x)
        keras_path = workdir / "naive_model.keras"
        model.save(keras_path)
        body = _body(x[:1])
        print(f"model published at {version} ({platform.machine()}, {os.cpu_count()} CPUs)",
              flush=True)
        if "inprocess" in paths:
            inproc = bench_inprocess(version, x, args.seconds, args.requests)
            results["savedmodel_inprocess_ms"] = inproc["p50_ms"]
            results["savedmodel_batch64_rps"] = inproc["batch64_rps"]
            print(f"inprocess: batch 1 p50 {inproc['p50_ms']:.2f} ms, batch 64 "
                  f"{inproc['batch64_rps']:.0f} forecasts/s", flush=True)
        if "http" in paths:
            results.update(_http_part(store, workdir, body, args))
        if "naive" in paths:
            results.update(_naive_part(keras_path, workdir, body, args))
    finally:
        if args.keep:
            print(f"kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    keys = ("http_p50_ms", "http_p99_ms", "savedmodel_inprocess_ms", "savedmodel_batch64_rps",
            "naive_p50_ms", "rps_1", "rps_8", "rps_64", "naive_rps_64")
    report = {k: (round(results[k], 3) if results.get(k) is not None else None) for k in keys}
    report["http_p50_vs_inprocess"] = _ratio(report["http_p50_ms"],
                                             report["savedmodel_inprocess_ms"])
    report["rps_64_vs_batch64"] = _ratio(report["rps_64"], report["savedmodel_batch64_rps"])
    report["rps_64_vs_naive"] = _ratio(report["rps_64"], report["naive_rps_64"])
    report["cpus"] = os.cpu_count()
    report["server_args"] = args.server_args
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
