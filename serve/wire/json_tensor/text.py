"""JSON text as TF Serving reads and writes it: the parser, values quoted in error texts, floats.

- `parse_json`: a request body as a JSON object. orjson first; the stdlib parser on failure, which
  accepts `NaN`/`Infinity` tokens (TF Serving's parser flags) and names the error's offset with
  rapidjson's texts (`GetParseError_En`, what TF Serving prints).
- `value_to_string`: `JsonValueToString()`, how TF Serving quotes a JSON value in an error text
  (rapidjson's PrettyWriter, 4 spaces), cut at `QUOTE_CHARS` and bounded on hostile nesting.
- `format_float` / `format_double`: `WriteDecimal()`, `3.0` never `3`, bare `NaN`/`Infinity`.

Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from serve.errors import invalid

# A value quoted in an error text stops after this many characters, then says so. TF Serving's
# JsonValueToString() writes the whole value, 4 spaces a level: 2 MB of 64-deep lists became
# 260 MB of text, built in 4 s. 4 KiB shows a reader the start of any value and bounds the work
# of building the text, not just its length (`serve.errors.MAX_ERROR_CHARS` bounds the rest).
QUOTE_CHARS = 4096

# Python's json error texts -> rapidjson's GetParseError_En texts (what TF Serving prints).
_PARSE_ERRORS = (
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\u", "Incorrect hex digit after \\u escape in string."),
)

_HUGE_INT = re.compile(r"-?[0-9]{4301,}")


def _parse_error_text(text: str, err: json.JSONDecodeError) -> str:
    if err.msg.startswith("Expecting ',' delimiter"):
        # rapidjson says which container was left unclosed.
        closer = _innermost_open(text[: err.pos])
        return (
            "Missing a comma or '}' after an object member." if closer == "{"
            else "Missing a comma or ']' after an array element."
        )
    for prefix, rapid in _PARSE_ERRORS:
        if err.msg.startswith(prefix):
            return rapid
    return "Invalid value."


def _innermost_open(text: str) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def parse_json(body: bytes | str) -> dict[str, Any]:
    """The request body as a JSON object; NaN/Infinity tokens allowed (TF Serving's parser flags).

    Raises INVALID_ARGUMENT with TF Serving's texts: empty document, parse error with offset,
    top level not an object.
    """
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_json_slow(body)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def _parse_json_slow(body: bytes | str) -> Any:
    """The stdlib parser: slower, but it accepts NaN/Infinity and names the error's offset."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    except UnicodeDecodeError as err:
        raise invalid(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from None
    if not text.strip():
        raise invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        return json.loads(text, parse_constant=_parse_constant)
    except json.JSONDecodeError as err:
        raise invalid(
            f"JSON Parse error: {_parse_error_text(text, err)} at offset: {err.pos}"
        ) from None
    except RecursionError:
        raise invalid("JSON Parse error: Nesting too deep. at offset: 0") from None
    except ValueError:
        # an integer past Python's 4300-digit limit (a 500 before); rapidjson reads a long
        # integer as a double, and none this long fits one
        match = _HUGE_INT.search(text)
        raise invalid(
            "JSON Parse error: Number too big to be stored in double. at offset: "
            f"{match.start() if match else 0}"
        ) from None


def _parse_constant(token: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[token]


class _Full(Exception):
    """The quoted value has used its character budget."""


class _Quote:
    """rapidjson's PrettyWriter text of one value, written piece by piece into a budget."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.left = limit

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.left -= len(text)
        if self.left < 0:
            raise _Full

    def value(self, val: Any, indent: int) -> None:
        if not isinstance(val, dict | list) or not val:
            self.emit(self.leaf(val))
            return
        is_dict = isinstance(val, dict)
        if indent >= 64:
            # hostile nesting (orjson accepts 1024 levels) must not blow the stack
            self.emit("{...}" if is_dict else "[...]")
            return
        pad = "    " * (indent + 1)
        self.emit("{\n" + pad if is_dict else "[\n" + pad)
        sep = ",\n" + pad
        for i, item in enumerate(val.items() if is_dict else val):
            if i:
                self.emit(sep)
            if is_dict:
                key, item = item
                self.emit(self.string(str(key)) + ": ")
            self.value(item, indent + 1)
        self.emit("\n" + "    " * indent + ("}" if is_dict else "]"))

    def leaf(self, val: Any) -> str:
        if isinstance(val, dict):
            return "{}"
        if isinstance(val, list):
            return "[]"
        if val is None:
            return "null"
        if val is True:
            return "true"
        if val is False:
            return "false"
        if isinstance(val, float):
            return format_double(val)
        if isinstance(val, int):
            return str(val)
        return self.string(str(val))

    def string(self, s: str) -> str:
        # only what can still be shown is escaped: a 16 MB string costs what 4 KiB does
        return json_string(s[: self.left + 1])


def value_to_string(val: Any, limit: int = QUOTE_CHARS) -> str:
    """JsonValueToString(): how TF Serving quotes a JSON value in an error message.

    rapidjson's PrettyWriter text (4 spaces a level), cut after `limit` characters and marked
    so; the writer stops there, so quoting a huge value costs what quoting 4 KiB does.
    Containers deeper than 64 levels read `[...]` / `{...}`.
    """
    quote = _Quote(limit)
    try:
        quote.value(val, 0)
    except _Full:
        return "".join(quote.parts)[:limit] + f"... (value cut at {limit} characters)"
    return "".join(quote.parts)


def json_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def json_type(val: Any) -> str:
    """JsonTypeString(): rapidjson's type names."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def format_float(val: float) -> str:
    """WriteDecimal() for a float32 value: `%g` if it round-trips, else `%.9g`; `.0` for whole."""
    return _format_decimal(float(val), lambda s: np.float32(s) == np.float32(val), 9)


def format_double(val: float) -> str:
    """WriteDecimal() for a float64 value: `%g` if it round-trips, else `%.17g`."""
    return _format_decimal(float(val), lambda s: float(s) == float(val), 17)


def _format_decimal(val: float, roundtrips: Callable[[str], bool], digits: int) -> str:
    if math.isnan(val):
        return "NaN"
    if math.isinf(val):
        return "-Infinity" if val < 0 else "Infinity"
    text = f"{val:g}"
    if not roundtrips(text):
        text = f"{val:.{digits}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text
