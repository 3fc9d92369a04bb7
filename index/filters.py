"""Turn a `SearchFilter` into SQL: list the vector ids it allows, or test candidate ids against it.

Lists go in as one JSON parameter (`json_each`), so a filter with 100k patient ids does not hit
SQLite's bound-parameter limit.
"""

from __future__ import annotations

import json

from index.records import SearchFilter
from index.validation import parse_time


def is_exclusion_only(f: SearchFilter) -> bool:
    """Only "not" conditions: such filters rarely select few rows, so the planner post-filters first."""
    return not (f.labels_any or f.labels_all or f.patient_in or f.metadata_equals or f.time_from or f.time_to)


def _json(values) -> str:
    return json.dumps(list(values))


def _conditions(f: SearchFilter, per_row: bool) -> tuple[list[str], list]:
    """WHERE terms over `c` (cases) for every condition of the filter, ANDed by the caller.

    per_row=False (listing): label/metadata terms are `case_pk IN (subquery)`, which SQLite evaluates
    once and can drive the join from. per_row=True (testing a few candidates): correlated EXISTS
    probes, so a broad label is not materialised for every request.
    """
    where: list[str] = []
    params: list = []

    def has(table_terms: str, negate: bool = False) -> str:
        if per_row:
            return f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM {table_terms} AND case_pk = c.case_pk)"
        table, terms = table_terms.split(" WHERE ", 1)
        return f"c.case_pk {'NOT ' if negate else ''}IN (SELECT case_pk FROM {table} WHERE {terms})"

    if f.labels_any:
        where.append(has("case_labels WHERE label IN (SELECT value FROM json_each(?))"))
        params.append(_json(f.labels_any))
    for label in dict.fromkeys(f.labels_all):
        where.append(has("case_labels WHERE label = ?"))
        params.append(label)
    if f.labels_none:
        where.append(has("case_labels WHERE label IN (SELECT value FROM json_each(?))", negate=True))
        params.append(_json(f.labels_none))
    if f.patient_in:
        where.append("c.patient_id IN (SELECT value FROM json_each(?))")
        params.append(_json(f.patient_in))
    if f.patient_not_in:
        where.append("c.patient_id NOT IN (SELECT value FROM json_each(?))")
        params.append(_json(f.patient_not_in))
    for key, value in f.metadata_equals.items():
        where.append(has("case_metadata WHERE key = ? AND value = ?"))
        params.extend([key, value])
    if f.time_from:
        where.append("c.study_ts >= ?")
        params.append(parse_time("filter.time_from", f.time_from))
    if f.time_to:
        where.append("c.study_ts < ?")
        params.append(parse_time("filter.time_to", f.time_to))
    if f.exclude_case_ids:
        where.append("c.case_id NOT IN (SELECT value FROM json_each(?))")
        params.append(_json(f.exclude_case_ids))
    return where, params


def selection_sql(modality: str, model_version: str, search_filter: SearchFilter) -> tuple[str, list]:
    """SQL and parameters listing the vec_ids of `modality` whose case passes the filter."""
    where, params = _conditions(search_filter, per_row=False)
    # CROSS JOIN pins the join order: walk the (usually indexed, often small) matching cases first, then
    # their vector through vectors_by_case, instead of scanning every vector of the modality.
    sql = ("SELECT v.vec_id FROM cases c CROSS JOIN vectors v ON v.case_pk = c.case_pk "
           "AND v.modality = ? AND v.model_version = ?")
    return sql + (" WHERE " + " AND ".join(where) if where else ""), [modality, model_version] + params


def admitted_rows_sql(search_filter: SearchFilter) -> tuple[str, list]:
    """SQL returning hit rows (as `case_rows.hit_rows`) of candidate vec_ids (first parameter, JSON) that pass.

    Vectors first (CROSS JOIN): the few candidates are looked up by id, then their cases are tested.
    """
    where, params = _conditions(search_filter, per_row=True)
    sql = ("SELECT v.vec_id, c.case_id, c.patient_id, c.study_time, c.labels, c.metadata "
           "FROM vectors v INDEXED BY vectors_case_of CROSS JOIN cases c ON c.case_pk = v.case_pk "
           "WHERE v.vec_id IN (SELECT value FROM json_each(?))")
    return sql + "".join(f" AND {w}" for w in where), params
