"""Benchmark: the hypotension recipe under grouped K-fold cross-validation over patients.

    python bench/hypotension.py [--config configs/hypotension.toml] [--dataset DIR] [--folds 5]
                                [--epochs N] [--val-fraction 0.15] [--n-boot 1000] [--seed 0]
                                [--work DIR] [--out DIR]

The Challenge 2009 training set has 60 patients; one fixed split leaves about 9 to judge on, so
a figure from one split says little. Here every patient is judged once, by a model that never saw
them:

1. the patients are dealt into `--folds` folds, stratified by their label at T0 (so each fold
   holds its share of AHE patients), in an order fixed by a stable hash of the patient id;
2. for each fold, a copy of the dataset is written whose manifest's `split` puts that fold in
   `test`, `--val-fraction` of the others (stratified the same way) in `val` and the rest in
   `train` (signals are linked, not copied; `labels.csv` comes along), and the recipe is trained
   on it with `pipelines.training.train.train(recipe, publish=False)`: fit on train, early
   stopping on val, the AHE probability calibrated and its alarm threshold chosen on train
   (`TrainResult.events`; the calibration is set into the best checkpoint before judging);
3. the best checkpoint is judged on the fold's patients with
   `pipelines.evaluation.events.evaluate_events`: trends against last value, the mean of the last
   5 minutes and ridge AR; the warning against MAP alone, fitted on the fold's train patients
   the way `pulsecast train` chose the model's threshold (with labels: their T0 cases, by the
   most correct answers).

Prints one table per figure (mean, min and max across folds, then each fold), then one JSON line
with every figure. With `--out DIR`, each fold's full report (`events.md`, `events.json`, the
cases and the pictures) is written to `DIR/fold-<k>/`.

The dataset is `--dataset` (default: the recipe's `[data] dataset`, ingested from `[data] raw`
when missing), e.g. the real records: `pulsecast ingest --config configs/hypotension.toml --raw
../shared/challenge-2009-map/training --dataset data/datasets/hypotension`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models.events import AHE
from pipelines.config import load_recipe, with_overrides
from pipelines.dataset.contract import LABELS_FILE, Dataset
from pipelines.dataset.splits import patient_unit
from pipelines.evaluation.event_cases import MapRecord, read_map_records
from pipelines.evaluation.events import EventEvaluation, EventSettings

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench.hypotension")


def t0_label(rec: MapRecord) -> bool:
    """The record's truth at T0: its label, or the rule on the hour after T0."""
    if rec.label is not None:
        return bool(rec.label)
    if rec.t0 is None or rec.t0 + AHE.horizon_min > len(rec.minutes):
        return False
    return bool(AHE.label(rec.minutes[rec.t0 : rec.t0 + AHE.horizon_min]))


def deal(patients: list[str], strata: dict[str, bool], n: int) -> dict[str, int]:
    """Deal patients into `n` groups round-robin, AHE patients first, each stratum in the order
    of a stable hash of the patient id: every group gets its share of each stratum."""
    order = sorted(patients, key=lambda p: (not strata[p], patient_unit(p), p))
    return {p: i % n for i, p in enumerate(order)}


def make_folds(records: list[MapRecord], k: int, val_fraction: float) -> list[dict[str, str]]:
    """Per fold, `{patient_id: split}`: the fold's patients in `test`, about `val_fraction` of
    the others in `val` (at least one), the rest in `train`."""
    strata: dict[str, bool] = {}
    for rec in records:  # a patient with several records: AHE if any record has one at T0
        strata[rec.patient_id] = strata.get(rec.patient_id, False) or t0_label(rec)
    patients = sorted(strata)
    if not 2 <= k <= len(patients):
        raise ValueError(f"--folds must be in [2, {len(patients)}] (the patients), got {k}")
    fold_of = deal(patients, strata, k)
    folds = []
    for f in range(k):
        rest = [p for p in patients if fold_of[p] != f]
        n_val = max(1, round(val_fraction * len(rest)))
        val_group = deal(rest, strata, max(2, round(len(rest) / n_val)))
        folds.append({p: "test" if fold_of[p] == f else "val" if val_group.get(p) == 0
                      else "train" for p in patients})
    return folds


def write_fold_dataset(dataset: Dataset, split_of: dict[str, str], out: Path) -> Path:
    """A copy of `dataset` with each record's `split` from `split_of` (by patient): manifest and
    dataset.json written, labels.csv copied, signals linked to the original's."""
    out.mkdir(parents=True, exist_ok=False)
    manifest = dataset.manifest.copy()
    manifest["split"] = manifest["patient_id"].map(split_of)
    manifest.to_parquet(out / "manifest.parquet", index=False)
    shutil.copy2(dataset.root / "dataset.json", out / "dataset.json")
    if (dataset.root / LABELS_FILE).is_file():
        shutil.copy2(dataset.root / LABELS_FILE, out / LABELS_FILE)
    (out / "signals").symlink_to((dataset.root / "signals").resolve(), target_is_directory=True)
    return out


def keras_forecaster(path: Path, events: dict | None = None):
    """The checkpoint at `path` as a `Forecaster` (x in mmHg -> dict of named outputs), with
    each event's calibration from `events` (`TrainResult.events`: fitted after the fit, so the
    checkpoint lacks it) set in it, as the published version carries it."""
    import keras

    import models.architectures  # noqa: F401  (registers custom layers for loading)
    from models.events_keras import set_event_calibration

    model = keras.saving.load_model(path, compile=False)
    for name, entry in (events or {}).items():
        if "calibration" in entry:
            set_event_calibration(model, name, entry["calibration"]["slope"],
                                  entry["calibration"]["intercept"])
    names = list(getattr(model, "output_names", None) or ["forecast"])

    def forecast(x: np.ndarray) -> dict[str, np.ndarray]:
        out = model.predict_on_batch(x)
        if isinstance(out, dict):
            return {k: np.asarray(v) for k, v in out.items()}
        outs = out if isinstance(out, list | tuple) else [out]
        return {n: np.asarray(v) for n, v in zip(names, outs, strict=True)}

    return forecast


def fold_figures(ev: EventEvaluation) -> dict[str, dict[str, float]]:
    """The headline figures of one fold: {figure: {forecaster or warning: value}}."""
    out: dict[str, dict[str, float]] = {}
    if ev.trends is not None:
        e = ev.trends
        out["trend MAE over the hour (mmHg)"] = {
            "model": e.model.mae, **{n: s.mae for n, s in e.baselines.items()}}
        out["trend MAE 60 min ahead (mmHg)"] = {
            "model": e.model.mae_per_step[-1],
            **{n: s.mae_per_step[-1] for n, s in e.baselines.items()}}
        out["trend skill vs best baseline"] = {"model": e.skill_mae_vs_best_baseline}
    names = {"t0": "at T0", "early": "60-180 min before T0", "monitoring": "monitoring"}
    for kind, by in ev.warnings.items():
        where = names[kind]
        out[f"AUROC {where}"] = {w: s.auroc for w, s in by.items()}
        out[f"accuracy {where}"] = {w: s.accuracy for w, s in by.items()}
        out[f"sensitivity {where}"] = {w: s.sensitivity for w, s in by.items()}
        out[f"Brier score {where}"] = {w: s.brier for w, s in by.items()}
        if kind == "monitoring":
            out["false alarms per patient-hour, monitoring"] = {
                w: s.false_alarms_per_patient_hour for w, s in by.items()}
    out["alarm threshold (probability)"] = {"model": ev.threshold,
                                            "map_alone": ev.map_alone.threshold_probability}
    return out


def summarize(per_fold: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """{figure: {who: {mean, min, max, per_fold}}} over the folds (NaN folds left out of the
    mean, min and max)."""
    out: dict[str, dict[str, dict]] = {}
    for fold in per_fold:
        for figure, by in fold.items():
            for who in by:
                out.setdefault(figure, {}).setdefault(who, {})
    for figure, by in out.items():
        for who in by:
            values = [f.get(figure, {}).get(who, math.nan) for f in per_fold]
            finite = [v for v in values if v is not None and math.isfinite(v)]
            by[who] = {"mean": float(np.mean(finite)) if finite else None,
                       "min": min(finite) if finite else None,
                       "max": max(finite) if finite else None,
                       "per_fold": [v if v is not None and math.isfinite(v) else None
                                    for v in values]}
    return out


def _num(v: float | None) -> str:
    return f"{v:8.3f}" if v is not None else f"{'n/a':>8}"


def print_tables(summary: dict[str, dict[str, dict]], k: int) -> None:
    for figure, by in summary.items():
        print(f"\n{figure}")
        print(f"  {'':<18}{'mean':>8}{'min':>8}{'max':>8}  "
              + "".join(f"{f'fold {i}':>8}" for i in range(k)))
        for who, s in by.items():
            print(f"  {who:<18}{_num(s['mean'])}{_num(s['min'])}{_num(s['max'])}  "
                  + "".join(_num(v) for v in s["per_fold"]))


def run_fold(k: int, recipe, dataset: Dataset, records: list[MapRecord],
             split_of: dict[str, str], work: Path, settings: EventSettings,
             out: Path | None) -> dict[str, dict[str, float]]:
    from pipelines.evaluation.event_report import write_event_report
    from pipelines.evaluation.events import evaluate_events
    from pipelines.training.train import train

    fold_dir = work / f"fold-{k}"
    data = write_fold_dataset(dataset, split_of, fold_dir / "dataset")
    fold_recipe = with_overrides(recipe, dataset=data, model_name=f"{recipe.name}-fold{k}")
    counts = {s: sum(1 for v in split_of.values() if v == s) for s in ("train", "val", "test")}
    print(f"fold {k}: patients train {counts['train']}, val {counts['val']}, test "
          f"{counts['test']}: training ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    result = train(fold_recipe, model_store=fold_dir / "model_store", run_dir=fold_dir / "run",
                   publish=False)
    threshold = float(result.events.get(AHE.name, {}).get("threshold", 0.5))
    ckpt = result.run_dir / "checkpoints" / "best.keras"
    if not ckpt.exists():
        ckpt = result.run_dir / "checkpoints" / "last.keras"
    forecaster = keras_forecaster(ckpt, result.events)
    test = [r for r in records if split_of[r.patient_id] == "test"]
    train_records = [r for r in records if split_of[r.patient_id] == "train"]
    ev = evaluate_events(test, forecaster, threshold, train_records,
                         fold_recipe.window.input_steps, settings=settings,
                         model_version=fold_recipe.name)
    if out is not None:
        write_event_report(ev, out / f"fold-{k}")
    print(f"fold {k}: {result.epochs_run} epochs, {time.perf_counter() - t:.0f} s; alarm "
          f"threshold {threshold:.3g}", file=sys.stderr, flush=True)
    return fold_figures(ev)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hypotension.toml",
                        help="recipe to train in each fold (default: configs/hypotension.toml)")
    parser.add_argument("--dataset", type=Path,
                        help="dataset folder (default: the recipe's [data] dataset)")
    parser.add_argument("--folds", type=int, default=5, help="folds over patients (default 5)")
    parser.add_argument("--epochs", type=int, help="epochs per fold (default: the recipe's)")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of each fold's training patients used for early stopping "
                             "(default 0.15)")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples of patients per interval (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--work", type=Path,
                        help="folder for the fold datasets and runs (default: a temporary one, "
                             "removed at the end)")
    parser.add_argument("--out", type=Path, help="write each fold's report to OUT/fold-<k>/")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")

    from pipelines.training.train import ensure_dataset

    recipe = with_overrides(load_recipe(args.config), dataset=args.dataset, epochs=args.epochs)
    dataset = ensure_dataset(recipe)
    records = read_map_records(dataset, channel=recipe.window.targets[0])
    folds = make_folds(records, args.folds, args.val_fraction)
    settings = EventSettings(
        quantiles=tuple(recipe.model.get("quantiles", (0.1, 0.5, 0.9))),
        ridge_lags=recipe.evaluate.ridge_lags,
        fill_gap_min=int(recipe.data.fill_gap_s // 60), n_boot=args.n_boot, seed=args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="pulsecast-hypotension-"))
    try:
        per_fold = [run_fold(k, recipe, dataset, records, split_of, work, settings, args.out)
                    for k, split_of in enumerate(folds)]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(per_fold)
    n_patients = len({r.patient_id for r in records})
    print(f"hypotension: {args.folds}-fold cross-validation over {n_patients} patients of "
          f"{dataset.root} ({recipe.train.epochs} epochs at most per fold)")
    print_tables(summary, args.folds)
    print(json.dumps({"bench": "hypotension", "dataset": str(dataset.root), "folds": args.folds,
                      "epochs": recipe.train.epochs, "n_patients": n_patients,
                      "figures": summary}, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
