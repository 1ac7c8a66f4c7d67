"""Sources: where raw WFDB records come from, written untouched into `data/raw/<source>/`.

- `pull`: PhysioNet, or any mirror in its layout (an http(s) URL, a local folder or a `file://`
  URL), the one networked module; each file is checked against the database's `SHA256SUMS` when
  it has one and renamed into place (`pipelines.atomic`); `ALARMS`, `README` and `LICENSE` come
  along.
- `synth`: the synthetic cohort as real WFDB files (the offline default), staged and renamed
  into place; `physiology` draws each patient's physiology and `waveforms` generates its signals
  (pure numpy). `synth --kind map` writes per-minute MAP trends with acute hypotensive episodes
  like the Challenge 2009 records, and their `labels.csv` (`map_trends`, pure numpy).

On disk: WFDB records (`.hea`, `.dat`, multi-segment layouts, numerics `n` records) and a
`RECORDS` list, exactly as PhysioNet lays them out.
"""
