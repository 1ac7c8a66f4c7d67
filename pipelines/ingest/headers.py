"""WFDB header text -> header fields, exactly as `wfdb.rdheader` parses a local header, ~50x faster.

wfdb 4.x looks each field's type and default up in a pandas table for every field of every line
(about 3-5 ms a header, half of ingest's time before this module). Here wfdb's own line regexes and
its own defaults, copied once per process out of those tables into plain dicts, do the same job.

`parse_header(text)` returns a dict keyed by wfdb's field names: the record-line fields
(`record_name`, `n_seg`, `n_sig`, `fs`, `counter_freq`, `base_counter`, `sig_len`, `base_time`,
`base_date`), then either one list per signal field (`file_name`, `fmt`, `samps_per_frame`, `skew`,
`byte_offset`, `adc_gain`, `baseline`, `units`, `adc_res`, `adc_zero`, `init_value`, `checksum`,
`block_size`, `sig_name`) or, for a multi-segment header (`n_seg` set), `seg_name` and `seg_len`.
Malformed text raises a ValueError (or IndexError for a header without a record line), as wfdb does.

One check is stricter than wfdb: a rate field that is present but not a positive number (`-1`,
`abc`, `0`) is a ValueError naming it ("fs field '-1' of the record line is not a positive
decimal number"), where wfdb's regex skips it and reads WFDB's default, 250 Hz: the record would
be read at the wrong rate. An absent rate field is that default, as WFDB says.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Any

# the rate in a record line's third field, `fs[/counter_freq[(base_counter)]]`, as WFDB writes it
_RATE = re.compile(r"\d+\.?\d*|\.\d+")


@functools.cache
def _specs() -> tuple[dict[str, tuple[str, Any]], dict[str, tuple[str, Any]]]:
    """(record, signal) field -> (kind, read default), read from wfdb's spec tables once.

    kind is "int", "float" or "str" (or the field's own name for base_time/base_date).
    """
    from wfdb.io import _header

    def table(specs) -> dict[str, tuple[str, Any]]:
        out = {}
        for field in specs.index:
            types = specs.loc[field, "allowed_types"]
            if types == _header.int_types:
                kind = "int"
            elif types == _header.float_types:
                kind = "float"
            elif field in ("base_time", "base_date"):
                kind = field
            else:
                kind = "str"
            out[field] = (kind, specs.loc[field, "read_default"])
        return out

    return table(_header.RECORD_SPECS), table(_header.SIGNAL_SPECS)


def _convert(kind: str, value: str) -> Any:
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "base_time":
        from wfdb.io._header import wfdb_strptime

        return wfdb_strptime(value)
    if kind == "base_date":
        return datetime.datetime.strptime(value, "%d/%m/%Y").date()
    return value


def _check_rate_text(line: str) -> None:
    """ValueError naming the rate field of record line `line` when it is there but is not a
    positive number; nothing when it is absent (WFDB's default)."""
    fields = re.split(r"[ \t]+", line.strip(" \t"))
    if len(fields) < 3:
        return
    rate = re.split(r"[/(]", fields[2], maxsplit=1)[0]
    if not (_RATE.fullmatch(rate) and float(rate) > 0):
        raise ValueError(f"fs field {fields[2]!r} of the record line is not a positive decimal "
                         "number (leave it out for WFDB's default 250 Hz)")


def _record_fields(line: str) -> dict[str, Any]:
    from wfdb.io._header import HeaderSyntaxError, rx_record

    match = rx_record.match(line)
    if match is None:
        raise HeaderSyntaxError("invalid syntax in record line")
    _check_rate_text(line)
    record_specs, _ = _specs()
    fields: dict[str, Any] = {}
    for field, raw in match.groupdict().items():
        kind, default = record_specs[field]
        fields[field] = default if raw == "" else _convert(kind, raw)
    fs = fields["fs"]
    if isinstance(fs, float) and round(fs, 8) == float(int(fs)):
        fields["fs"] = int(fs)  # wfdb casts an integral rate to int
    return fields


def _signal_fields(lines: list[str]) -> dict[str, list[Any]]:
    from wfdb.io._header import HeaderSyntaxError, rx_signal

    _, signal_specs = _specs()
    fields: dict[str, list[Any]] = {field: [] for field in signal_specs}
    for line in lines:
        match = rx_signal.match(line)
        if match is None:
            raise HeaderSyntaxError("invalid syntax in signal line")
        raw = match.groupdict()
        for field, (kind, default) in signal_specs.items():
            value = raw[field]
            if value != "":
                value = _convert(kind, value)
                if field == "adc_gain" and value == 0:
                    value = 200.0  # wfdb: a gain of 0 means the default 200
            elif field == "baseline" and raw["adc_zero"] != "":
                value = int(raw["adc_zero"])  # a missing baseline defaults to adc_zero
            else:
                value = default
            fields[field].append(value)
    return fields


def _segment_fields(lines: list[str]) -> dict[str, list[Any]]:
    from wfdb.io._header import HeaderSyntaxError, rx_segment

    names, lengths = [], []
    for line in lines:
        match = rx_segment.match(line)
        if match is None:
            raise HeaderSyntaxError("invalid syntax in segment line")
        names.append(match.group("seg_name"))
        lengths.append(int(match.group("seg_len")))
    return {"seg_name": names, "seg_len": lengths}


def parse_header(text: str) -> dict[str, Any]:
    """Fields of a WFDB header's text (see the module docstring); comment lines are ignored."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    fields = _record_fields(lines[0])
    if fields["n_seg"] is None:
        fields.update(_signal_fields(lines[1:]))
    else:
        fields.update(_segment_fields(lines[1:]))
    return fields
