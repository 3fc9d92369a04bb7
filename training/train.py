"""The training loop: AdamW, warm-up + cosine, clipping, bf16 autocast (GPU, and CPUs with native bf16), checkpoint + resume, torchrun.

One process: `tribind train ...`. Several: `torchrun --nproc_per_node N -m tribind train ...`
(gloo on CPU, NCCL on GPU). Every rank holds the whole (in-memory) data set and takes its slice of
each global batch; the loss gathers embeddings across ranks (open_clip's ClipLoss, local_loss +
gather_with_grad), so negatives come from the global batch.

The output folder is a checkpoint directory (config.json, model.safetensors, model_version.txt, loadable
with `create_model(None, checkpoint=DIR)`) plus `train_state.pt` (fp32 weights, optimizer, schedule,
RNG: what `--resume` needs) and `metrics.jsonl` (one JSON object per logged step and per epoch).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from encoders.checkpoint import resolve_checkpoint, save_state
from encoders.config import check_label_targets, label_target_shares
from encoders.errors import InvalidInputError
from encoders.factory import ModelBundle, create_model
from encoders.loss import TriModalLoss
from encoders.sentences import split_sentences
from training.augment import Augmentation
from training.case_tensors import CaseTensors
from training.precision import autocast, fastest_precision, resolve_precision
from training.schedule import adamw_groups, warmup_cosine
from training.side_swap import side_swap_loss, side_swap_table

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
MODALITIES = ("xray", "ecg", "text")


@dataclass
class TrainOptions:
    preset: str | None = "tiny"     # ignored with init_from: the checkpoint's own config is trained
    init_from: str | None = None    # start from this checkpoint ("default" = the bundled one), not random init
    freeze: tuple[str, ...] = ()    # towers (with their projection heads) left as they are: "xray", "ecg", "text"
    cache_frozen: bool = True       # embed frozen towers' cases once, in eval mode (see frozen_embedding_cache)
    data: str = "phantom"            # "phantom" or a manifest CSV path
    case_cache: str | None = None    # phantom: keep prepared cases in this folder between runs (training/case_cache.py)
    cases: int = 3000                # phantom: how many cases; manifest: at most this many (0 = all)
    seed: int = 0
    out: str = "runs/tiny"
    epochs: int = 8
    batch_size: int = 64             # per process
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 40
    grad_clip: float = 1.0
    missing_rate: float = 0.15       # phantom only
    sentence_sampling: float = 0.0   # share of reports replaced, per step, by 1-3 of their sentences
    augment: bool = False            # shift/re-level films, roll/scale ECGs per step (training/augment.py)
    side_swap: float = 0.0           # weight of the side-swapped-report hard negatives (training/side_swap.py)
    label_targets: dict[str, float] | None = None  # {text pair: share} over the config's loss.label_targets
    label_set: str | None = None     # vocabulary for the loss's label-aware targets (None: phantom for phantom data)
    split: str | None = "train"      # manifest only: rows of this split (None = all)
    threads: int | None = None       # torch CPU threads per process (None: leave torch's default)
    precision: str = "auto"          # forward pass: bf16 on CUDA, the faster one (measured) on CPUs with native bf16, else fp32
    resume: bool = False
    log_every: int = 10
    max_minutes: float | None = None  # time budget: the cosine decay fits in it; stop (and save) at its end
    progress: bool = True


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return _Dist(rank=rank, world=world, device=device)


def load_training_data(bundle: ModelBundle, opts: TrainOptions, world: int = 1, main: bool = True) -> CaseTensors:
    if opts.data == "phantom":
        # Under torchrun every rank generates the cases; a process pool per rank would oversubscribe.
        workers = 1 if world > 1 else None
        if opts.case_cache:
            from training.case_cache import cached_phantom_case_tensors

            # One writer: ranks that draw the same cases need not race for the same file.
            return cached_phantom_case_tensors(bundle, opts.cases, opts.seed, opts.missing_rate, opts.case_cache,
                                               workers=workers, write=main)
        from training.phantom_dataset import phantom_case_tensors

        return phantom_case_tensors(bundle, opts.cases, opts.seed, missing_rate=opts.missing_rate, workers=workers)
    if not Path(opts.data).is_file():
        raise InvalidInputError("data", f"{opts.data} is neither 'phantom' nor a manifest file; "
                                "write one with `tribind phantom` or a data reader")
    from training.manifest_dataset import manifest_case_tensors

    return manifest_case_tensors(bundle, opts.data, split=opts.split, limit=opts.cases or None)


def sample_sentences(report: str, generator: torch.Generator, most: int = 3) -> str:
    """1..`most` of the report's sentences, in their order.

    Why: zero-shot prompts are single short statements ("no pneumothorax"), while every training
    report is a long mix of findings, negations and filler in which nearly every finding's word
    occurs, mostly negated. Pairing an image with a few of its report's sentences now and then teaches
    the text tower to place one statement, negation included, where the images it describes lie
    (sentence sampling as in CXR-CLIP, You et al. 2023). A sampled text describes its image only in
    part, so most steps keep the whole report.
    """
    sentences = split_sentences(report)
    if len(sentences) <= 1:
        return report
    k = int(torch.randint(1, min(most, len(sentences)) + 1, (1,), generator=generator))
    chosen = sorted(torch.randperm(len(sentences), generator=generator)[:k].tolist())
    return " ".join(sentences[i] for i in chosen)


def _batch_inputs(bundle: ModelBundle, data: CaseTensors, idx: torch.Tensor, device: torch.device,
                  sentence_sampling: float = 0.0, generator: torch.Generator | None = None,
                  augmentation: Augmentation | None = None, report_tokens: list[np.ndarray | None] | None = None,
                  skip: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Model inputs for the present rows of each modality, and the [B] presence flags.

    With `sentence_sampling` > 0 that share of the reports is replaced by a few of their sentences
    (`sample_sentences`); those rows are marked uncacheable for the text tower's prefix cache.
    With an `augmentation`, films and ECGs are changed per step (training/augment.py).
    `report_tokens` (`tokenise_reports`) saves tokenising the same reports every epoch: ~20 ms of a
    ~550 ms CPU step; only sampled sentences are tokenised then. Modalities in `skip` get no inputs (their
    embeddings come from `frozen_embedding_cache`); their presence flags are returned as usual."""
    present = {m: data.present(m)[idx] for m in MODALITIES}
    batch: dict[str, torch.Tensor] = {}
    if (sentence_sampling > 0 or augmentation is not None) and generator is None:
        generator = torch.Generator().manual_seed(0)
    if present["xray"].any() and "xray" not in skip:
        pixels = data.pixels[idx[present["xray"]]].float()
        if augmentation is not None:
            pixels = augmentation.xray(pixels, generator)
        batch["pixels"] = pixels.to(device)
    if present["ecg"].any() and "ecg" not in skip:
        rows = idx[present["ecg"]]
        signals = data.signals[rows]
        if augmentation is not None:
            signals = augmentation.ecg(signals, float(bundle.config["ecg"]["sample_rate"]), generator)
        batch["signals"] = signals.to(device)
        batch["lead_mask"] = data.lead_mask[rows].to(device)
    if present["text"].any() and "text" not in skip:
        reports = [data.reports[int(i)] for i in idx[present["text"]]]
        sampled = [False] * len(reports)
        if sentence_sampling > 0:
            draws = torch.rand(len(reports), generator=generator).tolist()
            for j, draw in enumerate(draws):
                if draw < sentence_sampling:
                    reports[j], sampled[j] = sample_sentences(reports[j], generator), True
        if report_tokens is None:
            tokens = bundle.tokenizer(reports)
        else:
            rows = [report_tokens[int(i)] for i in idx[present["text"]]]
            fresh = [j for j, s in enumerate(sampled) if s]
            for j, ids in zip(fresh, bundle.tokenizer.encode_each([reports[j] for j in fresh])):
                rows[j] = ids
            tokens = bundle.tokenizer.pad(rows)
        batch.update({k: v.to(device) for k, v in tokens.items()})
        batch["text_cache_rows"] = torch.tensor([not s for s in sampled], dtype=torch.bool, device=device)
    return batch, {m: p.to(device) for m, p in present.items()}


def tokenise_reports(bundle: ModelBundle, reports: list[str | None]) -> list[np.ndarray | None]:
    """Each report's token ids once, for `_batch_inputs` (None where a case has no report).
    int32 arrays: a hospital corpus of 10^5 reports as Python int lists would take gigabytes."""
    present = [i for i, r in enumerate(reports) if r]
    tokens: list[np.ndarray | None] = [None] * len(reports)
    for i, ids in zip(present, bundle.tokenizer.encode_each([reports[i] for i in present])):
        tokens[i] = np.asarray(ids, dtype=np.int32)
    return tokens


def findings_by_modality(data: CaseTensors, label_set: str) -> dict[str, torch.Tensor]:
    """{"xray": [N, K] bool, "ecg": [N, K'] bool}: which of the labels each modality can show are on
    each case (the loss's label-aware targets compare cases by these; labels outside the set are ignored)."""
    from encoders.labelsets import load_labelset

    labels = load_labelset(label_set)
    out = {}
    for modality in ("xray", "ecg"):
        ids = [label.id for label in labels.for_modality(modality, include_both=False)]
        out[modality] = torch.tensor([[i in case for i in ids] for case in data.labels], dtype=torch.bool).reshape(
            len(data), len(ids))
    return out


def _label_findings(data: CaseTensors, opts: TrainOptions, share: float) -> dict[str, torch.Tensor] | None:
    if share <= 0.0:
        return None
    name = opts.label_set or ("phantom" if opts.data == "phantom" else None)
    if name is None:
        raise InvalidInputError("label_set", f"the preset's loss.label_targets is {share}: name the label set the "
                                "manifest's labels come from (--label-set chexpert14, ptbxl_super, ...), or use a "
                                "preset with label_targets 0")
    findings = findings_by_modality(data, name)
    if not any(bool(f.any()) for f in findings.values()):
        raise InvalidInputError("label_set", f"no case carries a label of {name!r} that an X-ray or ECG shows; "
                                "name the label set the data's labels come from")
    return findings


def epoch_batches(data: CaseTensors, seed: int, global_batch: int, window: int = 8) -> list[torch.Tensor]:
    """One epoch of global batches: random, except that each batch holds reports of similar length.

    Cases are shuffled, then sorted by report length within windows of `window` batches, cut into
    batches, and the batches shuffled. A batch pads to its longest report, so random batches spend
    ~30% of the text tower's work on padding; the phantom decouples report length from findings, so
    the negatives within a batch stay as varied as in a random batch. Incomplete batches are dropped
    (every rank must gather the same number of rows).
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    order = order[: (len(order) // global_batch) * global_batch]
    lengths = torch.tensor([len(r) if r else -1 for r in data.reports])
    missing = lengths < 0
    if missing.any() and (~missing).any():
        # Cases without a report get a random real length, so they spread over batches instead of
        # filling one batch that has no text pair at all.
        pool = lengths[~missing]
        lengths[missing] = pool[torch.randint(len(pool), (int(missing.sum()),), generator=generator)]
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), global_batch * window):
        part = order[start:start + global_batch * window]
        batches.extend(part[torch.argsort(lengths[part], stable=True)].split(global_batch))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def cached_towers(opts: TrainOptions, frozen_towers: tuple[str, ...]) -> tuple[str, ...]:
    """The frozen towers whose embeddings `frozen_embedding_cache` computes once: those whose inputs do
    not change per step."""
    if not opts.cache_frozen:
        return ()
    varies = {"xray": opts.augment, "ecg": opts.augment, "text": opts.sentence_sampling > 0}
    return tuple(m for m in frozen_towers if not varies[m])


def probe_precision(model: torch.nn.Module, bundle: ModelBundle, data: CaseTensors, batch_size: int,
                    ctx: _Dist, skip: tuple[str, ...],
                    report_tokens: list[np.ndarray | None] | None) -> tuple[str, dict[str, float]]:
    """`tribind train --precision auto` on a CPU with native bf16: the faster of bf16 and fp32 for a
    forward+backward of a batch of this run's cases, its first `batch_size` (why measure, and how:
    training.precision.fastest_precision).

    The probe leaves no trace: the torch RNG is restored and the gradients dropped, and the towers
    have no batch statistics to move. Every rank probes; rank 0's answer is broadcast so that all
    train in one precision."""
    batch, _ = _batch_inputs(bundle, data, torch.arange(batch_size), ctx.device, report_tokens=report_tokens,
                             skip=skip)
    rng = torch.get_rng_state()

    def step(precision: str) -> None:
        with autocast(precision, ctx.device):
            emb = model(batch)
        outputs = [emb[m].float().sum() for m in ("xray", "ecg", "text") if m in emb]
        if outputs:  # any scalar that reaches every trained parameter costs the backward of the real loss
            torch.stack(outputs).sum().backward()
        model.zero_grad(set_to_none=True)

    model.train()
    try:
        chosen, seconds = fastest_precision(step)
    finally:
        torch.set_rng_state(rng)
        model.zero_grad(set_to_none=True)
    if ctx.world > 1:
        flag = torch.tensor([1 if chosen == "bf16" else 0], device=ctx.device)
        dist.broadcast(flag, src=0)
        chosen = "bf16" if int(flag) else "fp32"
    return chosen, seconds


def frozen_embedding_cache(bundle: ModelBundle, data: CaseTensors, opts: TrainOptions, frozen_towers: tuple[str, ...],
                           device: torch.device, precision: str) -> dict[str, torch.Tensor]:
    """{modality: [N, D]}: every case's embedding by each frozen tower whose input is the same at every
    step, computed once, in eval mode; the loop reads its rows instead of running the tower.

    Why: on `tiny` the X-ray and text forwards are ~125 ms of a ~314 ms CPU step (session 16's
    breakdown), and a frozen tower needs no backward, so a stage that trains the ECG tower alone against
    the other two runs several times the steps per minute. Eval mode (no DropKey, no dropout) gives the
    embeddings the service stores and searches, so the trained tower aligns to those. A tower whose
    inputs change per step (`augment` for films and ECGs, `sentence_sampling` for reports) still runs in
    the loop; `cache_frozen=False` runs every frozen tower there, in training mode (session 18's run s18e).
    """
    towers = cached_towers(opts, frozen_towers)
    if not towers:
        return {}
    from training.case_tensors import embed_cases

    # Every rank embeds all cases: simpler than sharding and gathering, and a one-off next to training.
    return embed_cases(bundle, data, batch_size=64, modalities=towers, device=device, precision=precision)


def _full_rows(out: dict[str, torch.Tensor], present: dict[str, torch.Tensor], batch_size: int,
               dim: int) -> dict[str, torch.Tensor]:
    """[B, D] per modality: the embeddings of present rows in place, zeros elsewhere (for the gather)."""
    full = {}
    for m in MODALITIES:
        rows = torch.nonzero(present[m]).flatten()
        base = torch.zeros(batch_size, dim, device=present[m].device)
        full[m] = base.index_copy(0, rows, out[m].float()) if m in out else base
    return full


def _write_metrics(out: Path, record: dict[str, Any]) -> None:
    with (out / METRICS_FILE).open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def train(opts: TrainOptions) -> dict[str, Any]:
    """Train per `opts`; returns a summary (model_version, steps, seconds, last loss)."""
    ctx = _setup_distributed()
    precision = resolve_precision(opts.precision, ctx.device)  # before any work: a bad value fails at once
    frozen_towers = _check_freeze(opts.freeze)
    _check_side_swap(opts, frozen_towers)
    _check_label_targets(opts.label_targets)
    if opts.init_from:
        resolve_checkpoint(opts.init_from)  # a wrong path fails here, before the output folder is made
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    out = Path(opts.out)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    torch.manual_seed(opts.seed)  # identical initial weights on every rank
    bundle = create_model(None, checkpoint=opts.init_from) if opts.init_from else create_model(opts.preset)
    if opts.label_targets:
        # Saved with the checkpoint's config, so its model_version and any later --init-from carry it.
        bundle.config["loss"]["label_targets"] = {**label_target_shares(bundle.config["loss"]), **opts.label_targets}
    model = bundle.model.to(ctx.device)
    frozen = _freeze(model, frozen_towers)
    data = load_training_data(bundle, opts, ctx.world, ctx.main)
    batch_size = min(opts.batch_size, len(data) // ctx.world)
    if batch_size < 2:
        raise InvalidInputError("cases", f"{len(data)} cases cannot fill a batch of 2 per process; use more cases")
    steps_per_epoch = len(data) // (batch_size * ctx.world)
    total_steps = steps_per_epoch * opts.epochs

    skip = cached_towers(opts, frozen_towers)
    report_tokens = None
    if "text" not in skip:
        # Not for a cached text tower: it never runs in the loop, so the prefix cache (~30 KB per
        # distinct sentence) would be filled for nothing.
        model.text.enable_prefix_cache()
        report_tokens = tokenise_reports(bundle, data.reports)
    probe = None
    if opts.precision == "auto" and ctx.device.type == "cpu" and precision == "bf16":
        precision, seconds = probe_precision(model, bundle, data, batch_size, ctx, skip, report_tokens)
        probe = {name: round(s * 1000, 1) for name, s in seconds.items()}
    cached = frozen_embedding_cache(bundle, data, opts, frozen_towers, ctx.device, precision)
    swap_table, has_swap = (side_swap_table(bundle, data, ctx.device, precision) if opts.side_swap > 0
                            else (None, None))
    findings = _label_findings(data, opts, max(label_target_shares(bundle.config["loss"]).values()))
    # fused: one kernel over all parameters; on 2 CPU cores the step takes ~3 ms instead of ~12.
    optimizer = torch.optim.AdamW(adamw_groups(model, opts.weight_decay), lr=opts.lr, betas=(0.9, 0.98), eps=1e-6,
                                  fused=True)
    clock = {"start": time.time()}
    budget = opts.max_minutes * 60 if opts.max_minutes else None
    scheduler = warmup_cosine(optimizer, min(opts.warmup_steps, max(1, total_steps // 5)), total_steps,
                              time_fraction=(lambda: (time.time() - clock["start"]) / budget) if budget else None)
    first_epoch, step = 0, 0
    state_path = out / STATE_FILE
    if opts.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["rng"])

    wrapped: torch.nn.Module = model
    if ctx.world > 1:
        # Some modality can be absent from a whole local batch: its tower then gets no gradient.
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss_fn = TriModalLoss(bundle.config["loss"], rank=ctx.rank, world_size=ctx.world)

    if ctx.main:
        _write_metrics(out, {"event": "start", "options": asdict(opts), "cases": len(data), "world_size": ctx.world,
                             "batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "precision": precision,
                             **({"precision_probe_ms": probe} if probe else {}),
                             "cached_towers": sorted(cached),
                             "setup_seconds": round(time.time() - started, 2)})
    train_started = clock["start"] = time.time()
    loss_value, stopped_early = float("nan"), False
    # Per rank and resumable enough: the sentence and augmentation draws depend on the seed, rank and starting step.
    sampler = torch.Generator().manual_seed(opts.seed * 7919 + ctx.rank * 104729 + step)
    augmentation = Augmentation() if opts.augment else None
    for epoch in range(first_epoch, opts.epochs):
        model.train()
        batches = epoch_batches(data, opts.seed * 1000 + epoch, batch_size * ctx.world)
        bar = _progress(ctx, opts, steps_per_epoch, epoch)
        epoch_start, seen = time.time(), 0
        for local_step, chunk in enumerate(batches):
            t0 = time.time()
            idx = chunk[ctx.rank * batch_size:(ctx.rank + 1) * batch_size]
            batch, present = _batch_inputs(bundle, data, idx, ctx.device, opts.sentence_sampling, sampler,
                                           augmentation, report_tokens, skip=tuple(cached))
            with autocast(precision, ctx.device):
                emb = wrapped(batch)
            for modality, table in cached.items():
                if present[modality].any():
                    emb[modality] = table[idx[present[modality]]].to(ctx.device)
            full = _full_rows(emb, present, batch_size, model.embed_dim)
            shown = None if findings is None else {m: f[idx].to(ctx.device) for m, f in findings.items()}
            loss, parts = loss_fn(full, present, emb["logit_scale"].float(), shown)
            if swap_table is not None:
                valid = present["xray"] & present["text"] & has_swap[idx].to(ctx.device)
                swap = side_swap_loss(full["xray"], full["text"], swap_table[idx].to(ctx.device), valid,
                                      emb["logit_scale"].float())
                loss = loss + opts.side_swap * swap
                parts["side_swap"] = float(swap.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, model.max_logit_scale)
            step += 1
            seen += batch_size * ctx.world
            loss_value = float(loss.detach())
            rate = batch_size * ctx.world / max(time.time() - t0, 1e-6)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.3f}", samples_s=f"{rate:.1f}")
                bar.update(1)
            if ctx.main and (step % opts.log_every == 0 or local_step == steps_per_epoch - 1):
                _write_metrics(out, {"event": "step", "epoch": epoch, "step": step, "loss": round(loss_value, 5),
                                     **{f"loss_{k}": round(v, 5) for k, v in parts.items()},
                                     "lr": scheduler.get_last_lr()[0], "logit_scale": float(model.scale().detach()),
                                     "grad_norm": float(grad_norm), "samples_per_s": round(rate, 2),
                                     "elapsed_s": round(time.time() - train_started, 1)})
            if opts.max_minutes and time.time() - train_started > opts.max_minutes * 60:
                stopped_early = True
                break
        if bar is not None:
            bar.close()
        _save(ctx, bundle, out, optimizer, scheduler, epoch + (0 if stopped_early else 1), step, frozen)
        if ctx.main:
            _write_metrics(out, {"event": "epoch", "epoch": epoch, "step": step, "loss": round(loss_value, 5),
                                 "seconds": round(time.time() - epoch_start, 1),
                                 "samples_per_s": round(seen / max(time.time() - epoch_start, 1e-6), 2),
                                 "model_version": bundle.model_version})
        if stopped_early:
            break
    summary = {"model_version": bundle.model_version, "steps": step, "cases": len(data),
               "train_seconds": round(time.time() - train_started, 1), "total_seconds": round(time.time() - started, 1),
               "loss": loss_value, "stopped_early": stopped_early, "out": str(out), "rank": ctx.rank}
    if ctx.main:
        _write_metrics(out, {"event": "end", **summary})
    if ctx.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _progress(ctx: _Dist, opts: TrainOptions, total: int, epoch: int):
    if not (ctx.main and opts.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="step", file=sys.stderr,
                dynamic_ncols=True, leave=True)


def _check_side_swap(opts: TrainOptions, frozen_towers: tuple[str, ...]) -> None:
    """The side-swap term needs a trainable X-ray tower and a frozen, cached text tower: the swapped
    reports are embedded once, like the frozen-tower cache, rather than a second text pass per step."""
    if opts.side_swap == 0:
        return
    if not opts.side_swap > 0:
        raise InvalidInputError("side_swap", f"got {opts.side_swap}; use a weight > 0 (e.g. 0.5), or 0 for off")
    if "xray" in frozen_towers:
        raise InvalidInputError("side_swap", "the X-ray tower is frozen, so nothing would learn from the swapped "
                                             "reports; leave xray out of --freeze")
    if "text" not in frozen_towers or not opts.cache_frozen or opts.sentence_sampling > 0:
        raise InvalidInputError("side_swap", "needs the text tower frozen and cached (--freeze text, without "
                                             "--no-cache-frozen or --sentence-sampling): the swapped reports are "
                                             "embedded once, not per step")


def _check_label_targets(shares: dict[str, float] | None) -> None:
    """encoders.config's rules for `loss.label_targets`, checked before anything is written and reported
    under the option's name."""
    if not shares:
        return
    try:
        check_label_targets(shares)
    except InvalidInputError as exc:
        raise InvalidInputError("label_targets", exc.reason) from None


def _check_freeze(towers: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(towers) - set(MODALITIES))
    if unknown:
        raise InvalidInputError("freeze", f"unknown tower(s) {unknown}; choose among {list(MODALITIES)}")
    if set(towers) == set(MODALITIES):
        raise InvalidInputError("freeze", "every tower frozen leaves nothing to train; freeze at most two")
    return tuple(dict.fromkeys(towers))


def _freeze(model: torch.nn.Module, towers: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Stop training `towers` and their projection heads; returns the parameters frozen here.

    Why freeze a tower: continued training on new paired data (one institution's reports, say) can then
    move the other towers onto a fixed space, and what was already aligned to the frozen tower, or
    stored from it, stays valid. The temperature keeps training. Where its inputs do not change per step,
    a frozen tower's embeddings are computed once (`frozen_embedding_cache`); otherwise it runs in
    the loop in training mode (DropKey and dropout on)."""
    prefixes = tuple(p for t in towers for p in (f"{t}.", f"{t}_proj."))
    frozen = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefixes)]
    for param in frozen:
        param.requires_grad_(False)
    return frozen


@contextlib.contextmanager
def _all_trainable(frozen: list[torch.nn.Parameter]) -> Iterator[None]:
    """The checkpoint format stores the trainable parameters (LoRA, not the text base weights): mark the
    frozen towers trainable while saving, so the checkpoint stays loadable by `create_model`."""
    for param in frozen:
        param.requires_grad_(True)
    try:
        yield
    finally:
        for param in frozen:
            param.requires_grad_(False)


def _save(ctx: _Dist, bundle: ModelBundle, out: Path, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, step: int, frozen: list[torch.nn.Parameter]) -> None:
    if ctx.main:
        model = bundle.model
        with _all_trainable(frozen):  # a checkpoint holds every tower, frozen or not
            bundle.model_version = save_state(model, bundle.config, out)
        trainable = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch, "step": step, "rng": torch.get_rng_state()}, out / (STATE_FILE + ".tmp"))
        os.replace(out / (STATE_FILE + ".tmp"), out / STATE_FILE)
    if ctx.world > 1:
        dist.barrier()
