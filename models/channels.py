"""Channel-name aliases: the one table that says which WFDB signal names mean the same channel.

PhysioNet databases name the same lead or transducer differently (`MLII` in MIT-BIH is lead II,
`ART` in MIMIC is arterial blood pressure, `ABPMean` / `ABP Mean` MIMIC's mean pressure). Ingest
asks for canonical names and this module finds the matching signal in a record,
case-insensitively; the server's `:forecast` matches a request's channel names to the model's
with the same table, so a client may send any spelling ingest accepts. A contract both sides
import: pure, no I/O.
"""

from __future__ import annotations

# canonical name -> other spellings seen in PhysioNet/MIMIC headers (matched case-insensitively)
ALIASES: dict[str, tuple[str, ...]] = {
    "II": ("MLII", "ECG II", "ECG", "ECG1", "LEAD II"),
    "I": ("MLI", "ECG I", "LEAD I"),
    "III": ("MLIII", "ECG III", "LEAD III"),
    "V": ("V5", "MCL1", "MCL", "ECG V"),
    "ABP": ("ART", "ABP", "AOBP", "BP", "ARTERIAL"),
    "PLETH": ("PLETH", "PPG", "SPO2 WAVE"),
    "RESP": ("RESP", "RESPIRATION", "IMPEDANCE"),
    "CVP": ("CVP",),
    "PAP": ("PAP", "PA"),
    # numerics (1/min vitals)
    "HR": ("HR", "HEART RATE"),
    "PULSE": ("PULSE", "PULSE RATE"),
    "SPO2": ("SPO2", "SAO2", "%SPO2"),
    "ABPMEAN": ("ABP MEAN", "ABPMEAN", "ABPM", "ART MEAN", "MAP"),
    "ABPSYS": ("ABP SYS", "ABPSYS", "ART SYS"),
    "ABPDIAS": ("ABP DIAS", "ABPDIAS", "ART DIAS"),
    "RR": ("RESP RATE", "BREATH RATE"),
    "NBPMEAN": ("NBP MEAN", "NBPMEAN"),
}


def canonical_name(name: str) -> str:
    """The canonical spelling for `name` (upper-cased, stripped); itself when it has no alias."""
    key = " ".join(name.strip().upper().split())
    if key in ALIASES:
        return key
    for canonical, spellings in ALIASES.items():
        if key in spellings:
            return canonical
    return key


def match_channels(wanted: list[str] | tuple[str, ...], available: list[str]) -> dict[str, int]:
    """Map each wanted channel to the index of its signal in `available`.

    An exact (case-insensitive) name match wins over an alias match, so a record that has both
    `II` and `MLII` gives `II`. Channels with no match are absent from the result.
    """
    norm = [" ".join(a.strip().upper().split()) for a in available]
    found: dict[str, int] = {}
    for want in wanted:
        key = " ".join(want.strip().upper().split())
        if key in norm:
            found[want] = norm.index(key)
            continue
        target = canonical_name(key)
        for i, name in enumerate(norm):
            if canonical_name(name) == target:
                found[want] = i
                break
    return found
