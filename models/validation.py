"""pydantic's validation errors, read as problems that name the key and the value.

The two inputs validated by pydantic, the training recipe (`pipelines.config`) and the server
settings (`serve.settings`), report every problem on a line of its own naming where it sits and
the value given. `read_problems` is the reading both share: each of pydantic's errors becomes a
`Problem`, sorted into one of four kinds,

- `unknown`: a key no field takes (`extra_forbidden`, `unexpected_keyword_argument`);
- `missing`: a required key left out;
- `rule`: a check of our own (a validator's `ValueError`), whose text already says what is wrong;
- `value`: a value of the wrong type or out of range, worded by the caller's table of templates
  (`{"int_type": "must be an int"}`, formatted with pydantic's context, floats as `:g`) or, for a
  type the table lacks, by pydantic's own message;

and each caller words its lines from them (`[window] input_steps must be an int, got '500'`;
`port: Input should be a valid integer, got 'x'`). Pure: pydantic's error list in, dataclasses
out; no I/O, importable by `pipelines` and `serve` alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

UNKNOWN_KEY_TYPES = ("unexpected_keyword_argument", "extra_forbidden")

Kind = Literal["unknown", "missing", "rule", "value"]


@dataclass(frozen=True)
class Problem:
    """One of pydantic's errors: its kind, where it sits, what it says and the value given.

    `loc` is the path to the key (`("window", "inputs", 1)`), behind the caller's `prefix`.
    `says` is the rule's own text (`rule`), the caller's wording or pydantic's message (`value`),
    or pydantic's message (`unknown`, `missing`). `value` is the input pydantic reports: the
    bad value, the unknown key's value, or (for `missing`) the object the key is missing from.
    """

    kind: Kind
    loc: tuple[str | int, ...]
    says: str
    value: Any


def read_problems(err: ValidationError, prefix: tuple[str | int, ...] = (),
                  says: Mapping[str, str] | None = None) -> list[Problem]:
    """Every error of `err` as a `Problem`, in pydantic's order.

    `prefix` is prepended to each location (where the validated value sits in a larger
    document, e.g. `("window",)`); `says` maps pydantic error types to the caller's wording.
    """
    out = []
    for e in err.errors(include_url=False):
        loc = (*prefix, *e["loc"])
        value = e.get("input")
        if e["type"] in UNKNOWN_KEY_TYPES:
            out.append(Problem("unknown", loc, e["msg"], value))
        elif e["type"] == "missing":
            out.append(Problem("missing", loc, e["msg"], value))
        elif e["type"] == "value_error":
            out.append(Problem("rule", loc, str(e["ctx"]["error"]), value))
        else:
            out.append(Problem("value", loc, _wording(e, says or {}), value))
    return out


def _wording(e: Mapping[str, Any], says: Mapping[str, str]) -> str:
    """The caller's template for this error type filled from pydantic's context, else its
    message (never formatted: a message may hold braces, e.g. a pattern)."""
    template = says.get(e["type"])
    if template is None:
        return e["msg"]
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in e.get("ctx", {}).items()}
    return template.format(**ctx)
