"""`tribind calibrate`: fit per-label probability maps for zero-shot Classify beside a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit per-label calibrated probabilities for Classify (writes calibration.json)",
        description="Embed labelled phantom cases, fit a probability map of the zero-shot margins per label and "
                    "modality (stacked: over the margins of every label of the set visible in the modality; "
                    "platt: of the label's own margin), and write calibration.json into the checkpoint folder. "
                    "Prints a JSON summary with, per label, the Brier score, ECE, AUROC and top-2 rate "
                    "before/after on held-out cases.",
    )
    p.add_argument("--checkpoint", default="default", help="checkpoint folder or 'default' (the bundled one)")
    p.add_argument("--data", default="phantom", choices=["phantom"],
                   help="labelled cases to fit on (phantom: generated, truth known)")
    p.add_argument("--seed", type=int, default=4242,
                   help="phantom population; keep it apart from the training (0) and evaluation seeds (default 4242)")
    p.add_argument("--cases", type=int, default=1500, help="number of phantom cases (default 1500)")
    p.add_argument("--label-set", default="phantom", help="label set name or .json path (default phantom)")
    p.add_argument("--holdout", type=float, default=0.3,
                   help="share of the cases kept out of the fit to measure Brier/ECE (default 0.3)")
    p.add_argument("--modalities", default="xray,ecg,text", help="comma-separated subset of xray,ecg,text")
    p.add_argument("--method", default="stacked", choices=["stacked", "platt"],
                   help="stacked: each label's map also reads its look-alikes' margins (default); platt: its own "
                        "margin only (monotone, per-label AUROC unchanged)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the prepared phantom cases here (they depend on the preset's input sizes, not on "
                        "the weights): refitting after retraining skips generating them again")
    p.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    import time

    from encoders.errors import InvalidInputError

    started = time.time()
    try:
        summary = _run(args)
    except InvalidInputError as exc:
        print(f"tribind calibrate: error: {exc}", file=sys.stderr)
        return 2
    summary["seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=1))
    return 0


def _run(args: argparse.Namespace) -> dict:
    from encoders import load_model
    from encoders.calibration import Calibration
    from encoders.errors import InvalidInputError
    from encoders.labelsets import load_labelset
    from training.calibrate import calibrate, collect_margins, prepared_cases

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in modalities if m not in ("xray", "ecg", "text")]
    if unknown or not modalities:
        raise InvalidInputError("--modalities", f"{args.modalities!r}; use a comma-separated subset of xray,ecg,text")
    if args.cases < 20:
        raise InvalidInputError("--cases", f"got {args.cases}; fit on at least 20 cases (1500 recommended)")
    bundle = load_model(args.checkpoint)
    labelset = load_labelset(args.label_set)
    data = prepared_cases(bundle, args.cases, args.seed, args.cache)
    margins = collect_margins(bundle, labelset, data, modalities)
    fitted, summary = calibrate(bundle, labelset, margins, seed=args.seed, holdout=args.holdout,
                                method=args.method)
    fitted.fitted_on = {labelset.name: {"data": args.data, "seed": args.seed, "cases": args.cases,
                                        "holdout": args.holdout}}
    # Keep the other label sets of a file fitted for these same weights; a stale file is replaced.
    existing = Calibration.load(args.checkpoint, bundle.model_version)
    if existing is not None:
        for name, per_modality in existing.label_sets.items():
            if name != labelset.name:
                fitted.label_sets[name] = per_modality
                if name in existing.fitted_on:
                    fitted.fitted_on[name] = existing.fitted_on[name]
    path = fitted.save(args.checkpoint)
    return {"calibration": str(path), "model_version": bundle.model_version, "label_set": labelset.name,
            "data": args.data, "seed": args.seed, "cases": args.cases, "method": args.method, "modalities": summary}
