"""`pulsecast predict`: ask a running `pulsecast serve` for a forecast from a WFDB record.

    pulsecast predict --url http://127.0.0.1:8501 --model-name ecg --record data/raw/x/100 \\
        --at 60 [--out forecast.png] [--token-file token.txt]

Steps: read the model's contract (`GET /pulsecast/models/<m>`: channels, fs, input_steps), read
the record with wfdb and match its signals to the model's channels (`pipelines.ingest.channels`),
send the samples ending at `--at` seconds (at the record's own rate: the server resamples) through
`POST /v1/models/<m>:forecast`, print the answer as JSON (or, with `--summary`, a few lines:
model, version, horizon and the MAE of this forecast against what the record did next), and with
`--out` plot the history, the forecast, its 80 % band when the model has quantiles, and the truth
to a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HELP = "forecast from a WFDB record through a running `pulsecast serve` (:forecast)"
# seconds sent beyond the model's window, so the server's resampling filter settles
_MARGIN_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="the server's REST URL")
    parser.add_argument("--model-name", "--model_name", dest="model_name", required=True)
    parser.add_argument("--version", type=int, help="a specific version (default: latest)")
    parser.add_argument("--record", type=Path, required=True, help="WFDB record path (no suffix)")
    parser.add_argument("--at", type=float, required=True,
                        help="forecast from this time, in seconds from the record's start")
    parser.add_argument("--out", type=Path,
                        help="write a PNG of history, forecast, band and truth here")
    parser.add_argument("--summary", action="store_true",
                        help="print a short summary (and the MAE against what happened) instead "
                        "of the whole JSON answer")
    parser.add_argument("--token-file", "--token_file", dest="token_file", type=Path,
                        help="file holding the server's bearer token")
    parser.add_argument("--max-gap-s", type=float, default=None,
                        help="longest gap the server may fill (its default: 0.5 s)")
    parser.add_argument("--timeout-s", type=float, default=30.0)


def run(args: argparse.Namespace) -> int:
    token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None
    client = _Client(args.url.rstrip("/"), token, args.timeout_s)
    version_path = f"/versions/{args.version}" if args.version is not None else ""
    contract = client.get(f"/pulsecast/models/{args.model_name}{version_path}")["metadata"]
    window = read_window(args.record, contract, args.at)
    body: dict[str, Any] = {"signal": window["signal"], "fs": window["fs"]}
    if window["start_time"] is not None:
        body["start_time"] = window["start_time"]
    if args.max_gap_s is not None:
        body["max_gap_s"] = args.max_gap_s
    answer = client.post(f"/v1/models/{args.model_name}{version_path}:forecast", body)
    if args.summary:
        print(render_summary(args.record, args.at, window, answer))
    else:
        print(json.dumps(answer, indent=2))
    if args.out is not None:
        plot_forecast(args.out, window, answer)
        print(f"plot written to {args.out}")
    return 0


def read_window(record: Path, contract: dict, at_s: float) -> dict[str, Any]:
    """The record's samples of the model's channels ending at `at_s` seconds, JSON-ready.

    Returns {"signal": {channel: [float | None]}, "fs", "start_s", "start_time" (ISO or None),
    "truth": {channel: [float]} (what the record did in the `horizon / fs` seconds after `at_s`,
    NaN for gaps; shorter or empty where the record ends)}.
    """
    import wfdb

    from models.channels import match_channels

    rec = wfdb.rdrecord(str(record))
    fs = float(rec.fs)
    found = match_channels(list(contract["channels"]), list(rec.sig_name))
    missing = [c for c in contract["channels"] if c not in found]
    if missing:
        raise ValueError(
            f"record {record} has no signal for channel(s) {missing}; it has {rec.sig_name}"
        )
    need_s = int(contract["input_steps"]) / float(contract["fs"])
    duration_s = rec.sig_len / fs
    if not need_s <= at_s <= duration_s:
        raise ValueError(
            f"--at must be between {need_s:.3f} s (the model's window) and {duration_s:.3f} s "
            f"(the record's length), got {at_s}"
        )
    stop = int(round(at_s * fs))
    start = max(0, stop - math.ceil((need_s + _MARGIN_S) * fs))
    signal = {
        channel: [None if math.isnan(v) else float(v) for v in rec.p_signal[start:stop, index]]
        for channel, index in found.items()
    }
    horizon_s = int(contract.get("horizon", 0)) / float(contract["fs"])
    after = rec.p_signal[stop : stop + math.ceil(horizon_s * fs) + 1]
    truth = {channel: [float(v) for v in after[:, index]] for channel, index in found.items()}
    start_time = None
    if rec.base_datetime is not None:
        from datetime import timedelta

        start_time = (rec.base_datetime + timedelta(seconds=start / fs)).isoformat()
    return {"signal": signal, "fs": fs, "start_s": start / fs, "start_time": start_time,
            "truth": truth}


def forecast_times(window: dict[str, Any], answer: dict[str, Any]) -> tuple[float, list[float]]:
    """Time of the last sample sent and of each forecast step, in seconds from the record start."""
    n_sent = len(next(iter(window["signal"].values())))
    t_last = window["start_s"] + (n_sent - 1) / window["fs"]
    horizon = len(next(iter(answer["forecast"].values())))
    return t_last, [t_last + (k + 1) / answer["fs"] for k in range(horizon)]


def truth_at_forecast(window: dict[str, Any], answer: dict[str, Any], target: str) -> list[float]:
    """What the record did at each forecast time (linear between its samples; NaN past its end)."""
    import numpy as np

    t_last, t_fc = forecast_times(window, answer)
    truth = np.asarray(window.get("truth", {}).get(target, []), dtype=np.float64)
    if len(truth) == 0:
        return [math.nan] * len(t_fc)
    t_truth = t_last + np.arange(1, len(truth) + 1) / window["fs"]
    return np.interp(t_fc, t_truth, truth, left=math.nan, right=math.nan).tolist()


def forecast_mae(window: dict[str, Any], answer: dict[str, Any], target: str) -> float:
    """MAE of the forecast of `target` against what happened, over the steps the record covers."""
    errors = [abs(f - t) for f, t in zip(answer["forecast"][target],
                                         truth_at_forecast(window, answer, target), strict=True)
              if not math.isnan(t)]
    return sum(errors) / len(errors) if errors else math.nan


def render_summary(record: Path, at_s: float, window: dict[str, Any],
                   answer: dict[str, Any]) -> str:
    """A few lines for people: model, version, horizon, and the MAE against what happened."""
    horizon = len(next(iter(answer["forecast"].values())))
    lines = [f"{answer['model_name']} v{answer['version']}: {horizon} steps "
             f"({horizon / answer['fs']:.2f} s at {answer['fs']:g} Hz) after {at_s:g} s of "
             f"{record}"]
    for target, unit in zip(answer["targets"], answer["units"], strict=True):
        mae = forecast_mae(window, answer, target)
        told = "the record ends before the forecast" if math.isnan(mae) else f"{mae:.4g} {unit}"
        lines.append(f"  {target}: MAE against what happened {told}".rstrip())
    if answer.get("quantiles"):
        lines.append(f"  quantiles: {', '.join(sorted(answer['quantiles'], key=float))}")
    return "\n".join(lines)


def plot_forecast(out: Path, window: dict[str, Any], answer: dict[str, Any]) -> None:
    """History (the samples sent), forecast, 80 % band (q0.1-q0.9, when the model has them) and
    truth (what the record did next) of each target, seconds on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = answer["targets"]
    fig, axes = plt.subplots(len(targets), 1, figsize=(10, 2.5 * len(targets)), squeeze=False)
    fs, start_s = window["fs"], window["start_s"]
    for ax, target, unit in zip(axes[:, 0], targets, answer["units"], strict=True):
        history = window["signal"].get(target) or next(iter(window["signal"].values()))
        t_hist = [start_s + i / fs for i in range(len(history))]
        _, t_fc = forecast_times(window, answer)
        ax.plot(t_hist, [math.nan if v is None else v for v in history], lw=0.8, color="0.35",
                label="history")
        truth = truth_at_forecast(window, answer, target)
        if any(not math.isnan(v) for v in truth):
            ax.plot(t_fc, truth, lw=1.0, color="black", label="truth")
        ax.plot(t_fc, answer["forecast"][target], lw=1.2, color="tab:red", label="forecast")
        band = _band(answer.get("quantiles") or {}, target)
        if band is not None:
            ax.fill_between(t_fc, band[0], band[1], color="tab:red", alpha=0.2, lw=0,
                            label="80 % band")
        ax.set_ylabel(f"{target} ({unit})" if unit else target)
        ax.legend(loc="upper left", fontsize="small")
    axes[-1, 0].set_xlabel("time (s from record start)")
    fig.suptitle(f"{answer['model_name']} v{answer['version']}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _band(quantiles: dict[str, dict[str, list[float]]], target: str):
    """(q0.1, q0.9) of `target` when the answer has both levels, else None."""
    levels = {float(level): per_target[target] for level, per_target in quantiles.items()}
    lo, hi = levels.get(0.1), levels.get(0.9)
    return None if lo is None or hi is None else (lo, hi)


class _Client:
    """A tiny JSON-over-HTTP client (stdlib only); server errors become ValueError."""

    def __init__(self, base: str, token: str | None, timeout_s: float) -> None:
        self.base, self.token, self.timeout_s = base, token, timeout_s

    def get(self, path: str) -> dict:
        return self._send(urllib.request.Request(self.base + path, method="GET"))

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body, allow_nan=False).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> dict:
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("error", "")
            except ValueError:
                message = ""
            raise ValueError(
                f"{request.get_method()} {request.full_url} failed with HTTP {err.code}: "
                f"{message or err.reason}"
            ) from None
        except urllib.error.URLError as err:
            raise ValueError(f"cannot reach {self.base}: {err.reason}") from None
