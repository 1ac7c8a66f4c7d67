"""Truncated BPTT: the pure chunk plan, the stateful twin's state and weights, `train()` with it.

The twin tests check the promise the whole design rests on: a stateful twin fed chunk 1 then
chunk 2 gives, at the end of chunk 2, what the stateless model gives on chunk1 + chunk2 as one
window, so its weights mean the same thing in the served (stateless) model.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from recipes import tiny_recipe

from pipelines.config import parse_recipe
from pipelines.training.chunks import (
    ChunkPlan,
    chunk_arrays,
    clean_runs,
    make_segments,
    plan_streams,
)
from pipelines.training.fit import TrainingError
from pipelines.training.tbptt import check_recipe

# ------------------------------------------------------------------------------- chunk plan


def test_clean_runs_are_the_maximal_runs_of_valid_rows():
    valid = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    assert clean_runs(valid).tolist() == [[0, 2], [4, 7], [8, 9]]
    assert clean_runs(np.zeros(3, bool)).shape == (0, 2)
    assert clean_runs(np.ones(4, bool)).tolist() == [[0, 4]]


def test_a_run_holds_the_chunks_whose_targets_stay_inside_it():
    # k = 10, horizon = 3: a run of 33 rows has (33 - 3) // 10 = 3 chunks, one of 12 none
    runs = [np.array([[0, 33], [40, 52]]), np.array([[5, 28]])]
    segs = make_segments(runs, chunk_steps=10, horizon=3)
    assert segs.tolist() == [[0, 0, 3], [1, 5, 2]]


def test_streams_walk_whole_segments_in_consecutive_batches_and_reset_at_each_start():
    plan = plan_streams(np.array([3, 1, 2, 2]), n_streams=2)
    # stream 0: segment 0 (3 chunks); stream 1: segment 1 (1), then 2 (2), segment 3 goes to
    # stream 0 when it frees at batch 3 (stream 1 is free at 3 too: the lowest stream wins)
    assert plan.segment.tolist() == [[0, 1], [0, 2], [0, 2], [3, -1], [3, -1]]
    assert plan.chunk.tolist() == [[0, 0], [1, 0], [2, 1], [0, 0], [1, 0]]
    assert plan.reset.tolist() == [[True, True], [False, True], [False, False],
                                   [True, False], [False, False]]
    assert plan.n_batches == 5 and plan.n_streams == 2
    assert plan.idle_fraction == pytest.approx(0.2)


def test_every_chunk_of_every_segment_is_planned_once_in_order():
    rng = np.random.default_rng(0)
    n_chunks = rng.integers(1, 20, size=13)
    order = rng.permutation(13)
    plan = plan_streams(n_chunks, n_streams=4, order=order)
    for seg, n in enumerate(n_chunks):
        rows, streams = np.nonzero(plan.segment == seg)
        assert len(set(streams)) == 1  # one stream walks the whole segment
        assert np.array_equal(plan.chunk[rows, streams], np.arange(n))
        assert np.array_equal(np.diff(rows), np.ones(n - 1))  # consecutive batches
        assert plan.reset[rows[0], streams[0]] and not plan.reset[rows[1:], streams[0]].any()


def test_chunk_targets_are_the_next_horizon_samples_after_each_step():
    k, h = 4, 3
    rows = np.arange(k + h, dtype=np.float32)[:, None]  # value = row number
    x, y = chunk_arrays(np.hstack([rows, -rows]), rows * 10, k, h)
    assert x.shape == (k, 2) and y.shape == (k, h, 1)
    assert x[:, 0].tolist() == [0, 1, 2, 3]
    for t in range(k):
        assert y[t, :, 0].tolist() == [10 * (t + 1), 10 * (t + 2), 10 * (t + 3)]
    with pytest.raises(ValueError, match="a chunk needs 7 rows, got 6 and 7"):
        chunk_arrays(rows[:6], rows, k, h)


def test_a_plan_needs_a_stream_and_chunks():
    with pytest.raises(ValueError, match="n_streams must be >= 1, got 0"):
        plan_streams(np.array([2]), 0)
    with pytest.raises(ValueError, match=r"every segment needs >= 1 chunk, got \[2, 0\]"):
        plan_streams(np.array([2, 0]), 1)
    assert isinstance(plan_streams(np.array([1]), 3), ChunkPlan)


# ------------------------------------------------------------------------------- refusals


def _recipe(**model):
    raw = {"name": "x", "data": {"channels": ["II"]}, "model": model,
           "window": {"inputs": ["II"], "targets": ["II"]}, "train": {"tbptt_steps": 20}}
    return parse_recipe(raw)


@pytest.mark.parametrize(("model", "words"), [
    ({"arch": "seq2seq"}, "arch 'seq2seq' has no stateful twin"),
    ({"arch": "direct"}, "arch 'direct' has no stateful twin"),
    ({"arch": "lstm", "head": "cycle_residual", "min_period_s": 0.3, "max_period_s": 1.5},
     "head 'cycle_residual' has no stateful twin"),
    ({"arch": "gru", "bidirectional": True}, "bidirectional = true has no stateful twin"),
    ({"arch": "gru", "anchor": "last"}, "anchor 'last' has no stateful twin"),
])
def test_a_model_with_no_stateful_twin_is_refused_naming_it(model, words):
    with pytest.raises(TrainingError, match=f"tbptt_steps = 20: {words}"):
        check_recipe(_recipe(**model))


def test_resume_is_refused_with_tbptt():
    with pytest.raises(TrainingError, match="--resume is not supported"):
        check_recipe(_recipe(arch="lstm"), resume=True)


def test_the_still_window_rule_is_refused_with_tbptt():
    raw = {"name": "x", "data": {"channels": ["II"]}, "model": {"arch": "lstm"},
           "window": {"inputs": ["II"], "targets": ["II"], "max_still_fraction": 0.5},
           "train": {"tbptt_steps": 20, "max_windows_per_epoch": 0}}
    with pytest.raises(TrainingError, match=r"max_still_fraction = 0.5 does not apply"):
        check_recipe(parse_recipe(raw))
    assert check_recipe(_recipe(arch="lstm", anchor="none")) is None  # the rule's default passes


# ------------------------------------------------------------------------------- the twin


@pytest.fixture(params=["lstm", "gru", "simplernn", "irnn"])
def twins(request):
    """A stateless model (random weights, real-ish norm), its stateful twin (B=2, k=6), weights
    copied."""
    import keras

    from models.architectures import build_model, build_stateful_twin
    from models.normalization import NormStats
    from models.params import check
    from models.spec import ModelSpec
    from pipelines.training.tbptt import copy_weights

    keras.utils.set_random_seed(1)
    spec = ModelSpec(arch=request.param, units=(5, 4), input_steps=12, horizon=3, n_channels=2,
                     quantiles=(0.1, 0.5, 0.9))
    norm = NormStats((1.0, -2.0), (2.0, 0.5), (0.3,), (1.5,))
    model = build_model(spec, norm)
    twin = build_stateful_twin(spec, batch_size=2, chunk_steps=6)  # identity norm until copied
    check(model)
    check(twin)
    copy_weights(model, twin)
    return spec, norm, model, twin


def _stateless(spec, norm, source, input_steps):
    from models.architectures import build_model
    from pipelines.training.tbptt import copy_weights

    other = build_model(dataclasses.replace(spec, input_steps=input_steps), norm)
    copy_weights(source, other)
    return other


def test_the_twin_carries_state_and_matches_the_stateless_model_on_the_joined_chunks(twins):
    spec, norm, model, twin = twins
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 2)).astype(np.float32)
    first = twin.predict_on_batch(x[:, :6])
    carried = twin.predict_on_batch(x[:, 6:])  # state from chunk 1
    for layer in twin.layers:
        if getattr(layer, "states", None):
            layer.reset_state()
    fresh = twin.predict_on_batch(x[:, 6:])
    last = np.arange(2) * 6 + 5  # each stream's row after its chunk's last step
    assert not np.allclose(carried["forecast"], fresh["forecast"], atol=1e-4)
    whole = model.predict_on_batch(x)  # input_steps = 12: chunk 1 + chunk 2
    for name in ("forecast", "quantiles"):
        np.testing.assert_allclose(carried[name][last], whole[name], rtol=1e-4, atol=1e-5)
    # and every step of chunk 1 is the stateless forecast from the window ending there
    for t in (0, 3, 5):
        short = _stateless(spec, norm, model, t + 1).predict_on_batch(x[:, : t + 1])
        np.testing.assert_allclose(first["forecast"][np.arange(2) * 6 + t], short["forecast"],
                                   rtol=1e-4, atol=1e-5)


def test_resetting_one_stream_zeroes_only_its_state(twins):
    import keras

    from pipelines.training.tbptt import reset_streams

    spec, norm, model, twin = twins
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 2)).astype(np.float32)
    twin.predict_on_batch(x)
    states = [layer.states for layer in twin.layers if getattr(layer, "states", None)]
    before = [keras.ops.convert_to_numpy(v) for s in states for v in s]
    reset_streams(twin, np.array([False, True]))
    after = [keras.ops.convert_to_numpy(v) for s in states for v in s]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert not a[1].any() and b[1].any()
    # stream 1 now forecasts exactly as from a fresh state; stream 0 as before
    carried = twin.predict_on_batch(x)["forecast"]
    fresh = model.predict_on_batch(np.concatenate([x, x], axis=1))["forecast"]
    np.testing.assert_allclose(carried[5], fresh[0], rtol=1e-4, atol=1e-5)
    short = _stateless(spec, norm, model, 6).predict_on_batch(x)["forecast"]
    np.testing.assert_allclose(carried[11], short[1], rtol=1e-4, atol=1e-5)


def test_trained_weights_copy_back_to_the_stateless_model_exactly(twins):
    from pipelines.training.tbptt import copy_weights

    spec, norm, model, twin = twins
    for v in twin.trainable_weights:  # as if trained
        v.assign(v.value + 0.25)
    fresh = _stateless(spec, norm, model, spec.input_steps)  # the pre-training weights
    copy_weights(twin, fresh)
    by_name = {layer.name: layer for layer in fresh.layers}
    for layer in (layer for layer in twin.layers if layer.weights):
        for a, b in zip(layer.get_weights(), by_name[layer.name].get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert fresh.count_params() == twin.count_params()


# ------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_train_with_tbptt_publishes_a_stateless_verified_version(tmp_path):
    from pipelines.config import load_recipe
    from pipelines.sources.synth import SynthConfig, write_cohort
    from pipelines.training.train import train

    raw = tmp_path / "raw"
    write_cohort(SynthConfig(out=raw, patients=12, minutes=2, seed=0))
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_recipe(raw, tmp_path / "ds", name="tiny_tbptt", arch="gru",
                                train_extra="tbptt_steps = 125", max_windows=300))
    result = train(load_recipe(path), model_store=tmp_path / "store", run_dir=tmp_path / "run")
    assert result.version == 1 and result.epochs_run == 2
    meta = json.loads((result.version_dir / "assets.extra" / "pulsecast.json").read_text())
    assert meta["input_steps"] == 128 and meta["config"]["train"]["tbptt_steps"] == 125
    assert np.isfinite(meta["metrics"]["model"]["mae"])
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,val_loss" and len(history) == 3
    assert (tmp_path / "run" / "checkpoints" / "last.keras").exists()
