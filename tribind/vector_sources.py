"""Precomputed vectors on disk (`.npy`, `.npz`, Parquet) read in bounded batches, for `tribind ingest`.

SOURCE strings: `vectors:PATH` (a file, or a folder of `shard-*.npz` from `tribind.shard_embed`) with
options after `?`, e.g. `vectors:emb.npy?modality=xray&model_version=3f2a...&id_prefix=nih-`.

Layouts (rows are cases; a vector row must already be L2-normalised, as the store rejects others):
- `.npy`: float32 [N, dim] of one modality (`modality=` required). Ids: `PATH.ids.txt` (one per line)
  when present, else `{id_prefix}{row}` (id_prefix defaults to the file stem plus "-").
- `.npz`: `ids` [N] str, one array per modality present (`xray`, `ecg`, `text`: [N, dim]; or `vectors` with
  `modality=`), optional `{modality}_mask` bool [N] (False: the case has no such vector), `patient_ids`,
  `study_times`, `labels` (";"-joined), `metadata` (JSON objects), `model_version` (0-d str). This is
  what `tribind.shard_embed` writes.
- Parquet: column `case_id`, one list<float32> column per modality (`xray`/`ecg`/`text`, or `vector`
  with `modality=`; null = missing), optional `patient_id`, `study_time`, `labels` (list<string> or
  ";"-joined), `metadata` (JSON string), `model_version` (column or file key-value metadata). Read
  row group by row group, so memory stays at one batch however large the file.
`.npy` is memory-mapped: a 1M x 256 file costs no RAM until a batch is read.

The model_version must be the served model's: vectors of another model are refused by the store
(FAILED_PRECONDITION), so a file without one needs `model_version=` in the SOURCE.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from encoders.errors import InvalidInputError

MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")
PREFIX = "vectors:"
NORM_TOLERANCE = 1e-3  # the store's own tolerance (index.validation.NORM_TOLERANCE)
OPTIONS = ("modality", "model_version", "id_prefix")


@dataclass
class VectorBatch:
    """Up to `batch_size` cases: ids, their metadata, and per modality the rows that have a vector."""

    case_ids: list[str]
    patient_ids: list[str]
    study_times: list[str | None]
    labels: list[tuple[str, ...]]
    metadata: list[dict[str, str]]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)        # modality -> float32 [n, dim]
    present: dict[str, np.ndarray] = field(default_factory=dict)        # modality -> bool [n] (rows with a vector)

    def __len__(self) -> int:
        return len(self.case_ids)


@dataclass
class VectorSource:
    """An opened vector file (or shard folder): what it holds, and `batches(n)` to read it."""

    path: Path
    files: list[Path]
    total: int
    dim: int
    modalities: tuple[str, ...]
    model_version: str | None
    options: dict[str, str]

    def batches(self, batch_size: int) -> Iterator[VectorBatch]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size", f"must be a positive integer, got {batch_size!r}")
        for file in self.files:
            yield from _READERS[_kind(file)](file, batch_size, self.options)


def is_vector_source(source: str) -> bool:
    return str(source).startswith(PREFIX)


def parse_vector_source(source: str) -> tuple[Path, dict[str, str]]:
    """'vectors:PATH?k=v' -> (PATH, options); unknown options are refused."""
    text = str(source)
    if text.startswith(PREFIX):
        text = text[len(PREFIX):]
    options: dict[str, str] = {}
    if "?" in text:
        text, query = text.split("?", 1)
        options = dict(parse_qsl(query, keep_blank_values=True))
    _check_options(options)
    if not text:
        raise InvalidInputError("source", "no path; pass vectors:FILE.npy, vectors:FILE.parquet or vectors:SHARD_DIR")
    return Path(text).expanduser(), options


def _check_options(options: dict[str, str]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError("source", f"unknown option(s) {unknown}; vector sources take {', '.join(OPTIONS)}")
    if options.get("modality") not in (None, *MODALITIES):
        raise InvalidInputError("source.modality", f"is {options['modality']!r}; use one of {', '.join(MODALITIES)}")


def open_vector_source(source: str | Path, **options: str) -> VectorSource:
    """Open a vector SOURCE (see module docstring); keyword options override `?k=v` ones."""
    path, parsed = parse_vector_source(str(source))
    merged = {**parsed, **{k: v for k, v in options.items() if v is not None}}
    _check_options(merged)
    if path.is_dir():
        listing = path / "shards.json"
        if listing.is_file():  # written by shard_embed's rank 0: exactly this run's shards
            files = [path / name for name in json.loads(listing.read_text())["shards"]]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise InvalidInputError("source", f"{path} lacks {', '.join(missing)} listed in shards.json; "
                                        "re-run the ranks that failed")
        else:
            files = sorted(path.glob("shard-*.npz"), key=_shard_number)
        if not files:
            raise InvalidInputError("source", f"{path} holds no shard-*.npz files; run tribind.shard_embed into it first")
    elif path.is_file():
        files = [path]
    else:
        raise InvalidInputError("source", f"{path} does not exist")
    total, dims, modalities, versions = 0, set(), set(), set()
    for file in files:
        n, dim, mods, version = _DESCRIBE[_kind(file)](file, merged)
        total += n
        dims.add(dim)
        modalities.update(mods)
        versions.add(version)
    if len(dims) > 1:
        raise InvalidInputError("source", f"files of {path} hold vectors of different sizes {sorted(dims)}; ingest one model's vectors")
    if len({v for v in versions if v}) > 1:
        raise InvalidInputError("source", f"files of {path} were embedded by different models {sorted(v for v in versions if v)}")
    version = merged.get("model_version") or next((v for v in versions if v), None)
    return VectorSource(path, files, total, dims.pop(), tuple(m for m in MODALITIES if m in modalities), version, merged)


def iter_vector_batches(source: str | Path, batch_size: int, **options: str) -> Iterator[VectorBatch]:
    """Every case of a vector SOURCE in batches of at most `batch_size` (checked as they are read)."""
    yield from open_vector_source(source, **options).batches(batch_size)


def batch_to_cases(batch: VectorBatch, model_version: str) -> list[Any]:
    """A batch as API `Case` messages with precomputed vectors (what the Upsert RPC takes)."""
    from protos.tribind.v1 import tribind_pb2 as pb
    from service.modalities import MODALITY_TO_PB

    cases = []
    rows = {m: (batch.vectors[m], batch.present[m]) for m in batch.vectors}
    for i, case_id in enumerate(batch.case_ids):
        message = pb.Case(case_id=case_id, patient_id=batch.patient_ids[i], study_time=batch.study_times[i] or "",
                          labels=list(batch.labels[i]), metadata=batch.metadata[i])
        for modality, (matrix, present) in rows.items():
            if present[i]:
                message.vectors.append(pb.Vector(modality=MODALITY_TO_PB[modality], values=matrix[i].tolist(),
                                                 model_version=model_version))
        cases.append(message)
    return cases


def ingest_vector_source(client: Any, source: VectorSource, batch_size: int = 512, inflight: int = 2,
                         progress: Callable[[int], None] | None = None) -> int:
    """Upsert every case of `source` through a `TribindClient`; returns the cases written.

    `inflight` requests overlap, so building the next request here runs while the server commits the
    last one. Upsert is idempotent by case_id,
    so an interrupted ingest is resumed by running it again.
    """
    if not source.model_version:
        raise InvalidInputError("source.model_version", f"{source.path.name} does not say which model embedded it; "
                                "add ?model_version=... (the served one: tribind stats)")
    written = 0
    with ThreadPoolExecutor(max_workers=max(1, inflight), thread_name_prefix="ingest") as pool:
        pending: deque = deque()
        for batch in source.batches(batch_size):
            pending.append((pool.submit(client.upsert, batch_to_cases(batch, source.model_version)), len(batch)))
            while len(pending) >= max(1, inflight):
                written += _settle(pending, progress)
        while pending:
            written += _settle(pending, progress)
    return written


def _settle(pending: deque, progress: Callable[[int], None] | None) -> int:
    future, n = pending.popleft()
    future.result()  # re-raises the server's error (e.g. InvalidArgument naming the case)
    if progress is not None:
        progress(n)
    return n


def batch_to_store_cases(batch: VectorBatch, model_version: str) -> list[Any]:
    """A batch as `index.Case`s, for loading a store directly (offline, no server holding it open)."""
    from index import Case, Embedding

    return [Case(case_id, batch.patient_ids[i], batch.study_times[i], batch.labels[i], batch.metadata[i],
                 {m: Embedding(batch.vectors[m][i], model_version) for m in batch.vectors if batch.present[m][i]})
            for i, case_id in enumerate(batch.case_ids)]


# ---- per format -----------------------------------------------------------------------------

def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz", ".parquet"):
        return suffix[1:]
    raise InvalidInputError("source", f"{path.name}: unsupported vector file; use .npy, .npz or .parquet")


def _shard_number(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _checked(name: str, matrix: np.ndarray, first_row: int, present: np.ndarray | None = None) -> np.ndarray:
    """float32 rows, finite and unit-norm where present; the error names the file and row to fix."""
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise InvalidInputError(name, f"has shape {matrix.shape}; expected [rows, dim]")
    rows = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    bad = ~np.isfinite(norms) | (np.abs(norms - 1.0) > NORM_TOLERANCE)
    if present is not None:
        bad &= present
    if bad.any():
        i = int(np.argmax(bad))
        what = "contains NaN or Inf" if not np.isfinite(norms[i]) else f"has L2 norm {norms[i]:.6g}"
        raise InvalidInputError(f"{name}[{first_row + i}]", f"{what}; vectors must be L2-normalised "
                                "embeddings of the served model (divide each row by its norm, or re-embed)")
    return rows


def _ids_from_sidecar(path: Path, n: int) -> list[str] | None:
    sidecar = path.with_name(path.name + ".ids.txt")
    if not sidecar.is_file():
        return None
    ids = sidecar.read_text().splitlines()
    if len(ids) != n:
        raise InvalidInputError(sidecar.name, f"lists {len(ids)} ids for {n} vectors; write one id per row")
    return ids


def _need_modality(path: Path, options: dict[str, str]) -> str:
    modality = options.get("modality")
    if modality is None:
        raise InvalidInputError("source.modality", f"{path.name} holds one unnamed matrix; add ?modality=xray|ecg|text")
    return modality


def _plain_batch(ids: list[str]) -> VectorBatch:
    n = len(ids)
    return VectorBatch(list(ids), list(ids), [None] * n, [()] * n, [{} for _ in range(n)])


def _describe_npy(path: Path, options: dict[str, str]) -> tuple[int, int, set[str], str | None]:
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2:
        raise InvalidInputError(path.name, f"has shape {matrix.shape}; expected [rows, dim]")
    return matrix.shape[0], matrix.shape[1], {_need_modality(path, options)}, None


def _read_npy(path: Path, batch_size: int, options: dict[str, str]) -> Iterator[VectorBatch]:
    modality = _need_modality(path, options)
    matrix = np.load(path, mmap_mode="r")
    n = matrix.shape[0]
    ids = _ids_from_sidecar(path, n)
    prefix = options.get("id_prefix", f"{path.stem}-")
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        batch = _plain_batch(ids[start:stop] if ids is not None else [f"{prefix}{i}" for i in range(start, stop)])
        batch.vectors[modality] = _checked(path.name, matrix[start:stop], start)
        batch.present[modality] = np.ones(stop - start, dtype=bool)
        yield batch


def _npz_matrices(path: Path, npz: Any, options: dict[str, str]) -> dict[str, str]:
    """modality -> array name in the npz."""
    names = {m: m for m in MODALITIES if m in npz.files}
    if "vectors" in npz.files:
        names[_need_modality(path, options)] = "vectors"
    if not names:
        raise InvalidInputError(path.name, f"holds no vectors (arrays: {', '.join(npz.files)}); "
                                "store them as xray / ecg / text [N, dim], or as vectors with ?modality=")
    if "ids" not in npz.files:
        raise InvalidInputError(path.name, "has no ids array; save the case ids as ids=[N] strings")
    return names


def _describe_npz(path: Path, options: dict[str, str]) -> tuple[int, int, set[str], str | None]:
    with np.load(path, allow_pickle=False) as npz:
        names = _npz_matrices(path, npz, options)
        n = len(npz["ids"])
        dims = set()
        for modality, name in names.items():
            shape = npz[name].shape
            if len(shape) != 2 or shape[0] != n:
                raise InvalidInputError(f"{path.name}:{name}", f"has shape {shape}; expected [{n}, dim] (one row per id)")
            dims.add(shape[1])
        if len(dims) != 1:
            raise InvalidInputError(path.name, f"modalities have different vector sizes {sorted(dims)}")
        version = str(npz["model_version"]) if "model_version" in npz.files else None
        return n, dims.pop(), set(names), version


def _read_npz(path: Path, batch_size: int, options: dict[str, str]) -> Iterator[VectorBatch]:
    with np.load(path, allow_pickle=False) as npz:
        names = _npz_matrices(path, npz, options)
        arrays = {key: npz[key] for key in npz.files}
    ids = [str(x) for x in arrays["ids"]]
    n = len(ids)

    def column(key: str) -> list[str] | None:
        return [str(x) for x in arrays[key]] if key in arrays else None

    patients, times, labels, metadata = column("patient_ids"), column("study_times"), column("labels"), column("metadata")
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        part = slice(start, stop)
        batch = VectorBatch(
            ids[part],
            patients[part] if patients else ids[part],
            [t or None for t in times[part]] if times else [None] * (stop - start),
            [tuple(x for x in s.split(";") if x) for s in labels[part]] if labels else [()] * (stop - start),
            [_metadata(f"{path.name}:metadata[{start + i}]", s) for i, s in enumerate(metadata[part])]
            if metadata else [{} for _ in range(stop - start)],
        )
        for modality, name in names.items():
            mask = arrays.get(f"{modality}_mask")
            present = np.asarray(mask[part], dtype=bool) if mask is not None else np.ones(stop - start, dtype=bool)
            batch.vectors[modality] = _checked(f"{path.name}:{name}", arrays[name][part], start, present)
            batch.present[modality] = present
        yield batch


def _metadata(field_name: str, text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidInputError(field_name, "is not JSON; store metadata as a JSON object of strings") from None
    if not isinstance(value, dict):
        raise InvalidInputError(field_name, "must be a JSON object of string to string")
    return {str(k): str(v) for k, v in value.items()}


def _parquet_columns(path: Path, schema: Any, options: dict[str, str]) -> dict[str, str]:
    names = {m: m for m in MODALITIES if m in schema.names}
    if "vector" in schema.names:
        names[_need_modality(path, options)] = "vector"
    if not names:
        raise InvalidInputError(path.name, f"has no vector column (columns: {', '.join(schema.names)}); "
                                "name it xray / ecg / text, or vector with ?modality=")
    if "case_id" not in schema.names:
        raise InvalidInputError(path.name, "has no case_id column")
    return names


def _describe_parquet(path: Path, options: dict[str, str]) -> tuple[int, int, set[str], str | None]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    schema = handle.schema_arrow
    names = _parquet_columns(path, schema, options)
    first = handle.read_row_group(0, columns=list(names.values())) if handle.num_row_groups else None
    dims = set()
    for name in names.values():
        column = first.column(name).drop_null() if first is not None else None
        if column is not None and len(column):
            dims.add(len(column[0]))
    if len(dims) > 1:
        raise InvalidInputError(path.name, f"vector columns have different sizes {sorted(dims)}")
    meta = handle.metadata.metadata or {}
    version = meta.get(b"model_version", b"").decode() or None
    return handle.metadata.num_rows, dims.pop() if dims else 0, set(names), version


def _read_parquet(path: Path, batch_size: int, options: dict[str, str]) -> Iterator[VectorBatch]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    names = _parquet_columns(path, handle.schema_arrow, options)
    start = 0
    for table in handle.iter_batches(batch_size=batch_size):
        n = table.num_rows
        data = {name: table.column(name) for name in table.schema.names}
        ids = [str(x) for x in data["case_id"].to_pylist()]
        labels: list[tuple[str, ...]] = [()] * n
        if "labels" in data:
            raw = data["labels"].to_pylist()
            labels = [tuple(v) if isinstance(v, list) else tuple(x for x in (v or "").split(";") if x) for v in raw]
        batch = VectorBatch(
            ids,
            [str(p) if p else ids[i] for i, p in enumerate(data["patient_id"].to_pylist())] if "patient_id" in data else list(ids),
            [t or None for t in data["study_time"].to_pylist()] if "study_time" in data else [None] * n,
            labels,
            [_metadata(f"{path.name}:metadata[{start + i}]", s) for i, s in enumerate(data["metadata"].to_pylist())]
            if "metadata" in data else [{} for _ in range(n)],
        )
        for modality, name in names.items():
            column = data[name]
            present = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            filled = column.filter(present) if not present.all() else column
            flat = np.asarray(filled.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
            count = int(present.sum())
            if count and flat.size % count:
                raise InvalidInputError(f"{path.name}:{name}", "rows have different lengths; every vector needs the model's dim")
            dim = flat.size // count if count else 1
            matrix = np.zeros((n, dim), dtype=np.float32)
            if count:
                matrix[present] = flat.reshape(count, dim)
            batch.vectors[modality] = _checked(f"{path.name}:{name}", matrix, start, present)
            batch.present[modality] = present
        start += n
        yield batch


_DESCRIBE = {"npy": _describe_npy, "npz": _describe_npz, "parquet": _describe_parquet}
_READERS = {"npy": _read_npy, "npz": _read_npz, "parquet": _read_parquet}
