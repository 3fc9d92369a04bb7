"""The case store: SQLite (WAL) is the truth; one FAISS index per modality is derived from it."""

from index.errors import CaseNotFound, InvalidRequest, StoreError, VersionMismatch
from index.faiss_index import IndexPolicy
from index.records import (MODALITIES, Case, Embedding, Hit, ModalityStats, RawInput, SearchFilter,
                           SearchResult, StaleVector, StoreStats)
from index.store import CaseStore

__all__ = [
    "CaseStore", "IndexPolicy", "Case", "Embedding", "RawInput", "SearchFilter", "Hit", "SearchResult",
    "StoreStats", "ModalityStats", "StaleVector", "MODALITIES",
    "StoreError", "InvalidRequest", "CaseNotFound", "VersionMismatch",
]
