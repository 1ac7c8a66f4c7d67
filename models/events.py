"""Clinical events a trend forecast answers: first, the acute hypotensive episode (AHE).

The PhysioNet/CinC Challenge 2009 rule, exactly: an AHE happens in the hour after a cut point t
when some 30-minute window lying wholly inside minutes t..t+59 has at least 27 of its 30 minutes
at or below 60 mmHg of mean arterial pressure; a minute with no reading (NaN) counts as not low.
A cut point inside an ongoing AHE (the 30 minutes before it already meet the rule) is not a
warning case: the warning would only repeat what the monitor shows.

One home for the rule, imported by ingest/evaluation (`pipelines`), training (the label of a
window is computed from its own future, `models.losses`) and the server (`:forecast`'s
`events`). Pure numpy, no TensorFlow; per-minute arrays (`(..., minutes)`, mmHg).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventRule:
    """"At least `min_low` of `window_min` consecutive minutes at or below `threshold`, inside
    the `horizon_min` minutes after the cut point"."""

    name: str
    threshold: float  # mmHg: a minute at or below it is low
    window_min: int  # minutes in the sliding window
    min_low: int  # low minutes the window needs
    horizon_min: int  # minutes after the cut point the window must lie in
    output: str  # the SavedModel output that carries the event's probability

    def occurs(self, minutes: np.ndarray) -> np.ndarray:
        """Whether the rule is met somewhere in `minutes` `(..., n)` (mmHg, NaN = no reading);
        bool `(...)`. `n` < `window_min` gives False."""
        x = np.asarray(minutes, dtype=np.float64)
        low = (x <= self.threshold).astype(np.int32)  # NaN <= t is False: no reading, not low
        n = low.shape[-1]
        if n < self.window_min:
            return np.zeros(low.shape[:-1], dtype=bool)
        csum = np.concatenate([np.zeros((*low.shape[:-1], 1), np.int32),
                               np.cumsum(low, axis=-1)], axis=-1)
        per_window = csum[..., self.window_min:] - csum[..., : n - self.window_min + 1]
        return (per_window >= self.min_low).any(axis=-1)

    def label(self, future: np.ndarray) -> np.ndarray:
        """The event in the first `horizon_min` minutes of `future` `(..., >= horizon_min)`."""
        future = np.asarray(future)
        if future.shape[-1] < self.horizon_min:
            raise ValueError(f"the {self.name} rule needs {self.horizon_min} minutes after the "
                             f"cut point, got {future.shape[-1]}")
        return self.occurs(future[..., : self.horizon_min])

    def ongoing(self, past: np.ndarray) -> np.ndarray:
        """Whether the last `window_min` minutes of `past` `(..., n)` already meet the rule (an
        episode in progress at the cut point: not a warning case)."""
        past = np.asarray(past)
        return self.occurs(past[..., -self.window_min:])


AHE = EventRule(name="ahe", threshold=60.0, window_min=30, min_low=27, horizon_min=60,
                output="ahe_probability")
EVENTS: dict[str, EventRule] = {AHE.name: AHE}


def event_rule(name: str) -> EventRule:
    """The rule called `name`; ValueError naming the known ones otherwise."""
    try:
        return EVENTS[name]
    except KeyError:
        raise ValueError(f"unknown event {name!r}; known: {sorted(EVENTS)}") from None
