"""Sharded embedding of a large corpus: `torchrun --nproc_per_node=N -m tribind.shard_embed ...`.

    torchrun --nproc_per_node=2 -m tribind.shard_embed --checkpoint default --data phantom:DIR --out SHARDS/
    tribind ingest vectors:SHARDS/            # (the shards, through the server)

Every rank reads the same SOURCE (any `open_source` string) in the same order and embeds the
records whose position modulo the world size is its rank, so no coordinator hands out work and
shards never overlap. Rank r writes `OUT/shard-<r>.npz` (ids, patient ids, study times, labels,
metadata, one [n, dim] array per modality with a `<modality>_mask`, model_version, the skipped
records and why) atomically; after a barrier, rank 0 writes `OUT/shards.json` listing them.
Without torchrun it runs as rank 0 of 1.

Across nodes the same command runs once per node with the rendezvous of torchrun, e.g. on each of
2 nodes: `torchrun --nnodes=2 --node_rank=<0|1> --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=HOST0:29500 -m tribind.shard_embed ... --out /shared/fs/SHARDS`; ranks are global,
so OUT must be a filesystem every node writes to. gloo (CPU) is the default backend; on GPUs each
rank uses cuda:<LOCAL_RANK> and the process group only carries the final barrier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m tribind.shard_embed",
                                description="Embed a data source in shards, one per rank.")
    p.add_argument("--data", required=True, help="SOURCE: phantom:DIR, a manifest, ptbxl:PATH, ... (see tribind inspect)")
    p.add_argument("--out", required=True, type=Path, help="folder for shard-<rank>.npz (shared across nodes)")
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint folder, 'default' (bundled) or 'none' (random init of --preset; tests only)")
    p.add_argument("--preset", default=None, help="preset (with --checkpoint none)")
    p.add_argument("--batch", type=int, default=32, help="inputs per forward pass (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N records of the source")
    p.add_argument("--backend", default=None, help="torch.distributed backend (default: nccl on GPUs, else gloo)")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error("--batch must be >= 1")
    if str(args.checkpoint).lower() == "none" and not args.preset:
        p.error("--checkpoint none needs --preset (e.g. tiny)")
    return args


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def load_bundle(checkpoint: str, preset: str | None) -> Any:
    import torch

    from encoders import create_model

    if str(checkpoint).lower() == "none":
        torch.manual_seed(0)  # every rank must build the same random model (and so the same model_version)
        return create_model(preset)
    return create_model(preset, checkpoint=checkpoint)


def prepare(bundle: Any, record: Any) -> dict[str, Any]:
    """The record's model inputs per modality present (the bundle's preprocessors: same path as serving)."""
    from encoders.preprocess.ecg import read_ecg

    inputs: dict[str, Any] = {}
    if record.xray_path:
        inputs["xray"] = bundle.preprocess_xray(record.xray_path)
    if record.ecg_path:
        ecg = read_ecg(record.ecg_path)
        inputs["ecg"] = bundle.preprocess_ecg(np.nan_to_num(ecg.signal), ecg.fs, ecg.lead_names)
    if record.report and record.report.strip():
        inputs["text"] = record.report.strip()
    return inputs


def encode(bundle: Any, modality: str, inputs: list[Any], device: Any) -> np.ndarray:
    import torch

    model = bundle.model
    with torch.inference_mode():
        if modality == "xray":
            out = model.encode_xray(torch.stack(inputs).to(device))
        elif modality == "ecg":
            out = model.encode_ecg(torch.stack([s for s, _ in inputs]).to(device),
                                   torch.stack([m for _, m in inputs]).to(device))
        else:
            tokens = bundle.tokenizer(list(inputs))
            out = model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
    return out.float().cpu().numpy()


class ShardWriter:
    """Accumulates one rank's cases and encodes them a batch per modality at a time."""

    def __init__(self, bundle: Any, batch: int, device: Any) -> None:
        self.bundle, self.batch, self.device = bundle, batch, device
        self.dim = int(bundle.config["embed_dim"])
        self.cases: list[Any] = []
        self.vectors = {m: [] for m in MODALITIES}        # list of (case row, vector)
        self.pending = {m: [] for m in MODALITIES}        # list of (case row, model input)
        self.skipped: list[tuple[str, str]] = []

    def add(self, record: Any) -> None:
        from encoders.errors import InvalidInputError

        try:
            inputs = prepare(self.bundle, record)
        except (InvalidInputError, OSError, ValueError) as exc:
            self.skipped.append((record.case_id, f"{type(exc).__name__}: {exc}"))
            return
        if not inputs:
            self.skipped.append((record.case_id, "no X-ray, ECG or report"))
            return
        row = len(self.cases)
        self.cases.append(record)
        for modality, value in inputs.items():
            self.pending[modality].append((row, value))
            if len(self.pending[modality]) >= self.batch:
                self.flush(modality)

    def flush(self, modality: str) -> None:
        items = self.pending[modality]
        if items:
            out = encode(self.bundle, modality, [v for _, v in items], self.device)
            self.vectors[modality].extend(zip((r for r, _ in items), out))
            self.pending[modality] = []

    def arrays(self) -> dict[str, np.ndarray]:
        for modality in MODALITIES:
            self.flush(modality)
        n = len(self.cases)
        data: dict[str, np.ndarray] = {
            "ids": np.array([c.case_id for c in self.cases], dtype=str),
            "patient_ids": np.array([c.patient_id or c.case_id for c in self.cases], dtype=str),
            "study_times": np.array([c.study_time or "" for c in self.cases], dtype=str),
            "labels": np.array([";".join(c.labels) for c in self.cases], dtype=str),
            "metadata": np.array([json.dumps({**{str(k): str(v) for k, v in (c.metadata or {}).items()},
                                              **({"split": c.split} if c.split else {})}, sort_keys=True)
                                  for c in self.cases], dtype=str),
            "model_version": np.array(str(self.bundle.model_version)),
            "skipped_ids": np.array([i for i, _ in self.skipped], dtype=str),
            "skipped_reasons": np.array([r for _, r in self.skipped], dtype=str),
        }
        for modality in MODALITIES:
            if not self.vectors[modality]:
                continue
            matrix = np.zeros((n, self.dim), dtype=np.float32)
            mask = np.zeros(n, dtype=bool)
            for row, vector in self.vectors[modality]:
                matrix[row] = vector
                mask[row] = True
            data[modality], data[f"{modality}_mask"] = matrix, mask
        return data


def write_shard(out: Path, rank: int, data: dict[str, np.ndarray]) -> Path:
    """`shard-<rank>.npz`, written to a temp name and renamed, so a reader never sees half a shard."""
    path = out / f"shard-{rank:05d}.npz"
    tmp = out / f".shard-{rank:05d}.tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, size, local_rank = world()
    import torch
    import torch.distributed as dist

    from training.data.sources import open_source

    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if not cuda:
        # N ranks on one host share its cores; torch's default (all cores per rank) oversubscribes them.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local))
    distributed = size > 1
    if distributed:
        dist.init_process_group(args.backend or ("nccl" if cuda else "gloo"))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        bundle = load_bundle(args.checkpoint, args.preset)
        bundle.model.to(device).eval()
        source = open_source(args.data, progress=False, **({"limit": args.limit} if args.limit else {}))
        writer = ShardWriter(bundle, args.batch, device)
        start = time.perf_counter()
        for position, record in enumerate(source):
            if position % size == rank:
                writer.add(record)
        data = writer.arrays()
        path = write_shard(args.out, rank, data)
        elapsed = time.perf_counter() - start
        print(f"rank {rank}/{size}: {len(data['ids'])} cases ({len(writer.skipped)} skipped) -> {path} "
              f"in {elapsed:.1f} s", file=sys.stderr, flush=True)
        if distributed:
            dist.barrier()
        if rank == 0:
            # Listed by rank, not globbed: a folder reused from a run with more ranks keeps stale shards.
            summary = {"world_size": size, "source": args.data, "model_version": bundle.model_version,
                       "shards": [f"shard-{r:05d}.npz" for r in range(size)]}
            (args.out / "shards.json").write_text(json.dumps(summary, indent=1))
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
