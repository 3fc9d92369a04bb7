"""A `CaseRef` (case id + modality) to the stored case and its vector, with the request checks.

One place for the rules, because several request fields name a stored case: Search's and Classify's
`case_ref`, and Explain's subject and `target.case_ref`. `field` is where the reference sits in the
request, so errors name it ("target.case_ref.modality: ...").
"""

from __future__ import annotations

import numpy as np

from index import Case, CaseStore
from protos.tribind.v1 import tribind_pb2 as pb
from service.convert import modality_name
from service.errors import invalid, version_mismatch


def resolve_case_ref(store: CaseStore, ref: pb.CaseRef, field: str, model_version: str,
                     include_raw: bool = False) -> tuple[Case, str, np.ndarray]:
    """(the case, the modality, its unit vector of the served model). Unknown ids raise the store's
    CaseNotFound (NOT_FOUND); a vector of another model is FAILED_PRECONDITION."""
    if not ref.case_id:
        raise invalid(f"{field}.case_id", "is empty; give the id of a stored case")
    modality = modality_name(ref.modality, f"{field}.modality")
    case = store.get(ref.case_id, include_raw=include_raw)
    embedding = case.vectors.get(modality)
    if embedding is None:
        have = ", ".join(sorted(case.vectors)) or "none"
        raise invalid(f"{field}.modality", f"case {ref.case_id!r} has no {modality} vector (it has: {have})")
    if embedding.model_version != model_version:
        raise version_mismatch(
            f"case {ref.case_id!r} {modality} vector is from model {embedding.model_version}, the server runs "
            f"{model_version}; run `tribind reindex` to re-embed the library")
    return case, modality, np.asarray(embedding.vector, dtype=np.float32)
