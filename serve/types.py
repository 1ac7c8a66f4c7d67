"""Values that cross the server's internal boundaries: model configs, policies, batching
parameters, signature descriptions, version states. Frozen dataclasses, no TensorFlow import.

Vocabulary follows TensorFlow Serving (`model_server_config.proto`, `get_model_status.proto`,
`session_bundle_config.proto` BatchingParameters).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serve.errors import Code

# SignatureDef method names (tensorflow/cc/saved_model/signature_constants.h)
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


class VersionState(enum.IntEnum):
    """ModelVersionStatus.State: END covers both a normal unload and a failed load."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error_code: Code = Code.OK
    error_message: str = ""


@dataclass(frozen=True)
class VersionPolicy:
    """ServableVersionPolicy: `latest` (num_versions, 0 treated as 1), `all`, or `specific`."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"version policy must be latest, all or specific, got {self.kind!r}")
        if self.kind == "specific" and not self.versions:
            raise ValueError("a specific version policy needs at least one version, got none")

    def select(self, on_disk: list[int]) -> list[int]:
        """The aspired versions among those on disk."""
        found = sorted(set(on_disk))
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return found[-max(1, self.num_versions):]


@dataclass(frozen=True)
class ModelConfig:
    """One served model: a name, its base path of numbered version folders, policy and labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"


@dataclass(frozen=True)
class BatchingParams:
    """TF Serving's BatchingParameters with the defaults it uses when a field is unset."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)):
                raise ValueError(f"allowed_batch_sizes must be increasing, got {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{sizes[-1]}; expected {self.max_batch_size}"
                )


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: the tensor's dtype name (`DT_FLOAT`) and shape (-1 = any)."""

    name: str  # the graph tensor name, e.g. "serving_default_signal:0"
    dtype: str
    shape: tuple[int, ...] | None  # None = unknown rank


@dataclass(frozen=True)
class SignatureInfo:
    """A SignatureDef: inputs/outputs by alias and its method (`tensorflow/serving/predict`...)."""

    name: str
    method_name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]


class Servable(Protocol):
    """One loaded model version. Implementations: `serve.runtime.servable.SavedModelServable`,
    wrapped by the batchers of `serve.batching`."""

    name: str
    version: int
    path: Path
    runtime: str  # "savedmodel", "xla", ...: what actually runs `predict`
    signatures: Mapping[str, SignatureInfo]
    metadata: Mapping[str, Any] | None  # assets.extra/pulsecast.json, when pulsecast made it

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray],
        output_filter: tuple[str, ...] = (),
    ) -> dict[str, np.ndarray]:
        """Run a predict signature; raises `ServingError` with TF Serving's codes and texts."""
        ...

    def classify(
        self, signature_name: str, examples: Sequence[Any],
        context: Mapping[str, Any] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Per example its (label, score) pairs. `examples`: dicts of feature lists,
        `tf.train.Example`s or serialized bytes; `context` features are merged into each."""
        ...

    def regress(
        self, signature_name: str, examples: Sequence[Any],
        context: Mapping[str, Any] | None = None,
    ) -> list[float]:
        """One value per example."""
        ...
