"""Training: a recipe and a dataset in, a trained Keras forecaster and a published version out.

- `fit`: the compile/fit plumbing every training path shares: `TrainingError`, `compile_model`
  (loss, optimizer, schedule from the recipe), the batchers, the in-graph normalization fit, the
  keyed PyDataset, checkpoint and log callbacks, `fit_model`.
- `train`: the batch training pipeline (`pulsecast train`): recipe -> dataset -> windows -> fit ->
  evaluate -> publish a version.
- `tbptt` (with its pure chunk plan in `chunks`): truncated backpropagation through time.
- `distribute`: `tf.distribute` strategies (`--strategy`).

On disk: the run folder (`runs/<model_name>/` by default: `checkpoints/last.keras`,
`checkpoints/best.keras`, `state.json`, `history.csv`, `tensorboard/`, `evaluation/`), and the
published version `data/model_store/<model>/<version>/` (SavedModel plus `assets.extra/`:
`pulsecast.json`, `model.keras`, warmup requests), written through `models.store.publish`.
`fit` and `tbptt` never import `train`, so there is no import circle.
"""
