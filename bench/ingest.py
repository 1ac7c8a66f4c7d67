"""Benchmark: ingest vs plain WFDB reads, windowing vs a materialized array, peak memory.

    python bench/ingest.py [--records DIR] [--hours H] [--channels II,ABP,...] [--fs HZ]
                           [--executor ray]

From one run on the same files it prints, side by side:

(a) ingest throughput in recording-hours per second per core (read + resample to `--fs` + quality
    + hash + write) next to the plain `wfdb.rdrecord` read rate of the same records and channels,
    each the best of 2 runs;
(b) windows/s delivered by `WindowDataset` (shuffled batches cut from memory-mapped signals) next
    to gathering the very same batches from a fully materialized `(n_windows, input_steps, ch)`
    array;
(c) peak RSS (this process plus ingest's worker processes);
(a') with `--executor ray`: ingest as Ray tasks on a local Ray of 1 and of 2 worker CPUs, and the
    speed-up between them (JSON `ray_1_worker_hours_per_s`, `ray_2_workers_hours_per_s`,
    `ray_speedup`);

then one JSON line with the figures. Default input: a synthetic cohort (`pipelines.sources.synth`,
written at `--synth-fs` so ingest really resamples) in a temporary folder. Goals (the issue):
ingest at least half the plain read rate; windowing far above a training step's appetite (an
LSTM(64) step eats ~2,400 windows/s on 2 CPU cores, `specs/keras-notes.md`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

LSTM_STEP_WINDOWS_PER_S = 2384.0  # keras-notes §5: LSTM(64) fit, batch 256, 2 CPU cores


def peak_rss_mb() -> float:
    """High-water RSS of this process and its reaped children (Linux: ru_maxrss is KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def current_rss_mb() -> float:
    """Resident set size now (Linux `/proc/self/statm`; 0.0 where it is unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 2**20


def write_input_cohort(out: Path, hours: float, fs: float) -> tuple[Path, tuple[str, ...]]:
    """About `hours` recording-hours of synthetic WFDB (wfdb.wrsamp records if synth is absent)."""
    try:
        from pipelines.sources.synth import SynthConfig, write_cohort
    except ImportError:
        return write_fallback_cohort(out, hours, fs), ("II", "ABP")
    patients = max(1, round(hours * 4))  # 15-minute records
    write_cohort(SynthConfig(out=out, patients=patients, minutes=hours * 60 / patients, fs=fs))
    return out, ("II", "ABP", "PLETH", "RESP")


def write_fallback_cohort(out: Path, hours: float, fs: float) -> Path:
    """`hours` of 2-channel records of 30 min (sine + noise), written with `wfdb.wrsamp`."""
    import wfdb

    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n_records = max(1, round(hours * 2))
    t = np.arange(int(30 * 60 * fs)) / fs
    for k in range(n_records):
        ecg = np.sin(2 * np.pi * 1.2 * t) + 0.05 * rng.standard_normal(t.size)
        abp = 90 + 25 * np.sin(2 * np.pi * 1.2 * t + 0.3) + rng.standard_normal(t.size)
        wfdb.wrsamp(f"r{k:03d}", fs=fs, units=["mV", "mmHg"], sig_name=["II", "ABP"],
                    p_signal=np.column_stack([ecg, abp]), fmt=["16", "16"], write_dir=str(out))
    return out


def time_plain_reads(raw_dir: Path, channels: tuple[str, ...]) -> tuple[float, float]:
    """(recording hours, best-of-2 seconds) to `wfdb.rdrecord` every waveform record's channels."""
    import wfdb

    from models.channels import match_channels
    from pipelines.ingest.records import find_records

    plan = []
    for path in find_records(raw_dir):
        header = wfdb.rdheader(str(path))
        if header.fs < 1.0:  # numerics (1/min vitals): ingest skips them too
            continue
        names = list(header.sig_name or [])
        if not names and header.seg_name:  # multi-segment: the layout header lists the channels
            layout = next((s for s in header.seg_name if s.endswith("_layout")), None)
            names = list(wfdb.rdheader(str(path.parent / layout)).sig_name) if layout else []
        wanted = [names[i] for i in match_channels(channels, names).values()]
        plan.append((path, wanted, header.sig_len / header.fs))
    hours = sum(duration_s for *_, duration_s in plan) / 3600
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for path, wanted, _ in plan:
            wfdb.rdrecord(str(path), channel_names=wanted or None)
        best = min(best, time.perf_counter() - t0)
    return hours, best


def time_ingest(raw_dir: Path, dataset_dir: Path, channels: tuple[str, ...], fs: float,
                workers: int, repeats: int = 2, executor: str = "local") -> float:
    """Best-of-`repeats` seconds to ingest `raw_dir` into a fresh `dataset_dir`.

    Best of 2, as for the plain reads: one-time costs (first imports of the parquet writer, a cold
    allocator) count on neither side. Each run writes a new folder; removing the previous one is
    not timed.
    """
    import shutil

    from pipelines.ingest.cohort import ingest
    from pipelines.ingest.config import IngestConfig

    config = IngestConfig(raw_dir=raw_dir, dataset_dir=dataset_dir, channels=channels, fs=fs,
                          workers=workers, executor=executor)
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(dataset_dir, ignore_errors=True)
        t0 = time.perf_counter()
        report = ingest(config)
        best = min(best, time.perf_counter() - t0)
        if not report.written:
            raise SystemExit(f"ingest wrote nothing: {report.skipped[:3]}")
    return best


def time_ray_ingest(raw_dir: Path, dataset_dir: Path, channels: tuple[str, ...], fs: float,
                    hours: float) -> dict[str, float]:
    """Recording-hours/s of ingest as Ray tasks on a local Ray of 1, then 2, worker CPUs.

    Ray is started here (not timed) so each run reuses it; best of 2 runs each, as for local.
    """
    import ray

    rates = {}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False)
        try:
            rates[cpus] = hours / time_ingest(raw_dir, dataset_dir, channels, fs, cpus,
                                              executor="ray")
        finally:
            ray.shutdown()
    return {"ray_1_worker_hours_per_s": rates[1], "ray_2_workers_hours_per_s": rates[2],
            "ray_speedup": rates[2] / rates[1]}


def time_windows(dataset_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """Windows/s of WindowDataset batches vs the same batches from a materialized array.

    The first epoch pays the memmap's first-touch page faults; steady state is the best of the
    next `--epochs` epochs (each with its own shuffle). The materialized side gathers exactly the
    same window positions per batch, best of `--epochs` passes.
    """
    from pipelines.dataset.contract import load_dataset
    from pipelines.windows.keras_data import WindowDataset  # imports keras (and its backend)
    from pipelines.windows.spec import WindowSpec

    rss_before = current_rss_mb()
    spec = WindowSpec(input_steps=args.input_steps, horizon=args.horizon, stride=args.stride,
                      inputs=(args.target,), targets=(args.target,))
    ds = WindowDataset(load_dataset(dataset_dir), spec, split="all", batch_size=args.batch_size)
    n_batches = min(len(ds), args.max_batches)

    def one_epoch() -> float:
        t0 = time.perf_counter()
        served = sum(len(ds[i][0]) for i in range(n_batches))
        ds.on_epoch_end()
        return served / (time.perf_counter() - t0)

    first_epoch = one_epoch()
    steady = max(one_epoch() for _ in range(args.epochs))
    rss_windowing = peak_rss_mb()
    growth = current_rss_mb() - rss_before  # index, order, views' touched pages, one batch

    x_all, y_all = ds.materialize()  # (n_windows, input_steps, 1), (n_windows, horizon, 1)
    batches = [ds.batch_windows(i) for i in range(n_batches)]  # (record, start) rows
    row_of = {(r, s): k for k, (r, s) in enumerate(ds.index.windows.tolist())}
    positions = [np.array([row_of[r, s] for r, s in b.tolist()]) for b in batches]
    best = 0.0
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for p in positions:
            x_all[p], y_all[p]
        best = max(best, sum(map(len, positions)) / (time.perf_counter() - t0))
    return {
        "n_windows": ds.n_windows,
        "pydataset_windows_per_s": steady,
        "pydataset_first_epoch_windows_per_s": first_epoch,
        "materialized_windows_per_s": best,
        "materialized_mb": (x_all.nbytes + y_all.nbytes) / 2**20,
        "rss_after_windowing_mb": rss_windowing,
        "windowing_rss_growth_mb": growth,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=Path, help="WFDB folder (default: a synthetic cohort)")
    p.add_argument("--hours", type=float, default=2.0, help="synthetic recording-hours")
    p.add_argument("--synth-fs", type=float, default=250.0, help="synthetic cohort's native fs")
    p.add_argument("--channels", help="comma-separated (default: every synthetic waveform)")
    p.add_argument("--fs", type=float, default=125.0, help="ingest target fs (Hz)")
    p.add_argument("--workers", type=int, default=1, help="ingest worker processes")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="ray: also time ingest as Ray tasks on 1 and 2 worker CPUs (speed-up)")
    p.add_argument("--target", help="window channel (default: the first channel)")
    p.add_argument("--input-steps", type=int, default=256)
    p.add_argument("--horizon", type=int, default=32)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-batches", type=int, default=2000, help="batches per timed epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (best is reported)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pulsecast-bench-") as tmp:
        tmp = Path(tmp)
        if args.records:
            raw_dir, channels = args.records, tuple((args.channels or "II").split(","))
        else:
            raw_dir, synth_channels = write_input_cohort(tmp / "raw", args.hours, args.synth_fs)
            channels = tuple(args.channels.split(",")) if args.channels else synth_channels
        args.target = args.target or channels[0]

        hours, read_s = time_plain_reads(raw_dir, channels)
        ingest_s = time_ingest(raw_dir, tmp / "dataset", channels, args.fs, args.workers)
        rss_ingest = peak_rss_mb()
        rdrecord_rate = hours / read_s
        ingest_rate = hours / ingest_s / args.workers
        print(f"input: {raw_dir} ({hours:.2f} recording-hours, channels {','.join(channels)})")
        print(f"(a) ingest to {args.fs:g} Hz: {ingest_rate:,.1f} h/s per core ({args.workers} "
              f"workers, {ingest_s:.2f} s) | wfdb.rdrecord: {rdrecord_rate:,.1f} h/s "
              f"({read_s:.2f} s) | ratio {ingest_rate / rdrecord_rate:.2f} (goal >= 0.5)")

        ray_rates = {}
        if args.executor == "ray":
            ray_rates = time_ray_ingest(raw_dir, tmp / "dataset-ray", channels, args.fs, hours)
            print(f"(a') ingest as Ray tasks: 1 worker {ray_rates['ray_1_worker_hours_per_s']:,.1f}"
                  f" h/s | 2 workers {ray_rates['ray_2_workers_hours_per_s']:,.1f} h/s | "
                  f"speed-up {ray_rates['ray_speedup']:.2f}x")

        w = time_windows(tmp / "dataset", args)
        ratio = w["pydataset_windows_per_s"] / w["materialized_windows_per_s"]
        print(f"(b) windows ({args.input_steps} in, {args.horizon} out, stride {args.stride}, "
              f"batch {args.batch_size}, {w['n_windows']:,} windows): WindowDataset "
              f"{w['pydataset_windows_per_s']:,.0f}/s (first epoch "
              f"{w['pydataset_first_epoch_windows_per_s']:,.0f}/s) | materialized "
              f"({w['materialized_mb']:.0f} MB) {w['materialized_windows_per_s']:,.0f}/s | ratio "
              f"{ratio:.2f}; {w['pydataset_windows_per_s'] / LSTM_STEP_WINDOWS_PER_S:,.0f}x an "
              f"LSTM(64) training step's {LSTM_STEP_WINDOWS_PER_S:,.0f}/s")
        peak = peak_rss_mb()
        print(f"(c) peak RSS: {rss_ingest:,.0f} MB through reads and ingest; "
              f"{w['rss_after_windowing_mb']:,.0f} MB after importing keras and windowing "
              f"(RSS grew {w['windowing_rss_growth_mb']:,.0f} MB while windowing); {peak:,.0f} MB "
              "with the materialized array")
        print(json.dumps({
            "recording_hours": round(hours, 3),
            "ingest_hours_per_s_per_core": round(ingest_rate, 2),
            "rdrecord_hours_per_s": round(rdrecord_rate, 2),
            "ingest_vs_read_ratio": round(ingest_rate / rdrecord_rate, 3),
            "n_windows": w["n_windows"],
            "pydataset_windows_per_s": round(w["pydataset_windows_per_s"]),
            "pydataset_first_epoch_windows_per_s": round(w["pydataset_first_epoch_windows_per_s"]),
            "materialized_windows_per_s": round(w["materialized_windows_per_s"]),
            "windowing_vs_materialized_ratio": round(ratio, 3),
            "windowing_vs_lstm_step_ratio": round(
                w["pydataset_windows_per_s"] / LSTM_STEP_WINDOWS_PER_S, 1),
            "peak_rss_mb": round(w["rss_after_windowing_mb"], 1),
            "peak_rss_ingest_mb": round(rss_ingest, 1),
            "windowing_rss_growth_mb": round(w["windowing_rss_growth_mb"], 1),
            "peak_rss_with_materialized_mb": round(peak, 1),
            **{k: round(v, 3) for k, v in ray_rates.items()},
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
