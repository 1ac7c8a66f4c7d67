"""The alarm threshold of each event a recipe warns of, chosen on the training records only.

What gets stored in `pulsecast.json`'s `events` (`models.metadata`): for each event of
`[model] events`, the model's probability output, the rule's horizon and the threshold above
which `:forecast` raises the alarm.

Which cases the threshold is chosen on, and how:

- **The T0 cases of the training records** when the dataset carries the records' labels
  (`labels.csv`: the PhysioNet/CinC Challenge 2009's group labels at T0), by **accuracy**
  (`pipelines.evaluation.event_scores.choose_threshold`): the cases and the score the challenge
  judged warnings on, and the ones MAP alone's threshold is fitted on
  (`pipelines.evaluation.events`), so the two warnings are compared like for like.
- Otherwise **every training window** (evenly subsampled), by **Youden's J** (sensitivity +
  specificity): at an arbitrary cut point an episode starts in under 1 % of hours, so the most
  accurate threshold on such windows is "never alarm" (measured on the 60 challenge records:
  0.993 training accuracy with no alarm at all), which is no warning.

Cut points inside an ongoing episode are never cases (`models.events.EventRule.ongoing`).

Before the threshold, `calibrate_events` recalibrates each event probability for the population
it is asked about (Platt scaling, `p' = sigmoid(a * logit + b)`, a logistic regression of the
label on the head's trained logit, fitted like MAP alone's on **the same training T0 cases**)
and writes `a` and `b` into the model (`models.events_keras.set_event_calibration`), so the
SavedModel's `ahe_probability` is the calibrated one; the threshold is then chosen on it. The
event loss trains the head on every training window, where an episode starts in ~1 % of hours:
uncalibrated, its probability at T0 (~50 % of the challenge's cases end in an episode) sits far
too low. Calibrated, it answers "how likely is an episode in the next hour, for a patient
monitored because one is feared" (T0-like cut points, ~50 % prevalence); at an arbitrary hour
of continuous monitoring, where episodes are rare, it overstates the risk (ranking and alarms
are unchanged: a > 0). Without T0 labels no calibration is fitted: the probability stays the
one trained on every window (~1 % prevalence).
"""


from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from pipelines.dataset.contract import Dataset
from pipelines.evaluation.evaluate import load_eval_windows, predict_batched
from pipelines.evaluation.event_cases import build_t0_cases, read_map_records
from pipelines.evaluation.event_scores import choose_threshold
from pipelines.windows.spec import WindowSpec

log = logging.getLogger(__name__)

MAX_WINDOWS = 20000  # training windows scored when the dataset has no T0 labels

Forecaster = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def _t0_cases(dataset: Dataset, spec: WindowSpec, rule, fill_gap_min: int):
    """The training records' T0 cases `(x (n, input_steps, 1), label (n,))`, or None when the
    dataset has no labels, the model reads more than the target, or one class is missing."""
    if getattr(dataset, "labels", None) is None or len(spec.inputs) != 1:
        return None
    records = read_map_records(dataset, "train", channel=spec.targets[0],
                               horizon_min=rule.horizon_min)
    cases = build_t0_cases(records, spec.input_steps, rule=rule, fill_gap_min=fill_gap_min)
    if cases.n == 0 or cases.label.all() or not cases.label.any():
        log.warning("the training records' T0 cases hold %d with and %d without %s: choosing "
                    "its threshold on every training window instead", int(cases.label.sum()),
                    int((~cases.label).sum()), rule.name)
        return None
    return cases.x[..., None].astype(np.float32), cases.label


def _window_cases(forecaster: Forecaster, dataset: Dataset, spec: WindowSpec, target: int,
                  rule, max_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """(probability, label) on every training window not inside an ongoing episode."""
    windows = load_eval_windows(dataset, spec, "train", max_windows)
    past, future = windows.x[..., target], windows.y[..., 0]
    keep = ~rule.ongoing(past)
    if not keep.any():
        raise ValueError(f"no {rule.name} warning case among {len(past)} training windows: "
                         "every cut point is inside an ongoing episode")
    out = predict_batched(forecaster, windows.x[keep])
    return np.asarray(out[rule.output], np.float64)[:, 0], rule.label(future[keep])


def fit_platt(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """`(a, b)` of p = sigmoid(a * logit + b): scikit-learn's logistic regression (its default
    L2 penalty, like MAP alone's `fit_map_alone`) of `labels` `(n,)` on `logits` `(n,)`."""
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(logits, np.float64)
    centre = float(z.mean())  # centred for the solver; the intercept is moved back below
    fit = LogisticRegression().fit((z - centre)[:, None], np.asarray(labels, bool))
    a = float(fit.coef_[0, 0])
    return a, float(fit.intercept_[0]) - a * centre


def calibrate_events(model, events: tuple[str, ...], dataset: Dataset, spec: WindowSpec,
                     fill_gap_s: float = 0.0) -> dict[str, dict]:
    """Platt-scale each event probability of `model` on the training records' T0 cases and set
    the scaling in the model (module docstring). Returns `{event: {"slope", "intercept",
    "fitted_on", "n_cases"}}` for the events calibrated; an event without T0 cases, or whose
    fitted slope is not > 0 (its logit does not rank the cases), keeps its trained probability
    (slope 1, intercept 0, set again here so a warm-started model loses an old calibration)."""
    import keras

    from models.events import event_rule
    from models.events_keras import event_head_inputs, set_event_calibration

    out: dict[str, dict] = {}
    for name in events:
        rule = event_rule(name)
        set_event_calibration(model, name, 1.0, 0.0)
        t0 = _t0_cases(dataset, spec, rule, int(fill_gap_s // 60))
        if t0 is None:
            continue
        x, labels = t0
        features, head = event_head_inputs(model, name)
        feats = np.asarray(features.predict_on_batch(x), np.float32)  # (n, d)
        logits = np.asarray(keras.ops.convert_to_numpy(head.logit(feats)), np.float64)[:, 0]
        a, b = fit_platt(labels, logits)
        if not a > 0:
            log.warning("%s calibration slope %.3g on %d training T0 cases: the head's logit "
                        "does not rank them; keeping the uncalibrated probability", name, a,
                        len(labels))
            continue
        set_event_calibration(model, name, a, b)
        log.info("%s probability calibrated on %d training T0 cases (%.0f%% with the event): "
                 "sigmoid(%.3f * logit %+.3f)", name, len(labels), 100 * labels.mean(), a, b)
        out[name] = {"slope": a, "intercept": b, "fitted_on": "train_t0",
                     "n_cases": int(len(labels))}
    return out


def event_thresholds(forecaster: Forecaster, events: tuple[str, ...], dataset: Dataset,
                     spec: WindowSpec, target: int, fill_gap_s: float = 0.0,
                     max_windows: int = MAX_WINDOWS) -> dict[str, dict]:
    """pulsecast.json's `events` for `events` (names of `models.events.EVENTS`): each one's
    output, horizon and alarm threshold chosen on the training split (module docstring).
    `target` is the target's position among the input channels; `fill_gap_s` the recipe's
    ingest gap filling, applied to T0 cases as the served model's gaps are. `{}` without events.
    """
    from models.events import event_rule

    out: dict[str, dict] = {}
    for name in events:
        rule = event_rule(name)
        t0 = _t0_cases(dataset, spec, rule, int(fill_gap_s // 60))
        if t0 is not None:
            x, labels = t0
            probs = np.asarray(predict_batched(forecaster, x)[rule.output], np.float64)[:, 0]
            chosen_on, criterion = "train_t0", "accuracy"
        else:
            probs, labels = _window_cases(forecaster, dataset, spec, target, rule, max_windows)
            chosen_on, criterion = "train_windows", "youden"
        threshold = choose_threshold(labels, probs, criterion)
        alarms = probs >= threshold
        log.info("%s alarm threshold %.4g (%s on %d training %s cases, %.1f%% with the event): "
                 "accuracy %.3f, sensitivity %.3f, specificity %.3f", name, threshold,
                 criterion, len(probs), chosen_on, 100 * labels.mean(),
                 float(np.mean(alarms == labels)), float(alarms[labels].mean()),
                 float((~alarms[~labels]).mean()))
        out[name] = {"output": rule.output, "threshold": threshold,
                     "horizon_min": rule.horizon_min, "chosen_on": chosen_on}
    return out
