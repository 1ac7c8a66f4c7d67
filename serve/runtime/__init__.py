"""Loading one SavedModel version as a `Servable`, and running it (`serve.types.Servable`).

    load.py        load_servable: version folder -> servable (metadata, runtime, warmup)
    servable.py    SavedModelServable: predict / classify / regress with TF Serving's texts
    signatures.py  the SignatureDefs of saved_model.pb; input checks and dtype casts
    xla.py         the compiled (XLA) runtime for `serving_default`, verified against the model
    warmup.py      assets.extra/tf_serving_warmup_requests: read and replayed before serving

What a servable reads from a version folder (TF Serving's layout, `models.layout`):
`saved_model.pb` + `variables/` (tag `serve`), `assets.extra/tf_serving_warmup_requests` and, in
pulsecast exports only, `assets.extra/pulsecast.json`. Nothing is written. TensorFlow is imported
inside functions: importing any module here is cheap.
"""

from __future__ import annotations

from serve.errors import ServingError

# What runs `predict`: "savedmodel" (the loaded signature, as TF Serving runs it), "xla"
# (`serving_default` compiled, verified against the SavedModel), "auto" (xla for pulsecast
# exports, savedmodel otherwise). The `--runtime` flag and `load_servable` take these names.
RUNTIMES = ("auto", "savedmodel", "xla")


class LoadError(ServingError):
    """A version folder that cannot become a servable (bad SavedModel, failed warmup)."""
