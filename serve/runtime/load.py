"""`load_servable`: one version folder -> a `SavedModelServable`, ready to serve.

The steps, in order: check `saved_model.pb` is there, read its signatures and load it (tag
`serve`), read `assets.extra/pulsecast.json` when present (pulsecast exports only; an unreadable
one is logged and ignored), replay the warmup records through the SavedModel
(`serve.runtime.warmup`), then, when the runtime asks for XLA (`RUNTIMES`), start compiling it in
the background (`serve.runtime.xla.XlaBackground`) and return. So a version is ready to serve (and
becomes AVAILABLE) as soon as the SavedModel answers, about what a bare `tf.saved_model.load` and
one call cost; the compiled runtime is swapped in later, bucket by bucket, once each reproduces
the SavedModel. Every failure is a `LoadError` carrying TF Serving's code: NOT_FOUND for a missing
SavedModel, DATA_LOSS for a corrupt one, INVALID_ARGUMENT for a failed warmup record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from models.layout import SAVED_MODEL_FILES, SERVE_TAG
from models.metadata import MetadataError, read_pulsecast_json
from serve.errors import Code, ServingError
from serve.runtime import RUNTIMES, LoadError
from serve.runtime.servable import SavedModelServable
from serve.runtime.signatures import read_signatures
from serve.runtime.warmup import predict_batches, read_warmup_records, replay_warmup

log = logging.getLogger(__name__)


def _read_metadata(path: Path) -> dict | None:
    """The version's `pulsecast.json` as read (untyped: `:forecast` types it when it needs it),
    or None when it has none or it cannot be read (logged)."""
    try:
        return read_pulsecast_json(path)
    except FileNotFoundError:
        return None
    except (OSError, MetadataError) as err:
        log.warning("ignoring unreadable pulsecast.json of %s: %s", path, err)
        return None


def load_servable(
    name: str,
    version: int,
    path: str | Path,
    *,
    runtime: str = "auto",
    enable_warmup: bool = True,
) -> SavedModelServable:
    """Load the SavedModel in `path` as version `version` of model `name`.

    `runtime`: "savedmodel" (plain), "xla" (compiled `serving_default` for any model whose
    serving_default is fixed-shape numeric, verified, falling back to the SavedModel), or
    "auto" (= "xla" for pulsecast exports, "savedmodel" otherwise). The servable returned
    serves through the SavedModel; with XLA asked for, a background job compiles it and swaps
    it in when verified (`servable.wait_for_runtime()` waits for that; `servable.close()`
    cancels it). Raises `LoadError` (a `ServingError`) with the failure's code.
    """
    import tensorflow as tf

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    path = Path(path)
    t0 = time.perf_counter()
    if not (path / SAVED_MODEL_FILES[0]).is_file():  # saved_model.pb: what read_signatures parses
        raise LoadError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
        )
    try:
        signatures = read_signatures(path)
        loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    except ServingError as err:
        raise LoadError(err.code, err.message) from err
    except tf.errors.OpError as err:
        raise LoadError(Code(err.error_code), err.message) from err
    except Exception as err:  # a corrupt proto raises DecodeError: that is data loss
        code = Code.DATA_LOSS if type(err).__name__ == "DecodeError" else Code.UNKNOWN
        raise LoadError(code, f"Failed to load SavedModel at {path}: "
                        f"{type(err).__name__}: {err}") from err
    servable = SavedModelServable(name, version, path, loaded, signatures, _read_metadata(path))
    records = read_warmup_records(path) if enable_warmup else []
    if records:  # through the SavedModel: cheap, and TF Serving's "replayed before AVAILABLE"
        servable.warmup_records = replay_warmup(servable, records)
    servable.load_seconds = time.perf_counter() - t0
    if runtime == "xla" or (runtime == "auto" and servable.metadata is not None):
        servable.start_xla(predict_batches(records))  # in the background; returns at once
    return servable
