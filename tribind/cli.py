"""The `tribind` console script.

Each area registers its own sub-commands from one module, so the areas stay independent and the
start-up stays fast: a command module may import only argparse-level things at import time and must
import torch, faiss and grpc inside the function that runs the command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from encoders.errors import InvalidInputError  # no torch: encoders resolves its heavy names lazily

# Order is the order of `tribind --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "tribind.phantom_commands",   # phantom, contact-sheet
    "tribind.training_commands",  # train, eval, finetune, export
    "tribind.data_commands",      # inspect
    "tribind.service_commands",   # serve, ingest, search, classify, get, delete, stats, reindex
    "tribind.explain_commands",   # explain, eval-explain
    "tribind.calibration_commands",  # calibrate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tribind",
        description="Contrastive retrieval over chest X-rays, 12-lead ECGs and reports.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area ships no commands yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except InvalidInputError as exc:
        # A bad value (unknown preset, checkpoint, tower ...) reads as one line naming the field, not a
        # traceback; anything else is a bug and keeps its traceback.
        print(f"tribind {args.command}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
