"""Offline work, one sub-package per pipeline stage, in the order data flows through them:

- `sources`: raw WFDB records from PhysioNet (`pull`) or the synthetic cohort (`synth`).
- `ingest`: records -> a dataset folder (`data/datasets/<name>/`).
- `dataset`: the dataset contract every later stage reads, patient splits, drift.
- `windows`: (input, target) windows cut on the fly, batchers, Keras adapters.
- `training`: compile and fit, the training pipeline, TBPTT, tf.distribute.
- `evaluation`: metrics, baselines, the report, evaluating a published version.
- `release`: retrain a challenger, the promotion gate, rollback.

`cli.py` and `commands/` sit thin on top; `config.py` is the recipe; `atomic.py` and `progress.py`
are shared helpers; `demo.py` runs everything end to end. Nothing here runs at import; heavy
libraries (wfdb, TensorFlow) load inside the functions that need them.
"""
