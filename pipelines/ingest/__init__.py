"""Ingest: WFDB records under a folder -> a dataset folder in the dataset contract.

Owns everything between raw files and `data/datasets/<name>/` (the contract itself, and what it
holds, is `pipelines.dataset.contract`: `manifest.parquet`, `signals/<record_id>.npy` float32
`(time, channels)` in physical units with NaN for gaps, `dataset.json`).

- `records` + `headers`: the wfdb edge (find records, parse headers once); `samples`: read signal
  data and raw bytes.
- `channels`, `assemble`: one record's channel plan, resampling to `fs` and the pieces it splits
  into at long gaps, still stretches cut as gaps and the time kept and dropped per cause (the
  rate ratio, resampling and gap filling themselves are `models.resampling` and
  `models.conditioning`, shared with the server's `:forecast`); `validity`: which samples are
  readings (numerics' 0, `valid_range`) and the count of those set aside; `quality`: quality
  flags and whole-record checks; `stretches`: still stretches (one value, or at an ADC limit).
- `config`: `IngestConfig`, and `ingest_config_from_recipe` (a recipe's `[data]` table -> the
  config; `pulsecast ingest --config` and `pulsecast train` both use it); `per_record`:
  `ingest_record`, one record -> manifest rows (picklable, read-only, so a process pool or Ray
  runs it anywhere: `executors`).
- `cohort`: `ingest`, every record of a folder -> a staged dataset renamed into place whole (with
  the raw folder's `labels.csv`, when it has one); `incremental`: new records added to an
  existing dataset.

Importing this package (or any module in it) imports neither TensorFlow nor Keras; wfdb loads
only when samples are read.
"""
