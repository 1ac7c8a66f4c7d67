"""In-graph cycle layers: the seasonal-naive forecast, computed inside the model, as a base.

Owns the period search, the cycle-aligned candidates and their mixes.

Physiological waveforms repeat beat by beat, so the best cheap forecast of the next second is the
last cycle copied forward (`pipelines.evaluation.baselines`). The `cycle_residual` head computes
that forecast inside the graph, so the SavedModel still takes raw units and returns raw units:

    z (B, T, C) standardized
      -> WindowScale        per-window location/scale of each channel over the last `steps` samples
      -> CycleCandidates    period per window and target (normalised autocorrelation, first strong
                            peak), then N cycle-aligned copies: sample h of candidate k is
                            z[T - k*p + (h mod p)]                                   (B, H, K, N)
      -> CycleMedian        their median (no weights; robust to one early, late or odd beat):
                            (the `cycle_median` baseline's maths)                      (B, H, K)
         or CycleMix        a learned per-(step, target) weighting of the N candidates, started at
                            their mean (averaging cycles cancels beat-to-beat noise)
         or head cycle_mix  an LSTM over the horizon mixes them step by step, window by window
                            (`models.cycle_mix`: the shipped recipes)
      + residual from the recurrent encoder (zero at init; optional)
      -> WindowUnscale      back to the standardized units of the window's target      (B, H, K)

Options of `CycleCandidates`: `align="lag"` (the shipped recipes) copies candidate k from the
sub-sample lag near `lag_{k-1} + p` where the last `match_steps` samples correlate best (read by
linear interpolation: no drift of k times the period's rounding, no peak detector);
`align="period"` copies from k whole periods back, the plain seasonal-naive reference;
`level_decay > 0` moves each copy by the gap between the last observed sample and the sample
before the copied one, fading as exp(-h / level_decay) (baseline wander, a beat of another
amplitude). (Peak alignment, encoder-predicted candidate shifts and an adaptive per-window mix
were tried and left out: no recipe uses them; commit c71777a has them.)

`WindowScale` / `WindowUnscale` (per-window standardization) are in `models.window_scale`.

Only `keras.ops`, so the layers run on TensorFlow, JAX and PyTorch. The period and lag searches
are argmaxes (no gradient flows through them, none is needed); everything after is
differentiable.
Only `CycleMix` has weights: horizon * n_targets * n_candidates
(`models.params.cycle_mix_params`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from models.window_scale import target_positions_list

# r below this is no cycle (noise); peaks below RELATIVE_PEAK * best lose to a later, stronger one.
MIN_CORRELATION = 0.5
RELATIVE_PEAK = 0.9
_EPS = 1e-6
# Mean square (per sample) below which the last segment counts as flat: no cycle to search for.
_FLAT = 1e-8
ALIGNS = ("period", "lag")


def _lag_correlation(s, gather: np.ndarray):
    """Normalised correlation of the last W samples with each lagged segment: `(B, K, L)`.

    `s` `(B, K, T)`; `gather` `(L, W)` from `period_search_indices` (row l: the segment starting
    at `gather[l, 0]`). The products with the (centred) last segment come from one FFT
    cross-correlation for every lag at once, the lagged segments' energies from prefix sums:
    nothing of size L * W is built (20x faster than gathering every segment). A flat last
    segment (a transducer off, a lead off) correlates with nothing: 0 at every lag.
    """
    w, t = gather.shape[1], int(s.shape[-1])
    n = 1 << (t - 1).bit_length()  # FFT length >= T: no wrap-around for segments inside s
    s = s - ops.mean(s, axis=-1, keepdims=True)  # smaller prefix sums; correlation unchanged
    ref = s[:, :, -w:]
    ref = ref - ops.mean(ref, axis=-1, keepdims=True)  # (B, K, W)
    sr, si = ops.rfft(s, fft_length=n)
    rr, ri = ops.rfft(ref, fft_length=n)
    cross = ops.irfft((sr * rr + si * ri, si * rr - sr * ri), fft_length=n)  # [p]: s[p:p+W].ref
    first = ops.convert_to_tensor(gather[:, 0])  # (L,)
    num = ops.take(cross, first, axis=2)  # (B, K, L); ref sums to 0, so no lagged mean needed
    zero = ops.zeros_like(s[:, :, :1])
    sums = [ops.concatenate([zero, ops.cumsum(v, axis=-1)], axis=-1) for v in (s, ops.square(s))]
    seg, seg_sq = (ops.take(c, first + w, axis=2) - ops.take(c, first, axis=2) for c in sums)
    lagged = ops.maximum(seg_sq - ops.square(seg) / w, 0.0)  # centred energy (B, K, L)
    energy = ops.expand_dims(ops.sum(ops.square(ref), axis=-1), -1)  # (B, K, 1)
    r = ops.clip(num / ops.sqrt(lagged * energy + _EPS), -1.0, 1.0)
    return ops.where(energy > _FLAT * w, r, 0.0)


def _read(s, pos):
    """`s` `(B, K, T)` read at float positions `pos` `(B, K, H)` by linear interpolation.

    Positions are clipped into the window; whole-number positions read the sample exactly.
    """
    last = int(s.shape[-1]) - 1
    pos = ops.clip(pos, 0.0, float(last))
    lo = ops.floor(pos)
    frac = pos - lo
    i0 = ops.cast(lo, "int32")
    i1 = ops.minimum(i0 + 1, last)
    v0 = ops.take_along_axis(s, i0, axis=2)
    v1 = ops.take_along_axis(s, i1, axis=2)
    return v0 + frac * (v1 - v0)


def period_search_indices(input_steps: int, min_lag: int, max_lag: int, steps: int) -> np.ndarray:
    """Gather matrix `(L, W)` for lags `min_lag - 1 .. max_lag + 1` (L = max - min + 3).

    Row l holds the positions of the segment `lag_l` samples before the last `steps` (= W)
    samples: `T - W - lag + j`. One `take` with it makes every lagged copy at once.
    """
    if not 2 <= min_lag <= max_lag:
        raise ValueError(f"need 2 <= min_lag <= max_lag, got {min_lag} and {max_lag}")
    if input_steps - steps - (max_lag + 1) < 0:
        raise ValueError(
            f"input_steps={input_steps} is too short to compare the last {steps} samples with "
            f"the {steps} samples {max_lag + 1} steps earlier"
        )
    lags = np.arange(min_lag - 1, max_lag + 2)
    return (input_steps - steps - lags[:, None] + np.arange(steps)[None, :]).astype("int32")


@keras.saving.register_keras_serializable(package="pulsecast")
class CycleCandidates(layers.Layer):
    """Per-window cycle length, then `n_candidates` cycle-aligned copies of the past.

    Input `(B, T, C)`; output `(B, horizon, K, n_candidates)` for the `target_positions`.
    The period of each window and target is the lag in `[min_lag, max_lag]` (samples) where the
    last `steps` samples correlate best with an earlier segment, chosen like the numpy baseline:
    the first local maximum of the normalised correlation that reaches MIN_CORRELATION and
    RELATIVE_PEAK times the best peak, refined to the highest lag in [first, 1.5 * first) (the
    first strong peak, not the highest: 2P and 3P score about as well as P). Without such a peak,
    the lag of highest correlation. Candidate k (1-based) at horizon step h copies sample
    `T - k*p + (h mod p)`, clipped into the window. No weights.

    With `align="lag"`, candidate k copies `T - L_k + (h mod L_k)` at a sub-sample lag `L_k`
    matched by correlation (`_matched_lags`), read by linear interpolation.

    With `level_decay > 0` (samples), each candidate is moved by `gap * exp(-h / level_decay)`,
    `gap` the last observed sample minus the sample just before the candidate's first one.
    """

    def __init__(self, horizon: int, min_lag: int, max_lag: int, steps: int,
                 n_candidates: int = 3, target_positions=(0,), align: str = "period",
                 match_steps: int = 60, level_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if align not in ALIGNS:
            raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")
        self.align = align
        self.match_steps = int(match_steps)
        if self.match_steps < 2:
            raise ValueError(f"match_steps must be >= 2, got {match_steps}")
        self.level_decay = float(level_decay)
        if self.level_decay < 0:
            raise ValueError(f"level_decay must be >= 0 samples, got {level_decay}")
        self.horizon = int(horizon)
        self.min_lag = int(min_lag)
        self.max_lag = int(max_lag)
        self.steps = int(steps)
        self.n_candidates = int(n_candidates)
        self.target_positions = target_positions_list(target_positions)
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        if not 2 <= self.min_lag <= self.max_lag:
            raise ValueError(f"need 2 <= min_lag <= max_lag, got {min_lag} and {max_lag}")

    def build(self, input_shape):
        self.input_steps = int(input_shape[1])
        target_positions_list(self.target_positions, int(input_shape[2]))
        self._gather = period_search_indices(self.input_steps, self.min_lag, self.max_lag,
                                             self.steps)  # (L, W)
        if self.align == "lag":
            # Every lag from min_lag - 1 up to the oldest segment of match_steps in the window.
            longest = self.input_steps - self.match_steps - 1
            if longest < self.max_lag:
                raise ValueError(
                    f"input_steps={self.input_steps} is too short to match the last "
                    f"{self.match_steps} samples {self.max_lag + 1} steps back"
                )
            self._match = period_search_indices(self.input_steps, self.min_lag, longest,
                                                self.match_steps)  # (M, W)

    def periods(self, z):
        """`(B, T, C)` -> period in samples `(B, K)`, int32."""
        s = ops.transpose(ops.take(z, self.target_positions, axis=2), (0, 2, 1))  # (B, K, T)
        r = _lag_correlation(ops.stop_gradient(s), self._gather)  # (B, K, L), in [-1, 1]
        mid, left, right = r[..., 1:-1], r[..., :-2], r[..., 2:]  # lags min_lag..max_lag
        lags = ops.arange(self.min_lag, self.max_lag + 1, dtype="int32")
        lags_f = ops.cast(lags, r.dtype)
        low = ops.full_like(mid, -2.0)
        peak = ops.logical_and(mid >= left, mid > right)
        best = ops.max(ops.where(peak, mid, low), axis=-1, keepdims=True)
        ok = ops.logical_and(peak, ops.logical_and(mid >= MIN_CORRELATION,
                                                   mid >= RELATIVE_PEAK * best))
        first = ops.take(lags_f, ops.argmax(ops.cast(ok, r.dtype), axis=-1))  # (B, K)
        first = ops.expand_dims(first, -1)
        near = ops.logical_and(lags_f >= first, lags_f < 1.5 * first)
        refined = ops.take(lags, ops.argmax(ops.where(near, mid, low), axis=-1))  # (B, K)
        fallback = ops.take(lags, ops.argmax(mid, axis=-1))
        return ops.where(ops.any(ok, axis=-1), refined, fallback)

    def call(self, z):
        s = ops.transpose(ops.take(z, self.target_positions, axis=2), (0, 2, 1))  # (B, K, T)
        p = ops.expand_dims(self.periods(z), -1)  # (B, K, 1)
        h = ops.arange(self.horizon, dtype="int32")  # (H,)
        lags = self._matched_lags(s, p) if self.align == "lag" else None
        cands = []
        for k in range(1, self.n_candidates + 1):
            if lags is not None:
                lag = lags[k - 1]  # (B, K, 1) float, sub-sample
                hf = ops.cast(h, lag.dtype)
                pos = self.input_steps - lag + (hf - lag * ops.floor(hf / lag))  # (B, K, H)
            else:
                pos = self.input_steps - k * p + ops.mod(h, p)  # (B, K, H) int
            pos = ops.cast(pos, s.dtype)
            cand = _read(s, pos)  # (B, K, H)
            if self.level_decay > 0:
                # The copy continues from the sample before its first one; where that sample
                # differs from the last observed one (baseline wander, a beat of other amplitude),
                # move the copy by the difference, fading over `level_decay` samples.
                gap = s[:, :, -1:] - _read(s, pos[:, :, :1] - 1.0)  # (B, K, 1)
                fade = ops.exp(-ops.cast(h, s.dtype) / self.level_decay)  # (H,)
                cand = cand + gap * fade
            cands.append(cand)
        out = ops.stack(cands, axis=-1)  # (B, K, H, N)
        return ops.transpose(out, (0, 2, 1, 3))  # (B, H, K, N)

    def _matched_lags(self, s, p):
        """Sub-sample lag of each candidate, matched by correlation: N tensors `(B, K, 1)`.

        Candidate k's lag is the best-correlating lag (last `match_steps` samples against their
        lagged copy) within a quarter period of `lag_{k-1} + p`, refined between samples by a
        parabola through the correlations at the best lag and its neighbours. Chaining from the
        previous lag follows beat-to-beat drift; the sub-sample lag stops the copies of older
        cycles drifting by k times the rounding of the period. Past the oldest lag the window
        holds, a candidate repeats the previous lag.
        """
        s = ops.stop_gradient(s)
        r = _lag_correlation(s, self._match)  # (B, K, M), lags min_lag - 1 ..
        n_lags = self._match.shape[0]
        lags = ops.cast(ops.arange(n_lags) + (self.min_lag - 1), s.dtype)  # (M,)
        inner = ops.logical_and(ops.arange(n_lags) > 0, ops.arange(n_lags) < n_lags - 1)
        pf = ops.cast(p, s.dtype)  # (B, K, 1)
        reach = ops.maximum(ops.floor(pf / 4.0), 1.0)
        low = ops.full_like(r, -3.0)
        prev = ops.zeros_like(pf)
        out = []
        for _ in range(self.n_candidates):
            centre = prev + pf
            near = ops.logical_and(ops.abs(lags - centre) <= reach, inner)  # (B, K, M)
            # Ties (a flat window correlates 0 everywhere) go to the lag nearest the centre.
            score = r - 1e-6 * ops.abs(lags - centre)
            i = ops.expand_dims(ops.argmax(ops.where(near, score, low), axis=-1), -1)  # (B,K,1)
            i = ops.clip(ops.cast(i, "int32"), 1, n_lags - 2)
            r0 = ops.take_along_axis(r, i, axis=-1)
            rm = ops.take_along_axis(r, i - 1, axis=-1)
            rp = ops.take_along_axis(r, i + 1, axis=-1)
            curve = rm - 2.0 * r0 + rp
            concave = curve < -_EPS
            delta = ops.where(concave, 0.5 * (rm - rp) / ops.where(concave, curve, -1.0), 0.0)
            lag = ops.take(lags, i) + ops.clip(delta, -0.5, 0.5)
            lag = ops.where(ops.any(near, axis=-1, keepdims=True), lag, prev if out else pf)
            out.append(lag)
            prev = lag
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.horizon, len(self.target_positions), self.n_candidates)

    def get_config(self):
        return {**super().get_config(), "horizon": self.horizon, "min_lag": self.min_lag,
                "max_lag": self.max_lag, "steps": self.steps, "n_candidates": self.n_candidates,
                "target_positions": self.target_positions, "align": self.align,
                "match_steps": self.match_steps, "level_decay": self.level_decay}


@keras.saving.register_keras_serializable(package="pulsecast")
class CycleMix(layers.Layer):
    """Learned weighting of the candidates: `(B, H, K, N)` -> `(B, H, K)`.

    One weight per (horizon step, target, candidate), initialised to 1/N so the model starts as
    the mean of the candidates. Weights: H * K * N.
    """

    def build(self, input_shape):
        _, h, k, n = input_shape
        self.mix = self.add_weight(name="mix", shape=(h, k, n),
                                   initializer=keras.initializers.Constant(1.0 / n))

    def call(self, cands):
        return ops.sum(cands * ops.cast(self.mix, cands.dtype), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package="pulsecast")
class CycleMedian(layers.Layer):
    """Median of the candidates: `(B, H, K, N)` -> `(B, H, K)`. No weights.

    The MAE-optimal point forecast under beat-timing jitter: one copy whose beat came early or
    late, or an ectopic beat among the copies, moves a median less than a mean. Even N averages
    the two middle candidates.
    """

    def call(self, cands):
        n = int(cands.shape[-1])
        ranked = ops.sort(cands, axis=-1)
        return 0.5 * (ranked[..., (n - 1) // 2] + ranked[..., n // 2])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])
