"""The event outputs of a forecaster: the acute-hypotension probability, its in-graph label and
loss, its parameter count, its alarm threshold, and a hypotension recipe trained end to end.

Fast tests build models directly; the slow one writes a synthetic per-minute MAP cohort with
`wfdb.wrsamp`, trains, publishes and reloads the SavedModel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models.architectures import build_model, compile_losses, stateful_refusal  # noqa: E402
from models.events import AHE  # noqa: E402
from models.events_keras import (  # noqa: E402
    EventFeatures,
    EventLoss,
    n_event_features,
    rule_label,
    set_event_base_rates,
    set_event_calibration,
)
from models.normalization import fit_norm_stats  # noqa: E402
from models.params import check, event_head_params  # noqa: E402
from models.spec import ModelSpec, SpecError  # noqa: E402
from pipelines.config import ConfigError, parse_recipe  # noqa: E402
from pipelines.evaluation.event_scores import choose_threshold  # noqa: E402

QUANTILES = (0.1, 0.5, 0.9)


def _spec(**kwargs) -> ModelSpec:
    """The hypotension recipe's model: 2 h of per-minute MAP in, the next hour out."""
    base = dict(arch="lstm", units=(8,), input_steps=120, horizon=60, quantiles=QUANTILES,
                anchor="last", events=("ahe",))
    return ModelSpec(**{**base, **kwargs})


def _map_windows(n: int, steps: int, seed: int = 0) -> np.ndarray:
    """`(n, steps)` per-minute MAP (mmHg): random walks around 50-90, some with NaN minutes."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(50, 90, size=(n, 1))
    x = start + np.cumsum(rng.normal(0, 2.0, size=(n, steps)), axis=1)
    x[rng.random((n, steps)) < 0.02] = np.nan
    return x


def _hypotension_batch(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x `(n, 120, 1)`, y `(n, 60, 1)` float32, no gaps."""
    w = np.nan_to_num(_map_windows(n, 180, seed), nan=70.0).astype(np.float32)[..., None]
    return w[:, :120], w[:, 120:]


def test_the_in_graph_label_equals_the_rule_on_random_windows() -> None:
    future = _map_windows(500, 75)  # longer than the rule's hour: only the first 60 count
    edge = np.full((4, 75), 80.0)
    edge[0, 10:37] = 55.0  # 27 low minutes in one 30-minute window: an episode
    edge[1, 10:36] = 55.0  # 26: not one
    edge[2, 40:67] = 60.0  # at the threshold counts as low, but minutes 60+ are outside the hour
    edge[3, 30:57] = 60.0  # at the threshold, inside the hour
    future = np.concatenate([future, edge])
    got = keras.ops.convert_to_numpy(rule_label(future.astype(np.float32), AHE))
    want = AHE.label(future)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert want[-4:].tolist() == [True, False, False, True]
    assert 0 < want.mean() < 1  # both kinds of window were drawn


def test_the_event_loss_is_the_cross_entropy_against_the_rule_of_the_target_window() -> None:
    y = _map_windows(200, 60, seed=1).astype(np.float32)[..., None]  # (B, 60, 1)
    p = np.random.default_rng(2).uniform(0.01, 0.99, size=(200, 1)).astype(np.float32)
    label = AHE.label(y[..., 0])
    want = -np.mean(np.where(label, np.log(p[:, 0]), np.log(1 - p[:, 0])))
    got = float(keras.ops.convert_to_numpy(EventLoss("ahe")(y, p)))
    assert got == pytest.approx(want, rel=1e-4)


def test_a_hypotension_model_adds_a_probability_of_shape_batch_by_one() -> None:
    x, y = _hypotension_batch()
    model = build_model(_spec(), fit_norm_stats(x, y))
    out = model.predict(x, verbose=0)
    assert set(out) == {"forecast", "quantiles", "ahe_probability"}
    assert out["forecast"].shape == (64, 60, 1) and out["quantiles"].shape == (64, 60, 1, 3)
    p = out["ahe_probability"]
    assert p.shape == (64, 1) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))


def test_every_layer_of_an_event_model_matches_its_formula() -> None:
    for units, quantiles in (((8,), QUANTILES), ((16, 4), ()), ((5,), (0.5,))):
        model = build_model(_spec(units=units, quantiles=quantiles))
        rows = {row.name: row for row in check(model)}  # raises on any mismatch
        head = rows["ahe_probability"]
        assert head.kind == "EventHead" and head.d == units[-1] + n_event_features(len(quantiles))
        assert head.keras == event_head_params(units[-1], len(quantiles))
        assert rows["ahe_features"].keras == 0
    # a logistic regression (44 weights + bias) and its Platt scaling (2, non-trainable)
    assert event_head_params(32, 3) == (32 + 12) * 1 + 1 + 2


def test_the_calibration_weights_are_counted_and_not_trained() -> None:
    model = build_model(_spec())
    head = model.get_layer("ahe_probability")
    assert [w.name for w in head.non_trainable_weights] == ["slope", "intercept"]
    assert head.count_params() == event_head_params(8, 3) == 8 + 12 + 1 + 2
    assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == 8 + 12 + 1


def test_a_head_on_the_event_features_alone_matches_its_formula() -> None:
    model = build_model(_spec(event_inputs="features"))
    rows = {row.name: row for row in check(model)}
    assert rows["ahe_probability"].d == n_event_features(3)
    assert rows["ahe_probability"].keras == event_head_params(0, 3) == 12 + 1 + 2
    assert "ahe_inputs" not in rows
    with pytest.raises(SpecError, match="event_inputs must be one of core_and_features, "
                                        "features, got 'core'"):
        _spec(event_inputs="core")


def test_the_calibrated_probability_is_the_platt_scaling_of_the_trained_logit() -> None:
    x, y = _hypotension_batch()
    model = build_model(_spec(), fit_norm_stats(x, y))
    before = model.predict(x, verbose=0)["ahe_probability"][:, 0].astype(np.float64)
    logit = np.log(before / (1 - before))
    set_event_calibration(model, "ahe", 2.5, -1.0)
    after = model.predict(x, verbose=0)["ahe_probability"]
    assert after.dtype == np.float32 and np.all((after >= 0) & (after <= 1))
    np.testing.assert_allclose(after[:, 0], 1 / (1 + np.exp(-(2.5 * logit - 1.0))), atol=1e-5)
    assert np.all(np.diff(after[np.argsort(before), 0]) >= 0)  # the ranking is kept
    with pytest.raises(ValueError, match=r"calibration slope must be > 0 \(it would reorder "
                                         r"the cases\), got -1.0"):
        set_event_calibration(model, "ahe", -1.0, 0.0)


def test_platt_scaling_recovers_a_known_miscalibration() -> None:
    from pipelines.training.event_threshold import fit_platt

    rng = np.random.default_rng(5)
    z = rng.normal(-4.0, 1.5, 20000)  # logits of a head trained where the event is rare
    y = rng.random(20000) < 1 / (1 + np.exp(-(1.5 * (z + 4.0) + 0.2)))  # truth: ~50 %
    a, b = fit_platt(y, z)
    assert a == pytest.approx(1.5, rel=0.1) and b == pytest.approx(1.5 * 4.0 + 0.2, rel=0.1)


def test_the_threshold_is_chosen_on_the_calibrated_probability_of_the_training_t0_cases(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.training import event_threshold
    from pipelines.windows.spec import WindowSpec

    x, y = _hypotension_batch(200, seed=6)
    model = build_model(_spec(), fit_norm_stats(x, y))
    head = model.get_layer("ahe_probability")
    kernel = np.zeros(head.kernel.shape, np.float32)
    kernel[8, 0] = -1.0  # the logit reads the margin of the last 5 minutes' mean only
    head.kernel.assign(kernel)
    head.bias.assign(np.array([-4.0], np.float32))  # trained where the event is rare: p ~ 0.02
    set_event_calibration(model, "ahe", 3.0, 3.0)  # an old calibration is replaced, not kept
    recent = x[:, -5:, 0].mean(axis=1) + np.random.default_rng(7).normal(0, 5, len(x))
    labels = recent < np.median(recent)  # half the cases, ranked by the recent pressure
    monkeypatch.setattr(event_threshold, "_t0_cases", lambda *a, **k: (x, labels))
    spec = WindowSpec(input_steps=120, horizon=60, stride=1, inputs=("ABPMEAN",),
                      targets=("ABPMEAN",))

    calibration = event_threshold.calibrate_events(model, ("ahe",), None, spec)
    a, b = float(head.slope.numpy()[0]), float(head.intercept.numpy()[0])
    assert calibration == {"ahe": {"slope": pytest.approx(a), "intercept": pytest.approx(b),
                                   "fitted_on": "train_t0", "n_cases": 200}}
    p = model.predict(x, verbose=0)["ahe_probability"][:, 0]
    assert abs(p.mean() - labels.mean()) < 0.05  # calibrated for the T0 cases' prevalence
    forecaster = lambda v: model.predict_on_batch(v)  # noqa: E731
    events = event_threshold.event_thresholds(forecaster, ("ahe",), None, spec, 0)
    assert events["ahe"]["chosen_on"] == "train_t0"
    assert events["ahe"]["threshold"] == pytest.approx(choose_threshold(labels, p))


def test_the_event_features_are_margins_and_rule_scores_in_mmhg() -> None:
    signal = np.full((1, 120, 2), 70.0, dtype=np.float32)
    signal[0, -30:, 1] = 55.0  # the target is channel 1: 30 low minutes just before the cut
    signal[0, -1, 1] = 50.0
    forecast = np.full((1, 60, 1), 58.0, dtype=np.float32)
    forecast[0, 40:, 0] = 90.0  # 40 low minutes, then recovered
    quantiles = np.stack([forecast - 10, forecast, forecast + 10], axis=-1)
    layer = EventFeatures(60.0, 30, 27, 60, position=1)
    feats = keras.ops.convert_to_numpy(layer([signal, forecast, quantiles]))[0]
    assert feats.shape == (n_event_features(3),)
    np.testing.assert_allclose(feats, [
        (54.0 - 60) / 10, (50.0 - 60) / 10, 1.0,  # mean of the last 5 min, last value, low share
        (58.0 - 60) / 10, (0.6667 * 58 + 0.3333 * 90 - 60) / 10, 30 / 27,  # point forecast
        (48.0 - 60) / 10, 30 / 27,  # 10 % quantile: min, rule score
        (58.0 - 60) / 10, 30 / 27,  # 50 %
        (68.0 - 60) / 10, 0.0,  # 90 %: never low
    ], rtol=1e-3, atol=1e-3)


def test_the_event_loss_is_keyed_on_the_output_and_weighted_by_the_recipe() -> None:
    from pipelines.config import TrainConfig
    from pipelines.training.fit import compile_model

    spec = _spec()
    losses = compile_losses(spec)
    assert isinstance(losses["ahe_probability"], EventLoss) and losses["forecast"] == "mse"
    x, y = _hypotension_batch()
    model = build_model(spec, fit_norm_stats(x, y))
    cfg = TrainConfig(loss="mae", event_loss_weight=7.0, schedule="constant",
                      learning_rate=1e-12)
    compile_model(model, spec, cfg, 1)
    targets = {name: y for name in model.output_names}  # as `fit._keyed` feeds every output
    logs = model.evaluate(x, targets, batch_size=64, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["forecast_loss"] + logs["quantiles_loss"]
                                         + 7.0 * logs["ahe_probability_loss"], rel=1e-4)


def test_the_event_head_starts_at_the_training_base_rate() -> None:
    x, y = _hypotension_batch(200, seed=3)
    model = build_model(_spec(), fit_norm_stats(x, y))
    rates = set_event_base_rates(model, ("ahe",), y)
    rate = float(AHE.label(y[..., 0]).mean())
    assert rates == {"ahe": rate}
    bias = float(model.get_layer("ahe_probability").bias.numpy()[0])
    p = min(max(rate, 1e-4), 1 - 1e-4)
    assert bias == pytest.approx(np.log(p / (1 - p)), rel=1e-5)


def test_an_event_model_trains_one_step_and_reloads_with_and_without_quantiles(
        tmp_path: Path) -> None:
    x, y = _hypotension_batch()
    for spec in (_spec(), _spec(quantiles=(), anchor="none")):
        model = build_model(spec, fit_norm_stats(x, y))
        model.compile(optimizer="adam", loss=compile_losses(spec))
        model.fit(x, {name: y for name in model.output_names}, epochs=1, verbose=0)
        model.save(tmp_path / "m.keras")
        again = keras.saving.load_model(tmp_path / "m.keras")
        np.testing.assert_allclose(again.predict(x, verbose=0)["ahe_probability"],
                                   model.predict(x, verbose=0)["ahe_probability"], atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"events": ("ahe", "sepsis")}, "events must name known events (ahe), got 'sepsis'"),
    ({"events": "ahe"}, "events must be a list of event names, got 'ahe'"),
    ({"events": ("ahe", "ahe")}, "events must not repeat, got ['ahe', 'ahe']"),
    ({"n_channels": 2, "n_targets": 2, "target_positions": (0, 1)},
     "events ['ahe'] need exactly one target (the signal the rule reads), got n_targets=2"),
    ({"arch": "seq2seq", "anchor": "none"},
     "events ['ahe'] apply to head 'direct' of a single-state core, not head 'direct' with "
     "arch 'seq2seq'"),
])
def test_event_spec_errors_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        _spec(**kwargs)
    assert str(info.value) == message


def test_an_event_model_has_no_stateful_twin_even_without_an_anchor() -> None:
    assert stateful_refusal(_spec(anchor="none")) == (
        "events ['ahe'] have no stateful twin (the event head reads the whole window)")


def _recipe(fs: float = 1 / 60, horizon: int = 60, events=("ahe",)) -> dict:
    return {"name": "hypo",
            "data": {"channels": ["ABPMEAN"], "fs": fs, "numerics": True},
            "window": {"input_steps": 120, "horizon": horizon, "stride": 1,
                       "inputs": ["ABPMEAN"], "targets": ["ABPMEAN"]},
            "model": {"anchor": "last", "events": list(events)}}


def test_a_recipe_whose_horizon_misses_the_rules_hour_is_refused_naming_the_values() -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe(_recipe(horizon=45))
    assert str(info.value) == (
        "[model] events 'ahe' needs the 60 minutes after the cut point: [window] horizon = 45 "
        "steps at fs = 0.0166667 Hz covers 45 minutes")
    assert parse_recipe(_recipe(horizon=60)).train.event_loss_weight == 1.0


def test_a_recipe_with_events_not_one_value_a_minute_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe(_recipe(fs=1.0, horizon=3600))
    assert str(info.value) == (
        "[model] events ['ahe'] count minutes: they need one value a minute ([data] fs = 1/60 "
        "Hz), got fs = 1 Hz")


def test_an_event_loss_weight_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"\[train\] event_loss_weight must be > 0, got 0"):
        parse_recipe({**_recipe(), "train": {"event_loss_weight": 0}})


def test_the_threshold_is_the_midpoint_that_maximizes_accuracy() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    assert choose_threshold(y, p) == pytest.approx(0.45)
    # one positive at 0.2 costs one case either way: among equal accuracies the threshold
    # nearest 0.5 wins (0.45 over 0.15)
    y2 = np.array([0, 1, 0, 1, 1, 1], dtype=bool)
    assert choose_threshold(y2, p) == pytest.approx(0.45)


def test_the_threshold_alarms_the_same_cases_with_either_comparison() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(1000).astype(np.float32)
    y = rng.random(1000) < p  # calibrated: the best threshold is near 0.5
    t = choose_threshold(y, p)
    assert 0.4 < t < 0.6
    assert np.array_equal(p >= t, p > t)
    accuracy = np.mean((p >= t) == y)
    for other in np.linspace(0, 1, 101):
        assert np.mean((p >= other) == y) <= accuracy + 1e-12


def test_a_probability_of_exactly_one_keeps_the_threshold_in_range() -> None:
    t = choose_threshold(np.array([True, False]), np.array([1.0, 0.2]))
    assert 0 <= t <= 1


# --- end to end -------------------------------------------------------------------------------

RECIPE = """
name = "hypo"
[data]
raw = "{raw}"
dataset = "{dataset}"
channels = ["ABPMEAN"]
fs = 0.016666666666666666
numerics = true
[window]
input_steps = 120
horizon = 60
stride = 2
inputs = ["ABPMEAN"]
targets = ["ABPMEAN"]
[model]
arch = "lstm"
units = [8]
quantiles = [0.1, 0.5, 0.9]
anchor = "last"
events = ["ahe"]
[train]
loss = "huber"
huber_delta = 5.0
learning_rate = 0.003
batch_size = 64
epochs = 2
patience = 0
event_loss_weight = 1.0
[evaluate]
min_period_s = 7200
max_period_s = 14400
ridge_lags = 30
max_windows = 400
n_boot = 20
"""


def _write_map_cohort(raw: Path, n_patients: int = 12, seed: int = 0) -> None:
    """Per-minute MAP numerics records (mmHg, 1/60 Hz), 400-660 minutes each; every other
    patient has a 40-minute drop to ~50 mmHg (an acute hypotensive episode)."""
    import wfdb

    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True)
    for i in range(1, n_patients + 1):
        minutes = int(rng.integers(400, 661))
        level = rng.uniform(70, 90)
        walk = np.cumsum(rng.normal(0, 0.5, minutes))
        signal = level + walk - walk.mean() + rng.normal(0, 1.5, minutes)
        if i % 2:
            at = int(rng.integers(150, minutes - 60))
            signal[at - 10:at] -= np.linspace(0, level - 50, 10)
            signal[at:at + 40] = 50 + rng.normal(0, 2, 40)
        signal = np.clip(signal, 30, 150)
        wfdb.wrsamp(f"p{i:06d}-2100-01-01-00-00n", fs=1 / 60, units=["mmHg"],
                    sig_name=["ABPMEAN"], p_signal=signal[:, None], fmt=["16"],
                    write_dir=str(raw))


@pytest.mark.slow
def test_a_hypotension_recipe_trains_and_publishes_the_probability_and_its_threshold(
        tmp_path: Path) -> None:
    import tensorflow as tf

    from pipelines.config import load_recipe
    from pipelines.training.train import train

    raw = tmp_path / "raw"
    _write_map_cohort(raw)
    path = tmp_path / "hypo.toml"
    path.write_text(RECIPE.format(raw=raw, dataset=tmp_path / "ds"))
    result = train(load_recipe(path), model_store=tmp_path / "store", run_dir=tmp_path / "run")

    assert result.version == 1
    version = result.version_dir
    meta = json.loads((version / "assets.extra" / "pulsecast.json").read_text())
    threshold = meta["events"]["ahe"]["threshold"]
    assert meta["events"] == {"ahe": {"output": "ahe_probability", "threshold": threshold,
                                      "horizon_min": 60, "chosen_on": "train_windows"}}
    assert isinstance(threshold, float) and 0 <= threshold <= 1
    assert result.events == meta["events"]
    assert meta["serving_signature"]["outputs"] == {
        "ahe_probability": [None, 1], "forecast": [None, 60, 1],
        "quantiles": [None, 60, 1, 3]}
    assert meta["params"] and all(row["ok"] for row in meta["params"])
    assert {row["name"] for row in meta["params"]} >= {"ahe_features", "ahe_probability"}
    assert "model" in meta["metrics"]  # the forecast was evaluated; the event output ignored

    fn = tf.saved_model.load(str(version)).signatures["serving_default"]
    x = (70 + np.random.default_rng(0).normal(0, 10, (5, 120, 1))).astype(np.float32)
    x[0] = 45.0  # already hypotensive
    got = {k: v.numpy() for k, v in fn(signal=tf.constant(x)).items()}
    assert got["forecast"].shape == (5, 60, 1) and got["quantiles"].shape == (5, 60, 1, 3)
    p = got["ahe_probability"]
    assert p.shape == (5, 1) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))


@pytest.mark.slow
def test_verification_refuses_a_saved_model_missing_an_output(tmp_path: Path) -> None:
    from models.export import ExportVerificationError, export_savedmodel, verify_savedmodel

    x, y = _hypotension_batch(8)
    model = build_model(_spec(), fit_norm_stats(x, y))
    expected = {k: np.asarray(v) for k, v in model.predict_on_batch(x).items()}
    export_savedmodel(model, tmp_path / "1", {"fs": 1 / 60, "targets": ["ABPMEAN"]}, x[:2])
    diffs = verify_savedmodel(tmp_path / "1", x, expected, complete=True)
    assert set(diffs) == {"forecast", "quantiles", "ahe_probability"}
    partial = {k: v for k, v in expected.items() if k != "ahe_probability"}
    with pytest.raises(ExportVerificationError, match=r"has outputs \['ahe_probability', "
                                                      r"'forecast', 'quantiles'\], the Keras "
                                                      r"model \['forecast', 'quantiles'\]"):
        verify_savedmodel(tmp_path / "1", x, partial, complete=True)


@pytest.mark.slow
def test_the_saved_model_serves_the_calibrated_probability(tmp_path: Path) -> None:
    import tensorflow as tf

    from models.export import export_savedmodel

    x, y = _hypotension_batch(8)
    model = build_model(_spec(), fit_norm_stats(x, y))
    raw = model.predict_on_batch(x)["ahe_probability"]
    set_event_calibration(model, "ahe", 2.0, 1.5)
    want = model.predict_on_batch(x)["ahe_probability"]
    assert not np.allclose(want, raw)
    export_savedmodel(model, tmp_path / "1", {"fs": 1 / 60, "targets": ["ABPMEAN"]}, x[:2])
    fn = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    got = fn(signal=tf.constant(x))["ahe_probability"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
