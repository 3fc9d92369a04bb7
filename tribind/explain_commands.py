"""`tribind explain` and `tribind eval-explain`. Heavy imports happen inside the commands.

`tribind explain` runs the model in the process (files in, `--checkpoint`), or with `--server HOST:PORT`
asks a running service through the SDK (the Explain RPC): then stored cases can be explained
(`--case`, `--pair-case`) and label targets can bring case evidence from the library (`--evidence`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MODALITIES = ("xray", "ecg", "text")


def register(subparsers: argparse._SubParsersAction) -> None:
    ex = subparsers.add_parser(
        "explain", help="why an item matches a label, a text or another item: heatmap / lead x time / words",
        description="Explain the cosine similarity between one item (--xray, --ecg or --text; with --server also "
                    "a stored --case) and a target (--label, --target-text, or another item for a pairwise "
                    "explanation: --pair-xray, --pair-ecg, --pair-text, --pair-case). Prints the most relevant "
                    "regions; --out writes a PNG. Without --server the model runs in this process.")
    item = ex.add_mutually_exclusive_group(required=True)
    item.add_argument("--xray", metavar="IMAGE", help="PNG, JPEG or DICOM file")
    item.add_argument("--ecg", metavar="RECORD", help="WFDB record path (with or without .hea)")
    item.add_argument("--text", metavar="TEXT", help="a report (or @FILE to read it from a file)")
    item.add_argument("--case", metavar="CASE_ID", help="with --server: a stored case's input (with --modality)")
    target = ex.add_mutually_exclusive_group(required=True)
    target.add_argument("--label", help="label id or name, e.g. 'pleural effusion', atrial_fibrillation")
    target.add_argument("--target-text", metavar="TEXT", help="free text to compare with")
    target.add_argument("--pair-xray", metavar="IMAGE", help="pairwise: the other side is this X-ray")
    target.add_argument("--pair-ecg", metavar="RECORD", help="pairwise: the other side is this ECG record")
    target.add_argument("--pair-text", metavar="TEXT", help="pairwise: the other side is this report (or @FILE)")
    target.add_argument("--pair-case", metavar="CASE_ID",
                        help="with --server, pairwise: the other side is this stored case (with --pair-modality), "
                             "e.g. a search hit")
    ex.add_argument("--modality", choices=MODALITIES, help="--case: which of the case's inputs to explain")
    ex.add_argument("--pair-modality", choices=MODALITIES, help="--pair-case: which of the case's inputs")
    ex.add_argument("--evidence", type=int, default=0, metavar="K",
                    help="with --server and --label: the K nearest library cases carrying the label, each explained")
    remote = ex.add_argument_group("asking a running server (instead of loading the model here)")
    remote.add_argument("--server", metavar="HOST:PORT", help="explain through this tribind server's Explain RPC")
    remote.add_argument("--api-key", default=os.environ.get("TRIBIND_API_KEY"),
                        help="with --server: API key (default: $TRIBIND_API_KEY)")
    remote.add_argument("--tls-ca", type=Path, default=None, help="with --server: PEM root certificate for TLS")
    remote.add_argument("--timeout", type=float, default=120.0, help="with --server: seconds (default: %(default)s)")
    ex.add_argument("--labelset", default="phantom", help="label set of --label (default: phantom)")
    ex.add_argument("--contrast", action="store_true",
                    help="--label: explain cos(positive prompts) - cos(negative prompts), the zero-shot logit")
    ex.add_argument("--method", default="chefer", choices=("chefer", "rollout"),
                    help="chefer: gradient-weighted attention relevance (default); rollout: attention rollout")
    ex.add_argument("--checkpoint", default="default",
                    help="checkpoint folder, 'default', or 'none' with --preset (not with --server: it serves its own)")
    ex.add_argument("--preset", default=None, help="with --checkpoint none: an untrained model of this preset")
    ex.add_argument("--out", metavar="FILE.png", help="write the picture here")
    ex.add_argument("--html", metavar="FILE.html", help="text items: write the highlighted report as HTML")
    ex.add_argument("--top", type=int, default=5, help="how many regions / words to list (default 5)")
    ex.add_argument("--json", action="store_true", help="print one JSON object with the relevance arrays")
    ex.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ex.set_defaults(func=_explain)

    ev = subparsers.add_parser(
        "eval-explain", help="faithfulness of explanations on phantom truth: pointing game and deletion curves",
        description="Explain every positive (case, finding) of a phantom population against the finding's label "
                    "and measure: pointing game on the ground-truth masks (beside the random baseline) and "
                    "deletion AUC (relevance order versus random order). See README.md.")
    ev.add_argument("--checkpoint", default="default", help="checkpoint folder, 'default', or 'none' with --preset")
    ev.add_argument("--preset", default=None, help="with --checkpoint none: an untrained model of this preset")
    ev.add_argument("--data", default="phantom", help="only 'phantom' (the source with ground-truth masks)")
    ev.add_argument("--seed", type=int, default=777, help="phantom population (held out from training's seed 0)")
    ev.add_argument("--cases", type=int, default=300)
    ev.add_argument("--method", default="chefer", choices=("chefer", "rollout"))
    ev.add_argument("--contrast", action="store_true",
                    help="explain each label's positive-minus-negative score instead of the positive cosine")
    ev.add_argument("--random-init", action="store_true",
                    help="also measure an untrained model of the same preset (what structure alone scores)")
    ev.add_argument("--steps", type=int, default=8, help="deletion steps")
    ev.add_argument("--random-orders", type=int, default=3, help="random deletion orders per pair")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ev.add_argument("--json", action="store_true", help="print one JSON object (default: a short summary)")
    ev.set_defaults(func=_eval_explain)


def _bundle(args: argparse.Namespace):
    import torch

    from encoders import create_model
    from encoders.errors import InvalidInputError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint == "none":
        if not args.preset:
            raise InvalidInputError("--preset", "--checkpoint none needs a preset (e.g. --preset tiny)")
        return create_model(args.preset)
    return create_model(None, checkpoint=args.checkpoint)


def _text_arg(value: str) -> str:
    return Path(value[1:]).read_text() if value.startswith("@") else value


def _item(bundle, xray: str | None, ecg: str | None, text: str | None):
    from encoders.explain import ecg_record_item, text_item, xray_item

    if xray:
        return xray_item(bundle, xray)
    if ecg:
        return ecg_record_item(bundle, ecg)
    return text_item(_text_arg(text), "report")


def _explain(args: argparse.Namespace) -> int:
    if args.server:
        return _explain_remote(args)
    if args.case or args.pair_case or args.evidence:
        flag = "--case" if args.case else ("--pair-case" if args.pair_case else "--evidence")
        print(f"tribind explain: {flag} needs --server HOST:PORT (stored cases live in the server's library)",
              file=sys.stderr)
        return 2
    from encoders.errors import InvalidInputError
    from encoders.explain import api, label_target, text_target
    from encoders.explain import figures

    try:
        bundle = _bundle(args)
        item = _item(bundle, args.xray, args.ecg, args.text)
        if args.pair_xray or args.pair_ecg or args.pair_text:
            other = _item(bundle, args.pair_xray, args.pair_ecg, args.pair_text)
            pair = api.explain_pair(bundle, item, other, args.method)
            sides = [(pair.a, item), (pair.b, other)]
            picture = (lambda: figures.pair_png(pair, item, other)) if args.out else None
        else:
            if args.label:
                target = label_target(bundle, args.label, args.labelset, args.contrast)
            else:
                target = text_target(bundle, args.target_text)
            explanation = api.explain(bundle, item, target, args.method)
            sides = [(explanation, item)]
            picture = (lambda: figures.explanation_png(explanation, item)) if args.out else None
    except InvalidInputError as exc:
        print(f"tribind explain: {exc}", file=sys.stderr)
        return 2
    if picture is not None:
        Path(args.out).write_bytes(picture())
    if args.html:
        from encoders.explain.highlight import html_highlight

        texts = [(e, it) for e, it in sides if e.modality == "text"]
        if not texts:
            print("tribind explain: --html needs a text item (--text or --pair-text)", file=sys.stderr)
            return 2
        e, it = texts[0]
        Path(args.html).write_text(html_highlight(it.text, e.spans, e.relevance, f"{e.target}: cos {e.score:+.3f}"))
    if args.json:
        print(json.dumps({"score": sides[0][0].score, "sides": [e.as_dict() for e, _ in sides],
                          **({"out": args.out} if args.out else {})}))
        return 0
    for explanation, side_item in sides:
        _print_explanation(explanation, side_item.text, args.top)
    if args.out:
        print(f"picture: {args.out}")
    return 0


def _remote_item(xray: str | None, ecg: str | None, text: str | None, case_id: str | None, modality: str | None,
                 modality_flag: str):
    """(request item or case reference, the text when it is a text given here)."""
    from service.client_types import case_ref, ecg_item, text_item, xray_item

    if xray:
        return xray_item(xray), None
    if ecg:
        return ecg_item(record=ecg), None
    if text:
        body = _text_arg(text)
        return text_item(body), body
    if not modality:
        raise ValueError(f"a stored case needs {modality_flag} xray|ecg|text: which of its inputs to explain")
    return case_ref(case_id, modality), None


def _explain_remote(args: argparse.Namespace) -> int:
    from service.client import TribindClient, TribindError
    from service.client_types import ExplainOptions

    try:
        subject, subject_text = _remote_item(args.xray, args.ecg, args.text, args.case, args.modality, "--modality")
        other, other_text = None, None
        if args.pair_xray or args.pair_ecg or args.pair_text or args.pair_case:
            other, other_text = _remote_item(args.pair_xray, args.pair_ecg, args.pair_text, args.pair_case,
                                             args.pair_modality, "--pair-modality")
    except (FileNotFoundError, ValueError) as exc:
        print(f"tribind explain: {exc}", file=sys.stderr)
        return 2
    options = ExplainOptions(method=args.method, include_png=bool(args.out), evidence_k=args.evidence)
    try:
        with TribindClient(args.server, args.api_key, root_certificates=args.tls_ca, timeout_s=args.timeout) as client:
            result = client.explain(subject, label=args.label, text=args.target_text, other=other,
                                    label_set=args.labelset, contrast=args.contrast, options=options)
    except TribindError as exc:
        print(f"tribind explain: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"tribind explain: {exc}", file=sys.stderr)
        return 2
    e = result.explanation
    sides = [(side, text) for side, text in ((e.subject, subject_text), (e.other, other_text)) if side is not None]
    if args.out:
        if not e.png:
            print(f"tribind explain: the server returned no picture ({e.note or 'nothing was explained'})",
                  file=sys.stderr)
            return 1
        Path(args.out).write_bytes(e.png)
    if args.html:
        from encoders.explain.highlight import html_highlight

        texts = [(side, text) for side, text in sides if side.modality == "text" and text is not None]
        if not texts:
            print("tribind explain: --html needs a text given here (--text or --pair-text)", file=sys.stderr)
            return 2
        side, text = texts[0]
        Path(args.html).write_text(html_highlight(text, side.spans, side.relevance,
                                                  f"{side.target}: cos {side.score:+.3f}"))
    if args.json:
        print(json.dumps({"score": e.score, "sides": [side.as_dict() for side, _ in sides],
                          "evidence": [{"case_id": ev.case_id, "score": ev.score, "labels": ev.labels,
                                        "relevance": ev.relevance.as_dict()} for ev in e.evidence],
                          "note": e.note, "model_version": result.model_version,
                          **({"out": args.out} if args.out else {})}))
        return 0
    print(f"cos {e.score:+.4f}  (model {result.model_version})")
    if e.note:
        print(f"note: {e.note}")
    for side, text in sides:
        _print_explanation(side, text, args.top)
    for evidence in e.evidence:
        print(f"evidence: case {evidence.case_id} (cos {evidence.score:+.4f} with the subject; "
              f"labels {','.join(evidence.labels)})")
        _print_explanation(evidence.relevance, None, args.top)
    if args.out:
        print(f"picture: {args.out}")
    return 0


def _print_explanation(explanation, text: str | None, top: int) -> None:
    """The top regions of an explanation: the engine's `Explanation` or the SDK's `Relevance`."""
    import numpy as np

    name = getattr(explanation, "item_name", None) or getattr(explanation, "item", "")
    seconds = getattr(explanation, "seconds", None)
    timing = f", {seconds:.2f} s" if seconds is not None else ""
    print(f"{explanation.modality} {name} vs {explanation.target}: "
          f"cos {explanation.score:+.4f}  ({explanation.method}{timing})")
    share = explanation.normalised()
    order = np.argsort(-explanation.relevance, axis=None, kind="stable")[:top]
    if explanation.modality == "xray":
        rows, cols = explanation.relevance.shape
        for flat in order:
            r, c = divmod(int(flat), cols)
            y, x = (explanation.token_origin_px + explanation.token_stride_px * v for v in (r, c))
            print(f"  token row {r + 1}/{rows} col {c + 1}/{cols} (centred on model-input pixel y {y:g}, x {x:g})  "
                  f"relevance {share.flat[flat]:.2f}")
    elif explanation.modality == "ecg":
        _, windows = explanation.relevance.shape
        for flat in order:
            lead, w = divmod(int(flat), windows)
            t0 = explanation.time_offset_s + w * explanation.window_s
            print(f"  lead {explanation.lead_names[lead]:>3}  {t0:5.2f}-{t0 + explanation.window_s:5.2f} s  "
                  f"relevance {share.flat[flat]:.2f}")
    else:
        from encoders.explain.highlight import ansi_highlight

        print("  top words: " + ", ".join(f"{explanation.words[int(i)]} ({share[int(i)]:.2f})" for i in order))
        if text is not None:
            shown = ansi_highlight(text, explanation.spans, explanation.relevance) if sys.stdout.isatty() else text
            print("  " + shown.replace("\n", "\n  "))


def _eval_explain(args: argparse.Namespace) -> int:
    from encoders.errors import InvalidInputError
    from training.explain_eval import evaluate_explanations

    if args.data != "phantom":
        print("tribind eval-explain: only --data phantom has ground-truth masks; real data sets here carry no "
              "region annotations", file=sys.stderr)
        return 2
    try:
        bundle = _bundle(args)
        result = evaluate_explanations(bundle, cases=args.cases, seed=args.seed, method=args.method,
                                       steps=args.steps, random_orders=args.random_orders, contrast=args.contrast,
                                       random_init=args.random_init)
    except InvalidInputError as exc:
        print(f"tribind eval-explain: {exc}", file=sys.stderr)
        return 2
    result["checkpoint"] = args.checkpoint if args.checkpoint != "none" else f"none (preset {args.preset})"
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model_version {result['model_version']}  method {result['method']}  cases {result['cases']}  "
          f"seed {result['seed']}  seconds {result['seconds']}")
    for modality, figures in result["pointing"].items():
        print(f"pointing {modality}: macro {figures['macro']} (random {figures['random_macro']})")
    for modality, figures in result["deletion"].items():
        every = figures["all_pairs"]
        print(f"deletion {modality}: auc {figures['auc']} random {figures['random_auc']} ratio {figures['ratio']} "
              f"({figures['pairs']} pairs; with the {figures['whole_input_pairs']} whole-input pairs: "
              f"ratio {every['ratio']})")
        print("  per finding (ratio, pairs; * whole input): " + ", ".join(
            f"{label}{'*' if one.get('whole_input') else ''} {one['ratio']} ({one['pairs']})"
            for label, one in figures["per_label"].items()))
    if "random_init" in result:
        untrained = result["random_init"]
        print("untrained model: " + "; ".join(
            [f"pointing {m} macro {f['macro']}" for m, f in untrained["pointing"].items()]
            + [f"deletion {m} ratio {f['ratio']}" for m, f in untrained["deletion"].items()]))
    print(f"seconds per explanation: {result['seconds_per_explanation']}")
    return 0
