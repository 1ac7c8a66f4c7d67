"""Shared fixtures: the real PhysioNet excerpts (skipped when absent), a synthetic WFDB writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every test run a README command starts (`make test`, `make test-fast`, CI) replays the same
# fixed sequence of fuzz examples, so a red run always means a code change. `make fuzz` is what
# explores: HYPOTHESIS_PROFILE=fuzz draws new random examples each run, and PULSECAST_FUZZ_SCALE
# (tests/fuzzing.py) multiplies every fuzzer's example count. A failure it finds is kept as an
# explicit `@example` in the fuzzer, so the deterministic run checks it from then on.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("deterministic", derandomize=True, database=None)
    _hypothesis_settings.register_profile("ci", derandomize=True, database=None)
    _hypothesis_settings.register_profile("fuzz", derandomize=False, database=None)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "deterministic")
except ImportError:  # hypothesis is a dev dependency; the fuzz tests import it themselves
    pass
SHARED_PHYSIONET = REPO_ROOT.parent / "shared" / "physionet"


@pytest.fixture(scope="session")
def physionet_dir() -> Path:
    """`../shared/physionet`: real PhysioNet excerpts. Tests using it skip when it is absent."""
    if not SHARED_PHYSIONET.is_dir():
        pytest.skip(f"real PhysioNet excerpts not found at {SHARED_PHYSIONET} (no ../shared)")
    return SHARED_PHYSIONET


@pytest.fixture
def write_record(tmp_path: Path) -> Callable[..., Path]:
    """Write a single-segment WFDB record with `wfdb.wrsamp`; returns the record path (no suffix).

    `signal` is `(time, channels)` float in physical units (NaN allowed, not a whole channel).
    """
    import wfdb

    def _write(
        name: str,
        signal: np.ndarray,
        channels: list[str],
        fs: float = 125.0,
        units: list[str] | None = None,
        folder: str | Path = "raw",
    ) -> Path:
        out = tmp_path / folder
        out.mkdir(parents=True, exist_ok=True)
        signal = np.asarray(signal, dtype=np.float64)
        if signal.ndim == 1:
            signal = signal[:, None]
        wfdb.wrsamp(
            name,
            fs=fs,
            units=units or ["mV"] * len(channels),
            sig_name=list(channels),
            p_signal=signal,
            fmt=["16"] * len(channels),
            write_dir=str(out),
        )
        return out / name

    return _write
