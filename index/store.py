"""`CaseStore`: the public API of the case store (SQLite is the truth, FAISS per modality is derived).

Concurrency: one writer at a time (`_write_lock`: SQLite write transaction, then the FAISS update);
searches run concurrently on per-thread SQLite connections (WAL readers never block on the writer)
and take the FAISS read lock only around `index.search`. FAISS is changed in place only for the
milliseconds of an add/remove; rebuilds are built aside and swapped in.

Growth: an IVF index that outgrows its training size (4x) is retrained *in a background thread*
(k-means and list assignment at 800k vectors take minutes on 2 cores; under the write lock they
stalled every write of a bulk import). Meanwhile the old index keeps serving and taking writes (its
scores stay exact, its lists just get longer); the new one is caught up with what SQLite recorded
since it started, exactly like a snapshot at start-up, and swapped in.

Hits: the case payload of each hit (id, patient, time, labels, metadata) is read from SQLite once and
kept in `index.hit_cache.HitCache` by vec_id; every committed write drops the whole cache before it
returns, so a search after a write sees exactly what SQLite holds.

Durability: a write returns only after its SQLite commit (WAL, synchronous=FULL). FAISS is updated
after the commit and may lag after a crash; start-up catches it up from SQLite (see `_open_index`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from index import case_rows
from index.errors import InvalidRequest, VersionMismatch
from index.faiss_index import IndexPolicy, ModalityIndex
from index.hit_cache import HitCache
from index.filters import admitted_rows_sql, is_exclusion_only, selection_sql
from index.records import (MODALITIES, Case, Embedding, ModalityStats, SearchFilter, SearchResult,
                           StaleVector, StoreStats)
from index.rwlock import ReadWriteLock
from index.search_plan import Paging, Selection, exact_subset, index_search
from index.snapshot import SnapshotInfo, load_index, read_sidecar, write_snapshot
from index.sqlite_schema import connect, create_schema
from index.thread_priority import lower_thread_priority
from index.validation import (REINDEX_HINT, check_modality, check_vector, validate_batch, validate_filter,
                              validate_paging)

log = logging.getLogger("tribind.index")

DB_NAME = "cases.sqlite3"
# A retraining aside catches up without the write lock (up to 3 rounds) while more than this many
# vectors were written since its last mark; the final catch-up under the lock is then small.
LOCKED_CATCH_UP_MAX = 20_000
UNLOCKED_CATCH_UPS = 3
SNAPSHOT_DIR = "faiss"


def _id_array(conn, sql: str, params: list) -> np.ndarray:
    """The ids a query lists, aggregated inside SQLite: one string, not one Python row per id."""
    text = conn.execute(f"SELECT group_concat(vec_id) FROM ({sql})", params).fetchone()[0]
    return np.array(text.split(","), dtype=np.int64) if text else np.empty(0, dtype=np.int64)


class CaseStore:
    """Cases, labels, metadata and embeddings of one model_version, searchable per modality."""

    def __init__(self, data_dir: str | Path, *, dim: int, model_version: str,
                 policy: IndexPolicy | None = None, max_k: int = 1000, hit_cache_size: int = 100_000) -> None:
        if not isinstance(model_version, str) or not model_version:
            raise InvalidRequest("model_version", "must be the loaded model's version string")
        if not isinstance(dim, int) or dim < 1:
            raise InvalidRequest("dim", f"must be a positive integer, got {dim!r}")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.model_version = model_version
        self.policy = policy or IndexPolicy()
        self.max_k = max_k
        self._db_path = self.data_dir / DB_NAME
        self._snapshot_dir = self.data_dir / SNAPSHOT_DIR
        self._writer = connect(self._db_path)
        create_schema(self._writer, dim)
        self._write_lock = threading.Lock()
        self._index_lock = ReadWriteLock()
        self._local = threading.local()
        self._readers: list = []
        self._readers_guard = threading.Lock()
        self._closed = False
        self._dirty = False
        self._versions: Counter = case_rows.version_counts(self._writer)
        # vec_id -> decoded hit payload; dropped on every committed write (see index.hit_cache)
        self._hits = HitCache(hit_cache_size)
        self._indexes: dict[str, ModalityIndex] = {}
        # modality -> (thread, removal mark it started from): IVF regrowths running aside
        self._growing: dict[str, tuple[threading.Thread, int]] = {}
        self.load_report: dict[str, str] = {}  # modality -> how its index was opened (for logs and tests)
        with self._write_lock:
            for modality in MODALITIES:
                self.load_report[modality] = self._open_index(modality)

    # ---- start-up and index maintenance (callers hold _write_lock) ----

    def _open_index(self, modality: str) -> str:
        """Load the snapshot and replay SQLite changes made after it; rebuild if it is not sound."""
        count = self._versions[(modality, self.model_version)]
        info = read_sidecar(self._snapshot_dir, modality)
        if info is None:
            return self._rebuild(modality, "rebuilt: no snapshot")
        if info.model_version != self.model_version or info.dim != self.dim:
            return self._rebuild(modality, f"rebuilt: snapshot is of model_version {info.model_version!r}")
        loaded = load_index(self._snapshot_dir, info)
        if loaded is None:
            return self._rebuild(modality, "rebuilt: snapshot file is corrupt or does not match its sidecar")
        index = ModalityIndex(info.kind, loaded, info.trained_for)
        removed = case_rows.removals_since(self._writer, modality, info.removal_hwm, info.vec_hwm)
        new_ids, new_vectors = case_rows.load_vectors(self._writer, modality, self.model_version, self.dim,
                                                      after_id=info.vec_hwm)
        if len(removed) and index.kind == "hnsw":
            return self._rebuild(modality, "rebuilt: hnsw snapshot has removals since")
        if len(removed):
            index.remove(removed)
        if len(new_ids):
            index.add(new_ids, new_vectors)
        if index.ntotal != count:
            return self._rebuild(modality, f"rebuilt: snapshot+catch-up holds {index.ntotal} vectors, SQLite {count}")
        self._indexes[modality] = index
        if self.policy.needs_rebuild(index.kind, index.trained_for, count, removing=False):
            if self._regrows(index, count):
                self._regrow_aside(modality)
                return f"snapshot (+{len(new_ids)} added, -{len(removed)} removed since; retraining ivf for {count} vectors aside)"
            return self._rebuild(modality, f"rebuilt: {index.kind} does not suit {count} vectors")
        self._dirty = self._dirty or bool(len(new_ids) or len(removed))
        return f"snapshot (+{len(new_ids)} added, -{len(removed)} removed since)"

    def _rebuild(self, modality: str, reason: str) -> str:
        ids, vectors = case_rows.load_vectors(self._writer, modality, self.model_version, self.dim)
        built = ModalityIndex.build(self.policy, self.dim, ids, vectors)
        with self._index_lock.write():
            self._indexes[modality] = built
        self._dirty = True
        return reason

    def _apply(self, changes: case_rows.Changes) -> None:
        """Mirror a committed SQLite write into FAISS."""
        versions = self._versions.copy()  # copy-on-write: searches read the old Counter meanwhile
        versions.update(changes.versions)
        self._versions = +versions
        self._dirty = True
        for modality in set(changes.added) | set(changes.removed):
            index = self._indexes[modality]
            removed = np.array(changes.removed.get(modality, []), dtype=np.int64)
            added = changes.added.get(modality, [])
            count = self._versions[(modality, self.model_version)]
            if self.policy.needs_rebuild(index.kind, index.trained_for, count, removing=len(removed) > 0):
                if not self._regrows(index, count):
                    self._rebuild(modality, "write")
                    continue
                self._regrow_aside(modality)  # and go on updating the current index meanwhile
            ids = np.array([i for i, _ in added], dtype=np.int64)
            vectors = np.stack([v for _, v in added]) if added else None
            try:
                lists = index.assign(vectors) if vectors is not None else None
                with self._index_lock.write():
                    if len(removed):
                        index.remove(removed)
                    if vectors is not None:
                        index.add_assigned(ids, vectors, lists)
            except (RuntimeError, MemoryError):
                # The write is committed (durable); an index that failed half-way is rebuilt from the truth.
                self._rebuild(modality, "write: incremental update failed")

    def _regrows(self, index: ModalityIndex, count: int) -> bool:
        """An IVF index that only grew past its training size: it stays correct, so retrain aside."""
        return index.kind == "ivf" and self.policy.kind_for(count) == "ivf"

    def _regrow_aside(self, modality: str) -> None:
        """Start retraining `modality`'s IVF index in a thread (caller holds _write_lock)."""
        if modality in self._growing or self._closed:
            return
        vec_hwm, removal_hwm = case_rows.high_water_marks(self._writer)
        thread = threading.Thread(target=self._build_aside, args=(modality, vec_hwm, removal_hwm),
                                  name=f"regrow-{modality}", daemon=True)
        self._growing[modality] = (thread, removal_hwm)
        thread.start()

    def _build_aside(self, modality: str, vec_hwm: int, removal_hwm: int) -> None:
        """Build from SQLite up to the marks, catch up, and swap in; the write lock is held only for
        the last catch-up, once what is left to add is small."""
        lower_thread_priority(self.policy.background_nice)  # searches meanwhile come first
        swapped = False
        try:
            ids, vectors = self._aside_rows(modality, 0, vec_hwm)
            built = ModalityIndex.build(self.policy, self.dim, ids, vectors)
            del ids, vectors
            for _ in range(UNLOCKED_CATCH_UPS):
                with self._write_lock:
                    if self._closed:
                        return
                    top_vec, top_rem = case_rows.high_water_marks(self._writer)
                if top_vec - vec_hwm <= LOCKED_CATCH_UP_MAX:
                    break
                # A bulk import kept writing while we trained: add what it wrote without the lock. Any
                # removal logged after `removal_hwm` is safe to apply early (vec_ids are never reused).
                conn = connect(self._db_path)
                try:
                    removed = case_rows.removals_since(conn, modality, removal_hwm, top_vec)
                finally:
                    conn.close()
                new_ids, new_vectors = self._aside_rows(modality, vec_hwm, top_vec)
                if len(removed):
                    built.remove(removed)
                if len(new_ids):
                    built.add(new_ids, new_vectors)
                vec_hwm, removal_hwm = top_vec, top_rem
            with self._write_lock:
                if not self._closed:
                    removed = case_rows.removals_since(self._writer, modality, removal_hwm, vec_hwm)
                    new_ids, new_vectors = case_rows.load_vectors(self._writer, modality, self.model_version,
                                                                  self.dim, after_id=vec_hwm)
                    if len(removed):
                        built.remove(removed)
                    if len(new_ids):
                        built.add(new_ids, new_vectors)
                    # A count that disagrees means the catch-up missed something: keep the sound old index.
                    if built.ntotal == self._versions[(modality, self.model_version)]:
                        with self._index_lock.write():
                            self._indexes[modality] = built
                        self._dirty = swapped = True
        except Exception:  # noqa: BLE001 - the old index is still correct; a later write retries
            log.exception("retraining the %s index aside failed; the current index stays in use", modality)
        finally:
            with self._write_lock:
                self._growing.pop(modality, None)
                # Writes went on while we trained: the new index may already be outgrown (a bulk import
                # from 200k to 1M). Retrain again now rather than wait for a write that may never come.
                current = self._indexes[modality]
                count = self._versions[(modality, self.model_version)]
                if swapped and not self._closed and self._regrows(current, count) and \
                        self.policy.needs_rebuild(current.kind, current.trained_for, count, removing=False):
                    self._regrow_aside(modality)
        if not swapped:
            log.warning("the retrained %s index was not swapped in; the current index stays in use", modality)

    def _aside_rows(self, modality: str, after_id: int, up_to: int) -> tuple[np.ndarray, np.ndarray]:
        conn = connect(self._db_path)
        try:
            return case_rows.load_vectors(conn, modality, self.model_version, self.dim, after_id=after_id, up_to=up_to)
        finally:
            conn.close()

    def wait_for_maintenance(self, timeout_s: float | None = None) -> bool:
        """Wait for background index retraining to finish; True when none is left running.

        Loops: a retraining that ends outgrown starts the next one before its thread exits."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._growing:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            for thread, _ in list(self._growing.values()):
                thread.join(left)
        return True

    # ---- connections ----

    def _reader(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._db_path)
            self._local.conn = conn
            with self._readers_guard:
                self._readers.append(conn)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the CaseStore is closed")

    # ---- writes ----

    def upsert(self, case: Case) -> None:
        """Insert or wholly replace one case (durable when this returns)."""
        self.upsert_many([case])

    def upsert_many(self, cases: Sequence[Case]) -> int:
        """Insert or wholly replace cases, all or nothing, in one transaction; returns how many.

        Idempotent by case_id. The whole batch is validated first: a rejected batch changes nothing.
        For bulk ingest send 5k-50k cases per call (one fsync per call).
        """
        self._check_open()
        items = validate_batch(cases, self.dim, self.model_version)
        if not items:
            return 0
        with self._write_lock:
            try:
                changes = case_rows.write_cases(self._writer, items, self.model_version)
            finally:
                self._hits.invalidate()
            self._apply(changes)
        return len(items)

    def update_vectors(self, case_id: str, vectors: Mapping[str, Embedding]) -> None:
        """Replace some modalities' vectors of a stored case (the reindex path); the rest stays."""
        self._check_open()
        if not isinstance(case_id, str) or not case_id:
            raise InvalidRequest("case_id", "must not be empty")
        if not isinstance(vectors, Mapping) or not vectors:
            raise InvalidRequest("vectors", "must map at least one modality to an index.Embedding")
        checked = {}
        for modality, embedding in vectors.items():
            field = f"vectors.{modality}"
            check_modality(field, modality)
            if not isinstance(embedding, Embedding):
                raise InvalidRequest(field, "must be an index.Embedding(vector, model_version)")
            if embedding.model_version != self.model_version:
                raise VersionMismatch(self.model_version, embedding.model_version,
                                      f"{field} must be embedded by the loaded model")
            checked[modality] = (check_vector(field, embedding.vector, self.dim), embedding.model_version)
        with self._write_lock:
            try:
                changes = case_rows.replace_vectors(self._writer, case_id, checked, self.model_version)
            finally:
                self._hits.invalidate()
            self._apply(changes)

    def delete(self, case_ids: str | Sequence[str], *, missing_ok: bool = False) -> int:
        """Delete cases and their vectors; unless missing_ok, an unknown id raises CaseNotFound and deletes nothing."""
        self._check_open()
        ids = [case_ids] if isinstance(case_ids, str) else list(case_ids)
        for i, case_id in enumerate(ids):
            if not isinstance(case_id, str) or not case_id.strip():
                raise InvalidRequest(f"case_ids[{i}]", "must be a non-empty string")
        if not ids:
            return 0
        with self._write_lock:
            try:
                deleted, changes = case_rows.delete_cases(self._writer, ids, self.model_version, missing_ok)
            finally:
                self._hits.invalidate()
            self._apply(changes)
        return deleted

    # ---- reads ----

    def get(self, case_id: str, *, include_raw: bool = False) -> Case:
        """The case with all its stored vectors (any model_version); raw inputs when asked for."""
        self._check_open()
        if not isinstance(case_id, str) or not case_id:
            raise InvalidRequest("case_id", "must not be empty")
        return case_rows.get_case(self._reader(), case_id, include_raw)

    def search(self, modality: str, vector: np.ndarray, k: int = 10, *, offset: int = 0,
               score_threshold: float | None = None, filter: SearchFilter | None = None,
               group_by_patient: bool = False, nprobe: int | None = None, ef_search: int | None = None,
               allow_stale: bool = False) -> SearchResult:
        """The k best cases by cosine of `vector` against the modality's stored vectors.

        Raises VersionMismatch while the modality holds vectors of another model_version (their
        cases would silently be missing from results) unless allow_stale.
        """
        self._check_open()
        check_modality("modality", modality)
        query = check_vector("vector", vector, self.dim)
        validate_paging(k, offset, score_threshold, self.max_k)
        search_filter = validate_filter(filter)
        versions = self._versions
        stale = {v: n for (m, v), n in versions.items() if m == modality and v != self.model_version and n > 0}
        if stale and not allow_stale:
            raise VersionMismatch(self.model_version, ", ".join(sorted(stale)),
                                  f"{sum(stale.values())} stored {modality} vectors are of another model. {REINDEX_HINT}")
        paging = Paging(k, offset, score_threshold, bool(group_by_patient))
        conn = self._reader()
        index = self._indexes[modality]
        if search_filter is None:
            hits = index_search(conn, modality, query, index, self._index_lock.read, paging, self.policy,
                                nprobe=nprobe, ef_search=ef_search, cache=self._hits)
            return SearchResult(hits[offset:offset + k], index.kind, None)
        sql, params = selection_sql(modality, self.model_version, search_filter)
        exclusion_only = is_exclusion_only(search_filter)
        if not exclusion_only and (small := self._small_selection(conn, sql, params)) is not None:
            hits = exact_subset(conn, modality, query, case_rows.vector_rows(conn, small), paging, self._hits)
            return SearchResult(hits[offset:offset + k], "exact-subset", len(small))
        if self.policy.postfilter_max_candidates:
            hits = index_search(conn, modality, query, index, self._index_lock.read, paging, self.policy,
                                nprobe=nprobe, ef_search=ef_search, post_filter=admitted_rows_sql(search_filter),
                                max_fetch=self.policy.postfilter_max_candidates)
            if hits is not None:
                return SearchResult(hits[offset:offset + k], f"{index.kind}+postfilter", None)
        if exclusion_only and (small := self._small_selection(conn, sql, params)) is not None:
            hits = exact_subset(conn, modality, query, case_rows.vector_rows(conn, small), paging, self._hits)
            return SearchResult(hits[offset:offset + k], "exact-subset", len(small))
        selected = _id_array(conn, sql, params)
        hits = index_search(conn, modality, query, index, self._index_lock.read, paging, self.policy,
                            nprobe=nprobe, ef_search=ef_search, selection=Selection.allowed(selected),
                            cache=self._hits)
        return SearchResult(hits[offset:offset + k], f"{index.kind}+selector", len(selected))

    def _small_selection(self, conn, sql: str, params: list) -> np.ndarray | None:
        """The selected ids if there are at most `exact_max_selected` (a LIMITed probe), else None."""
        limit = self.policy.exact_max_selected
        ids = _id_array(conn, sql + " LIMIT ?", params + [limit + 1])
        return ids if len(ids) <= limit else None

    def iter_stale(self, modality: str | None = None) -> Iterator[StaleVector]:
        """Stored vectors of another model_version, with their raw input when stored: feed for `tribind reindex`."""
        self._check_open()
        if modality is not None:
            check_modality("modality", modality)
        return case_rows.iter_stale(self._reader(), self.model_version, modality)

    def stats(self) -> StoreStats:
        self._check_open()
        conn = self._reader()
        cases, patients = conn.execute("SELECT COUNT(*), COUNT(DISTINCT patient_id) FROM cases").fetchone()
        versions = self._versions
        modalities = {}
        for modality in MODALITIES:
            index = self._indexes[modality]
            modalities[modality] = ModalityStats(
                vectors=versions[(modality, self.model_version)],
                indexed=index.ntotal,
                index_kind=index.kind if index.ntotal else "empty",
                stale={v: n for (m, v), n in versions.items() if m == modality and v != self.model_version and n > 0},
            )
        return StoreStats(cases, patients, self.model_version, str(self.data_dir), modalities)

    # ---- snapshots and lifetime ----

    def snapshot(self) -> dict[str, SnapshotInfo]:
        """Write every modality's FAISS index atomically with its sidecar; returns the sidecars."""
        self._check_open()
        with self._write_lock:
            vec_hwm, removal_hwm = case_rows.high_water_marks(self._writer)
            written = {}
            for modality, index in self._indexes.items():
                info = SnapshotInfo(modality, index.kind, index.ntotal, self.dim, self.model_version,
                                    vec_hwm, removal_hwm, index.trained_for, 0, 0)
                written[modality] = write_snapshot(self._snapshot_dir, index.index, info)
            # every sidecar now reflects removals up to removal_hwm: the log before it is no longer needed,
            # except by a retraining running aside, which catches up from the mark it started at
            prune = min([removal_hwm] + [mark for _, mark in self._growing.values()])
            self._writer.execute("DELETE FROM vector_removals WHERE seq <= ?", (prune,))
            self._dirty = False
        return written

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot (if anything changed) and close every connection."""
        if self._closed:
            return
        if snapshot:
            self.wait_for_maintenance()  # a retrained index is worth keeping: its snapshot spares the next start
        if snapshot and self._dirty:
            self.snapshot()
        with self._write_lock:  # let a write in flight finish first
            self._closed = True
            with self._readers_guard:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._writer.close()

    def __enter__(self) -> "CaseStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
