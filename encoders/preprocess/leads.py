"""ECG lead names: every spelling seen in public data -> one of the 12 standard leads.

The standard order is Einthoven I-III, Goldberger aVR/aVL/aVF, Wilson V1-V6 (PTB-XL, MIMIC-IV-ECG,
CinC 2020/2021). Anything else (Frank vx/vy/vz, V3R-V9, pacing channels, unlabeled "ECG") is not a
standard lead: readers drop it and the model sees that lead as missing.
"""

from __future__ import annotations

import re

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

_BY_KEY: dict[str, str] = {lead.lower(): lead for lead in STANDARD_LEADS}
# Holter/monitoring and European names. MLII is a modified limb lead II (torso electrodes, MIT-BIH);
# its morphology is close enough to II that treating it as II is the usual choice; MLI/MLIII alike.
# D1-D3 and "DI"-"DIII" are the names for I-III used in French/Italian/Spanish devices. Bare channel
# numbers ("ECG1", "2") are deliberately NOT aliases: on Holter recorders they are channel indices.
_ALIASES: dict[str, str] = {
    "mli": "I", "mlii": "II", "mliii": "III", "ml1": "I", "ml2": "II", "ml3": "III",
    "d1": "I", "d2": "II", "d3": "III", "di": "I", "dii": "II", "diii": "III",
}
_PREFIX = re.compile(r"^(lead|ecg|ekg|chan(nel)?)[\s_\-:]*", re.IGNORECASE)


def standard_lead(name: str) -> tuple[str | None, float]:
    """Map one channel name to (standard lead, sign); (None, 1.0) when it is not a standard lead.

    The sign is -1 for an inverted lead (Cabrera "-aVR"), so `sign * channel` is the standard lead.
    """
    key = str(name).strip()
    key = _PREFIX.sub("", key).strip()
    sign = 1.0
    if key.startswith("-"):
        sign, key = -1.0, key[1:].strip()
    key = key.replace(" ", "").replace("_", "").lower()
    lead = _BY_KEY.get(key) or _ALIASES.get(key)
    if lead is None:
        return None, 1.0
    return lead, sign
