"""How many examples each fuzzer runs: its own count, times `PULSECAST_FUZZ_SCALE` (default 1).

`make test` runs every fuzzer at its own count on a fixed sequence of examples (see conftest.py);
`make fuzz` sets the scale above 1 and draws new random examples each run.
"""

from __future__ import annotations

import os


def fuzz_examples(count: int) -> int:
    """`count` scaled by PULSECAST_FUZZ_SCALE; a bad value is an error that names it."""
    raw = os.environ.get("PULSECAST_FUZZ_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"PULSECAST_FUZZ_SCALE must be a number > 0, got {raw!r}") from None
    if not scale > 0:
        raise ValueError(f"PULSECAST_FUZZ_SCALE must be a number > 0, got {raw!r}")
    return max(1, round(count * scale))
