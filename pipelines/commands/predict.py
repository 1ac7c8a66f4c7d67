"""`pulsecast predict`: ask a running `pulsecast serve` for a forecast from a WFDB record.

    pulsecast predict --url http://127.0.0.1:8501 --model-name ecg --record data/raw/x/100 \\
        --at 60 [--out forecast.png] [--api-token-file token.txt]

Steps: read the model's contract (`GET /pulsecast/models/<m>`: channels, fs, input_steps), read
the record with wfdb (`x` or `x.hea`) and match its signals to the model's channels
(`models.channels`), send the samples ending at `--at` seconds (at the record's own rate: the
server resamples) through `POST /v1/models/<m>:forecast`, print the answer as JSON (or, with
`--summary`, a few lines: model, version, horizon and the MAE of this forecast against what the
record did next), and with `--out` draw a PNG (`make_forecast_figure`): the last seconds of
history, the forecast origin, the forecast with its band when the model has quantiles, and the
truth, titled with the record, the model version and the MAE in the target's unit. A warning
(stderr) says when the record ends less than a horizon after `--at`: the MAE then covers only
the part the record holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.cli import add_alias

log = logging.getLogger(__name__)

HELP = "forecast from a WFDB record through a running `pulsecast serve` (:forecast)"
# seconds sent beyond the model's window, so the server's resampling filter settles
_MARGIN_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8501",
                        help="the server's REST URL (default: http://127.0.0.1:8501)")
    parser.add_argument("--model-name", "--model_name", dest="model_name", required=True,
                        help="the served model to ask")
    parser.add_argument("--version", type=int, help="a specific version (default: latest)")
    parser.add_argument("--record", type=Path, required=True,
                        help="WFDB record path, with or without its .hea suffix")
    parser.add_argument("--at", type=float, required=True,
                        help="forecast from this time, in seconds from the record's start")
    parser.add_argument("--out", type=Path,
                        help="write a PNG here: the last seconds of history, the forecast "
                        "with its band, and what the record did next")
    parser.add_argument("--summary", action="store_true",
                        help="print a short summary (and the MAE against what happened) instead "
                        "of the whole JSON answer")
    parser.add_argument("--api-token-file", "--api_token_file", dest="token_file", type=Path,
                        help="file holding the server's bearer token (default: none)")
    add_alias(parser, "--token-file", "token_file", type=Path)  # the old name, one release
    parser.add_argument("--fill-gap-s", dest="fill_gap_s", type=float, default=None,
                        help="gaps in the signal up to this long (seconds) are filled linearly "
                        "by the server (default: the server's, 0.5 s)")
    # the flag's old name, kept working but out of the help
    parser.add_argument("--max-gap-s", dest="fill_gap_s", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="seconds to wait for each answer of the server (default: 30)")


def run(args: argparse.Namespace) -> int:
    token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None
    client = _Client(args.url.rstrip("/"), token, args.timeout_s)
    version_path = f"/versions/{args.version}" if args.version is not None else ""
    contract = client.get(f"/pulsecast/models/{args.model_name}{version_path}")["metadata"]
    record = record_path(args.record)
    window = read_window(record, contract, args.at)
    short = short_truth_message(window, contract, args.at)
    if short:
        log.warning("%s", short)
    body: dict[str, Any] = {"signal": window["signal"], "fs": window["fs"]}
    if window["start_time"] is not None:
        body["start_time"] = window["start_time"]
    if args.fill_gap_s is not None:
        body["max_gap_s"] = args.fill_gap_s  # the server's name for it
    answer = client.post(f"/v1/models/{args.model_name}{version_path}:forecast", body)
    if args.summary:
        print(render_summary(record, args.at, window, answer))
    else:
        print(json.dumps(answer, indent=2))
    if args.out is not None:
        write_forecast_plot(args.out, window, answer, record, args.at)
        log.info("plot written to %s", args.out)
    return 0


def record_path(record: Path) -> Path:
    """The record's path as wfdb wants it: `x.hea` (or `x.dat`) -> `x`."""
    return record.with_suffix("") if record.suffix.lower() in (".hea", ".dat") else record


def short_truth_message(window: dict[str, Any], contract: dict, at_s: float) -> str | None:
    """One line when the record holds less than a horizon after `at_s`, else None."""
    from pipelines.evaluation.plots import format_duration

    horizon_s = int(contract.get("horizon", 0)) / float(contract["fs"])
    truth = next(iter(window["truth"].values()), [])
    have_s = len(truth) / window["fs"]
    if have_s + 0.5 / window["fs"] >= horizon_s:
        return None
    return (f"the record ends {format_duration(have_s)} after --at {at_s:g} s, before the "
            f"{format_duration(horizon_s)} the model forecasts: the MAE covers only that part "
            "(an earlier --at scores the whole forecast)")


def read_window(record: Path, contract: dict, at_s: float) -> dict[str, Any]:
    """The record's samples of the model's channels ending at `at_s` seconds, JSON-ready.

    Returns {"signal": {channel: [float | None]}, "fs", "start_s", "start_time" (ISO or None),
    "truth": {channel: [float]} (what the record did in the `horizon / fs` seconds after `at_s`,
    NaN for gaps; shorter or empty where the record ends)}.
    """
    import wfdb

    from models.channels import match_channels

    record = record_path(Path(record))
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


def make_forecast_figure(window: dict[str, Any], answer: dict[str, Any], record: Path,
                         at_s: float):
    """One panel per target: the last `HISTORY_HORIZONS` horizons of history, the forecast
    origin (a dotted vertical line at 0), the forecast with its band (the outermost quantiles,
    when the model has them) and the truth (what the record did next). The figure's title names
    the record, the model version and the horizon; each panel's title the MAE in its unit.
    Time in ms, s or minutes from the origin (`pipelines.evaluation.plots.time_axis`)."""
    import numpy as np

    from pipelines.evaluation.plots import (
        HISTORY_HORIZONS,
        draw_forecast,
        format_duration,
        new_figure,
        time_axis,
        time_from_origin_label,
        value_label,
    )

    targets = answer["targets"]
    t_last, t_fc = forecast_times(window, answer)
    horizon_s = t_fc[-1] - t_last
    fs = window["fs"]
    n_sent = len(next(iter(window["signal"].values())))
    history_s = min((n_sent - 1) / fs, HISTORY_HORIZONS * horizon_s)
    axis = time_axis(history_s + horizon_s, answer["fs"])
    keep = int(round(history_s * fs)) + 1
    t_hist = (np.arange(keep) - keep + 1) / fs  # the last sample sent is the origin, 0
    t_ahead = np.asarray(t_fc) - t_last
    fig = new_figure(10.5, 1.0 + 2.6 * len(targets))
    axes = fig.subplots(len(targets), 1, sharex=True, squeeze=False)[:, 0]
    for ax, target, unit in zip(axes, targets, answer["units"], strict=True):
        sent = window["signal"].get(target) or next(iter(window["signal"].values()))
        history = np.array([math.nan if v is None else v for v in sent[-keep:]], dtype=float)
        truth = np.asarray(window.get("truth", {}).get(target, []), dtype=np.float64)
        truth = truth[: int(math.ceil(horizon_s * fs))]
        draw_forecast(ax, axis, t_hist, history, t_ahead, answer["forecast"][target],
                      t_truth_s=(np.arange(len(truth)) + 1) / fs, truth=truth,
                      band=_band(answer.get("quantiles") or {}, target),
                      band_label=_band_label(answer.get("quantiles") or {}))
        ax.set_title(f"{target}: {_mae_text(window, answer, target, unit)}", fontsize=10)
        ax.set_ylabel(value_label(target, unit))
    axes[-1].set_xlabel(time_from_origin_label(axis))
    axes[-1].set_xlim(axis.of(-history_s) - 0.01 * axis.of(horizon_s + history_s),
                      axis.of(horizon_s) * 1.02)
    fig.suptitle(f"{answer['model_name']} v{answer['version']}, record {_record_name(record)}: "
                 f"{format_duration(horizon_s)} forecast from {_clock(at_s)} into the record")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                   fontsize="small")
    return fig


def _mae_text(window: dict[str, Any], answer: dict[str, Any], target: str, unit: str) -> str:
    """ "MAE 0.041 mV against what happened" (over the part the record covers, said so)."""
    from pipelines.evaluation.plots import format_duration

    mae = forecast_mae(window, answer, target)
    if math.isnan(mae):
        return "no MAE: the record ends before the forecast"
    text = f"MAE {mae:.3g} {unit}".rstrip() + " against what happened"
    covered = sum(not math.isnan(v) for v in truth_at_forecast(window, answer, target))
    if covered < len(answer["forecast"][target]):
        text += f" in the first {format_duration(covered / answer['fs'])} (the record ends)"
    return text


def write_forecast_plot(out: Path, window: dict[str, Any], answer: dict[str, Any],
                        record: Path, at_s: float) -> None:
    """`make_forecast_figure` as a PNG at `out` (written atomically)."""
    from pipelines.atomic import atomic_write

    fig = make_forecast_figure(window, answer, record, at_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=100))


def _record_name(record: Path) -> str:
    """`data/raw/synthetic/p07/r0` -> `p07/r0`: the record with its folder (a patient, often)."""
    parts = Path(record).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else str(record)


def _clock(at_s: float) -> str:
    """`60` -> "60 s", `5400` -> "5400 s (1:30:00)" into the record."""
    if at_s < 600:
        return f"{at_s:g} s"
    h, rest = divmod(int(round(at_s)), 3600)
    return f"{at_s:g} s ({h}:{rest // 60:02d}:{rest % 60:02d})"


def _band(quantiles: dict[str, dict[str, list[float]]], target: str):
    """(lowest, highest) quantile of `target` when the answer has two levels or more, else None."""
    levels = sorted((float(level), per_target[target]) for level, per_target in quantiles.items()
                    if target in per_target)
    return None if len(levels) < 2 else (levels[0][1], levels[-1][1])


def _band_label(quantiles: dict[str, Any]) -> str:
    levels = sorted(float(level) for level in quantiles)
    if len(levels) < 2:
        return ""
    return f"{(levels[-1] - levels[0]) * 100:.3g} % band (q{levels[0]:g}-q{levels[-1]:g})"


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
