"""`tribind inspect`, `tribind finetune`, `tribind export`: data sources and the encoders as a backbone.

Heavy imports (torch, wfdb, scipy) happen inside the command functions so `tribind --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

SOURCE_HELP = (
    "ptbxl:PATH, mimic-ecg:PATH, mimic-cxr:PATH, mimic:ROOT (ECG+CXR paired), chexpert:PATH, nih:PATH, cinc:PATH, iu:PATH, "
    "wfdb:PATH (a folder of WFDB records), phantom:DIR, or a manifest .csv/.jsonl/.parquet; "
    "reader options after '?', e.g. ptbxl:/data/ptbxl?rate=100&task=subclass"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    inspect = subparsers.add_parser(
        "inspect", help="read a data source without ingesting it: counts, skips with reasons, labels, a sample",
        description="Read SOURCE, decode every X-ray and ECG through the model's preprocessing, and print the "
                    "records read, the records skipped with their reasons, the label vocabulary and one record.",
    )
    inspect.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    inspect.add_argument("--json", action="store_true", help="print the full report as JSON")
    inspect.add_argument("--limit", type=int, default=None, help="stop after this many records")
    inspect.add_argument("--no-verify", dest="verify", action="store_false",
                         help="only check that files exist; do not decode them")
    inspect.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="reader option (repeatable), e.g. rate=100, task=subclass, views=PA,AP")
    inspect.set_defaults(func=run_inspect)

    # The training area may register these names too; argparse (3.11+) refuses duplicates.
    if "finetune" not in subparsers.choices:
        finetune = subparsers.add_parser(
            "finetune", help="fine-tune one encoder with a multi-label head on a data source; compare with random init",
        )
        finetune.add_argument("--checkpoint", required=True, help="checkpoint directory or 'default'")
        finetune.add_argument("--data", required=True, metavar="SOURCE", help=SOURCE_HELP)
        finetune.add_argument("--task", default=None,
                              help="label task: PTB-XL superclass/subclass/statements/...; default: the source's labels")
        finetune.add_argument("--modality", choices=("ecg", "xray"), default=None,
                              help="encoder to fine-tune (default: ecg for ECG sources, xray for image sources)")
        finetune.add_argument("--out", required=True, help="output directory (head + encoder weights, metrics.json)")
        finetune.add_argument("--unfreeze", action="store_true", help="train the encoder too (default: frozen)")
        finetune.add_argument("--epochs", type=int, default=30, help="maximum epochs (early stopping on val)")
        finetune.add_argument("--patience", type=int, default=5, help="epochs without val improvement before stopping")
        finetune.add_argument("--batch-size", type=int, default=32)
        finetune.add_argument("--lr", type=float, default=1e-3)
        finetune.add_argument("--seed", type=int, default=0)
        finetune.add_argument("--limit", type=int, default=None, help="use at most this many records")
        finetune.add_argument("--no-baseline", dest="baseline", action="store_false",
                              help="skip the same run from a random-init encoder")
        finetune.set_defaults(func=run_finetune)

    if "export" not in subparsers.choices:
        export = subparsers.add_parser(
            "export", help="export one encoder to ONNX and check it against PyTorch (onnxruntime, tol 1e-4)",
        )
        export.add_argument("--checkpoint", required=True, help="checkpoint directory or 'default'")
        export.add_argument("--modality", required=True, choices=("xray", "ecg", "text"))
        export.add_argument("--format", default="onnx", choices=("onnx",))
        export.add_argument("--out", required=True, help="output .onnx file")
        export.add_argument("--tolerance", type=float, default=1e-4, help="max |onnx - torch| allowed")
        export.set_defaults(func=run_export)


def parse_options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def run_inspect(args: argparse.Namespace) -> int:
    from training.data.inspection import format_inspection, inspect_source
    from training.data.sources import SourceError, open_source

    options = parse_options(args.option)
    if args.limit is not None:
        options["limit"] = str(args.limit)
    try:
        source = open_source(args.source, **options)
    except SourceError as exc:
        print(f"tribind inspect: {exc}", file=sys.stderr)
        return 2
    report = inspect_source(source, verify=args.verify)
    print(json.dumps(report, indent=2, default=str) if args.json else format_inspection(report))
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from training.data.finetune import FinetuneConfig, finetune_with_baseline

    config = FinetuneConfig(
        modality=args.modality, task=args.task, unfreeze=args.unfreeze, epochs=args.epochs,
        patience=args.patience, batch_size=args.batch_size, lr=args.lr, seed=args.seed, limit=args.limit,
    )
    result = finetune_with_baseline(args.checkpoint, args.data, args.out, config, baseline=args.baseline)
    print(json.dumps(result, indent=2))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from encoders.backbone import export_onnx

    result = export_onnx(args.checkpoint, args.modality, args.out, tolerance=args.tolerance)
    print(json.dumps(result, indent=2))
    return 0 if result["max_abs_diff"] <= args.tolerance else 1
