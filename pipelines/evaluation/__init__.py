"""Evaluation: forecasts scored against baselines on the same windows of held-out patients.

- `metrics`: scoring math (MAE, RMSE, pinball, coverage, skill) and the `Evaluation` result whose
  `to_dict()` is the JSON contract; `bootstrap`: the interval of skill, resampling patients.
- `baselines`: persistence, last cycle, ridge autoregression, cycle median (`cycle_copies`: the
  cycle head of `models.cycle` in numpy, nothing learned). Skill is against the best of the
  first three; the cycle median gets its own skill and interval.
- `breakdown`: scores per record and per group of records; `groups`: the labels (PhysioNet's
  `ALARMS` file: alarm type, true / false alarm, or any `record,group` file).
- `left_out`: which windows of a split were not scored, and why.
- `report` and `plots`: the edge that renders and writes it (`evaluation.json`, `evaluation.md`,
  PNGs).
- `evaluate`: a forecaster and every baseline on a dataset split's windows; `evaluate_version`:
  the same for a published SavedModel on any dataset (`pulsecast evaluate`).

On disk: `<out>/evaluation.json`, `evaluation.md`, `error_by_step.png`, `forecast_examples.png`
and `records.png` (skill per record; the best, median and worst record's forecast), each written
atomically (`pipelines.atomic`).
"""
