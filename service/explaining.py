"""Explanations served: the Explain RPC, and the `explain` option of Search (per hit) and Classify (per label).

Everything runs `encoders.explain` on the served bundle. The engine's weight-sharing twin of the model
(`explaining_model`) is built once, when the server loads: requests that ask for no explanation never
pay for it, and attention capture only ever switches on in the twin, never in the model the encoder
batches of other requests run through. Explanations of concurrent requests take turns on the twin
(the engine's lock); ordinary requests do not wait for them.

Which number each explanation explains (so that it is the number the client was shown):
- a Search hit: the hit's score, cos(query vector, hit's stored vector). Pairwise: the query input
  against the hit's stored vector, and the hit's stored raw input against the query vector. A side
  whose raw input is not available (a raw vector query, a case upserted as precomputed vectors) is
  left unset and `Explanation.note` says so.
- a Classify label: LabelScore.score, the subject against the label's positive minus negative prompt
  ensemble, taken from the very tensors Classify scored with (custom labels included).
- Explain: the subject against a label (`contrast`: as Classify), a text, an item or a stored case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import torch

from encoders.errors import InvalidInputError
from encoders.explain import (
    DEFAULT_METHOD,
    METHODS,
    Explanation,
    Item,
    PairExplanation,
    ecg_item,
    explain_batch,
    label_target,
    text_item,
    text_target,
    xray_item,
)
from encoders.explain.engine import explaining_model
from encoders.labelsets import LabelSet
from index import Case, CaseStore, RawInput, SearchFilter
from protos.tribind.v1 import tribind_pb2 as pb
from service.case_refs import resolve_case_ref
from service.encoding import ECG_MEDIA_TYPE, PreparedItem, ServedModel, ecg_from_npz
from service.errors import ClientGone, invalid
from service.labels import LabelScorer
from service.modalities import MODALITY_TO_PB, PB_TO_MODALITY

# Each explanation costs a forward and a backward pass (about 0.2-1 s for `tiny` on 2 cores), so a page
# of explained hits is bounded; ask for further pages with `offset`.
MAX_EXPLAINED_HITS = 32
MAX_EVIDENCE_K = 10
# Evidence candidates fetched per wanted case: cases upserted as vectors have no input to explain.
EVIDENCE_FETCH_FACTOR = 3
# Rows per forward/backward pass: bounds the memory of the autograd graph of one pass.
EXPLAIN_BATCH = 16
DEFAULT_LABEL_SET = "phantom"


@dataclass(frozen=True)
class ExplainSettings:
    method: str
    include_png: bool
    evidence_k: int


def parse_options(options: pb.ExplainOptions, field: str, evidence_refusal: str | None = None) -> ExplainSettings:
    """Checked options; `evidence_refusal` is the reason evidence_k > 0 is refused where it has no meaning."""
    method = options.method or DEFAULT_METHOD
    if method not in METHODS:
        raise invalid(f"{field}.method", f"unknown method {method!r}; use one of {', '.join(METHODS)} "
                                         f"(empty = {DEFAULT_METHOD})")
    k = int(options.evidence_k)
    if k > MAX_EVIDENCE_K:
        raise invalid(f"{field}.evidence_k", f"is {k}; ask for 0..{MAX_EVIDENCE_K} evidence cases")
    if k and evidence_refusal:
        raise invalid(f"{field}.evidence_k", evidence_refusal)
    return ExplainSettings(method, bool(options.include_png), k)


@dataclass
class Side:
    """One side of a score: its vector and, when its raw input is available, the item to explain."""

    modality: str
    vector: np.ndarray           # unit [D]: what the score was computed from
    name: str                    # "query", "subject", "case ID MODALITY": titles and Relevance.item
    item: Item | None            # None: nothing to explain, `missing` says why
    missing: str = ""
    case_id: str | None = None   # a stored case: left out of its own evidence


class Explainer:
    """Builds the explanation messages; one per server, made in `TribindServicer.load`."""

    def __init__(self, model: ServedModel, labels: LabelScorer, store: CaseStore) -> None:
        self._model = model
        self._bundle = model.bundle
        self._labels = labels
        self._store = store
        # Built here, in the loading thread, not lazily by the first explaining request: the twin is a
        # deep copy of the module tree (sharing every weight tensor), and two requests must never race
        # to build it, nor may a request wait for it.
        explaining_model(model.bundle.model)

    # -- the Explain RPC --------------------------------------------------------------------------

    def explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        target = request.target
        kind = target.WhichOneof("kind")
        if kind is None:
            raise invalid("target", "set one of label, text, item or case_ref: what to explain the subject against")
        settings = parse_options(request.options, "options", None if kind == "label" else
                                 "case evidence is for label targets; set target.label or evidence_k 0")
        if kind != "label" and (target.contrast or target.label_set):
            raise invalid("target.contrast" if target.contrast else "target.label_set",
                          f"applies to label targets only, and this target is a {kind}; leave it unset")
        label_set, ids = self._target_label(target) if kind == "label" else (None, ())
        subject = self._subject(request, context)
        if kind == "item":
            prepared = self._model.prepare(target.item, "target.item")
            other = self._item_side(prepared, self._embed(prepared, context), "target")
            explanation = self._pairs(subject, [other], None, settings, context)[0]
        elif kind == "case_ref":
            case, modality, vector = resolve_case_ref(self._store, target.case_ref, "target.case_ref",
                                                      self._model.model_version, include_raw=True)
            explanation = self._pairs(subject, [self._case_side(case, modality, vector)], None, settings, context)[0]
        else:
            if label_set is not None:
                chosen = label_target(self._bundle, target.label, label_set.name, contrast=target.contrast)
            else:
                chosen = text_target(self._bundle, target.text)
            explanation = self._against(subject, [(chosen.embedding, chosen.description)], settings, context)[0]
            if label_set is not None and settings.evidence_k:
                evidence = self._evidence(subject, [(chosen.embedding, chosen.description, ids)], settings, context)
                explanation.evidence.extend(evidence[0])
        return pb.ExplainResponse(explanation=explanation, model_version=self._model.model_version)

    def _target_label(self, target: pb.ExplainTarget) -> tuple[LabelSet, tuple[str, ...]]:
        name = target.label_set or DEFAULT_LABEL_SET
        # Registered names only: label_target also takes a path, which would let a client read server files.
        if name not in self._labels.names():
            raise invalid("target.label_set",
                          f"unknown label set {name!r}; use one of {', '.join(self._labels.names())}")
        label_set = self._labels.builtin(name)
        # The same rule as encoders.explain.label_target, so the ids are the labels it pools.
        ids = tuple(label.id for label in label_set.matching(target.label))
        if not ids:
            raise invalid("target.label", f"{target.label!r} is not a label of {name!r} (valid: "
                                          f"{', '.join(label_set.ids)}); for free text use target.text")
        return label_set, ids

    def _subject(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> Side:
        kind = request.WhichOneof("subject")
        if kind is None:
            raise invalid("subject", "set item or case_ref: the item or stored case to explain")
        if kind == "item":
            prepared = self._model.prepare(request.item, "item")
            return self._item_side(prepared, self._embed(prepared, context), "subject")
        case, modality, vector = resolve_case_ref(self._store, request.case_ref, "case_ref",
                                                  self._model.model_version, include_raw=True)
        side = self._case_side(case, modality, vector)
        if side.item is None:
            raise invalid("case_ref.modality", f"{side.missing}, so there is nothing to explain; send the input "
                                               "as an item, or upsert the case again with its raw input")
        return side

    # -- Search and Classify ----------------------------------------------------------------------

    def query_side(self, vector: np.ndarray, modality: str, case: Case | None, prepared: PreparedItem | None,
                   name: str) -> Side:
        """The Search query / Classify subject as resolved by the servicer (an item, a case, or a raw vector)."""
        if prepared is not None:
            return self._item_side(prepared, vector, name)
        if case is not None:
            stored = self._store.get(case.case_id, include_raw=True)
            side = self._case_side(stored, modality, vector)
            side.name = name
            return side
        return Side(modality, vector, name, None, missing=f"the {name} is a raw vector, which has no input to explain")

    def explain_hits(self, query: Side, hits: Sequence[pb.Hit], settings: ExplainSettings,
                     context: grpc.ServicerContext) -> None:
        """Set `explanation` on each hit: pairwise, the query side and the hit side of the hit's score."""
        if not hits:
            return
        sides = []
        for hit in hits:
            modality = PB_TO_MODALITY[hit.modality]
            case = self._store.get(hit.case_id, include_raw=True)
            vector = np.asarray(case.vectors[modality].vector, dtype=np.float32)
            sides.append(self._case_side(case, modality, vector))
        explanations = self._pairs(query, sides, [hit.score for hit in hits], settings, context)
        for hit, explanation in zip(hits, explanations):
            hit.explanation.CopyFrom(explanation)

    def explain_labels(self, subject: Side, label_set: LabelSet, scores: Sequence[pb.LabelScore],
                       settings: ExplainSettings, context: grpc.ServicerContext) -> None:
        """Set `explanation` on each label score: the subject's relevance for LabelScore.score, and evidence."""
        if not scores:
            return
        vectors = self._labels.contrast_vectors(label_set, subject.modality)
        targets = [(vectors[s.label], f"label {s.label} (positive - negative prompts)") for s in scores]
        explanations = self._against(subject, targets, settings, context)
        if settings.evidence_k:
            found = self._evidence(subject, [(v, d, (s.label,)) for (v, d), s in zip(targets, scores)], settings,
                                   context)
            for explanation, evidence in zip(explanations, found):
                explanation.evidence.extend(evidence)
        for score, explanation in zip(scores, explanations):
            explanation.score = score.score  # the number the client was shown (subject.score: the recomputed one)
            score.explanation.CopyFrom(explanation)

    # -- building blocks --------------------------------------------------------------------------

    def _embed(self, prepared: PreparedItem, context: grpc.ServicerContext) -> np.ndarray:
        return self._model.embed([prepared], context.is_active, context.time_remaining())[0]

    def _item_side(self, prepared: PreparedItem, vector: np.ndarray, name: str) -> Side:
        return Side(prepared.modality, vector, name, self._raw_item(prepared.modality, prepared.raw, name))

    def _case_side(self, case: Case, modality: str, vector: np.ndarray) -> Side:
        name = f"case {case.case_id} {modality}"
        raw = case.raw.get(modality)
        item = self._raw_item(modality, raw, name) if raw is not None else None
        missing = "" if item is not None else (
            f"case {case.case_id!r} has no stored {modality} input (it was upserted as a precomputed vector)")
        return Side(modality, vector, name, item, missing, case.case_id)

    def _raw_item(self, modality: str, raw: RawInput, name: str) -> Item | None:
        """A stored or received raw input as the engine's item (the same preprocessing as embedding)."""
        if modality == "xray":
            return xray_item(self._bundle, raw.data, name)
        if modality == "ecg":
            if raw.media_type != ECG_MEDIA_TYPE:
                return None
            signal, rate, leads = ecg_from_npz(raw.data)
            return ecg_item(self._bundle, signal, rate, leads, name)
        return text_item(raw.data.decode("utf-8"), name)

    def _rows(self, items: Sequence[Item], targets: Sequence[np.ndarray | torch.Tensor], descriptions: Sequence[str],
              method: str, context: grpc.ServicerContext) -> list[Explanation]:
        """explain_batch over rows of one modality, in passes of EXPLAIN_BATCH, stopping for a departed client."""
        out: list[Explanation] = []
        stacked = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in targets])
        for start in range(0, len(items), EXPLAIN_BATCH):
            if not context.is_active():
                raise ClientGone()
            stop = start + EXPLAIN_BATCH
            try:
                out += explain_batch(self._bundle, items[start:stop], stacked[start:stop], method,
                                     descriptions=descriptions[start:stop])
            except InvalidInputError as exc:
                # Inputs were checked when they were prepared; what is left is a server fault, not the client's.
                raise RuntimeError(f"explaining a checked input failed: {exc}") from exc
        return out

    def _against(self, subject: Side, targets: Sequence[tuple[np.ndarray | torch.Tensor, str]],
                 settings: ExplainSettings, context: grpc.ServicerContext) -> list[pb.Explanation]:
        """One explanation of the subject per target vector (one item, many targets: one batch)."""
        if subject.item is None:
            note = f"{subject.missing}, so the subject is not explained (case evidence, when asked for, still is)"
            return [pb.Explanation(note=note) for _ in targets]
        explained = self._rows([subject.item] * len(targets), [t for t, _ in targets], [d for _, d in targets],
                               settings.method, context)
        out = []
        for explanation in explained:
            message = pb.Explanation(score=explanation.score, subject=relevance_pb(explanation, subject.name))
            if settings.include_png:
                message.png = _png(explanation, subject.item)
            out.append(message)
        return out

    def _pairs(self, a: Side, bs: Sequence[Side], scores: Sequence[float] | None, settings: ExplainSettings,
               context: grpc.ServicerContext) -> list[pb.Explanation]:
        """Pairwise: `a` against each b's vector and each b against a's vector; each side that has an input."""
        side_a: list[Explanation | None] = [None] * len(bs)
        if a.item is not None:
            side_a = list(self._rows([a.item] * len(bs), [b.vector for b in bs], [b.name for b in bs],
                                     settings.method, context))
        side_b: list[Explanation | None] = [None] * len(bs)
        for modality in {b.modality for b in bs if b.item is not None}:
            rows = [i for i, b in enumerate(bs) if b.item is not None and b.modality == modality]
            explained = self._rows([bs[i].item for i in rows], [a.vector] * len(rows), [a.name] * len(rows),
                                   settings.method, context)
            for i, explanation in zip(rows, explained):
                side_b[i] = explanation
        out = []
        for i, b in enumerate(bs):
            score = float(scores[i]) if scores is not None else float(np.dot(a.vector, b.vector))
            message = pb.Explanation(score=score, note="; ".join(s.missing for s in (a, b) if s.missing))
            if side_a[i] is not None:
                message.subject.CopyFrom(relevance_pb(side_a[i], a.name))
            if side_b[i] is not None:
                message.other.CopyFrom(relevance_pb(side_b[i], b.name))
            if message.note:
                explained = [s.name for s, e in ((a, side_a[i]), (b, side_b[i])) if e is not None]
                message.note += f"; only the {explained[0]} side is explained" if explained else "; nothing to explain"
            if settings.include_png:
                message.png = _pair_png(score, a, side_a[i], b, side_b[i])
            out.append(message)
        return out

    def _evidence(self, subject: Side, targets: Sequence[tuple[np.ndarray | torch.Tensor, str, tuple[str, ...]]],
                  settings: ExplainSettings, context: grpc.ServicerContext) -> list[list[pb.CaseEvidence]]:
        """Per target (vector, description, label ids): the subject's nearest library cases (its modality)
        carrying one of the labels, nearest first, each explained against the target (the case_evidence
        idea of encoders.explain.api, batched over all targets in one pass per EXPLAIN_BATCH rows)."""
        k = settings.evidence_k
        exclude = (subject.case_id,) if subject.case_id else ()
        rows: list[tuple[int, float, Case, Item]] = []      # (target index, cosine to subject, case, item)
        for t, (_, _, ids) in enumerate(targets):
            hits = self._store.search(subject.modality, subject.vector, k=k * EVIDENCE_FETCH_FACTOR,
                                      filter=SearchFilter(labels_any=tuple(ids), exclude_case_ids=exclude)).hits
            picked = 0
            for hit in hits:
                case = self._store.get(hit.case_id, include_raw=True)
                raw = case.raw.get(subject.modality)
                item = self._raw_item(subject.modality, raw, f"case {case.case_id}") if raw is not None else None
                if item is None:
                    continue
                rows.append((t, float(hit.score), case, item))
                picked += 1
                if picked == k:
                    break
        found: list[list[pb.CaseEvidence]] = [[] for _ in targets]
        if not rows:
            return found
        explained = self._rows([item for *_, item in rows], [targets[t][0] for t, *_ in rows],
                               [targets[t][1] for t, *_ in rows], settings.method, context)
        for (t, score, case, item), explanation in zip(rows, explained):
            evidence = pb.CaseEvidence(case_id=case.case_id, score=score, labels=list(case.labels),
                                       relevance=relevance_pb(explanation, f"case {case.case_id} {subject.modality}"))
            if settings.include_png:
                evidence.png = _png(explanation, item)
            found[t].append(evidence)
        return found


def relevance_pb(explanation: Explanation, item: str) -> pb.Relevance:
    """One side as its message (see `Relevance` in the proto for shapes and units)."""
    relevance = np.asarray(explanation.relevance, dtype=np.float32)
    message = pb.Relevance(
        modality=MODALITY_TO_PB[explanation.modality], method=explanation.method, score=explanation.score,
        target=explanation.target, item=item, values=relevance.ravel().tolist(), shape=list(relevance.shape),
    )
    if explanation.modality == "ecg":
        message.time_values.extend(np.asarray(explanation.heatmap, dtype=np.float32).tolist())
        message.window_s = explanation.window_s
        message.time_offset_s = explanation.time_offset_s
        message.lead_names.extend(explanation.lead_names)
    elif explanation.modality == "xray":
        message.token_origin_px = explanation.token_origin_px
        message.token_stride_px = explanation.token_stride_px
    elif explanation.modality == "text":
        message.words.extend(explanation.words)
        message.spans.extend(pb.TextSpan(start=a, end=b) for a, b in explanation.spans)
        message.truncated = explanation.truncated
    return message


def _png(explanation: Explanation, item: Item) -> bytes:
    from encoders.explain.figures import explanation_png

    return explanation_png(explanation, item)


def _pair_png(score: float, a: Side, side_a: Explanation | None, b: Side, side_b: Explanation | None) -> bytes:
    from encoders.explain.figures import pair_png

    if side_a is not None and side_b is not None:
        assert a.item is not None and b.item is not None
        return pair_png(PairExplanation(score, side_a, side_b), a.item, b.item)
    if side_a is not None and a.item is not None:
        return _png(side_a, a.item)
    if side_b is not None and b.item is not None:
        return _png(side_b, b.item)
    return b""
