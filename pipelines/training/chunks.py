"""The TBPTT chunk plan: which rows of which record each stream trains on, batch by batch.

Pure numpy, no Keras and no disk: `clean_runs` (a record's gap-free runs), `make_segments` (runs
long enough for whole chunks), `plan_streams` (segments dealt to parallel streams, as a
`ChunkPlan`), `chunk_arrays` (one chunk's x and per-step targets). The policy is written in
`pipelines.training.tbptt`, which runs the plan.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def clean_runs(valid: np.ndarray) -> np.ndarray:
    """`(n_runs, 2)` int64 `[start, stop)` of the maximal runs of True in a bool `(time,)` mask."""
    edges = np.diff(np.concatenate([[0], np.asarray(valid, dtype=np.int8), [0]]))
    return np.column_stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)]).astype(
        np.int64).reshape(-1, 2)


def make_segments(runs: Sequence[np.ndarray], chunk_steps: int, horizon: int) -> np.ndarray:
    """`(n_segments, 3)` int64 rows `(record position, start row, n_chunks)`.

    `runs[r]` are record r's clean `[start, stop)` runs. A run of L rows has `(L - horizon) //
    chunk_steps` chunks (every step's `horizon` targets inside the run); runs with none are left
    out.
    """
    if chunk_steps < 1 or horizon < 1:
        raise ValueError(f"chunk_steps and horizon must be >= 1, got {chunk_steps} and {horizon}")
    rows = []
    for pos, r in enumerate(runs):
        r = np.asarray(r, dtype=np.int64).reshape(-1, 2)
        n = (r[:, 1] - r[:, 0] - horizon) // chunk_steps
        keep = n > 0
        rows.append(np.column_stack([np.full(keep.sum(), pos), r[keep, 0], n[keep]]))
    return np.concatenate(rows).astype(np.int64) if rows else np.empty((0, 3), np.int64)


@dataclass(frozen=True)
class ChunkPlan:
    """Which chunk each stream trains on at each batch of an epoch.

    `segment[i, b]`: the segment (row of `make_segments`) stream b walks at batch i, -1 when idle;
    `chunk[i, b]`: the chunk of that segment; `reset[i, b]`: zero stream b's state before batch i
    (the segment's first chunk). All `(n_batches, n_streams)`.
    """

    segment: np.ndarray
    chunk: np.ndarray
    reset: np.ndarray

    @property
    def n_batches(self) -> int:
        return self.segment.shape[0]

    @property
    def n_streams(self) -> int:
        return self.segment.shape[1]

    @property
    def idle_fraction(self) -> float:
        return float((self.segment < 0).mean()) if self.segment.size else 0.0


def plan_streams(n_chunks: np.ndarray, n_streams: int, order: np.ndarray | None = None
                 ) -> ChunkPlan:
    """Deal segments (chunk counts `n_chunks`, taken in `order`) to `n_streams` streams.

    Each segment goes whole to the stream that is free first (ties: the lowest stream), which
    walks its chunks in order in consecutive batches; the epoch lasts until the busiest stream is
    done.
    """
    n_chunks = np.asarray(n_chunks, dtype=np.int64)
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    if np.any(n_chunks < 1):
        raise ValueError(f"every segment needs >= 1 chunk, got {n_chunks.tolist()}")
    order = np.arange(len(n_chunks)) if order is None else np.asarray(order, dtype=np.int64)
    free = [(0, b) for b in range(n_streams)]  # (batch at which the stream is free, stream)
    placed = []  # (segment, stream, first batch)
    for seg in order:
        at, b = heapq.heappop(free)
        placed.append((seg, b, at))
        heapq.heappush(free, (at + int(n_chunks[seg]), b))
    n_batches = max(at for at, _ in free)
    segment = np.full((n_batches, n_streams), -1, dtype=np.int64)
    chunk = np.zeros((n_batches, n_streams), dtype=np.int64)
    reset = np.zeros((n_batches, n_streams), dtype=bool)
    for seg, b, at in placed:
        n = int(n_chunks[seg])
        segment[at : at + n, b] = seg
        chunk[at : at + n, b] = np.arange(n)
        reset[at, b] = True
    return ChunkPlan(segment, chunk, reset)


def chunk_arrays(inputs: np.ndarray, targets: np.ndarray, chunk_steps: int, horizon: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's x `(k, C)` and per-step targets y `(k, horizon, K)` from `k + horizon` rows.

    `inputs` `(k + horizon, C)` and `targets` `(k + horizon, K)` are the same rows of the input
    and target channels, starting at the chunk's first step; `y[t] = targets[t+1 : t+1+horizon]`.
    """
    k, h = chunk_steps, horizon
    if len(inputs) != k + h or len(targets) != k + h:
        raise ValueError(f"a chunk needs {k + h} rows, got {len(inputs)} and {len(targets)}")
    # (k, K, h) windows over rows 1 .. k+h-1, then time before channels
    y = np.lib.stride_tricks.sliding_window_view(targets[1:], h, axis=0).transpose(0, 2, 1)
    return np.array(inputs[:k], dtype=np.float32), np.array(y, dtype=np.float32)
