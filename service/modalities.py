"""The modality strings of tribind ("xray", "ecg", "text") and their API enum values.

Its own module, free of server imports, so that the SDK loads without torch or the encoders.
"""

from __future__ import annotations

from protos.tribind.v1 import tribind_pb2 as pb

MODALITY_TO_PB: dict[str, int] = {"xray": pb.MODALITY_XRAY, "ecg": pb.MODALITY_ECG, "text": pb.MODALITY_TEXT}
PB_TO_MODALITY: dict[int, str] = {v: k for k, v in MODALITY_TO_PB.items()}
