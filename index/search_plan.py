"""How one search request is answered: the planner, and the paging loop over candidates.

Planner (per request, never touching the shared index's settings):
1. No filter: search the modality's FAISS index (IVF with the request's nprobe, HNSW with efSearch).
2. Filter selecting <= `exact_max_selected` rows (found by a LIMITed SQLite probe): brute force over
   their float32 vectors read from SQLite (exact; also finds vectors committed a moment ago).
3. Broader filter: post-filter. Search the index unfiltered and test the candidates against the filter
   in SQLite (by id, cheap), widening up to `postfilter_max_candidates`. Filters of only exclusions
   (exclude case ids, patient not in, labels none) try this before step 2: they rarely select few rows,
   and the probe would cost more than the whole search.
4. Too few candidates passed: SQLite lists all selected vec_ids into an `IDSelectorBatch` in
   `SearchParameters*`; for IVF, nprobe grows by 1/selectivity (capped at nlist) so the probed lists
   still hold enough selected rows.
Offset, score threshold and group-by-patient are applied while walking candidates in score order; if
fewer than offset+k qualify, the loop asks FAISS for 4x more candidates (and IVF/HNSW for wider
probing) until offset+k qualify or the index is exhausted, so exactly k come back when k qualify.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass

import faiss
import numpy as np

from index.case_rows import hit_rows
from index.faiss_index import IndexPolicy, ModalityIndex
from index.hit_cache import HitCache
from index.records import Hit


@dataclass(frozen=True)
class Selection:
    """The rows a filter allows, as a FAISS selector; `ids` keeps the selector's data alive."""

    selector: faiss.IDSelector
    ids: np.ndarray

    @classmethod
    def allowed(cls, ids: np.ndarray) -> "Selection":
        return cls(faiss.IDSelectorBatch(ids), ids)


@dataclass(frozen=True)
class Paging:
    k: int
    offset: int
    score_threshold: float | None
    group_by_patient: bool

    @property
    def needed(self) -> int:
        return self.offset + self.k


def collect(conn: sqlite3.Connection, modality: str, scores: np.ndarray, ids: np.ndarray,
            paging: Paging, post_filter: tuple[str, list] | None = None,
            cache: HitCache | None = None) -> tuple[list[Hit], bool]:
    """Hits in score order after filter, threshold and grouping; True when the threshold ended the walk.

    Without a post-filter the candidates' payloads come from `cache` (when given), else from SQLite."""
    valid = ids >= 0
    id_list = ids[valid].tolist()
    decoded = post_filter is None and cache is not None
    rows = cache.lookup(conn, id_list) if decoded else hit_rows(conn, id_list, *(post_filter or ()))
    hits: list[Hit] = []
    patients: set[str] = set()
    threshold = paging.score_threshold
    needed = paging.needed
    for score, vec_id in zip(scores[valid].tolist(), id_list):
        if threshold is not None and score < threshold:
            return hits, True
        row = rows.get(vec_id)
        if row is None:  # filtered out, or removed from SQLite after FAISS returned it (FAISS catches up)
            continue
        case_id, patient_id, study_time, labels, metadata = row
        if paging.group_by_patient:
            if patient_id in patients:
                continue
            patients.add(patient_id)
        if decoded:  # the cached metadata dict is shared: every hit gets its own copy
            hits.append(Hit(case_id, patient_id, modality, score, labels, dict(metadata), study_time))
        else:
            hits.append(Hit(case_id, patient_id, modality, float(score), tuple(json.loads(labels)),
                            json.loads(metadata), study_time))
        if len(hits) >= needed:
            break
    return hits, False


def exact_subset(conn: sqlite3.Connection, modality: str, query: np.ndarray, rows: list[tuple[int, bytes]],
                 paging: Paging, cache: HitCache | None = None) -> list[Hit]:
    """Brute force over the selected rows (vec_id, float32 blob) read from SQLite."""
    if not rows:
        return []
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    scores = matrix @ query
    order = np.argsort(-scores, kind="stable")
    hits, _ = collect(conn, modality, scores[order], ids[order], paging, cache=cache)
    return hits


def index_search(conn: sqlite3.Connection, modality: str, query: np.ndarray, index: ModalityIndex,
                 read_lock, paging: Paging, policy: IndexPolicy, *, nprobe: int | None, ef_search: int | None,
                 selection: Selection | None = None, post_filter: tuple[str, list] | None = None,
                 max_fetch: int | None = None, cache: HitCache | None = None) -> list[Hit] | None:
    """Search the FAISS index, widening until offset+k hits qualify or nothing more can be found.

    With `max_fetch`, gives up (None) once more candidates than that would be needed.
    """
    total = index.ntotal if selection is None else min(index.ntotal, len(selection.ids))
    if total == 0:
        return []
    selector = None if selection is None else selection.selector
    probe = nprobe or policy.nprobe
    if selection is not None and index.kind == "ivf":
        probe = math.ceil(probe * index.ntotal / max(len(selection.ids), 1))
    probe = min(probe, max(index.nlist, 1))
    ef = max(ef_search or policy.hnsw_ef_search, 1)
    fetch = min(total, paging.needed * (4 if paging.group_by_patient or post_filter else 1))
    while True:
        with read_lock():
            scores, ids = index.search(query, fetch, selector=selector, nprobe=probe, ef_search=max(ef, fetch))
        hits, cut = collect(conn, modality, scores, ids, paging, post_filter, cache)
        if len(hits) >= paging.needed or cut:
            return hits
        short = int((ids >= 0).sum()) < fetch
        if short and index.kind == "ivf" and probe < index.nlist:
            probe = min(index.nlist, probe * 4)
        elif short and index.kind == "hnsw" and ef < index.ntotal:
            ef = min(index.ntotal, ef * 4)
        elif fetch >= total:
            return hits
        elif max_fetch is not None and fetch * 4 > max_fetch:
            return None
        else:
            fetch = min(total, fetch * 4)
