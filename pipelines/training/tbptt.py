"""Truncated backpropagation through time: `[train] tbptt_steps = k`.

A stateful twin of the recipe's model (`models.architectures.build_stateful_twin`, same layers
and weights) walks the training records in consecutive chunks of k steps, its recurrent state
carried from one chunk to the next, so gradients flow through k steps while the state has seen the
record from its start. After training the weights go back into the ordinary stateless model, so
evaluation, export and serving are exactly those of every other recipe: the served model takes a
window and keeps no state across requests.

Policy:

- Segments. A record is cut at its gaps into clean runs (every input and target channel
  observed). A run of L rows holds `(L - horizon) // k` chunks: the steps t whose targets
  `t+1 .. t+horizon` stay inside the run; the remainder at the end of a run is dropped. Runs too
  short for one chunk are skipped. Under gap_policy "mask" the twin's x gets observed flags of 1.
- Targets. At every step t of a chunk the model forecasts the next `horizon` samples,
  `y[t] = signal[t+1 : t+1+horizon, targets]`, exactly what the stateless model forecasts from a
  window whose last row is t; one chunk gives k (x, y) pairs, each with its own state history.
- Streams. B = min(batch_size, segments) streams run in parallel (row b of every batch is stream
  b). Each epoch the segments, in a seeded shuffle, go to the first stream that is free; a stream
  walks its segment start to end in order, and its state rows are zeroed before a segment's first
  chunk (a new record or the far side of a gap). Keras only resets whole layers, so the per-stream
  reset assigns `state * keep` to each `layer.states` variable. A stream with nothing left idles
  with sample weight 0 until the longest stream ends (its rows still count in Keras'
  `sum_over_batch_size` mean, so a batch with idle streams has a smaller loss and gradient).
- Validation: the stateless model, with the twin's weights, on the ordinary val windows after
  each epoch; early stopping restores the best epoch's weights. The run folder gets
  `checkpoints/last.keras`, `checkpoints/best.keras` (stateless models), `history.csv` and
  `state.json`, as for window training. `--resume` and `max_windows_per_epoch` are refused.

The chunk plan (`clean_runs`, `make_segments`, `plan_streams`, `chunk_arrays`) is pure numpy, in
`pipelines.training.chunks`; `fit_tbptt` is the Keras edge.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_write
from pipelines.config import Recipe, TrainConfig
from pipelines.dataset.contract import Dataset
from pipelines.training.chunks import (
    ChunkPlan,
    chunk_arrays,
    clean_runs,
    make_segments,
    plan_streams,
)
from pipelines.training.fit import TrainingError, compile_model
from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.spec import WindowSpec

log = logging.getLogger(__name__)


def check_recipe(recipe: Recipe, resume: bool = False) -> None:
    """Refuse, before any work, a TBPTT recipe whose model has no stateful twin (or a misfit)."""
    from models.architectures import stateful_refusal
    from models.spec import model_spec_from_config

    k = recipe.train.tbptt_steps
    why = stateful_refusal(model_spec_from_config(recipe.to_dict()))
    if why is None and resume:
        why = "--resume is not supported (the stateful twin's optimizer state is not saved)"
    if why is None and recipe.train.max_windows_per_epoch:
        why = (f"max_windows_per_epoch = {recipe.train.max_windows_per_epoch} does not apply "
               "(an epoch walks every training record once); set it to 0")
    if why is None and recipe.window.max_still_fraction < 1:
        why = (f"[window] max_still_fraction = {recipe.window.max_still_fraction:g} does not "
               "apply (chunks of whole records are trained, still stretches included); set it "
               "to 1")
    if why:
        raise TrainingError(f"[train] tbptt_steps = {k}: {why}")


# ---------------------------------------------------------------------------------------------
# Edge: the dataset and Keras


@dataclass
class _Chunks:
    """The training records' segments and the reader of one batch of chunks."""

    signals: list[np.ndarray]  # memory-mapped (time, channels), one per training record
    segments: np.ndarray  # make_segments rows
    input_cols: list[int]
    target_cols: list[int]
    chunk_steps: int
    horizon: int
    mask_flags: bool  # gap_policy "mask": append observed flags (all 1) to x

    def batch(self, plan: ChunkPlan, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x `(B, k, F)`, y `(B*k, horizon, K)` stream-major, sample weight `(B*k, 1)`.

        The weight is 0 on an idle stream's rows. Its trailing 1 broadcasts over the point loss's
        `(B*k, horizon)` values, and Keras expands the pinball loss's `(B*k,)` to meet it.
        """
        k, h, n_b = self.chunk_steps, self.horizon, plan.n_streams
        c, n_k = len(self.input_cols), len(self.target_cols)
        x = np.zeros((n_b, k, c), dtype=np.float32)
        y = np.zeros((n_b, k, h, n_k), dtype=np.float32)
        w = np.zeros((n_b, k), dtype=np.float32)
        for b in range(n_b):
            seg = plan.segment[i, b]
            if seg < 0:
                continue
            record, start, _ = self.segments[seg]
            first = start + plan.chunk[i, b] * k
            rows = np.asarray(self.signals[record][first : first + k + h])
            x[b], y[b] = chunk_arrays(rows[:, self.input_cols], rows[:, self.target_cols], k, h)
            w[b] = 1.0
        if self.mask_flags:
            x = np.concatenate([x, np.ones_like(x)], axis=-1)
        return x, y.reshape(n_b * k, h, n_k), w.reshape(n_b * k, 1)


def read_chunks(dataset: Dataset, spec: WindowSpec, chunk_steps: int) -> _Chunks:
    """Segments of the train split's records: clean in every input and target channel."""
    input_cols = dataset.channel_index(spec.inputs)
    target_cols = dataset.channel_index(spec.targets)
    used = sorted(set(input_cols) | set(target_cols))
    signals, runs = [], []
    for record_id in dataset.records("train"):
        signal = dataset.signal(record_id)
        signals.append(signal)
        runs.append(clean_runs(~np.isnan(np.asarray(signal[:, used])).any(axis=1)))
    segments = make_segments(runs, chunk_steps, spec.horizon)
    if not len(segments):
        raise TrainingError(
            f"[train] tbptt_steps = {chunk_steps}: no training record has a clean run of "
            f"tbptt_steps + horizon = {chunk_steps + spec.horizon} samples"
        )
    return _Chunks(signals, segments, input_cols, target_cols, chunk_steps, spec.horizon,
                   spec.gap_policy == "mask")


def copy_weights(src, dst) -> None:
    """Layer-by-layer (same names) weight copy between a model and its twin; exact."""
    for layer in dst.layers:
        if layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())


def reset_streams(model, reset: np.ndarray) -> None:
    """Zero the recurrent state rows of the streams flagged in `reset` `(B,)`, keep the others."""
    from keras import ops

    if not reset.any():
        return
    keep = (~np.asarray(reset, dtype=bool))[:, None]  # (B, 1)
    for layer in model.layers:
        for state in getattr(layer, "states", None) or ():
            state.assign(state.value * ops.cast(keep, state.dtype))  # stays on the device


def _val_loss(model, val: WindowBatcher, names: list[str]) -> float:
    total, count = 0.0, 0
    for i in range(len(val)):
        x, y, *rest = val[i]
        weight = rest[0] if rest else None  # gap_policy "mask"
        logs = model.test_on_batch(x, {n: y for n in names}, sample_weight=weight,
                                   return_dict=True)
        total, count = total + float(logs["loss"]) * len(x), count + len(x)
    return total / max(count, 1)


def fit_tbptt(model, mspec, dataset: Dataset, spec: WindowSpec, cfg: TrainConfig,
              val: WindowBatcher | None, run_dir: Path) -> list[dict]:
    """Train `model` (the stateless forecaster, norm fitted, compiled) by truncated BPTT.

    The trained weights land in `model`; its compiled loss gives the val loss.
    Returns one dict per epoch (`loss`, plus `val_loss` with a val split), like `fit_model`.
    """
    from models.architectures import build_stateful_twin
    from models.params import check

    k = cfg.tbptt_steps
    chunks = read_chunks(dataset, spec, k)
    n_streams = min(cfg.batch_size, len(chunks.segments))
    twin = build_stateful_twin(mspec, n_streams, k)
    check(twin)
    copy_weights(model, twin)  # normalization statistics and initial weights
    plans = _EpochPlans(chunks.segments[:, 2], n_streams, cfg.seed)
    first = plans.get(0)
    compile_model(twin, mspec, cfg, first.n_batches)  # `model` is compiled by `train`
    names = list(model.output_names)
    log.info("tbptt: %d segments of %d-step chunks in %d streams, %d batches an epoch "
             "(%.0f%% idle stream slots)", len(chunks.segments), k, n_streams, first.n_batches,
             100 * first.idle_fraction)

    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best, best_weights, waited = math.inf, twin.get_weights(), 0
    for epoch in range(cfg.epochs):
        plan = plans.get(epoch)
        losses = []
        for i in range(plan.n_batches):
            reset_streams(twin, plan.reset[i])
            x, y, w = chunks.batch(plan, i)
            logs = twin.train_on_batch(x, {n: y for n in names}, sample_weight=w,
                                       return_dict=True)
            losses.append(float(logs["loss"]))
        loss = float(np.mean(losses))
        if not math.isfinite(loss):
            raise TrainingError(f"the training loss became NaN/inf at epoch {epoch + 1} "
                                f"(tbptt_steps = {k}); lower [train] learning_rate")
        copy_weights(twin, model)
        row = {"epoch": epoch, "loss": loss}
        if val is not None:
            row["val_loss"] = _val_loss(model, val, names)
        history.append(row)
        log.info("epoch %d: loss=%.5g val_loss=%.5g", epoch + 1, loss,
                 row.get("val_loss", math.nan))
        _write_epoch(run_dir, history, model)
        score = row.get("val_loss", loss)
        if score < best:
            best, best_weights, waited = score, twin.get_weights(), 0
            atomic_write(ckpt / "best.keras", model.save)
        else:
            waited += 1
            if cfg.patience and waited >= cfg.patience:
                log.info("tbptt: no improvement in %d epochs: stopping", waited)
                break
    if cfg.patience:  # as EarlyStopping(restore_best_weights=True) in window training
        twin.set_weights(best_weights)
        copy_weights(twin, model)
    return [{key: v for key, v in row.items() if key != "epoch"} for row in history]


class _EpochPlans:
    """The chunk plan of epoch e: segments in the order `default_rng([seed, e]).permutation`."""

    def __init__(self, n_chunks: np.ndarray, n_streams: int, seed: int) -> None:
        self.n_chunks, self.n_streams, self.seed = n_chunks, n_streams, seed
        self._cache: dict[int, ChunkPlan] = {}

    def get(self, epoch: int) -> ChunkPlan:
        if epoch not in self._cache:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.n_chunks))
            self._cache = {epoch: plan_streams(self.n_chunks, self.n_streams, order)}
        return self._cache[epoch]


def _write_epoch(run_dir: Path, history: list[dict], model) -> None:
    """checkpoints/last.keras, then history.csv and state.json after an epoch (as window
    training), each renamed into place whole."""
    atomic_write(run_dir / "checkpoints" / "last.keras", model.save)

    def write_history(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[-1]))
            writer.writeheader()
            writer.writerows(history)

    atomic_write(run_dir / "history.csv", write_history)
    state = json.dumps({"epochs_done": len(history)})
    atomic_write(run_dir / "state.json", lambda p: p.write_text(state))
