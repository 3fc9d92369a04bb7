"""Reads and writes of the SQLite tables. Writers run inside one `BEGIN IMMEDIATE` transaction per call.

Every write returns the `Changes` it made to the vector table, so the store can apply exactly those
to FAISS after the commit (SQLite first: if the process dies in between, start-up catches FAISS up).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from index.errors import CaseNotFound
from index.records import Case, Embedding, RawInput, StaleVector
from index.sqlite_schema import next_id
from index.validation import ValidCase


@dataclass
class Changes:
    """What a committed write did to the vectors table."""

    added: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)   # modality -> (vec_id, vector) of the live version
    removed: dict[str, list[int]] = field(default_factory=dict)                    # modality -> vec_ids of the live version
    versions: Counter = field(default_factory=Counter)                             # (modality, version) -> +/- count

    def add(self, modality: str, vec_id: int, vector: np.ndarray, version: str, live_version: str) -> None:
        if version == live_version:
            self.added.setdefault(modality, []).append((vec_id, vector))
        self.versions[(modality, version)] += 1

    def remove(self, modality: str, vec_id: int, version: str, live_version: str) -> None:
        if version == live_version:  # other versions were never in FAISS
            self.removed.setdefault(modality, []).append(vec_id)
        self.versions[(modality, version)] -= 1


def _ids_json(values) -> str:
    return json.dumps(list(values))


@dataclass
class _StoredVector:
    vec_id: int
    version: str
    blob: bytes


def _existing(conn: sqlite3.Connection, case_ids: Sequence[str]) -> tuple[dict[str, int], dict[int, dict[str, _StoredVector]]]:
    pks = dict(conn.execute(
        "SELECT case_id, case_pk FROM cases WHERE case_id IN (SELECT value FROM json_each(?))", (_ids_json(case_ids),)))
    vectors: dict[int, dict[str, _StoredVector]] = {}
    if pks:
        rows = conn.execute(
            "SELECT case_pk, modality, vec_id, model_version, vector FROM vectors "
            "WHERE case_pk IN (SELECT value FROM json_each(?))", (_ids_json(pks.values()),))
        for case_pk, modality, vec_id, version, blob in rows:
            vectors.setdefault(case_pk, {})[modality] = _StoredVector(vec_id, version, blob)
    return pks, vectors


def _remove_vectors(conn: sqlite3.Connection, gone: list[tuple[int, str]]) -> None:
    if gone:
        conn.execute("DELETE FROM vectors WHERE vec_id IN (SELECT value FROM json_each(?))",
                     (_ids_json(v for v, _ in gone),))
        conn.executemany("INSERT INTO vector_removals(vec_id, modality) VALUES (?, ?)", gone)


def _insert_vectors(conn: sqlite3.Connection, rows: list[tuple[int, int, str, str, bytes]]) -> None:
    conn.executemany(
        "INSERT INTO vectors(vec_id, case_pk, modality, model_version, vector) VALUES (?, ?, ?, ?, ?)", rows)


def _transaction(conn: sqlite3.Connection, body):
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result


def write_cases(conn: sqlite3.Connection, items: list[ValidCase], live_version: str) -> Changes:
    """Insert or wholly replace each case (labels, metadata, vectors, raw inputs) in one transaction.

    A vector identical to the stored one (same bytes, same model_version) keeps its vec_id, so
    re-sending a case does not churn the FAISS index.
    """

    def body() -> Changes:
        changes = Changes()
        pks, stored = _existing(conn, [item.case.case_id for item in items])
        next_case = next_id(conn, "cases")
        next_vec = next_id(conn, "vectors")
        case_rows, new_case_rows, label_rows, meta_rows, raw_rows, vec_rows = [], [], [], [], [], []
        gone: list[tuple[int, str]] = []
        for item in items:
            case = item.case
            pk = pks.get(case.case_id)
            row = (case.patient_id, case.study_time, item.study_ts, json.dumps(list(case.labels)),
                   json.dumps(case.metadata, sort_keys=True))
            if pk is None:
                pk, next_case = next_case, next_case + 1
                new_case_rows.append((pk, case.case_id) + row)
            else:
                case_rows.append(row + (pk,))
            label_rows.extend((label, pk) for label in dict.fromkeys(case.labels))
            meta_rows.extend((key, value, pk) for key, value in case.metadata.items())
            raw_rows.extend((pk, m, raw.media_type, bytes(raw.data)) for m, raw in case.raw.items())
            kept = set()
            for modality, old_vec in stored.get(pk, {}).items():
                new_vec = item.vectors.get(modality)
                if (new_vec is not None and old_vec.version == case.vectors[modality].model_version
                        and old_vec.blob == new_vec.tobytes()):
                    kept.add(modality)
                    continue
                gone.append((old_vec.vec_id, modality))
                changes.remove(modality, old_vec.vec_id, old_vec.version, live_version)
            for modality, vector in item.vectors.items():
                if modality in kept:
                    continue
                vec_id, next_vec = next_vec, next_vec + 1
                version = case.vectors[modality].model_version
                vec_rows.append((vec_id, pk, modality, version, vector.tobytes()))
                changes.add(modality, vec_id, vector, version, live_version)
        old_pks = _ids_json(pks.values())
        for table in ("case_labels", "case_metadata", "raw_inputs"):
            conn.execute(f"DELETE FROM {table} WHERE case_pk IN (SELECT value FROM json_each(?))", (old_pks,))
        conn.executemany(
            "UPDATE cases SET patient_id=?, study_time=?, study_ts=?, labels=?, metadata=? WHERE case_pk=?", case_rows)
        conn.executemany(
            "INSERT INTO cases(case_pk, case_id, patient_id, study_time, study_ts, labels, metadata) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", new_case_rows)
        conn.executemany("INSERT INTO case_labels(label, case_pk) VALUES (?, ?)", label_rows)
        conn.executemany("INSERT INTO case_metadata(key, value, case_pk) VALUES (?, ?, ?)", meta_rows)
        conn.executemany("INSERT INTO raw_inputs(case_pk, modality, media_type, data) VALUES (?, ?, ?, ?)", raw_rows)
        _remove_vectors(conn, gone)
        _insert_vectors(conn, vec_rows)
        return changes

    return _transaction(conn, body)


def replace_vectors(conn: sqlite3.Connection, case_id: str, vectors: dict[str, tuple[np.ndarray, str]],
                    live_version: str) -> Changes:
    """Replace some modalities' vectors of one case (the reindex path); labels, metadata and raw stay."""

    def body() -> Changes:
        changes = Changes()
        pks, stored = _existing(conn, [case_id])
        if case_id not in pks:
            raise CaseNotFound(case_id)
        pk = pks[case_id]
        next_vec = next_id(conn, "vectors")
        gone, rows = [], []
        for modality, (vector, version) in vectors.items():
            old = stored.get(pk, {}).get(modality)
            if old is not None:
                gone.append((old.vec_id, modality))
                changes.remove(modality, old.vec_id, old.version, live_version)
            rows.append((next_vec, pk, modality, version, vector.tobytes()))
            changes.add(modality, next_vec, vector, version, live_version)
            next_vec += 1
        _remove_vectors(conn, gone)
        _insert_vectors(conn, rows)
        return changes

    return _transaction(conn, body)


def delete_cases(conn: sqlite3.Connection, case_ids: Sequence[str], live_version: str, missing_ok: bool) -> tuple[int, Changes]:
    """Delete cases and everything hanging off them; unless missing_ok, any unknown id aborts the lot."""

    def body() -> tuple[int, Changes]:
        changes = Changes()
        pks, stored = _existing(conn, case_ids)
        missing = [c for c in case_ids if c not in pks]
        if missing and not missing_ok:
            raise CaseNotFound(missing[0])
        gone = []
        for pk, by_modality in stored.items():
            for modality, old in by_modality.items():
                gone.append((old.vec_id, modality))
                changes.remove(modality, old.vec_id, old.version, live_version)
        pk_json = _ids_json(pks.values())
        for table in ("case_labels", "case_metadata", "raw_inputs", "cases"):
            conn.execute(f"DELETE FROM {table} WHERE case_pk IN (SELECT value FROM json_each(?))", (pk_json,))
        _remove_vectors(conn, gone)
        return len(pks), changes

    return _transaction(conn, body)


def get_case(conn: sqlite3.Connection, case_id: str, include_raw: bool) -> Case:
    row = conn.execute(
        "SELECT case_pk, patient_id, study_time, labels, metadata FROM cases WHERE case_id=?", (case_id,)).fetchone()
    if row is None:
        raise CaseNotFound(case_id)
    pk, patient_id, study_time, labels, metadata = row
    vectors = {
        modality: Embedding(np.frombuffer(blob, dtype=np.float32).copy(), version)
        for modality, version, blob in conn.execute(
            "SELECT modality, model_version, vector FROM vectors WHERE case_pk=?", (pk,))
    }
    raw = {}
    if include_raw:
        raw = {m: RawInput(bytes(data), media) for m, media, data in conn.execute(
            "SELECT modality, media_type, data FROM raw_inputs WHERE case_pk=?", (pk,))}
    return Case(case_id, patient_id, study_time, tuple(json.loads(labels)), json.loads(metadata), vectors, raw)


HIT_ROWS_SQL = ("SELECT v.vec_id, c.case_id, c.patient_id, c.study_time, c.labels, c.metadata "
                "FROM vectors v INDEXED BY vectors_case_of CROSS JOIN cases c ON c.case_pk = v.case_pk "
                "WHERE v.vec_id IN (SELECT value FROM json_each(?))")


def hit_rows(conn: sqlite3.Connection, vec_ids: Sequence[int], sql: str = HIT_ROWS_SQL,
             params: Sequence = ()) -> dict[int, tuple]:
    """vec_id -> (case_id, patient_id, study_time, labels, metadata JSON) for ids still in SQLite.

    `sql`/`params` may narrow the rows further (a post-filter from `filters.admitted_rows_sql`)."""
    rows = conn.execute(sql, [_ids_json(int(i) for i in vec_ids), *params])
    return {row[0]: row[1:] for row in rows}


def vector_rows(conn: sqlite3.Connection, vec_ids: np.ndarray) -> list[tuple[int, bytes]]:
    """(vec_id, float32 blob) of the given ids that still exist."""
    return conn.execute("SELECT vec_id, vector FROM vectors WHERE vec_id IN (SELECT value FROM json_each(?))",
                        (_ids_json(vec_ids.tolist()),)).fetchall()


def load_vectors(conn: sqlite3.Connection, modality: str, version: str, dim: int,
                 after_id: int = 0, chunk: int = 50_000, up_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n], vectors float32 [n, dim]) of one modality and version with after_id < vec_id <= up_to.

    Without the write lock (a retraining aside) pass `up_to`: new rows always get larger ids, so only
    deletes can happen below it meanwhile, and those leave the result short, never wrong-sized."""
    top = up_to if up_to is not None else 2 ** 62
    n = conn.execute("SELECT COUNT(*) FROM vectors WHERE modality=? AND model_version=? AND vec_id>? AND vec_id<=?",
                     (modality, version, after_id, top)).fetchone()[0]
    ids = np.empty(n, dtype=np.int64)
    matrix = np.empty((n, dim), dtype=np.float32)
    cursor = conn.execute("SELECT vec_id, vector FROM vectors WHERE modality=? AND model_version=? AND vec_id>? "
                          "AND vec_id<=? ORDER BY vec_id", (modality, version, after_id, top))
    filled = 0
    while filled < n and (rows := cursor.fetchmany(chunk)):
        rows = rows[: n - filled]  # rows cannot be added in range: the write lock is held, or up_to bounds it
        ids[filled:filled + len(rows)] = [r[0] for r in rows]
        matrix[filled:filled + len(rows)] = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
        filled += len(rows)
    return ids[:filled], matrix[:filled]


def removals_since(conn: sqlite3.Connection, modality: str, seq: int, max_vec_id: int) -> np.ndarray:
    rows = conn.execute("SELECT vec_id FROM vector_removals WHERE modality=? AND seq>? AND vec_id<=?",
                        (modality, seq, max_vec_id)).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def high_water_marks(conn: sqlite3.Connection) -> tuple[int, int]:
    """(largest vec_id ever issued, last removal seq)."""
    seqs = dict(conn.execute("SELECT name, seq FROM sqlite_sequence WHERE name IN ('vectors', 'vector_removals')"))
    return int(seqs.get("vectors", 0)), int(seqs.get("vector_removals", 0))


def version_counts(conn: sqlite3.Connection) -> Counter:
    return Counter({(m, v): n for m, v, n in conn.execute(
        "SELECT modality, model_version, COUNT(*) FROM vectors GROUP BY modality, model_version")})


def iter_stale(conn: sqlite3.Connection, live_version: str, modality: str | None, batch: int = 256) -> Iterator[StaleVector]:
    """Vectors of another model_version, in vec_id order, with their raw input when one was stored."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT v.vec_id, c.case_id, v.modality, v.model_version, r.media_type, r.data FROM vectors v "
            "JOIN cases c ON c.case_pk = v.case_pk "
            "LEFT JOIN raw_inputs r ON r.case_pk = v.case_pk AND r.modality = v.modality "
            "WHERE v.model_version != ? AND v.vec_id > ? AND (? IS NULL OR v.modality = ?) ORDER BY v.vec_id LIMIT ?",
            (live_version, last, modality, modality, batch)).fetchall()
        if not rows:
            return
        for vec_id, case_id, mod, version, media, data in rows:
            yield StaleVector(case_id, mod, version, RawInput(bytes(data), media) if data is not None else None)
        last = rows[-1][0]
