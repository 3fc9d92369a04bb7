"""Atomic FAISS snapshots with a sidecar, and the test that tells a sound snapshot from a stale one.

Write order: index to a temp file, fsync, `os.replace`, fsync the directory; then the sidecar the same
way. The sidecar carries the index file's size and CRC32, so a crash between the two replaces (new
index, old sidecar) or a truncated/corrupt file is detected and the index is rebuilt from SQLite.
The sidecar also records the SQLite high-water marks (largest vec_id, last removal seq) so start-up
replays only what happened after the snapshot.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss

SIDECAR_FORMAT = 1


@dataclass(frozen=True)
class SnapshotInfo:
    modality: str
    kind: str
    count: int
    dim: int
    model_version: str
    vec_hwm: int          # largest vectors.vec_id the index reflects
    removal_hwm: int      # largest vector_removals.seq the index reflects
    trained_for: int
    size: int
    crc32: int
    format: int = SIDECAR_FORMAT


def index_path(folder: Path, modality: str) -> Path:
    return folder / f"{modality}.faiss"


def sidecar_path(folder: Path, modality: str) -> Path:
    return folder / f"{modality}.json"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_crc32(path: Path, chunk: int = 1 << 24) -> tuple[int, int]:
    """(size, crc32) of a file, streamed so a 1 GB index does not need 1 GB more RAM."""
    crc, size = 0, 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, crc


def write_atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_snapshot(folder: Path, index: faiss.Index, info: SnapshotInfo) -> SnapshotInfo:
    """Write the index then its sidecar atomically; returns the sidecar as written (with size and CRC)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = index_path(folder, info.modality)
    tmp = target.with_name(target.name + ".tmp")
    faiss.write_index(index, str(tmp))
    _fsync_file(tmp)
    size, crc = file_crc32(tmp)
    os.replace(tmp, target)
    _fsync_dir(folder)
    written = SnapshotInfo(**{**asdict(info), "size": size, "crc32": crc})
    write_atomic_bytes(sidecar_path(folder, info.modality), json.dumps(asdict(written), indent=1).encode())
    return written


def read_sidecar(folder: Path, modality: str) -> SnapshotInfo | None:
    """The sidecar, or None when it is missing or unreadable (either way: rebuild)."""
    try:
        data = json.loads(sidecar_path(folder, modality).read_text())
        info = SnapshotInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    return info if info.format == SIDECAR_FORMAT and info.modality == modality else None


def load_index(folder: Path, info: SnapshotInfo) -> faiss.Index | None:
    """The snapshot's index if the file is exactly the one the sidecar describes, else None."""
    path = index_path(folder, info.modality)
    try:
        if path.stat().st_size != info.size or file_crc32(path) != (info.size, info.crc32):
            return None
        index = faiss.read_index(str(path))
    except (OSError, RuntimeError):
        return None
    return index if index.ntotal == info.count and index.d == info.dim else None
