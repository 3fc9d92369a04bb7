"""The decoded hit payload of each vector (its case's id, patient, time, labels, metadata), cached.

A search hydrates every candidate it walks from SQLite (`case_rows.HIT_ROWS_SQL`) and decodes two JSON
columns per hit; under load that was the largest cost of `CaseStore.search` after FAISS itself. The
payload only changes when its case is written, so the store keeps it here, keyed by vec_id, and drops
the whole cache on every committed write (`invalidate`, called by the store under its write lock,
after the commit and before the write returns).

Consistency: a lookup that missed reads SQLite and stores what it read only if no write committed
since the lookup began (the generation is unchanged), so a row read from a snapshot older than a
write can never outlive that write's invalidation. A search that starts after a write returned
therefore sees exactly what SQLite holds, as without the cache. Filtered (post-filter) candidate
tests still go to SQLite: they test the filter there.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from itertools import islice

from index.case_rows import HIT_ROWS_SQL

# (case_id, patient_id, study_time, labels, metadata): labels decoded to a tuple, metadata to a dict
# that callers must copy before handing out (see search_plan.collect).
Payload = tuple[str, str, "str | None", tuple, dict]


class HitCache:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = max(0, int(capacity))
        self._rows: dict[int, Payload] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self) -> None:
        """Forget everything (a write committed): later lookups read SQLite again."""
        with self._lock:
            self._generation += 1
            self._rows = {}

    def lookup(self, conn: sqlite3.Connection, vec_ids: Sequence[int]) -> dict[int, Payload]:
        """vec_id -> payload for the ids still in SQLite (as `case_rows.hit_rows`, decoded)."""
        generation = self._generation  # read before the cache and before SQLite (see the module doc)
        rows = self._rows
        found: dict[int, Payload] = {}
        missing: list[int] = []
        for vec_id in vec_ids:
            payload = rows.get(vec_id)
            if payload is None:
                missing.append(vec_id)
            else:
                found[vec_id] = payload
        if not missing:
            return found
        fetched = {vec_id: (case_id, patient_id, study_time, tuple(json.loads(labels)), json.loads(metadata))
                   for vec_id, case_id, patient_id, study_time, labels, metadata
                   in conn.execute(HIT_ROWS_SQL, (json.dumps(missing),))}
        found.update(fetched)
        if fetched and self.capacity:
            with self._lock:
                if self._generation == generation:
                    current = self._rows
                    overflow = len(current) + len(fetched) - self.capacity
                    if overflow > 0:  # drop the oldest entries (dicts keep insertion order)
                        for vec_id in list(islice(iter(current), overflow)):
                            del current[vec_id]
                    current.update(islice(fetched.items(), self.capacity))
        return found
