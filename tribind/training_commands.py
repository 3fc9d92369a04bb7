"""`tribind train` and `tribind eval` (the model area). Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train the joint model (phantom cases or a manifest); torchrun for several processes",
        description="Train X-ray, ECG and text encoders into one space. Several processes: "
                    "torchrun --nproc_per_node 2 -m tribind train ... (gloo on CPU, NCCL on GPU).")
    train.add_argument("--preset", default=None, help="preset name or preset .json (default: tiny)")
    train.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                       help="continue training this checkpoint ('default' = the bundled one) on --data, with its own "
                            "config, instead of a random init of --preset")
    train.add_argument("--freeze", default="", metavar="TOWERS",
                       help="comma-separated towers to leave unchanged, with their projection heads: xray, ecg, text "
                            "(e.g. --init-from default --freeze xray,ecg adapts the text tower to new reports); "
                            "--resume needs the same --init-from and --freeze")
    train.add_argument("--no-cache-frozen", action="store_true",
                       help="run frozen towers at every step, in training mode, instead of embedding their cases "
                            "once in eval mode (the default where their inputs do not change per step)")
    train.add_argument("--data", default="phantom", help="'phantom' or a manifest CSV (default: phantom)")
    train.add_argument("--case-cache", default=None, metavar="DIR",
                       help="phantom: keep the prepared cases in DIR, so later runs on the same seed read them "
                            "instead of drawing them again (e.g. var/cases; ~80 KB per case)")
    train.add_argument("--cases", type=int, default=3000, help="phantom cases to generate / manifest cases to use (0 = all)")
    train.add_argument("--seed", type=int, default=0, help="phantom population and initialisation seed")
    train.add_argument("--out", required=True, help="output folder: the checkpoint, train_state.pt, metrics.jsonl")
    train.add_argument("--epochs", type=int, default=8)
    train.add_argument("--batch-size", type=int, default=64, help="per process")
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--weight-decay", type=float, default=0.05)
    train.add_argument("--warmup-steps", type=int, default=40)
    train.add_argument("--grad-clip", type=float, default=1.0)
    train.add_argument("--missing-rate", type=float, default=0.15, help="phantom: chance each modality is missing")
    train.add_argument("--sentence-sampling", type=float, default=0.0,
                       help="share of reports replaced, per step, by 1-3 of their sentences (0 = always whole reports)")
    train.add_argument("--augment", action="store_true",
                       help="shift and re-level X-rays, roll and scale ECGs each step (labels stay true; training/augment.py)")
    train.add_argument("--side-swap", type=float, default=0.0, metavar="WEIGHT",
                       help="add a loss term, with this weight, that asks each film to score its own report above "
                            "the report with left and right exchanged in its finding sentences (teaches laterality; "
                            "needs --freeze text; training/side_swap.py). Default 0: off")
    train.add_argument("--label-targets", default=None, metavar="PAIR=SHARE[,PAIR=SHARE]",
                       help="label-aware targets for this run, e.g. xray_text=0.3: that share of each text pair's "
                            "target spread over the batch's cases with alike findings (MedCLIP; encoders/loss.py). "
                            "Replaces the named pairs of the preset's or --init-from checkpoint's loss.label_targets "
                            "and is saved in the new checkpoint's config")
    train.add_argument("--label-set", default=None,
                       help="label set of the data's labels, for a preset whose loss.label_targets > 0 "
                            "(default: phantom for phantom data)")
    train.add_argument("--split", default="train", help="manifest: rows of this split ('' = all)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    # training.precision.PRECISIONS, spelled out: importing it would pull torch in at CLI start-up.
    train.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                       help="forward pass: auto = bf16 autocast on CUDA; on a CPU with native bf16 (AVX512-BF16/AMX) "
                            "whichever of bf16 and fp32 a timed step on a batch of the run's cases finds faster; "
                            "else fp32 (default: auto)")
    train.add_argument("--max-minutes", type=float, default=None, help="training time budget: the learning-rate decay is fitted into it, and training stops and saves at its end")
    train.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    train.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    train.set_defaults(func=_train)

    ev = subparsers.add_parser(
        "eval", help="zero-shot AUROC and cross-modal retrieval of a checkpoint, beside a random init",
        description="On phantom cases: zero-shot per-label AUROC, retrieval r@1/5/10 and label_p@10 in six "
                    "directions, and the same for an untrained model. Other sources go to the data area's "
                    "real-data evaluation (training.data.real_eval).")
    ev.add_argument("--checkpoint", default="default", help="checkpoint folder or 'default' (the bundled one)")
    ev.add_argument("--data", default="phantom", help="'phantom' or a data source (e.g. ptbxl:PATH)")
    ev.add_argument("--seed", type=int, default=777, help="phantom population (held out from training's seed)")
    ev.add_argument("--cases", type=int, default=1000, help="phantom cases / at most this many real records")
    ev.add_argument("--labelset", default=None, help="label set (default: phantom for phantom data)")
    ev.add_argument("--task", default=None, help="real data: the source's task (see training.data.real_eval)")
    ev.add_argument("--no-random-init", action="store_true", help="skip the untrained baseline")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ev.add_argument("--json", action="store_true", help="print one JSON object (default: a short summary)")
    ev.set_defaults(func=_eval)


def _label_targets(text: str | None) -> dict[str, float] | None:
    """Parse `xray_text=0.3,ecg_text=0.5` into {pair: share}; training.train checks names and ranges."""
    from encoders.errors import InvalidInputError

    if not text:
        return None
    shares: dict[str, float] = {}
    for part in text.split(","):
        pair, _, value = part.partition("=")
        try:
            shares[pair.strip()] = float(value)  # no "=" leaves value empty, which float() refuses too
        except ValueError:
            raise InvalidInputError("label_targets",
                                    f"{part.strip()!r} is not PAIR=SHARE; write e.g. xray_text=0.3") from None
    return shares


def _train(args: argparse.Namespace) -> int:
    from encoders.errors import InvalidInputError
    from training.train import TrainOptions, train

    if args.preset and args.init_from:
        raise InvalidInputError("preset", "--init-from trains the checkpoint's own config; leave out --preset")
    summary = train(TrainOptions(
        preset=args.preset or "tiny", init_from=args.init_from,
        freeze=tuple(t.strip() for t in args.freeze.split(",") if t.strip()), cache_frozen=not args.no_cache_frozen,
        data=args.data, case_cache=args.case_cache, cases=args.cases, seed=args.seed, out=args.out, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip, missing_rate=args.missing_rate, sentence_sampling=args.sentence_sampling, augment=args.augment,
        side_swap=args.side_swap, label_targets=_label_targets(args.label_targets),
        label_set=args.label_set, split=args.split or None, threads=args.threads, precision=args.precision,
        resume=args.resume, max_minutes=args.max_minutes, progress=not args.no_progress,
    ))
    if summary.get("rank", 0) == 0:
        print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from encoders import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(args.checkpoint)
    if args.data == "phantom":
        from training.evaluate import evaluate_phantom

        result = evaluate_phantom(bundle, args.cases, args.seed, labelset=args.labelset or "phantom",
                                  random_init=not args.no_random_init)
    else:
        from training.data.real_eval import evaluate_real

        result = evaluate_real(bundle, args.data, task=args.task, labelset=args.labelset, limit=args.cases or None,
                               random_init=not args.no_random_init, seed=args.seed)
    if args.json:
        print(json.dumps(result))
    elif args.data == "phantom":
        _print_summary(result)
    else:
        from training.data.real_eval import format_real_eval

        print(format_real_eval(result))
    return 0


def _print_summary(result: dict) -> None:
    def line(name: str, figures: dict) -> str:
        zs = figures.get("zero_shot", {})
        parts = [f"{m} macro AUROC {v['macro_auroc']:.3f}" for m, v in zs.items() if v.get("macro_auroc") is not None]
        parts += [f"{m} prompt search p@10 {v['macro_p@10']:.3f}" for m, v in figures.get("prompt_search", {}).items()]
        for direction, r in figures.get("retrieval", {}).items():
            if r.get("r@10") is not None:
                parts.append(f"{direction} r@10 {r['r@10']:.3f} label_p@10 {r.get('label_p@10') or 0:.3f}")
        return f"{name}: " + "; ".join(parts)

    print(f"model_version {result.get('model_version')}  cases {result.get('cases')}  seconds {result.get('seconds')}")
    print(line("trained", result))
    if "random_init" in result:
        print(line("random init", result["random_init"]))
    sys.stdout.flush()
