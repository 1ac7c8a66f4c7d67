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
- `cold`: cold start, on the ecg recipe's model (`configs/ecg.toml`, built untrained and exported
  as pulsecast exports it; `--cold-model reference` takes the model above). `cold_start_s`: wall
  time from launching `pulsecast serve` as a subprocess to its first 200 on `:predict`;
  `bare_load_s`: wall time from launching a fresh Python that imports TensorFlow, loads the same
  SavedModel with `tf.saved_model.load` and calls `serving_default` once, to that answer. Also
  `xla_ready_s` (launch to the XLA runtime verified, in the background) and the batch-1 p50 of
  the cold server before and after that swap.

The goals: `http_p50_vs_inprocess` (http p50 / in-process p50) <= 1/3, `rps_64_vs_batch64`
(rps at 64 clients / in-process batch-64 forecasts/s) >= 0.5, `rps_64_vs_naive` as large as
it gets, and `cold_start_s <= 1.5 * bare_load_s + 2` (`cold_start_ok`). The report ends with one
JSON line. Run it as a script:

    python bench/serve.py                 # ~3 minutes
    python bench/serve.py --quick         # ~1.5 min, rougher numbers
    python bench/serve.py --paths cold    # cold start only (~1.5 min on 2 cores: waits for XLA)

The `http` measurements start once the server's XLA runtime is verified (`pulsecast serve`
compiles it in the background after the version is AVAILABLE; until then the SavedModel
answers).
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


BARE_LOAD = '''
"""A bare TensorFlow process: import, load the SavedModel, call serving_default once."""
import sys

import numpy as np
import tensorflow as tf

fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = fn(signal=tf.constant(np.load(sys.argv[2])))
print("answered", {k: v.numpy().shape for k, v in out.items()}, flush=True)
'''
XLA_START = "compiling the XLA runtime in the background"
XLA_SETTLED = ("XLA runtime verified in", "serving the SavedModel", "no XLA runtime",
               "XLA compile cancelled")


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


def publish_ecg_model(store: Path) -> tuple[Path, np.ndarray]:
    """The ecg recipe's model (configs/ecg.toml: 1000 steps in, 125 out, cycle-residual head),
    untrained, exported as `pulsecast train` exports it (4 warmup windows of lead II from the
    synthetic cohort's first patient) as version 1 of `<store>/ecg`; returns the version folder
    and a (1, 1000, 1) request window (another window of the same patient)."""
    import tomllib

    from models.architectures import build_model as build_recipe_model
    from models.export import export_savedmodel
    from models.spec import model_spec_from_config
    from pipelines.sources.physiology import make_patient_spec
    from pipelines.sources.waveforms import make_patient_signals

    config = tomllib.loads((REPO / "configs" / "ecg.toml").read_text(encoding="utf-8"))
    spec = model_spec_from_config(config)
    model = build_recipe_model(spec)
    fs = float(config["data"]["fs"])
    lead = make_patient_signals(make_patient_spec(0, 0), seed=0, minutes=3.0,
                                fs=fs).waveforms["II"]
    steps = spec.input_steps
    windows = [lead[i:i + steps] for i in range(0, len(lead) - steps, steps // 2)]
    windows = [w for w in windows if np.isfinite(w).all()][:5]  # no gap inside
    if len(windows) < 5:
        raise RuntimeError("the synthetic patient has fewer than 5 gap-free ecg windows")
    x = np.stack(windows).astype(np.float32)[..., None]  # (5, steps, 1)
    metadata = {
        "model_name": "ecg", "channels": ["II"], "targets": ["II"], "units": ["mV"],
        "target_units": ["mV"], "fs": fs, "input_steps": spec.input_steps,
        "horizon": spec.horizon, "quantiles": [], "parent_version": None,
        "config": {"name": "ecg"},
    }
    version = store / "ecg" / "1"
    export_savedmodel(model, version, metadata, x[:4])
    return version, x[4:]


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
        _wait_xla(log, proc)  # measure the runtime the server settles on, not the first minute
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


def _wait_xla(log: Path, proc: subprocess.Popen, timeout_s: float = 600.0) -> bool:
    """Wait for the server's background XLA job to settle (verified, rejected or none); False
    when it never started one (`--runtime savedmodel`, or not a pulsecast model)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _tail(log, 1 << 20)
        if XLA_START not in text:
            return False
        if any(marker in text for marker in XLA_SETTLED):
            return True
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.1)
    raise RuntimeError(f"XLA runtime not settled after {timeout_s} s:\n{_tail(log)}")


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _p50_ms(port: int, path: str, body: bytes, n: int = 30) -> float:
    """Median of `n` sequential keep-alive requests, after 3 unmeasured ones."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    lat = []
    try:
        for i in range(n + 3):
            t0 = time.perf_counter()
            status, data = _post(conn, path, body)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
            if i >= 3:
                lat.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return float(np.median(lat) * 1000.0)


def measure_bare_load(version: Path, window: np.ndarray, workdir: Path) -> float:
    """Seconds from launching a fresh `python` to its one `serving_default` answer (BARE_LOAD)."""
    script, npy = workdir / "bare_load.py", workdir / "bare_window.npy"
    script.write_text(BARE_LOAD, encoding="utf-8")
    np.save(npy, window)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(version), str(npy)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(),
                            cwd=workdir, text=True)
    try:
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - t0
        if not line.startswith("answered"):
            raise RuntimeError(f"bare load failed (exit {proc.wait()}): {line!r}")
    finally:
        proc.stdout.close()
        proc.wait(timeout=60)
    return elapsed


def measure_cold_start(base: list[str], store: Path, model_name: str, window: np.ndarray,
                       workdir: Path, extra: list[str]) -> dict:
    """Launch `pulsecast serve` and POST `:predict` every 50 ms until the first 200: seconds
    from launch to that answer; then the batch-1 p50 at once (SavedModel) and, once the
    background XLA job settles, again (`xla_ready_s` from launch)."""
    rest_port, grpc_port = free_port(), free_port()
    log = workdir / f"pulsecast-cold-{model_name}.log"
    path = f"/v1/models/{model_name}:predict"
    body = _body(window)
    cmd = [*base, "serve", "--model_name", model_name,
           "--model_base_path", str(store / model_name),
           "--rest_api_port", str(rest_port), "--port", str(grpc_port), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=_env(),
                            cwd=workdir)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
            if time.perf_counter() - t0 > READY_TIMEOUT_S:
                raise RuntimeError(f"no 200 after {READY_TIMEOUT_S} s:\n{_tail(log)}")
            conn = http.client.HTTPConnection(HOST, rest_port, timeout=READY_TIMEOUT_S)
            try:
                status, data = _post(conn, path, body)
            except OSError:
                status = None
            finally:
                conn.close()
            if status == 200:
                cold = time.perf_counter() - t0
                break
            if status not in (None, 404, 503):
                raise RuntimeError(f"HTTP {status} before the first 200: {data[:300]!r}")
            time.sleep(0.05)
        out = {"cold_start_s": cold, "cold_first_p50_ms": _p50_ms(rest_port, path, body)}
        if _wait_xla(log, proc):
            out["xla_ready_s"] = time.perf_counter() - t0
            out["cold_xla_p50_ms"] = _p50_ms(rest_port, path, body)
            verified = "XLA runtime verified in" in _tail(log, 1 << 20)
            out["xla_outcome"] = "verified" if verified else "not adopted (see the log)"
    except Exception:
        print(_tail(log), file=sys.stderr)
        raise
    finally:
        _stop(proc)
    return out


def _cold_part(store: Path, workdir: Path, reference: tuple[Path, np.ndarray],
               args: argparse.Namespace) -> dict:
    base = pulsecast_command()
    if base is None:
        print("cold: `pulsecast serve` is not available yet; skipped", flush=True)
        return {}
    if args.cold_model == "ecg":
        version, window = publish_ecg_model(store)
    else:
        version, window = reference
    name = version.parent.name
    bare = measure_bare_load(version, window, workdir)
    print(f"cold: bare TF process (import, load, one call) {bare:.2f} s", flush=True)
    out = measure_cold_start(base, store, name, window, workdir, shlex.split(args.server_args))
    goal = 1.5 * bare + 2.0
    print(f"cold: pulsecast serve first 200 after {out['cold_start_s']:.2f} s (goal <= "
          f"{goal:.2f} s: {'met' if out['cold_start_s'] <= goal else 'NOT met'}); batch-1 p50 "
          f"{out['cold_first_p50_ms']:.2f} ms at once"
          + (f", {out['cold_xla_p50_ms']:.2f} ms once the XLA job settled at "
             f"{out['xla_ready_s']:.1f} s (XLA {out['xla_outcome']})"
             if "xla_ready_s" in out else ""), flush=True)
    return {**out, "bare_load_s": bare, "cold_model": name}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0,
                   help="duration of each throughput measurement")
    p.add_argument("--requests", type=int, default=500,
                   help="sequential requests for the latency percentiles")
    p.add_argument("--warmup", type=int, default=50, help="requests before each measurement")
    p.add_argument("--paths", default="cold,http,inprocess,naive",
                   help="comma-separated subset of cold,http,inprocess,naive")
    p.add_argument("--cold-model", choices=("ecg", "reference"), default="ecg",
                   help="the model of the cold-start measurement: the ecg recipe's (default) "
                        "or the reference LSTM the other paths serve")
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
        if "cold" in paths:  # first: nothing else of the bench has warmed anything but the disk
            results.update(_cold_part(store, workdir, (version, x[:1]), args))
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
    for key in ("cold_start_s", "bare_load_s", "xla_ready_s", "cold_first_p50_ms",
                "cold_xla_p50_ms"):
        report[key] = round(results[key], 3) if results.get(key) is not None else None
    report["cold_start_vs_bare"] = _ratio(report["cold_start_s"], report["bare_load_s"])
    if report["cold_start_s"] is not None and report["bare_load_s"] is not None:
        report["cold_start_goal_s"] = round(1.5 * report["bare_load_s"] + 2.0, 3)
        report["cold_start_ok"] = report["cold_start_s"] <= report["cold_start_goal_s"]
    report["cold_model"] = results.get("cold_model")
    report["xla_outcome"] = results.get("xla_outcome")
    report["cpus"] = os.cpu_count()
    report["server_args"] = args.server_args
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
