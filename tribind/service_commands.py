"""`tribind serve` and the client commands (ingest, search, classify, get, delete, stats, reindex).

The client commands go through the SDK (`service.client.TribindClient`) like any other program would.
This module is also where data sources meet the service: `serve --seed-cases` and `ingest` turn
phantom cases and `CaseRecord`s into API `Case` messages (the service itself never imports `training`).
torch, grpc and the readers are imported inside the functions, so `tribind --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "127.0.0.1:50051"
PHANTOM_SEED = 0
# Seeded/ingested phantom X-rays are rendered (and stored, as PNG) at the tiny model's input size:
# the default checkpoint was trained on phantoms of this size, and rendering costs grow with the
# pixel count (2,000 seeded cases must take a minute or two on a laptop, not ten).
PHANTOM_XRAY_SIZE = 128
# Phantom ECGs are synthesised at 500 Hz; 100 Hz (PTB-XL's low-rate release, the tiny model's rate)
# keeps every clinically used band below 50 Hz and a fifth of the bytes in the library.
PHANTOM_ECG_RATE_HZ = 100
UPSERT_BATCH = 32
EFFUSION_LABELS = ("pleural_effusion_left", "pleural_effusion_right")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_serve(subparsers)
    _register_ingest(subparsers)
    _register_search(subparsers)
    _register_classify(subparsers)
    _register_get(subparsers)
    _register_delete(subparsers)
    _register_stats(subparsers)
    _register_reindex(subparsers)


# ---------------------------------------------------------------------------------------------
# argument parsing


def _client_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--server", default=os.environ.get("TRIBIND_SERVER", DEFAULT_SERVER),
                       help="HOST:PORT of the server (default: $TRIBIND_SERVER, else %(default)s)")
    group.add_argument("--api-key", default=os.environ.get("TRIBIND_API_KEY"),
                       help="API key sent as 'authorization: Bearer KEY' (default: $TRIBIND_API_KEY)")
    group.add_argument("--tls-ca", type=Path, default=None,
                       help="PEM root certificate: connect with TLS and trust this CA (or the server's own certificate)")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def _query_flags(parser: argparse.ArgumentParser, vector: bool) -> None:
    group = parser.add_argument_group("query (exactly one)")
    group.add_argument("--text", help="report text or a finding, e.g. 'large left pleural effusion'")
    group.add_argument("--xray", type=Path, help="PNG, JPEG or DICOM file")
    group.add_argument("--ecg", help="WFDB record path without extension (RECORD.hea + its signal file)")
    group.add_argument("--case", dest="case_id", help="a stored case id (with --modality)")
    group.add_argument("--modality", choices=("xray", "ecg", "text"), help="which of the case's inputs (--case, --vector-file)")
    if vector:
        group.add_argument("--vector-file", type=Path, help=".npy float32 vector from Embed (with --modality)")


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the gRPC server over a case library",
                              description="Run the gRPC server. Health turns SERVING once the model and library are loaded.")
    p.add_argument("--data-dir", type=Path, required=True, help="library folder (created when missing)")
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to bind (default: %(default)s)")
    p.add_argument("--seed-cases", type=int, default=0, help="seed this many phantom cases when the library is empty")
    p.add_argument("--seed", type=int, default=PHANTOM_SEED, help="phantom population seed (default: %(default)s)")
    p.add_argument("--preset", default=None, help="model preset (default: the checkpoint's own config)")
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint folder, 'default' (bundled) or 'none' (random init of --preset; tests only)")
    p.add_argument("--workers", type=int, default=8, help="RPC worker threads (default: %(default)s)")
    p.add_argument("--max-concurrent-rpcs", type=int, default=32,
                   help="RPCs in flight before RESOURCE_EXHAUSTED (default: %(default)s)")
    p.add_argument("--max-message-mb", type=float, default=64.0, help="message size limit, both directions (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=32, help="inputs per encoder forward pass (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long an input waits for a batch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch/FAISS threads (default: the cores available)")
    p.add_argument("--max-k", type=int, default=1000, help="largest page of hits (default: %(default)s)")
    p.add_argument("--api-keys-file", type=Path, help="read-write API keys, one per line (also $TRIBIND_SERVER_API_KEYS, comma-separated)")
    p.add_argument("--read-only-keys-file", type=Path,
                   help="read-only API keys, one per line (also $TRIBIND_SERVER_READ_ONLY_KEYS)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--grace-s", type=float, default=10.0, help="SIGTERM drain period (default: %(default)s)")
    p.add_argument("--retrain-wait-s", type=float, default=120.0,
                   help="SIGTERM: how long an index retraining running aside may take to finish, so that the "
                        "snapshot keeps it (default: %(default)s)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=run_serve)


def _register_ingest(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ingest", help="add cases from a data source to the server's library",
                              description="Add cases to the library. SOURCE: 'phantom' (with --cases), a manifest "
                                          "path, or a reader string such as ptbxl:/data/ptbxl (see tribind inspect).")
    p.add_argument("source", help="'phantom', a manifest .csv/.jsonl/.parquet, KIND:PATH, or precomputed "
                                  "vectors as vectors:FILE.npy|.npz|.parquet|SHARD_DIR")
    p.add_argument("--cases", type=int, default=100, help="phantom: how many cases (default: %(default)s)")
    p.add_argument("--seed", type=int, default=PHANTOM_SEED, help="phantom population seed (default: %(default)s)")
    p.add_argument("--start", type=int, default=None,
                   help="phantom: first case index (default: after the 1,000,000 ids that serve --seed-cases uses)")
    p.add_argument("--limit", type=int, default=None, help="reader sources: at most this many records")
    p.add_argument("--batch", type=int, default=UPSERT_BATCH, help="cases per Upsert request (default: %(default)s)")
    _client_flags(p)
    p.set_defaults(func=run_ingest)


def _register_search(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="find cases nearest to an X-ray, ECG, text, stored case or vector")
    _query_flags(p, vector=True)
    p.add_argument("--target", action="append", choices=("xray", "ecg", "text"),
                   help="modality to search (repeatable; default: all)")
    p.add_argument("-k", type=int, default=10, help="hits per page (default: %(default)s)")
    p.add_argument("--offset", type=int, default=0, help="hits to skip (paging)")
    p.add_argument("--threshold", type=float, default=None, help="drop hits scoring below this cosine")
    f = p.add_argument_group("filter")
    f.add_argument("--labels-any", default="", help="comma-separated: the case has at least one")
    f.add_argument("--labels-all", default="", help="comma-separated: the case has every one")
    f.add_argument("--labels-none", default="", help="comma-separated: the case has none")
    f.add_argument("--patient-in", default="", help="comma-separated patient ids")
    f.add_argument("--patient-not-in", default="", help="comma-separated patient ids")
    f.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata equals (repeatable)")
    f.add_argument("--time-from", default="", help="study time >= this ISO 8601 time")
    f.add_argument("--time-to", default="", help="study time < this ISO 8601 time")
    p.add_argument("--exclude-self", action="store_true", help="with --case: leave out the query case")
    p.add_argument("--exclude-patient", action="store_true", help="with --case: leave out the query's patient")
    p.add_argument("--group-by-patient", action="store_true", help="page over patients (best hit each)")
    _client_flags(p)
    p.set_defaults(func=run_search)


def _register_classify(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("classify", help="zero-shot labels of an X-ray, ECG, text or stored case")
    _query_flags(p, vector=False)
    p.add_argument("--label-set", default=None, help="built-in label set (default: phantom); see --list")
    p.add_argument("--labels", default=None, help="comma-separated custom labels instead of a label set")
    p.add_argument("--top-k", type=int, default=0, help="show only the best N labels")
    p.add_argument("--list", action="store_true", help="list the built-in label sets and exit")
    _client_flags(p)
    p.set_defaults(func=run_classify)


def _register_get(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("get", help="show a stored case; save its X-ray or ECG")
    p.add_argument("case_id")
    p.add_argument("--save-xray", type=Path, help="write the stored X-ray (PNG, or the JPEG as ingested) here")
    p.add_argument("--save-ecg", type=Path, help="write the stored ECG as .npz (signal [leads, samples] mV, fs, lead_names)")
    p.add_argument("--vectors", action="store_true", help="include the stored vectors (JSON output)")
    _client_flags(p)
    p.set_defaults(func=run_get)


def _register_delete(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("delete", help="remove cases from the library")
    p.add_argument("case_ids", nargs="+")
    p.add_argument("--ignore-missing", action="store_true", help="unknown ids are not an error")
    _client_flags(p)
    p.set_defaults(func=run_delete)


def _register_stats(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("stats", help="library size, index kind, model version, data directory")
    _client_flags(p)
    p.set_defaults(func=run_stats)


def _register_reindex(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reindex", help="re-embed the library with the served model (after a model change)")
    _client_flags(p)
    p.set_defaults(func=run_reindex)


# ---------------------------------------------------------------------------------------------
# sources -> API cases


def phantom_to_case(case: Any) -> Any:
    """A `training.phantom.PhantomCase` as an API `Case` (PNG X-ray, 100 Hz ECG, report)."""
    import io

    import numpy as np
    from PIL import Image
    from scipy.signal import resample_poly

    from protos.tribind.v1 import tribind_pb2 as pb
    from service.client_types import ecg_signal

    attributes = case.attributes or {}
    metadata = {"source": "phantom"}
    for key in ("sex", "age", "habitus"):
        if attributes.get(key) is not None:
            metadata[key] = str(attributes[key])
    message = pb.Case(case_id=case.case_id, patient_id=case.patient_id, study_time=case.study_time or "",
                      labels=list(case.labels), metadata=metadata, report=case.report or "")
    if case.xray is not None:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(case.xray, dtype=np.uint8)).save(buffer, format="PNG", optimize=False)
        message.xray.data = buffer.getvalue()
    if case.ecg is not None:
        fs = int(case.ecg_fs)
        signal = np.asarray(case.ecg, dtype=np.float32)
        if fs % PHANTOM_ECG_RATE_HZ == 0 and fs > PHANTOM_ECG_RATE_HZ:
            signal = resample_poly(signal, 1, fs // PHANTOM_ECG_RATE_HZ, axis=1).astype(np.float32)
            fs = PHANTOM_ECG_RATE_HZ
        message.ecg.signal.CopyFrom(ecg_signal(signal, fs, list(case.lead_names)))
    return message


def phantom_cases(n: int, seed: int, start: int = 0, chunk: int = 32) -> Iterator[Any]:
    """`n` phantom cases as API `Case`s, generated chunk by chunk in a background thread so that
    rendering the next chunk overlaps embedding the current one."""
    import queue
    import threading

    from training.phantom import generate_cases

    ready: queue.Queue = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for first in range(start, start + n, chunk):
                count = min(chunk, start + n - first)
                cases = generate_cases(count, seed, xray_size=PHANTOM_XRAY_SIZE, workers=1, start=first)
                ready.put([phantom_to_case(c) for c in cases])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            ready.put(exc)
            return
        ready.put(None)

    threading.Thread(target=produce, name="phantom-seed", daemon=True).start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield from item


def record_to_case(record: Any) -> Any:
    """A `training.data.records.CaseRecord` as an API `Case` (files read, ECG as WFDB bytes or samples)."""
    import numpy as np

    from encoders.preprocess.ecg import read_ecg
    from protos.tribind.v1 import tribind_pb2 as pb
    from service.client_types import ecg_signal, wfdb_record

    message = pb.Case(case_id=record.case_id, patient_id=record.patient_id or record.case_id,
                      study_time=record.study_time or "", labels=list(record.labels),
                      metadata={str(k): str(v) for k, v in (record.metadata or {}).items()},
                      report=record.report or "")
    if record.split:
        message.metadata["split"] = record.split
    if record.xray_path:
        message.xray.data = Path(record.xray_path).read_bytes()
    if record.ecg_path:
        base = Path(record.ecg_path)
        base = base.with_suffix("") if base.suffix in (".hea", ".dat") else base
        if base.with_suffix(".dat").is_file() and base.with_suffix(".hea").is_file():
            message.ecg.wfdb.CopyFrom(wfdb_record(base))
        else:  # e.g. CinC .mat records: decode here and send the samples (gaps as 0 mV)
            ecg = read_ecg(record.ecg_path)
            message.ecg.signal.CopyFrom(ecg_signal(np.nan_to_num(ecg.signal), ecg.fs, ecg.lead_names))
    return message


# ---------------------------------------------------------------------------------------------
# serve


def run_serve(args: argparse.Namespace) -> int:
    from service.auth import ApiKeys, read_keys_file, split_keys
    from service.config import MIB, ServerConfig
    from service.server import TribindServer

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    read_write = split_keys(os.environ.get("TRIBIND_SERVER_API_KEYS"))
    read_only = split_keys(os.environ.get("TRIBIND_SERVER_READ_ONLY_KEYS"))
    if args.api_keys_file:
        read_write += read_keys_file(args.api_keys_file)
    if args.read_only_keys_file:
        read_only += read_keys_file(args.read_only_keys_file)
    checkpoint = None if str(args.checkpoint).lower() == "none" else args.checkpoint
    config = ServerConfig(
        data_dir=args.data_dir, listen=args.listen, preset=args.preset, checkpoint=checkpoint,
        workers=args.workers, max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_message_bytes=int(args.max_message_mb * MIB), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_k=args.max_k, api_keys=ApiKeys(read_write, read_only), tls_cert=args.tls_cert, tls_key=args.tls_key,
        grace_s=args.grace_s, retrain_wait_s=args.retrain_wait_s, **({"threads": args.threads} if args.threads else {}),
    )
    server = TribindServer(config)
    port = server.start()
    server.install_signal_handlers()
    auth = f"{len(read_write)} read-write and {len(read_only)} read-only API keys" if config.api_keys.enabled else "no auth"
    print(f"tribind: listening on {_host(args.listen)}:{port} ({'TLS' if args.tls_cert else 'plaintext'}, {auth}); "
          "loading model and library (health NOT_SERVING until ready)", file=sys.stderr, flush=True)

    seed_cases = phantom_cases(args.seed_cases, args.seed) if args.seed_cases > 0 else None
    bar = None
    if seed_cases is not None:
        from tqdm import tqdm

        bar = tqdm(total=args.seed_cases, desc="seeding phantom cases", unit="case", file=sys.stderr,
                   disable=None, mininterval=1.0)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    import time

    from encoders.errors import InvalidInputError

    started = time.monotonic()
    try:
        seeded = server.load(seed_cases, args.seed_cases, progress)
    except (InvalidInputError, OSError) as exc:  # a missing checkpoint, an unreadable data directory
        server.stop(grace_s=0)
        print(f"tribind: error: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    load_s = time.monotonic() - started
    if bar is not None:
        bar.close()
    if server.stopping:  # SIGTERM while loading or seeding: what was seeded is committed
        server.wait()
        print(f"tribind: stopped during start-up after seeding {seeded} cases", file=sys.stderr, flush=True)
        return 0
    stats = server.servicer.store.stats()
    target = f"{_host(args.listen)}:{port}"
    print(f"tribind: SERVING on {target}: {stats.cases} cases ({seeded} seeded; ready in {load_s:.0f} s), "
          f"model {server.servicer.model.model_version}, data in {config.data_dir.resolve()}", flush=True)
    for line in _example_commands(server, target, config):
        print(line, flush=True)
    server.wait()
    print("tribind: stopped (library snapshot written)", file=sys.stderr, flush=True)
    return 0


def _host(listen: str) -> str:
    return listen.rsplit(":", 1)[0]


def _tribind_command() -> str:
    """How another terminal runs this tribind: `make serve` does not put .venv/bin on that terminal's PATH."""
    import shutil

    beside = Path(sys.executable).parent / "tribind"
    on_path = shutil.which("tribind")
    if on_path and beside.is_file() and Path(on_path).resolve() == beside.resolve():
        return "tribind"
    if beside.is_file():
        return str(beside.absolute())
    return f"{sys.executable} -m tribind"


def _example_commands(server: Any, target: str, config: Any) -> list[str]:
    """Three commands that work against this library as printed: a real case id and X-ray file of it."""
    from index.records import SearchFilter

    servicer = server.servicer
    store, model = servicer.store, servicer.model
    stats = store.stats()
    server_flag = "" if target == DEFAULT_SERVER else f" --server {target}"
    if stats.cases == 0:
        return [f"library is empty: add cases with `tribind ingest phantom --cases 100{server_flag}`"]
    stale = sum(sum(m.stale.values()) for m in stats.modalities.values())
    if stale:
        return [f"{stale} stored vectors are from another model: searches answer FAILED_PRECONDITION until you run "
                f"`tribind reindex{server_flag}`"]
    # Prefer a case with an ECG and an X-ray showing an effusion that the served model's zero-shot
    # labelling puts in its top 2: then all three examples show what they are meant to show.
    query = model.embed([model.prepare_text("pleural effusion", "example")])[0]
    phantom = servicer.labels.builtin("phantom")
    candidates = []
    for labels in (EFFUSION_LABELS, ()):
        hits = store.search("xray", query, k=50, filter=SearchFilter(labels_any=labels) if labels else None,
                            allow_stale=True).hits
        for hit in hits:
            case = store.get(hit.case_id, include_raw=True)
            if "ecg" in case.vectors and "xray" in case.raw:
                candidates.append(case)
        if candidates:
            break
    example = candidates[0] if candidates else None
    for case in candidates:
        top2 = [s.label for s in servicer.labels.score(phantom, case.vectors["xray"].vector, "xray")[:2]]
        if set(top2) & set(EFFUSION_LABELS):
            example = case
            break
    if example is None:
        return ["(no case with both an X-ray and an ECG to build examples from)"]
    examples_dir = config.data_dir / "examples"
    examples_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".jpg" if example.raw["xray"].media_type == "image/jpeg" else ".png"
    image_path = (examples_dir / f"{example.case_id}{suffix}").resolve()
    image_path.write_bytes(example.raw["xray"].data)
    key_flag = " --api-key \"$TRIBIND_API_KEY\"" if config.api_keys.enabled else ""
    tls_flag = f" --tls-ca {config.tls_cert}" if config.tls_cert else ""
    extra = f"{server_flag}{key_flag}{tls_flag}"
    exe = _tribind_command()
    return [
        "try, from another terminal:",
        f"  {exe} search --text \"large left pleural effusion\" --target xray -k 10{extra}",
        f"  {exe} classify --xray {image_path} --label-set phantom{extra}",
        f"  {exe} search --case {example.case_id} --modality ecg --target xray -k 5{extra}",
    ]


# ---------------------------------------------------------------------------------------------
# client commands


def _client(args: argparse.Namespace) -> Any:
    from service.client import TribindClient

    return TribindClient(args.server, args.api_key, root_certificates=args.tls_ca, timeout_s=args.timeout)


def _fail(message: str) -> int:
    print(f"tribind: error: {message}", file=sys.stderr)
    return 2


def _rpc(fn: Any) -> Any:
    """Run a client command; SDK errors become one readable line and exit status 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        from service.client import TribindError

        try:
            return fn(args)
        except TribindError as exc:
            print(f"tribind: {exc.code.name}: {exc.message}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ValueError) as exc:
            return _fail(str(exc))

    return wrapper


def _build_query(args: argparse.Namespace, allow_vector: bool) -> Any:
    import numpy as np

    from service.client_types import case_ref, ecg_item, text_item, vector, xray_item

    given = [name for name in ("text", "xray", "ecg", "case_id", "vector_file") if getattr(args, name, None)]
    if len(given) != 1:
        raise ValueError("give exactly one query: --text, --xray, --ecg, --case" + (" or --vector-file" if allow_vector else ""))
    if args.text:
        return text_item(args.text)
    if args.xray:
        return xray_item(args.xray)
    if args.ecg:
        return ecg_item(record=args.ecg)
    if not args.modality:
        raise ValueError("--case and --vector-file need --modality xray|ecg|text")
    if args.case_id:
        return case_ref(args.case_id, args.modality)
    return vector(np.load(args.vector_file).astype(np.float32).reshape(-1), args.modality)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [[str(c) for c in row] for row in [header] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _hit_dict(hit: Any) -> dict:
    return {"case_id": hit.case_id, "patient_id": hit.patient_id, "modality": hit.modality,
            "score": round(hit.score, 6), "labels": hit.labels, "metadata": hit.metadata,
            "study_time": hit.study_time}


@_rpc
def run_search(args: argparse.Namespace) -> int:
    from service.client_types import SearchFilter

    query = _build_query(args, allow_vector=True)
    meta = {}
    for pair in args.meta:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--meta {pair!r}: write KEY=VALUE")
        meta[key] = value
    search_filter = SearchFilter(
        labels_any=_csv(args.labels_any), labels_all=_csv(args.labels_all), labels_none=_csv(args.labels_none),
        patient_in=_csv(args.patient_in), patient_not_in=_csv(args.patient_not_in), metadata_equals=meta,
        time_from=args.time_from, time_to=args.time_to,
    )
    with _client(args) as client:
        result = client.search(query, targets=args.target or (), k=args.k, offset=args.offset,
                               score_threshold=args.threshold, filter=search_filter,
                               exclude_query_case=args.exclude_self, exclude_query_patient=args.exclude_patient,
                               group_by_patient=args.group_by_patient)
    if args.json:
        out: dict[str, Any] = {"model_version": result.model_version, "hits": [_hit_dict(h) for h in result.hits]}
        if args.group_by_patient:
            out["groups"] = [{"patient_id": p, "hits": [_hit_dict(h) for h in hs]} for p, hs in result.groups.items()]
        _print_json(out)
        return 0
    rows = [[args.offset + i + 1, f"{h.score:.4f}", h.case_id, h.patient_id, h.modality, ",".join(h.labels) or "-"]
            for i, h in enumerate(result.hits)]
    _table(rows, ["#", "score", "case_id", "patient", "modality", "labels"])
    return 0


@_rpc
def run_classify(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.list:
            sets = client.list_label_sets()
            if args.json:
                _print_json([{"name": s.name, "description": s.description, "labels": list(s.labels)} for s in sets])
            else:
                _table([[s.name, len(s.labels), s.description[:70]] for s in sets], ["label_set", "labels", "description"])
            return 0
        subject = _build_query(args, allow_vector=False)
        if args.labels:
            result = client.classify(subject, labels=_csv(args.labels), top_k=args.top_k)
        else:
            result = client.classify(subject, label_set=args.label_set or "phantom", top_k=args.top_k)
    if args.json:
        _print_json({"label_set": result.label_set, "modality": result.modality, "model_version": result.model_version,
                     "labels": [{"label": s.label, "score": round(s.score, 6), "probability": round(s.probability, 6)}
                                for s in result.labels]})
        return 0
    print(f"{result.label_set} labels for a {result.modality} (model {result.model_version})")
    _table([[i + 1, s.label, f"{s.probability:.3f}", f"{s.score:+.4f}"] for i, s in enumerate(result.labels)],
           ["#", "label", "probability", "score"])
    return 0


@_rpc
def run_get(args: argparse.Namespace) -> int:
    import numpy as np

    with _client(args) as client:
        case = client.get_case(args.case_id, include_media=True, include_vectors=args.vectors)
    saved = {}
    if args.save_xray:
        if case.xray is None:
            raise ValueError(f"case {case.case_id} has no stored X-ray")
        args.save_xray.write_bytes(case.xray)
        saved["xray"] = str(args.save_xray)
    if args.save_ecg:
        if case.ecg is None:
            raise ValueError(f"case {case.case_id} has no stored ECG")
        signal, fs, leads = case.ecg
        with open(args.save_ecg, "wb") as handle:
            np.savez(handle, signal=signal, fs=np.float64(fs), lead_names=np.asarray(leads, dtype=str))
        saved["ecg"] = str(args.save_ecg)
    info = {
        "case_id": case.case_id, "patient_id": case.patient_id, "study_time": case.study_time,
        "labels": case.labels, "metadata": case.metadata, "modalities": case.modalities,
        "model_version": case.model_version, "report": case.report,
        "xray_bytes": len(case.xray) if case.xray else 0,
        "ecg": {"leads": case.ecg[2], "sampling_rate_hz": case.ecg[1], "n_samples": int(case.ecg[0].shape[1])}
        if case.ecg else None,
        "saved": saved,
    }
    if args.vectors:
        info["vectors"] = {m: v.round(6).tolist() for m, v in case.vectors.items()}
    if args.json:
        _print_json(info)
        return 0
    for key in ("case_id", "patient_id", "study_time", "model_version"):
        print(f"{key:>13}: {info[key]}")
    print(f"{'labels':>13}: {', '.join(case.labels) or '-'}")
    print(f"{'modalities':>13}: {', '.join(case.modalities)}")
    print(f"{'metadata':>13}: {json.dumps(case.metadata)}")
    if case.xray:
        print(f"{'xray':>13}: {len(case.xray)} bytes" + (f" -> {saved['xray']}" if "xray" in saved else " (--save-xray FILE)"))
    if case.ecg:
        e = info["ecg"]
        print(f"{'ecg':>13}: {len(e['leads'])} leads x {e['n_samples']} samples at {e['sampling_rate_hz']:g} Hz"
              + (f" -> {saved['ecg']}" if "ecg" in saved else " (--save-ecg FILE.npz)"))
    if case.report:
        print(f"{'report':>13}:")
        for line in case.report.splitlines():
            print(f"    {line}")
    return 0


@_rpc
def run_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        deleted = client.delete(args.case_ids, ignore_missing=args.ignore_missing)
    if args.json:
        _print_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} case(s)")
    return 0


@_rpc
def run_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.stats()
    info = {"cases": stats.cases, "patients": stats.patients, "vectors": stats.vectors, "index_kind": stats.index_kind,
            "model_version": stats.model_version, "dim": stats.dim, "data_dir": stats.data_dir}
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>13}: {value}")
    return 0


@_rpc
def run_reindex(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    with _client(args) as client:
        bar = tqdm(desc="reindex", unit="vec", file=sys.stderr, disable=None)
        last = None
        for progress in client.reindex():
            bar.total = int(progress.total)
            bar.update(int(progress.done) - bar.n)
            last = progress
        bar.close()
    info = {"reembedded": int(last.done) if last else 0, "stale": int(last.total) if last else 0,
            "skipped_without_raw": int(last.skipped) if last else 0, "model_version": last.model_version if last else ""}
    if args.json:
        _print_json(info)
    else:
        print(f"re-embedded {info['reembedded']} of {info['stale']} stale vectors "
              f"({info['skipped_without_raw']} without a stored input) with model {info['model_version']}")
    return 0


@_rpc
def _ingest_vectors(args: argparse.Namespace) -> int:
    """Precomputed vectors (no re-embedding): bigger requests than raw cases, two in flight."""
    from tqdm import tqdm

    from tribind.vector_sources import ingest_vector_source, open_vector_source

    vsource = open_vector_source(args.source)
    # A raw case carries images and signals; a vector row is ~1 KB, so the default batch is larger.
    batch_size = 512 if args.batch == UPSERT_BATCH else args.batch
    with _client(args) as client:
        bar = tqdm(total=vsource.total, desc=f"ingest {args.source}", unit="case", file=sys.stderr, disable=None)
        written = ingest_vector_source(client, vsource, batch_size, 2, bar.update)
        bar.close()
        stats = client.stats()
    if args.json:
        _print_json({"ingested": written, "skipped": [], "library_cases": stats.cases})
    else:
        print(f"ingested {written} case(s) from {args.source}; the library now holds {stats.cases}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch < 1:
        raise ValueError("--batch must be >= 1")
    if args.source.startswith("vectors:"):
        return _ingest_vectors(args)
    if args.source == "phantom":
        if args.cases < 1:
            raise ValueError("--cases must be >= 1")
        # serve --seed-cases uses indices 0..N-1; ingest defaults past them so it adds new cases.
        start = 1_000_000 if args.start is None else args.start
        cases: Any = phantom_cases(args.cases, args.seed, start=start)
        total: int | None = args.cases
        source = None
    else:
        from training.data.sources import open_source

        source = open_source(args.source, **({"limit": args.limit} if args.limit else {}), progress=False)
        cases = (record_to_case(record) for record in source)
        total = source.total
    written = 0
    with _client(args) as client:
        bar = tqdm(total=total, desc=f"ingest {args.source}", unit="case", file=sys.stderr, disable=None)
        batch: list = []
        for case in cases:
            batch.append(case)
            if len(batch) >= args.batch:
                client.upsert(batch)
                written += len(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            client.upsert(batch)
            written += len(batch)
            bar.update(len(batch))
        bar.close()
        stats = client.stats()
    skipped = list(source.skipped) if source is not None else []
    if args.json:
        _print_json({"ingested": written, "skipped": [{"record": r, "reason": why} for r, why in skipped],
                     "library_cases": stats.cases})
    else:
        print(f"ingested {written} case(s) from {args.source}; the library now holds {stats.cases}")
        if skipped:
            print(f"skipped {len(skipped)} record(s), e.g. {skipped[0][0]}: {skipped[0][1]}")
    return 0
