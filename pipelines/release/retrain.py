"""Retrain on new patients: ingest, train a challenger, publish it only if it beats the champion.

`retrain(config)` reads as its steps:

1. the champion is the highest version of the model; its `pulsecast.json` names its dataset and
   the recipe it was trained with (`--config` replaces the recipe, `--epochs` its epochs);
2. the new records are added to that dataset in a staging folder (`pipelines.ingest.incremental`);
   nothing new -> nothing is trained, nothing changes; a grown dataset with a split that has no
   patient or no window is refused here, before any run folder or fit, as `pulsecast train`
   refuses it (`pipelines.training.train.check_dataset_splits`);
3. a drift report compares the new records with the training data (`pipelines.dataset.drift`);
4. the challenger is warm-started from the champion's Keras model (`assets.extra/model.keras`,
   which `pipelines.training.train.publish_version` stores in every version) or, with
   `from_scratch`, built anew with normalization fitted on the grown training split; it trains on
   old and new training patients together (`pipelines.release.challenger`);
5. champion (through its SavedModel's `serving_default`, as served) and challenger are scored by
   `evaluate_forecaster` on the same windows: the held-out (test) patients of the grown dataset,
   and the old test patients alone;
6. the gate (`pipelines.release.gate`) decides; a promoted challenger is published as version
   N+1 with `parent_version` = N and the comparison under `retrain` in its metadata, and only then
   does the grown dataset replace the old one. A refused challenger (or a dry run) publishes
   nothing and leaves the dataset as it was, so the same records can be tried again with another
   recipe.

The run folder (`runs/<model>/retrain-<UTC time>/` by default) holds `drift.json`, `drift.md`,
`checkpoints/`, `history.csv`, `evaluation/<champion|challenger>-<held_out|old_test>/`, and
`retrain.json` + `retrain.md` (the decision with its reasons). An interrupt anywhere leaves the
store and the dataset as they were.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.store import DEFAULT_MODEL_STORE
from pipelines.config import Recipe, load_recipe, with_overrides
from pipelines.dataset.contract import Dataset
from pipelines.dataset.drift import DriftReport, compute_drift
from pipelines.ingest.incremental import IncrementReport, staged_increment
from pipelines.release.challenger import (
    Champion,
    RetrainError,
    evaluate_pair,
    fit_challenger,
    read_champion,
)
from pipelines.release.gate import GateDecision, GateThresholds, decide

log = logging.getLogger(__name__)

EVAL_PARTS = ("held_out", "old_test")


@dataclass(frozen=True)
class RetrainConfig:
    model_name: str
    records: Path  # folder of new WFDB records
    model_store: Path = DEFAULT_MODEL_STORE
    config: Path | None = None  # a recipe replacing the champion's
    dataset: Path | None = None  # default: the dataset named in the champion's metadata
    from_scratch: bool = False
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    dry_run: bool = False
    epochs: int | None = None
    run_dir: Path | None = None  # default runs/<model>/retrain-<UTC time>
    workers: int = 1
    ks_threshold: float = 0.2


@dataclass(frozen=True)
class RetrainResult:
    model_name: str
    status: str  # "nothing_new", "published", "rejected" or "would_publish" (dry run)
    champion_version: int
    increment: IncrementReport
    version: int | None = None
    version_dir: Path | None = None
    run_dir: Path | None = None
    decision: GateDecision | None = None
    drift: DriftReport | None = None
    evaluations: dict = field(default_factory=dict)
    dataset_dir: Path | None = None  # the dataset the new records grow (when published)
    target_unit: str | None = None  # the unit of every MAE above (the champion's targets')

    @property
    def records_added(self) -> bool:
        """Whether the new records are now in the dataset (only a published challenger adds
        them)."""
        return self.increment.written


def resolve_recipe(champion: Champion, cfg: RetrainConfig, dataset_dir: Path) -> Recipe:
    """The champion's recipe (or `cfg.config`), named for the model, on the model's dataset."""
    from models.spec import model_spec_from_config

    recipe = load_recipe(cfg.config) if cfg.config else champion.recipe
    recipe = with_overrides(recipe, dataset=dataset_dir, epochs=cfg.epochs,
                            model_name=cfg.model_name)
    old_w, new_w = champion.recipe.window, recipe.window
    for key in ("input_steps", "horizon", "inputs", "targets"):
        if getattr(old_w, key) != getattr(new_w, key):
            raise RetrainError(f"--config changes [window] {key} ({getattr(old_w, key)} -> "
                               f"{getattr(new_w, key)}): champion and challenger must forecast "
                               "the same windows to be compared")
    if not cfg.from_scratch and (model_spec_from_config(recipe.to_dict())
                                 != model_spec_from_config(champion.recipe.to_dict())):
        raise RetrainError("--config changes the [model] of the champion: its weights cannot "
                           "warm-start it; pass --from-scratch")
    return recipe


def make_run_dir(cfg: RetrainConfig) -> Path:
    if cfg.run_dir is not None:
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        run_dir = Path("runs") / cfg.model_name / f"retrain-{stamp}{f'-{n}' if n else ''}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise RetrainError(f"could not make a run folder under runs/{cfg.model_name}")


def compute_dataset_drift(old: Dataset, grown: Dataset, new_ids: list[str],
                          ks_threshold: float) -> DriftReport:
    """The new records against the old training split, per dataset channel."""
    reference = [old.signal(r) for r in old.records("train")]
    new = [grown.signal(r) for r in new_ids]
    return compute_drift(reference, new, grown.channels, ks_threshold=ks_threshold)


def write_drift(drift: DriftReport, run_dir: Path) -> None:
    (run_dir / "drift.json").write_text(json.dumps(drift.to_dict(), indent=2) + "\n")
    (run_dir / "drift.md").write_text(drift.to_markdown())
    for warning in drift.warnings:
        log.warning("drift: %s", warning)


def publish_challenger(model, recipe: Recipe, dataset: Dataset, cfg: RetrainConfig,
                       champion: Champion, evaluations: dict, decision: GateDecision,
                       increment: IncrementReport, examples, param_rows: list[dict],
                       run_dir: Path, ridge=None) -> tuple[int, Path]:
    from pipelines.training.train import publish_version

    extra = {
        "parent_version": champion.version,
        "retrain": {
            "champion_version": champion.version,
            "warm_start": not cfg.from_scratch,
            "records": str(cfg.records),
            "new_records": increment.new_record_ids,
            "new_patients": increment.new_patients,
            "decision": decision.to_dict(),
            "champion_metrics": evaluations["champion"],
            "run_dir": str(run_dir),
        },
    }
    warmup = examples.x[: min(4, len(examples.x))].astype(np.float32)
    return publish_version(model, recipe, dataset, cfg.model_store,
                           evaluations["challenger"]["held_out"], warmup, param_rows, extra,
                           ridge=ridge)


def check_splits(dataset: Dataset, recipe: Recipe, shown: Path):
    """The grown (staged) dataset's (train, val) batchers, once every split has a patient and a
    window; RetrainError naming the counts per split otherwise, and the dataset as `shown`."""
    from pipelines.training.fit import TrainingError
    from pipelines.training.train import check_dataset_splits, window_spec

    try:
        train_b, val_b, _ = check_dataset_splits(dataset, window_spec(recipe), recipe,
                                                 where=f"dataset {shown} with the new records")
    except TrainingError as err:
        raise RetrainError(str(err)) from None
    return train_b, val_b


def retrain(cfg: RetrainConfig) -> RetrainResult:
    """Ingest new records, train a challenger, and publish it only when the gate says so."""
    from pipelines.report_format import pooled_unit

    champion = read_champion(cfg.model_store, cfg.model_name)
    dataset_dir = Path(cfg.dataset or champion.metadata.dataset
                       or champion.recipe.data.dataset)
    summary = {"dataset_dir": dataset_dir,
               "target_unit": pooled_unit(champion.metadata.target_units)}
    recipe = resolve_recipe(champion, cfg, dataset_dir)
    with staged_increment(dataset_dir, cfg.records, cfg.workers) as inc:
        report = inc.report
        if not report.ingested:
            log.info("nothing new to train on: %s", report.summary())
            return RetrainResult(cfg.model_name, "nothing_new", champion.version, report,
                                 **summary)
        log.info("%s", report.summary())
        batchers = check_splits(inc.dataset, recipe, inc.old.root)
        run_dir = make_run_dir(cfg)
        drift = compute_dataset_drift(inc.old, inc.dataset, report.new_record_ids,
                                      cfg.ks_threshold)
        write_drift(drift, run_dir)
        model, param_rows = fit_challenger(recipe, inc.dataset, champion, cfg.from_scratch,
                                           run_dir, batchers)
        evaluations, examples, ridge = evaluate_pair(champion, model, recipe, inc.dataset,
                                              inc.old.patients("test"), run_dir)
        decision = decide(evaluations["champion"], evaluations["challenger"], cfg.thresholds)
        for reason in decision.reasons:
            log.info("gate: %s", reason)
        version = version_dir = None
        if decision.promote and not cfg.dry_run:
            final = dataclasses.replace(inc.dataset, root=inc.old.root)  # the name it will have
            version, version_dir = publish_challenger(
                model, recipe, final, cfg, champion, evaluations, decision, report, examples,
                param_rows, run_dir, ridge)
            inc.keep()  # the grown dataset replaces the old one as this block ends
    status = ("published" if version is not None else
              "would_publish" if decision.promote else "rejected")
    result = RetrainResult(cfg.model_name, status, champion.version, inc.report, version,
                           version_dir, run_dir, decision, drift, evaluations, **summary)
    write_retrain_report(result, cfg)
    return result


def write_retrain_report(result: RetrainResult, cfg: RetrainConfig) -> None:
    """`retrain.json` and `retrain.md` in the run folder."""
    run_dir = result.run_dir
    inc = result.increment
    data = {
        "model_name": result.model_name, "status": result.status,
        "champion_version": result.champion_version, "version": result.version,
        "version_dir": str(result.version_dir) if result.version_dir else None,
        "dry_run": cfg.dry_run, "warm_start": not cfg.from_scratch,
        "records": str(cfg.records), "dataset_written": inc.written,
        "new_rows": [dataclasses.asdict(r) for r in inc.ingested],
        "already_present": list(inc.already_present),
        "skipped": [{"record": p, "reason": why} for p, why in inc.skipped],
        "drift_warnings": result.drift.warnings if result.drift else [],
        "decision": result.decision.to_dict() if result.decision else None,
        "evaluations": result.evaluations,
    }
    (run_dir / "retrain.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    d = result.decision
    unit = f" ({result.target_unit})" if result.target_unit else ""
    lines = [
        f"# Retrain of {result.model_name}: {result.status}", "",
        f"- champion: version {result.champion_version}",
        f"- challenger: {'warm-started' if not cfg.from_scratch else 'trained from scratch'}"
        + (f", published as version {result.version}" if result.version else ""),
        f"- data: {inc.summary()}",
        f"- drift warnings: {len(data['drift_warnings'])} (see drift.md)", "",
        f"| | champion MAE{unit} | challenger MAE{unit} |", "|---|---:|---:|",
    ]
    for part in EVAL_PARTS:
        champ, chall = (result.evaluations[who][part]["model"]["mae"]
                        for who in ("champion", "challenger"))
        lines.append(f"| {part} | {_fmt(champ)} | {_fmt(chall)} |")
    lines += ["", "## Decision", ""] + [f"- {r}" for r in (d.reasons if d else ())]
    (run_dir / "retrain.md").write_text("\n".join(lines) + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
