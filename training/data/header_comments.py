"""Facts in WFDB header comments: CinC `#Age: 74` / `#Sex: Male` / `#Dx: 164889003,...`, PTB Diagnostic
`age: 81`, `sex: female`, `Reason for admission: ...`, and MIT-BIH's bare `69 M 1085 1629 x1`."""

from __future__ import annotations

import re

_KEY_VALUE = re.compile(r"^\s*#?\s*([A-Za-z][A-Za-z ()/_-]*?)\s*:\s*(.*)$")
_MITBIH_AGE_SEX = re.compile(r"^\s*(\d{1,3})\s+([MF])\b")


def parse_comments(comments: list[str]) -> dict[str, str]:
    """Lower-cased `key: value` pairs (first occurrence wins), plus age/sex from MIT-BIH style lines."""
    facts: dict[str, str] = {}
    for line in comments:
        match = _KEY_VALUE.match(line)
        if match:
            key = match.group(1).strip().lower()
            facts.setdefault(key, match.group(2).strip())
            continue
        mitbih = _MITBIH_AGE_SEX.match(line)
        if mitbih and "age" not in facts:
            facts["age"] = mitbih.group(1)
            facts["sex"] = mitbih.group(2)
    sex = facts.get("sex", "").strip().lower()
    if sex:
        facts["sex"] = {"m": "male", "f": "female"}.get(sex, sex)
    return facts


def dx_codes(facts: dict[str, str]) -> list[str]:
    """The `Dx` SNOMED codes, in header order."""
    return [code.strip() for code in facts.get("dx", "").split(",") if code.strip()]
