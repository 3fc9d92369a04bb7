"""`tribind phantom` and `tribind contact-sheet`: write synthetic paired cases and their picture sheet."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("phantom", help="write synthetic X-ray + ECG + report cases with known truth",
                              description="Write N synthetic cases (PNG, WFDB, text, masks) and manifest.csv to DIR.")
    p.add_argument("--cases", type=int, required=True, help="number of cases")
    p.add_argument("--seed", type=int, default=1, help="population seed (same seed: byte-identical output)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--xray-size", type=int, default=512, help="X-ray side in pixels (default 512)")
    p.add_argument("--missing-rate", type=float, default=0.15, help="chance each modality is missing (default 0.15)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.set_defaults(func=_run_phantom)

    c = subparsers.add_parser("contact-sheet", help="render phantom X-rays and two 12-lead ECGs as PNGs",
                              description="Render phantom_xrays.png, phantom_ecg_af.png, phantom_ecg_lbbb.png.")
    c.add_argument("--out", default="docs/images", help="output folder (default docs/images)")
    c.add_argument("--seed", type=int, default=1)
    c.set_defaults(func=_run_contact_sheet)


def _run_phantom(args: argparse.Namespace) -> int:
    from training.phantom import write_phantom

    start = time.perf_counter()
    manifest = write_phantom(args.cases, args.seed, args.out, xray_size=args.xray_size,
                             missing_rate=args.missing_rate, workers=args.workers)
    print(f"wrote {args.cases} cases to {manifest} in {time.perf_counter() - start:.1f} s")
    return 0


def _run_contact_sheet(args: argparse.Namespace) -> int:
    from training.phantom.contact_sheet import render_contact_sheet

    for path in render_contact_sheet(args.out, seed=args.seed):
        print(path)
    return 0
