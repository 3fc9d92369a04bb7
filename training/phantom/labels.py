"""The phantom vocabulary: canonical label ids shared by the generator, the label set and evaluation.

The ids and their split by modality are the contract in docs/architecture.md; `normal` belongs to both
modalities and means "none of the other labels".
"""

from __future__ import annotations

XRAY_FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion_left",
    "pleural_effusion_right",
    "pulmonary_edema",
    "consolidation",
    "pneumothorax",
    "atelectasis",
)
ECG_FINDINGS: tuple[str, ...] = (
    "atrial_fibrillation",
    "sinus_tachycardia",
    "sinus_bradycardia",
    "first_degree_av_block",
    "lbbb",
    "rbbb",
    "lvh",
    "anterior_stemi",
)
NORMAL = "normal"

XRAY_LABELS: tuple[str, ...] = XRAY_FINDINGS + (NORMAL,)
ECG_LABELS: tuple[str, ...] = ECG_FINDINGS + (NORMAL,)
ALL_LABELS: tuple[str, ...] = XRAY_FINDINGS + ECG_FINDINGS + (NORMAL,)
