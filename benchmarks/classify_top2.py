"""How often Classify ranks a finding in its top 2 on phantom films that carry it (issue #4's check).

    python -m benchmarks.classify_top2 --checkpoint default --seed 99 --films 100

Each film goes the way `tribind classify --xray FILM.png --label-set phantom` sends it: PNG bytes
through `ServedModel.prepare_xray` and `LabelScorer.score` (the checkpoint's calibration when it has
one, raw CheXzero probabilities otherwise). A film counts when any of `--labels` (default: either
effusion) is among the two best-ranked labels. For the misses it counts what was ranked above the
film's best true target label, split into the film's other true findings and false ones: a calibrated
ranking should put a surer true co-finding first, so those misses are not all errors.

Why a script in the tree: the README has quoted this figure since session 4, and two scratch versions
of it were lost with their machines.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from typing import Any

import torch
from PIL import Image

EFFUSIONS = ("pleural_effusion_left", "pleural_effusion_right")


def measure(bundle: Any, seed: int = 99, films: int = 100, labels: tuple[str, ...] = EFFUSIONS,
            max_cases: int = 20000) -> dict[str, Any]:
    """Top-2 count over the first `films` phantom films of `seed` that carry one of `labels`."""
    from service.encoding import ServedModel
    from service.labels import LabelScorer
    from training.phantom.case import generate_case

    served = ServedModel(bundle)
    try:
        scorer = LabelScorer(served)
        label_set = scorer.builtin("phantom")
        ids = [label.id for label in label_set.for_modality("xray")]
        unknown = sorted(set(labels) - set(ids))
        if unknown:
            raise ValueError(f"labels: {', '.join(unknown)} are not X-ray labels of the phantom set; "
                             f"use some of {', '.join(sorted(ids))}")
        wanted = set(labels)
        hits, seen, behind_true, above = 0, 0, 0, Counter()
        for index in range(max_cases):
            if seen == films:
                break
            case = generate_case(seed, index)
            if case.xray is None or not wanted & set(case.labels):
                continue
            png = io.BytesIO()
            Image.fromarray(case.xray).save(png, format="PNG")
            vector = served.embed([served.prepare_xray(png.getvalue(), "xray")])[0]
            ranked = scorer.score(label_set, vector, "xray")
            seen += 1
            if wanted & {s.label for s in ranked[:2]}:
                hits += 1
                continue
            # A miss behind two of the film's own other findings is what a calibrated ranking should do.
            behind_true += all(s.label in case.labels for s in ranked[:2])
            for scored in ranked:
                if scored.label in wanted and scored.label in case.labels:
                    break
                above[("true " if scored.label in case.labels else "false ") + scored.label] += 1
        calibrated = scorer.calibration is not None and scorer.calibration.covers(label_set.name, "xray", ids)
        return {"model_version": served.model_version, "calibrated": calibrated,
                "seed": seed, "labels": list(labels), "films": seen, "top2": hits,
                "rate": round(hits / seen, 4) if seen else None,
                "misses_behind_two_true_findings": behind_true,
                "ranked_above_on_misses": dict(above.most_common())}
    finally:
        served.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="default", help="checkpoint folder or 'default'")
    parser.add_argument("--seed", type=int, default=99, help="phantom population (keep it apart from 0 and 4242)")
    parser.add_argument("--films", type=int, default=100)
    parser.add_argument("--labels", default=",".join(EFFUSIONS), help="comma-separated phantom X-ray label ids")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from encoders import load_model

    torch.set_num_threads(args.threads)
    try:
        result = measure(load_model(args.checkpoint), args.seed, args.films, tuple(args.labels.split(",")))
    except ValueError as exc:  # a bad --labels or --checkpoint: one line, not a traceback
        parser.error(str(exc))
    print(json.dumps({"checkpoint": args.checkpoint, **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
