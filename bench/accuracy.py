"""Benchmark: forecast skill of the `ecg`, `abp` and `resp` recipes on unseen patients, end to end.

    python bench/accuracy.py [--work DIR] [--physionet DIR] [--patients 32] [--minutes 10]
                             [--recipes ecg,abp,resp] [--config-dir configs] [--cohort DIR]

`--config-dir` names a folder of `<recipe>.toml` files to train instead of the shipped ones (how
variants are compared); `--recipes ecg` runs one recipe only.

Steps, each through the `pulsecast` CLI (exactly what a user runs):

1. `pulsecast synth` a cohort, `pulsecast ingest` it once per recipe (lead II and ABP at 125 Hz;
   RESP at 10 Hz); with `--cohort DIR` a real cohort instead: DIR is a folder of WFDB records
   (ingested once per recipe, e.g. `../shared/physionet-mirror/challenge-2015/1.0.0/training`)
   or a dataset folder that `pulsecast ingest` wrote (used as it is by every recipe whose channel
   it holds);
2. `pulsecast train` each recipe on it (fit on the train split, evaluate on the held-out test
   patients, publish a SavedModel verified in a fresh process);
3. copy real PhysioNet records that no recipe trained on into one folder per recipe, ingest them,
   and `pulsecast evaluate --split all` the published SavedModel on every window of them (skipped,
   with a note, when `--physionet` is absent; with `--cohort`, records of the cohort are left out
   of this set: they are not unseen).

Real records used (from `--physionet`, the shared wfdb-python sample data): lead II from mitdb/100
(MLII), challenge-2015/a103l, mimic2wdb/s25047 and icu-flac/mixedsignals; ABP from
mimicdb/03700181, mimic2wdb/s25047 (ABP in its last 13 min) and icu-flac/mixedsignals; RESP from
mimicdb/03700181 and icu-flac/mixedsignals (the only waveform RESP records long enough for a 35 s
window; the goal of skill >= 0.2 is set for ecg and abp, resp is reported alongside).

Each real evaluation runs twice: under the recipe's `[evaluate] max_still_fraction` (windows of a
flat line or a calibration square wave left out, for the model and the baselines alike; "left
out" counts them) and with `--max-still-fraction 1` (every window, "PhysioNet, every window").

Prints a table (skill = 1 - MAE_model / MAE_best_baseline of persistence, last cycle and ridge AR,
with the 95% bootstrap interval over patients, i.e. over records in the PhysioNet/CinC 2015 cohort
where every record is its own patient; then the cycle_median baseline's MAE and the skill against
it with its own interval; "rec>0" counts the records on which the model beats the best baseline)
and then one JSON line with every figure. Per-record and per-alarm tables are in each
evaluation's `evaluation.md` (the work folder's `run_<recipe>/evaluation/`, `eval_real_*`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"ecg": ("II", 125), "abp": ("ABP", 125), "resp": ("RESP", 10)}  # channel, fs
REAL_RECORDS = {
    "ecg": ("mitdb/100", "challenge-2015/a103l", "mimic2wdb/s25047", "icu-flac/mixedsignals"),
    "abp": ("mimicdb/03700181", "mimic2wdb/s25047", "icu-flac/mixedsignals"),
    "resp": ("mimicdb/03700181", "icu-flac/mixedsignals"),
}


def pulsecast(*args: str) -> str:
    """Run the CLI in this checkout; returns stdout, raises with stderr's tail on failure."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return done.stdout


def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def copy_records(physionet: Path, names: tuple[str, ...], out: Path) -> None:
    """Copy each record's folder content (headers, signal files, segments) under `out/<db>/`."""
    for name in names:
        src = physionet / name
        dst = out / name
        if src.is_dir():
            shutil.copytree(src, dst)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        for f in src.parent.glob(src.name + "*"):
            shutil.copy2(f, dst.parent / f.name)


def skill_row(label: str, result: dict) -> dict:
    best = result["best_baseline"]
    records = result.get("records") or []
    cycle = result["baselines"].get("cycle_median")
    return {
        "where": label,
        "n_patients": result["n_patients"],
        "n_records": result.get("n_records", len(records)),
        "n_windows": result["n_windows"],
        "n_windows_excluded": result.get("n_windows_excluded", 0),
        "model_mae": result["model"]["mae"],
        "best_baseline": best,
        "baseline_mae": result["baselines"][best]["mae"],
        "skill": result["skill_mae_vs_best_baseline"],
        "skill_ci95": result["skill_ci95"],
        "cycle_median_mae": cycle["mae"] if cycle else None,
        "skill_vs_cycle_median": result.get("skill_vs_cycle_median"),
        "skill_vs_cycle_median_ci95": result.get("skill_vs_cycle_median_ci95"),
        "records_beating_best": sum(1 for r in records if (r.get("skill") or 0) > 0),
    }


def cohort_names(cohort: Path) -> set[str]:
    """WFDB record names in a cohort (a raw folder, or a dataset folder's manifest)."""
    if (cohort / "dataset.json").is_file():
        import pandas as pd

        sources = pd.read_parquet(cohort / "manifest.parquet")["source_path"]
        return {Path(str(s)).name for s in sources if s}
    return {h.stem for h in cohort.rglob("*.hea")}


def cohort_dataset(name: str, work: Path, cohort: Path) -> Path:
    """The dataset recipe `name` trains on: `cohort` itself when it is a dataset holding the
    recipe's channel at its rate, else `cohort` (a raw folder) ingested for the recipe."""
    channel, fs = RECIPES[name]
    meta = cohort / "dataset.json"
    if meta.is_file():
        config = json.loads(meta.read_text())
        if channel not in config["channels"] or abs(float(config["fs"]) - fs) > 1e-9:
            raise SystemExit(f"--cohort {cohort} is a dataset of {config['channels']} at "
                             f"{config['fs']} Hz; recipe {name} needs {channel} at {fs} Hz "
                             f"(pass the raw folder to ingest it per recipe)")
        return cohort
    ds = work / f"ds_{name}"
    pulsecast("ingest", "--raw", str(cohort), "--dataset", str(ds), "--channels", channel,
              "--fs", str(fs))
    return ds


def run_recipe(name: str, work: Path, physionet: Path, config_dir: Path,
               cohort: Path | None = None) -> dict:
    channel, fs = RECIPES[name]
    store = work / "store"
    if cohort is None:
        ds = work / f"ds_{name}"
        pulsecast("ingest", "--raw", str(work / "raw"), "--dataset", str(ds), "--channels",
                  channel, "--fs", str(fs))
    else:
        ds = cohort_dataset(name, work, cohort)
    t0 = time.perf_counter()
    config = config_dir / f"{name}.toml"
    train_out = pulsecast("train", "--config", str(config), "--dataset", str(ds),
                          "--model-store", str(store), "--out", str(work / f"run_{name}"), "--json")
    train_s = time.perf_counter() - t0
    trained = last_json(train_out)
    evaluation = json.loads((work / f"run_{name}" / "evaluation" / "evaluation.json").read_text())
    where = "synthetic test patients" if cohort is None else "cohort test records"
    rows = [skill_row(where, evaluation)]
    result = {"recipe": name, "version": trained["version"], "train_s": round(train_s, 1),
              "dataset": str(ds), "rows": rows}
    names = REAL_RECORDS[name]
    if cohort is not None:  # a record the model trained on is not unseen
        taken = cohort_names(cohort)
        names = tuple(n for n in names if Path(n).name not in taken)
    if not physionet.is_dir() or not names:
        result["note"] = (f"no unseen PhysioNet records: {physionet} is absent"
                          if not physionet.is_dir() else "every PhysioNet record is in the cohort")
        return result
    real_raw, real_ds = work / f"real_{name}", work / f"real_ds_{name}"
    copy_records(physionet, names, real_raw)
    pulsecast("ingest", "--raw", str(real_raw), "--dataset", str(real_ds), "--channels", channel,
              "--fs", str(fs))
    for label, rule in (("PhysioNet (unseen)", ()),
                        ("PhysioNet, every window", ("--max-still-fraction", "1"))):
        out = work / f"eval_real_{name}{'_all' if rule else ''}"
        real = last_json(pulsecast("evaluate", "--model-name", name, "--model-store", str(store),
                                   "--version", str(trained["version"]), "--dataset",
                                   str(real_ds), "--split", "all", "--json", *rule,
                                   "--out", str(out)))
        rows.append(skill_row(label, real))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--physionet", type=Path, default=ROOT.parent / "shared" / "physionet")
    # 32 patients: a test split of several patients (a real bootstrap CI) and more physiologies
    # to learn from; training time does not grow ([train] max_windows_per_epoch caps an epoch).
    parser.add_argument("--patients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default="ecg,abp,resp")
    parser.add_argument("--config-dir", type=Path, default=ROOT / "configs",
                        help="folder of <recipe>.toml files (default: the shipped configs/)")
    parser.add_argument("--cohort", type=Path,
                        help="a real cohort to train on and score (its train and test splits) "
                             "instead of the synthetic one: a folder of WFDB records, or a "
                             "dataset folder from `pulsecast ingest`")
    darts_peer().add_arguments(parser)  # Darts peer hook (issue 16, item 6): see the end
    args = parser.parse_args(argv)
    unknown = sorted(set(args.recipes.split(",")) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe(s) {unknown} in --recipes; known: {', '.join(RECIPES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="pulsecast-accuracy-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--work {work} must be empty or absent")
    cohort = args.cohort.resolve() if args.cohort else None
    if cohort is not None and not cohort.is_dir():
        parser.error(f"--cohort {args.cohort} is not a folder")
    work.mkdir(parents=True, exist_ok=True)
    if cohort is None:
        pulsecast("synth", "--out", str(work / "raw"), "--patients", str(args.patients),
                  "--minutes", str(args.minutes), "--seed", str(args.seed))
    results = [run_recipe(name, work, args.physionet, args.config_dir.resolve(), cohort)
               for name in args.recipes.split(",")]
    print_table(results)
    times = ", ".join(f"{res['recipe']} {res['train_s']} s" for res in results)
    print(f"(train times: {times}; work folder {work})")
    for res in results:
        if res.get("note"):
            print(f"({res['recipe']}: {res['note']})")
    darts = darts_peer().run_peers(results, work, args.config_dir.resolve(), args)
    print(json.dumps({"bench": "accuracy", "work": str(work),
                      "cohort": str(cohort) if cohort else None, "results": results,
                      "darts": darts}))
    return 0


def _num(value: float | None, width: int, spec: str = ".3f") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _ci(pair: list | None) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "[-]"
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def print_table(results: list[dict]) -> None:
    header = (f"{'recipe':<6} {'evaluated on':<24} {'pts':>3} {'windows':>7} {'left out':>8} "
              f"{'MAE':>8} {'best baseline':<18} {'skill':>6} {'95% CI':<16} {'rec>0':>7} "
              f"{'cyc.med':>8} {'vs cyc':>6} 95% CI")
    print(header)
    print("-" * len(header))
    for res in results:
        for r in res["rows"]:
            base = f"{r['best_baseline']} {r['baseline_mae']:.4g}"
            beat = f"{r['records_beating_best']}/{r['n_records']}"
            print(f"{res['recipe']:<6} {r['where']:<24} {r['n_patients']:>3} {r['n_windows']:>7} "
                  f"{r['n_windows_excluded']:>8} {r['model_mae']:>8.4g} {base:<18} "
                  f"{_num(r['skill'], 6)} {_ci(r['skill_ci95']):<16} {beat:>7} "
                  f"{_num(r['cycle_median_mae'], 8, '.4g')} "
                  f"{_num(r['skill_vs_cycle_median'], 6)} {_ci(r['skill_vs_cycle_median_ci95'])}")


# --- Darts peer hook (issue 16, item 6) ------------------------------------------------------
# Darts' LSTM trained on each recipe's own training windows and scored on the same held-out
# windows, printed beside pulsecast and the baselines (bench/peers/side_by_side.py); skipped
# with one line when darts is not installed (`pip install -e '.[bench]'`), or with --darts off.


def darts_peer():
    bench = str(Path(__file__).resolve().parent)
    if bench not in sys.path:  # the peers package sits beside this script
        sys.path.insert(0, bench)
    from peers import side_by_side

    return side_by_side


if __name__ == "__main__":
    raise SystemExit(main())
