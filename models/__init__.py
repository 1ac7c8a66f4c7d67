"""Keras architectures, parameter-count formulas, export and the model store, and the contracts
that cross the offline/online line: `conditioning` (gap filling, and a channel conditioned for
`:forecast`) and `resampling` (rate ratio, NaN-safe resampling, its bounded-cost form), used by
ingest and by `:forecast`; `layout` (the version folder: paths, signature, version names),
`metadata` (the typed `pulsecast.json`), `channels` (channel-name aliases), `units` (plausible
ranges per unit) and `events` (the AHE rule). `events_keras` is the Keras side of `events`.

`models` imports neither `pipelines` nor `serve`; both import it. Importing `models.conditioning`,
`models.resampling`, `models.events`, `models.layout`, `models.metadata` or `models.store` pulls
in no TensorFlow or Keras.
"""
