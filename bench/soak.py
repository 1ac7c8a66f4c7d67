"""Soak: the reliability checks of `tests/test_load.py` and `tests/test_fuzz_rest.py`, run longer.

One `pulsecast serve` subprocess on 127.0.0.1 over a small store (`half`, `ecg`; see
`tests/live_server.py`) takes, for `--duration-s` seconds, `--clients` concurrent keep-alive
clients (:predict on the LSTM and half_plus_two, :forecast) while a fuzzer thread sends random
malformed bodies to every POST route; the server's RSS is sampled from /proc four times a second.
Then a second server with `--enable_batching --max_enqueued_batches 1` is overloaded for
`--overload-s` seconds. Checks: no error but 503 under overload, no 5xx from the fuzzer, no
time-out, RSS growth after warm-up under `--rss-limit-mib`. Prints figures, then one JSON line;
exit code 1 when a check failed.

    python bench/soak.py --duration-s 300          # 5 minutes
    python bench/soak.py --duration-s 20 --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "tests"):  # run as `python bench/soak.py` from anywhere
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from live_server import LOAD_BODIES as BODIES  # noqa: E402
from live_server import (  # noqa: E402
    LiveServer,
    pct,
    run_load,
    write_lstm,
    write_store,
)

POST_PATHS = ["/v1/models/half:predict", "/v1/models/ecg:predict", "/v1/models/ecg:forecast",
              "/v1/models/half:classify", "/v1/models/half:regress", "/v2/models/ecg/infer"]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 5)
    leaves = [None, True, rng.uniform(-1e6, 1e6), rng.randrange(-2**40, 2**40),
              "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(8)))]
    if kind < 5:
        return leaves[kind]
    if kind < 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(["instances", "inputs", "signal", "fs", "examples", "x"]):
            random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_body(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if kind == 1:
        n = rng.randrange(1, 1100)
        return b'{"instances": ' + b"[" * n + b"1" + b"]" * n + b"}"
    text = json.dumps(random_value(rng)).encode()
    return text[: rng.randrange(len(text) + 1)] if kind == 2 else text


def fuzz(port: int, seconds: float, seed: int) -> dict:
    """One thread of random malformed POSTs; counts statuses, 5xx and time-outs."""
    import http.client

    rng = random.Random(seed)
    statuses: Counter = Counter()
    bad: list = []
    deadline = time.monotonic() + seconds
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    while time.monotonic() < deadline:
        path, body = rng.choice(POST_PATHS), random_body(rng)
        try:
            conn.request("POST", path, body)
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] += 1
            if resp.status >= 500:
                bad.append((path, body[:80], resp.status))
        except (OSError, http.client.HTTPException) as err:
            statuses[type(err).__name__] += 1
            bad.append((path, body[:80], type(err).__name__))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.close()
    return {"requests": sum(statuses.values()), "statuses": dict(statuses), "bad": bad[:5]}


def soak(args: argparse.Namespace, work: Path) -> dict:
    store = write_store(work / "store")
    with LiveServer(store) as srv:
        run_load(srv.rest_port, srv.pid, args.clients, 2.0, BODIES)  # warm-up
        fuzzed: dict = {}
        fuzzer = threading.Thread(target=lambda: fuzzed.update(
            fuzz(srv.rest_port, args.duration_s, args.seed)))
        fuzzer.start()
        load = run_load(srv.rest_port, srv.pid, args.clients, args.duration_s, BODIES)
        fuzzer.join()
        alive = srv.alive()
    early = [kib for t, kib in load.rss_kib if t <= 2.0] or [load.rss_kib[0][1]]
    growth_mib = (max(k for _, k in load.rss_kib) - max(early)) / 1024
    ok = load.latencies.get(200, [])

    base = work / "overload"
    write_lstm(base / "slow" / "1", input_steps=512, units=64, horizon=8)
    window = np.sin(np.arange(512) / 7.0)[None, :, None].tolist()
    slow = [("/v1/models/slow:predict", json.dumps({"instances": window}).encode())]
    with LiveServer(base, "--enable_batching", "--max_batch_size", "1",
                    "--max_enqueued_batches", "1", "--num_batch_threads", "1") as srv2:
        over = run_load(srv2.rest_port, srv2.pid, args.clients, args.overload_s, slow)
    rejected = over.latencies.get(503, [])
    checks = {
        "load_no_errors": not load.errors and set(load.statuses) == {200},
        "fuzz_no_5xx_no_timeouts": not fuzzed.get("bad"),
        "rss_bounded": growth_mib < args.rss_limit_mib,
        "overload_only_200_503": not over.errors,
        "overload_503_fast": bool(rejected) and pct(rejected, 99) < 2.0,
        "server_alive": alive,
    }
    return {
        "duration_s": args.duration_s, "clients": args.clients,
        "load_requests": load.total, "load_rps": round(load.total / args.duration_s, 1),
        "load_statuses": {str(k): v for k, v in load.statuses.items()},
        "load_p50_ms": round(pct(ok, 50) * 1e3, 2), "load_p99_ms": round(pct(ok, 99) * 1e3, 2),
        "rss_start_mib": round(max(early) / 1024, 1), "rss_growth_mib": round(growth_mib, 2),
        "fuzz_requests": fuzzed.get("requests", 0), "fuzz_statuses": fuzzed.get("statuses", {}),
        "fuzz_bad": [list(map(str, b)) for b in fuzzed.get("bad", [])],
        "overload_s": args.overload_s,
        "overload_statuses": {str(k): v for k, v in over.statuses.items()},
        "overload_503_p50_ms": round(pct(rejected, 50) * 1e3, 2),
        "overload_503_p99_ms": round(pct(rejected, 99) * 1e3, 2),
        "checks": checks, "passed": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=120.0,
                        help="seconds of load + fuzzing (default 120)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (64)")
    parser.add_argument("--overload-s", type=float, default=10.0,
                        help="seconds of overload on the tiny queue (default 10)")
    parser.add_argument("--rss-limit-mib", type=float, default=64.0,
                        help="largest RSS growth after warm-up (default 64 MiB)")
    parser.add_argument("--seed", type=int, default=0, help="fuzzer seed")
    parser.add_argument("--quick", action="store_true", help="overload for 3 s only")
    args = parser.parse_args(argv)
    if args.quick:
        args.overload_s = 3.0
    with tempfile.TemporaryDirectory(prefix="pulsecast-soak-") as tmp:
        report = soak(args, Path(tmp))
    print(f"load: {report['clients']} clients x {report['duration_s']:.0f} s: "
          f"{report['load_requests']} requests ({report['load_rps']}/s), "
          f"statuses {report['load_statuses']}, p50 {report['load_p50_ms']} ms, "
          f"p99 {report['load_p99_ms']} ms")
    print(f"memory: RSS {report['rss_start_mib']} MiB after warm-up, "
          f"+{report['rss_growth_mib']} MiB over the run")
    print(f"fuzz: {report['fuzz_requests']} malformed requests, statuses "
          f"{report['fuzz_statuses']}")
    print(f"overload: statuses {report['overload_statuses']}, 503 p50 "
          f"{report['overload_503_p50_ms']} ms, p99 {report['overload_503_p99_ms']} ms")
    print("checks: " + ", ".join(f"{k}={'ok' if v else 'FAILED'}"
                                 for k, v in report["checks"].items()))
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
