"""The latent case: who the patient is and which conditions they have, before anything is drawn.

Every random choice here comes from generators keyed on (seed, index) or (seed, patient block), never on
a running stream, so case `index` is the same whether 10 or 10 000 cases are generated and whatever
size the X-ray is rendered at.

Co-occurrence follows the clinical picture the model has to learn across modalities: an enlarged heart
raises the odds of LVH voltage, of pulmonary oedema and of atrial fibrillation; oedema brings bilateral
effusions; effusions bring basal atelectasis. Chronic conditions belong to the patient and mostly persist
into follow-up studies; acute ones are drawn per study.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from training.phantom.labels import ALL_LABELS, NORMAL

# Stream ids for np.random.default_rng([seed, index, stream]); one per concern so that, e.g.,
# rendering a larger X-ray consumes no numbers the ECG would have used.
STREAM_LATENT = 1
STREAM_ECG = 2
STREAM_XRAY = 3
STREAM_REPORT = 4
STREAM_MISSING = 5
_STREAM_PATIENT = 6
_STREAM_BLOCK = 7

# Cases are grouped into blocks of this many indices; a block is split into patients with 1-3 studies,
# so follow-ups exist without any state shared between indices of different blocks.
PATIENT_BLOCK = 8
HABITUS = ("slender", "average", "broad")
# Mean frontal QRS axis (degrees, 0 = patient's left, +90 = feet) per habitus.
HEART_AXIS_BY_HABITUS = {"slender": 75.0, "average": 45.0, "broad": 15.0}
LOBES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe")
_EPOCH = _dt.datetime(2180, 1, 1, 8, 0, 0)


def case_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one concern of one case."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), stream])


@dataclass
class LatentCase:
    seed: int
    index: int
    patient_id: str
    visit: int
    study_time: str
    labels: tuple[str, ...]
    attributes: dict = field(default_factory=dict)
    missing: tuple[str, ...] = ()


def _patient_slot(seed: int, index: int) -> tuple[int, int, int]:
    """(block, patient number in block, visit number) of case `index`."""
    block, offset = divmod(index, PATIENT_BLOCK)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, block, _STREAM_BLOCK])
    start = 0
    patient = 0
    while True:
        size = int(rng.choice((1, 1, 1, 1, 2, 2, 3)))
        if offset < start + size:
            return block, patient, offset - start
        start += size
        patient += 1


def _patient(seed: int, block: int, patient: int) -> dict:
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, block, patient, _STREAM_PATIENT])
    age = int(np.clip(rng.normal(62, 15), 18, 95))
    sex = "F" if rng.random() < 0.5 else "M"
    habitus = str(rng.choice(HABITUS, p=(0.27, 0.46, 0.27)))
    old = age >= 65
    cardiomegaly = rng.random() < (0.32 if old else 0.2)
    # LVH is a pressure-load disease of heavier, older patients: skewing it toward the broad habitus
    # (lower surface voltage) keeps raw lead RMS from giving LVH away.
    if cardiomegaly or rng.random() < 0.12:
        lvh_p = 0.6 if cardiomegaly else 0.55
        lvh = rng.random() < lvh_p
        if lvh and habitus != "broad" and rng.random() < 0.6:
            habitus = "broad"
    else:
        lvh = False
    af = rng.random() < (0.35 if cardiomegaly else 0.09)
    r = rng.random()
    bbb = "lbbb" if r < (0.2 if cardiomegaly else 0.1) else ("rbbb" if r > 0.88 else None)
    first_day = int(rng.integers(0, 3650))
    # The heart's anatomical long axis sets its electrical axis: the horizontal heart of a broad chest
    # gives a leftward frontal QRS axis, the vertical heart of a slender one a rightward axis. A
    # continuous trait of the patient that both the film (heart tilt) and the ECG (QRS axis) show.
    heart_axis = float(np.clip(rng.normal(HEART_AXIS_BY_HABITUS[habitus], 22.0), -30.0, 110.0))
    return {
        "age": age, "sex": sex, "habitus": habitus, "first_day": first_day, "heart_axis": heart_axis,
        "chronic": {"cardiomegaly": cardiomegaly, "lvh": lvh, "atrial_fibrillation": af, "bbb": bbb},
    }


def _severity(rng: np.random.Generator) -> str:
    return str(rng.choice(("small", "moderate", "large"), p=(0.35, 0.4, 0.25)))


def sample_latent(seed: int, index: int, missing_rate: float = 0.15) -> LatentCase:
    """Patient, labels, severities and missing modalities of case (seed, index)."""
    block, patient_no, visit = _patient_slot(seed, index)
    patient = _patient(seed, block, patient_no)
    rng = case_rng(seed, index, STREAM_LATENT)
    chronic = patient["chronic"]
    day = patient["first_day"] + visit * 120 + int(rng.integers(0, 90)) * (visit > 0)
    age = patient["age"] + (day - patient["first_day"]) // 365  # follow-ups come months later
    labels: set[str] = set()

    if rng.random() < 0.84:  # the rest are clean studies: the `normal` class
        keep = lambda: rng.random() < 0.9  # noqa: E731 - chronic disease mostly persists per visit
        if chronic["cardiomegaly"] and keep():
            labels.add("cardiomegaly")
        if chronic["lvh"] and keep():
            labels.add("lvh")
        if chronic["atrial_fibrillation"] and keep():
            labels.add("atrial_fibrillation")
        if chronic["bbb"] and keep():
            labels.add(chronic["bbb"])
        cm = "cardiomegaly" in labels
        if rng.random() < (0.5 if cm else 0.07):
            labels.add("pulmonary_edema")
        edema = "pulmonary_edema" in labels
        bilateral = edema and rng.random() < 0.55
        for side in ("left", "right"):
            if bilateral or rng.random() < 0.09 + (0.12 if cm else 0.0) + (0.1 if edema else 0.0):
                labels.add(f"pleural_effusion_{side}")
        if rng.random() < 0.15:
            labels.add("consolidation")
        if rng.random() < (0.16 if patient["habitus"] == "slender" else 0.1):
            labels.add("pneumothorax")
        effusion = any(lab.startswith("pleural_effusion") for lab in labels)
        if rng.random() < 0.11 + (0.12 if effusion else 0.0):
            labels.add("atelectasis")
        if rng.random() < 0.12:
            labels.add("anterior_stemi")
        if "atrial_fibrillation" not in labels:
            r = rng.random()
            acute = edema or "consolidation" in labels or "anterior_stemi" in labels
            if r < (0.22 if acute else 0.13):
                labels.add("sinus_tachycardia")
            elif r > 0.87:
                labels.add("sinus_bradycardia")
            if rng.random() < 0.15:
                labels.add("first_degree_av_block")
    if not labels:
        labels.add(NORMAL)

    attributes = _attributes(rng, dict(patient, age=min(age, 99)), labels)
    attributes["visit"] = visit
    when = _EPOCH + _dt.timedelta(days=day, minutes=int(rng.integers(0, 12 * 60)))

    miss_rng = case_rng(seed, index, STREAM_MISSING)
    missing = [m for m in ("xray", "ecg", "text") if miss_rng.random() < missing_rate]
    if len(missing) == 3:  # a case keeps at least one modality
        missing.pop(int(miss_rng.integers(0, 3)))
    return LatentCase(
        seed=seed, index=index,
        patient_id=f"ph{seed}-p{block:05d}{patient_no}",
        visit=visit,
        study_time=when.isoformat(timespec="seconds"),
        labels=tuple(lab for lab in ALL_LABELS if lab in labels),
        attributes=attributes,
        missing=tuple(missing),
    )


def _attributes(rng: np.random.Generator, patient: dict, labels: set[str]) -> dict:
    """Case truth that the renderers need and that is exported with the case (JSON-serialisable)."""
    attrs: dict = {"age": patient["age"], "sex": patient["sex"], "habitus": patient["habitus"]}
    # CTR ranges keep a gap around 0.5 so that the label is unambiguous on the mask.
    attrs["ctr"] = round(float(rng.uniform(0.54, 0.68) if "cardiomegaly" in labels else rng.uniform(0.38, 0.47)), 3)
    for side in ("left", "right"):
        if f"pleural_effusion_{side}" in labels:
            attrs[f"effusion_{side}"] = _severity(rng)
    if "consolidation" in labels:
        attrs["lobe"] = str(rng.choice(LOBES))
    if "pneumothorax" in labels:
        attrs["pneumothorax_side"] = str(rng.choice(("left", "right")))
        attrs["pneumothorax_size"] = _severity(rng)
    if "atelectasis" in labels:
        sides = [s for s in ("left", "right") if f"pleural_effusion_{s}" in labels]
        attrs["atelectasis_side"] = str(rng.choice(sides)) if sides and rng.random() < 0.7 else str(rng.choice(("left", "right")))
    if "pulmonary_edema" in labels:
        attrs["edema_severity"] = str(rng.choice(("mild", "moderate", "severe"), p=(0.35, 0.4, 0.25)))
    # Posture and inspiration move the axis a little from visit to visit.
    attrs["heart_axis_deg"] = round(patient["heart_axis"] + float(rng.normal(0.0, 4.0)), 1)
    attrs["xray_normal"] = not any(lab in labels for lab in (
        "cardiomegaly", "pleural_effusion_left", "pleural_effusion_right", "pulmonary_edema",
        "consolidation", "pneumothorax", "atelectasis"))
    attrs["ecg_normal"] = not any(lab in labels for lab in (
        "atrial_fibrillation", "sinus_tachycardia", "sinus_bradycardia", "first_degree_av_block",
        "lbbb", "rbbb", "lvh", "anterior_stemi"))
    return attrs
