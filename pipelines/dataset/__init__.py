"""Dataset: the on-disk contract every stage after ingest reads, and what is decided per patient.

- `contract`: `Dataset`, `load_dataset`, `MANIFEST_COLUMNS`, `staged_dir` (stage, then rename).
- `splits`: the deterministic train/val/test split by a stable hash of `patient_id`, never by
  window, so a new patient lands in the same split every time; a small cohort (3-20 patients)
  moves the patients nearest a boundary so that no split is empty (`cohort_splits`), and
  `check_cohort_splits` refuses a dataset that cannot be trained and judged, naming the counts.
- `drift`: new records compared with a dataset's training split, per channel (quantiles, KS).

On disk, `data/datasets/<name>/`: `manifest.parquet` (one row per record or contiguous segment),
`signals/<record_id>.npy` float32 `(time, channels)` in physical units with NaN for gaps, and
`dataset.json` (the ingest config that made it). Written by `pipelines.ingest`.
"""
