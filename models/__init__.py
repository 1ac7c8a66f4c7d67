"""Keras architectures, parameter-count formulas, export and the model store, and the contracts
that cross the offline/online line: `conditioning` (rate ratio, NaN-safe resampling, gap filling,
used by ingest and by `:forecast`), `layout` (the version folder: paths, signature, version
names) and `metadata` (the typed `pulsecast.json`).

`models` imports neither `pipelines` nor `serve`; both import it. Importing `models.conditioning`,
`models.layout`, `models.metadata` or `models.store` pulls in no TensorFlow or Keras.
"""
