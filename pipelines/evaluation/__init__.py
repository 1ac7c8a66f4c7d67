"""Evaluation: forecasts scored against baselines on the same windows of held-out patients.

- `metrics`: scoring math (MAE, RMSE, pinball, coverage, skill with a patient bootstrap) and the
  `Evaluation` result whose `to_dict()` is the JSON contract.
- `report`: the edge that renders and writes it (`evaluation.json`, `evaluation.md`, PNGs).
- `baselines`: persistence, last cycle, ridge autoregression, cycle median.
- `evaluate`: a forecaster and every baseline on a dataset split's windows; `evaluate_version`:
  the same for a published SavedModel on any dataset (`pulsecast evaluate`).

On disk: `<out>/evaluation.json`, `evaluation.md`, `error_by_step.png` and
`forecast_examples.png`, each written atomically (`pipelines.atomic`).
"""
