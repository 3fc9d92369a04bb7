"""Combining the store's per-modality hit lists into one page: merge across targets, group by patient.

Scores from different target modalities are all cosines in the one joint space, so they merge on
score directly. Ties break on (case_id, modality) so that pages are stable between calls: without
that, offset paging could show a hit twice or never.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from index.records import Hit


@dataclass
class PatientHits:
    patient_id: str
    hits: list[Hit]           # best first

    @property
    def best_score(self) -> float:
        return self.hits[0].score


def _order(hit: Hit) -> tuple[float, str, str]:
    return (-hit.score, hit.case_id, hit.modality)


def merge(per_target: Sequence[Sequence[Hit]]) -> list[Hit]:
    """All hits of all targets, best first."""
    return sorted((hit for hits in per_target for hit in hits), key=_order)


def group_by_patient(hits: Sequence[Hit]) -> list[PatientHits]:
    """Hits (best first) grouped by patient; groups ordered by their best hit."""
    groups: dict[str, PatientHits] = {}
    for hit in sorted(hits, key=_order):
        group = groups.get(hit.patient_id)
        if group is None:
            groups[hit.patient_id] = PatientHits(hit.patient_id, [hit])
        else:
            group.hits.append(hit)
    return list(groups.values())  # dicts keep insertion order = order of each group's best hit
