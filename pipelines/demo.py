"""The whole product on the synthetic cohort: synth → ingest → train → publish → serve → query.

`run_demo` reads as the list of steps. The server runs as a real subprocess (`pulsecast serve`)
on free 127.0.0.1 ports; the query goes through `pulsecast predict` (a real HTTP client), and the
server is stopped with SIGTERM (graceful drain) at the end, whatever happened.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    root: Path = Path("data")
    recipe: Path = Path("configs/ecg.toml")
    patients: int = 12
    minutes: float = 10.0
    seed: int = 0
    epochs: int | None = None
    runs: Path = Path("runs")
    ready_timeout_s: float = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float, server: subprocess.Popen) -> None:
    """Poll readiness (200 only when a version is AVAILABLE) until it answers or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {server.returncode} before it was ready"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server was not ready at {url} within {timeout_s:.0f} s")


def stop_server(server: subprocess.Popen, timeout_s: float = 30.0) -> int:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


def run_demo(cfg: DemoConfig) -> dict:
    from models.params import check, format_table
    from pipelines.cli import main as cli
    from pipelines.config import load_recipe, with_overrides
    from pipelines.ingest.cohort import ingest
    from pipelines.ingest.config import IngestConfig
    from pipelines.sources.synth import SynthConfig, write_cohort
    from pipelines.training.train import train

    raw = cfg.root / "raw" / "synthetic"
    dataset = cfg.root / "datasets" / "ecg"
    store = cfg.root / "model_store"
    log.info("1/6 synth: %d patients x %g min -> %s", cfg.patients, cfg.minutes, raw)
    records = write_cohort(SynthConfig(out=raw, patients=cfg.patients, minutes=cfg.minutes,
                                       seed=cfg.seed, overwrite=True))
    log.info("2/6 ingest -> %s", dataset)
    report = ingest(IngestConfig(raw_dir=raw, dataset_dir=dataset,
                                 channels=("II", "ABP", "PLETH", "RESP"), fs=125.0))
    print(report.render())
    recipe = with_overrides(load_recipe(cfg.recipe), dataset=dataset, raw=raw, epochs=cfg.epochs)
    log.info("3/6 train %s (parameter counts checked against their formulas)", recipe.name)
    result = train(recipe, model_store=store, run_dir=cfg.runs / recipe.name)
    import keras

    model = keras.saving.load_model(result.run_dir / "checkpoints" / "last.keras")
    print(format_table(check(model)))
    ev = result.evaluation
    print(f"test MAE {ev['model']['mae']:.4g} vs best baseline {ev['best_baseline']} "
          f"{ev['baselines'][ev['best_baseline']]['mae']:.4g}: skill "
          f"{ev['skill_mae_vs_best_baseline']:.3f}; published version {result.version}")
    rest, grpc = free_port(), free_port()
    log.info("4/6 serve %s on 127.0.0.1:%d (REST) and :%d (gRPC)", recipe.name, rest, grpc)
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve",
                               "--model-base-path", str(store / recipe.name),
                               "--model-name", recipe.name, "--rest-api-port", str(rest),
                               "--port", str(grpc)])
    plot = cfg.runs / recipe.name / "forecast.png"
    try:
        wait_ready(f"http://127.0.0.1:{rest}/v2/models/{recipe.name}/ready",
                   cfg.ready_timeout_s, server)
        test_record = _a_test_record(dataset, records)
        log.info("5/6 query :forecast with a window of %s", test_record)
        code = cli(["predict", "--url", f"http://127.0.0.1:{rest}", "--model-name", recipe.name,
                    "--record", str(test_record), "--at", "60", "--out", str(plot),
                    "--summary"])
        if code != 0:
            raise RuntimeError(f"pulsecast predict failed with exit code {code}")
    finally:
        log.info("6/6 stop the server (SIGTERM, graceful drain)")
        exit_code = stop_server(server)
    summary = {"version": result.version, "skill": ev["skill_mae_vs_best_baseline"],
               "plot": str(plot), "server_exit_code": exit_code}
    print(json.dumps(summary))
    return summary


def _a_test_record(dataset: Path, records: list[Path]) -> Path:
    """The raw record of a held-out (test) patient: the demo forecasts data the model never saw."""
    import pandas as pd

    manifest = pd.read_parquet(dataset / "manifest.parquet")
    test = set(manifest.loc[manifest["split"] == "test", "patient_id"])
    for path in records:
        if path.parent.name in test:
            return path
    return records[-1]
