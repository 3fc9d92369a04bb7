"""The Tribind RPCs: request messages in, model and case store calls, reply messages out.

Every method runs under `rpc_errors`, so each failure reaches the client as a status code with a
"field: reason" message (see `service.errors`). Requests are checked completely, and their inputs
decoded and embedded, before the store is touched: a request with one bad part changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import grpc
import numpy as np

from index import Case, CaseStore, Embedding, SearchFilter
from protos.tribind.v1 import tribind_pb2 as pb
from protos.tribind.v1 import tribind_pb2_grpc as pb_grpc
from service import hits as hit_lists
from service.case_refs import resolve_case_ref
from service.client_types import ecg_signal
from service.config import ServerConfig
from service.convert import (
    MODALITY_TO_PB,
    array_to_vector,
    modality_name,
    modality_names,
    vector_to_array,
)
from service.encoding import ECG_MEDIA_TYPE, PreparedItem, ServedModel, ecg_from_npz
from service.errors import (
    ClientGone,
    exhausted,
    invalid,
    rpc_errors,
    rpc_stream_errors,
    unavailable,
    version_mismatch,
)
from service.explaining import MAX_EXPLAINED_HITS, ExplainSettings, Explainer, Side, parse_options
from service.labels import LabelScorer

log = logging.getLogger("tribind.service")

# With group_by_patient, hits are fetched in rounds of growing size until enough patients are found.
GROUP_FETCH_FACTOR = 4
GROUP_FETCH_CAP = 20_000
SEED_BATCH = 64


class Query(NamedTuple):
    """A resolved Search query / Classify subject."""

    vector: np.ndarray                 # unit [dim]
    modality: str
    case: Case | None                  # the stored case of a case_ref
    prepared: PreparedItem | None      # the decoded item of an item query (its raw input, for explanations)


class TribindServicer(pb_grpc.TribindServicer):
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.model: ServedModel | None = None
        self.store: CaseStore | None = None
        self.labels: LabelScorer | None = None
        self.explainer: Explainer | None = None
        self._closing = threading.Event()
        self._seeding = threading.Lock()  # held per seed batch, so close() never cuts a batch in half

    # -- life cycle -------------------------------------------------------------------------------

    def load(self) -> None:
        from encoders import create_model

        cfg = self.config
        if cfg.checkpoint is None:
            import torch

            # A random-init model must be the same one after a restart, or every stored vector would
            # turn stale (another model_version) each time the server starts.
            torch.manual_seed(0)
        bundle = create_model(cfg.preset, checkpoint=cfg.checkpoint)
        model = ServedModel(bundle, max_batch=cfg.max_batch, max_wait_s=cfg.max_wait_ms / 1000.0)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        # The store pages up to its max_k; a page at offset o of size k needs the top o + k of each target.
        self.store = CaseStore(cfg.data_dir, dim=model.dim, model_version=model.model_version,
                               max_k=max(101 * cfg.max_k, GROUP_FETCH_CAP))
        self.labels = LabelScorer(model)
        self.explainer = Explainer(model, self.labels, self.store)
        self.model = model
        log.info("loaded model %s (dim %d) and %d cases from %s",
                 model.model_version, model.dim, self.store.stats().cases, cfg.data_dir)

    def store_is_empty(self) -> bool:
        _, store = self._ready()
        return store.stats().cases == 0

    def seed(self, cases: Iterable[pb.Case], total: int, progress: Callable[[int, int], None] | None = None) -> int:
        """Upsert `cases` in batches through the same path as the Upsert RPC."""
        done = 0
        batch: list[pb.Case] = []

        def flush() -> int:
            with self._seeding:
                if self._closing.is_set():
                    return 0
                written = self._upsert(batch, None)[0]
            if progress:
                progress(done + written, total)
            return written

        for case in cases:
            if self._closing.is_set():
                break
            batch.append(case)
            if len(batch) == SEED_BATCH:
                done += flush()
                batch = []
        if batch:
            done += flush()
        return done

    def close(self) -> None:
        self._closing.set()
        with self._seeding:  # let a seed batch in flight commit
            pass
        if self.model is not None:
            self.model.close()
        if self.store is not None:
            # A retrained index is worth keeping: snapshotted, it spares the next start a retraining.
            if not self.store.wait_for_maintenance(self.config.retrain_wait_s):
                log.warning("an index retraining was still running after %.0f s (--retrain-wait-s); snapshotting "
                            "the current index, and the next start retrains again", self.config.retrain_wait_s)
            # Always, not only when this process wrote: after a kill -9 the previous snapshot is behind
            # SQLite, and the next start would replay the difference again.
            self.store.snapshot()
            self.store.close(snapshot=False)

    def _ready(self) -> tuple[ServedModel, CaseStore]:
        if self.model is None or self.store is None:
            raise unavailable("the server is still loading the model and the case library; retry in a few seconds")
        if self._closing.is_set():
            raise unavailable("the server is shutting down; retry on another replica or after the restart")
        return self.model, self.store

    # -- helpers ----------------------------------------------------------------------------------

    def _embed(self, items: list[PreparedItem], context: grpc.ServicerContext | None) -> np.ndarray:
        model, _ = self._ready()
        if not items:
            return np.zeros((0, model.dim), dtype=np.float32)
        if context is None:
            return model.embed(items)
        return model.embed(items, context.is_active, context.time_remaining())

    def _check_items_limit(self, n: int, field: str) -> None:
        if n > self.config.max_items:
            raise exhausted(f"{field}: {n} items exceed this server's limit of {self.config.max_items} per request; "
                            "split the request")

    def _query_vector(self, request: pb.SearchRequest | pb.ClassifyRequest, oneof: str,
                      context: grpc.ServicerContext) -> Query:
        model, store = self._ready()
        kind = request.WhichOneof(oneof)
        if kind is None:
            raise invalid(oneof, "set one of item, case_ref" + (" or vector" if oneof == "query" else ""))
        if kind == "item":
            prepared = model.prepare(request.item, "item")
            return Query(self._embed([prepared], context)[0], prepared.modality, None, prepared)
        if kind == "case_ref":
            case, modality, vector = resolve_case_ref(store, request.case_ref, "case_ref", model.model_version)
            return Query(vector, modality, case, None)
        vector = request.vector
        modality = modality_name(vector.modality, "vector.modality")
        if vector.model_version and vector.model_version != model.model_version:
            raise version_mismatch(
                f"vector.model_version is {vector.model_version}, the server runs {model.model_version}; "
                "embed the query with this server (Embed) or query by item")
        return Query(vector_to_array(vector, model.dim, "vector"), modality, None, None)

    def _explain_settings(self, request: pb.SearchRequest | pb.ClassifyRequest, evidence_refusal: str | None,
                          ) -> ExplainSettings | None:
        """The checked explain options, or None when the request asks for no explanation."""
        if not request.explain:
            if request.HasField("explain_options"):
                raise invalid("explain_options", "given without explain; set explain=true to get explanations")
            return None
        return parse_options(request.explain_options, "explain_options", evidence_refusal)

    def _query_side(self, query: Query, name: str) -> Side:
        assert self.explainer is not None
        return self.explainer.query_side(query.vector, query.modality, query.case, query.prepared, name)

    # -- RPCs -------------------------------------------------------------------------------------

    @rpc_errors
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        model, _ = self._ready()
        if not request.items:
            raise invalid("items", "is empty; send at least one item")
        self._check_items_limit(len(request.items), "items")
        prepared = [model.prepare(item, f"items[{i}]") for i, item in enumerate(request.items)]
        vectors = self._embed(prepared, context)
        return pb.EmbedResponse(
            embeddings=[array_to_vector(v, p.modality, model.model_version) for v, p in zip(vectors, prepared)],
            model_version=model.model_version,
            dim=model.dim,
        )

    @rpc_errors
    def Upsert(self, request: pb.UpsertRequest, context: grpc.ServicerContext) -> pb.UpsertResponse:
        self._ready()
        if not request.cases:
            raise invalid("cases", "is empty; send at least one case")
        self._check_items_limit(len(request.cases), "cases")
        _, vectors = self._upsert(list(request.cases), context)
        model, _ = self._ready()
        return pb.UpsertResponse(case_ids=[c.case_id for c in request.cases], vectors_written=vectors,
                                 model_version=model.model_version)

    def _upsert(self, messages: list[pb.Case], context: grpc.ServicerContext | None) -> tuple[int, int]:
        model, store = self._ready()
        cases: list[Case] = []
        pending: list[tuple[int, str, PreparedItem]] = []   # (case index, modality, item to embed)
        for i, msg in enumerate(messages):
            field = f"cases[{i}]"
            case = Case(case_id=msg.case_id, patient_id=msg.patient_id, study_time=msg.study_time or None,
                        labels=tuple(msg.labels), metadata=dict(msg.metadata))
            if msg.HasField("xray"):
                pending.append((i, "xray", model.prepare_xray(msg.xray.data, f"{field}.xray.data")))
            if msg.HasField("ecg"):
                pending.append((i, "ecg", model.prepare_ecg(msg.ecg, f"{field}.ecg")))
            if msg.report:
                pending.append((i, "text", model.prepare_text(msg.report, f"{field}.report")))
            raw_modalities = {m for j, m, _ in pending if j == i}
            for v, vector in enumerate(msg.vectors):
                vfield = f"{field}.vectors[{v}]"
                modality = modality_name(vector.modality, f"{vfield}.modality")
                if modality in raw_modalities or modality in case.vectors:
                    raise invalid(vfield, f"a second {modality} input for this case; send one {modality} input, "
                                          "either raw or as a vector")
                if not vector.model_version:
                    raise invalid(f"{vfield}.model_version",
                                  "is empty; give the model_version the vector was embedded with (Embed returns it)")
                case.vectors[modality] = Embedding(np.asarray(vector.values, dtype=np.float32), vector.model_version)
            if not raw_modalities and not case.vectors:
                raise invalid(field, "has no X-ray, ECG, report or vector; send at least one")
            cases.append(case)
        vectors = self._embed([item for _, _, item in pending], context)
        for (i, modality, item), vec in zip(pending, vectors):
            cases[i].vectors[modality] = Embedding(vec, model.model_version)
            cases[i].raw[modality] = item.raw
        if context is not None and not context.is_active():
            raise ClientGone()
        store.upsert_many(cases)  # returns once committed (SQLite WAL, synchronous=FULL)
        return len(cases), len(pending) + sum(len(m.vectors) for m in messages)

    @rpc_errors
    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        _, store = self._ready()
        if not request.case_ids:
            raise invalid("case_ids", "is empty; give the ids of the cases to delete")
        for i, case_id in enumerate(request.case_ids):
            if not case_id:
                raise invalid(f"case_ids[{i}]", "is empty")
        deleted = store.delete(list(request.case_ids), missing_ok=request.ignore_missing)
        return pb.DeleteResponse(deleted=deleted)

    @rpc_errors
    def GetCase(self, request: pb.GetCaseRequest, context: grpc.ServicerContext) -> pb.Case:
        _, store = self._ready()
        if not request.case_id:
            raise invalid("case_id", "is empty; give the id of a stored case")
        case = store.get(request.case_id, include_raw=request.include_media)
        reply = pb.Case(
            case_id=case.case_id, patient_id=case.patient_id, study_time=case.study_time or "",
            labels=list(case.labels), metadata=case.metadata,
            modalities=[MODALITY_TO_PB[m] for m in sorted(case.vectors, key=list(MODALITY_TO_PB).index)],
            model_version=next(iter({e.model_version for e in case.vectors.values()}), ""),
        )
        for modality, raw in case.raw.items():
            if modality == "xray":
                reply.xray.data = raw.data
            elif modality == "ecg" and raw.media_type == ECG_MEDIA_TYPE:
                reply.ecg.signal.CopyFrom(ecg_signal(*ecg_from_npz(raw.data)))
            elif modality == "text":
                reply.report = raw.data.decode("utf-8")
        if request.include_vectors:
            for modality, embedding in case.vectors.items():
                reply.vectors.append(array_to_vector(embedding.vector, modality, embedding.model_version))
        return reply

    @rpc_errors
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        model, store = self._ready()
        k, offset, max_k = int(request.k), int(request.offset), self.config.max_k
        if not 1 <= k <= max_k:
            raise invalid("k", f"is {k}; ask for 1..{max_k} hits per page")
        explain = self._explain_settings(
            request, "case evidence is for labels (Classify, or Explain with target.label); set it to 0 for Search")
        if explain is not None and k > MAX_EXPLAINED_HITS:
            raise invalid("k", f"is {k}; with explain ask for at most {MAX_EXPLAINED_HITS} hits per page (each hit "
                               "is explained), and page on with offset")
        if offset > 100 * max_k:
            raise invalid("offset", f"is {offset}; page at most {100 * max_k} hits deep, or narrow the filter")
        threshold = float(request.score_threshold) if request.HasField("score_threshold") else None
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise invalid("score_threshold", f"is {threshold}; scores are cosines in [-1, 1]")
        targets = modality_names(list(request.targets), "targets")
        search_filter = self._filter(request)
        resolved = self._query_vector(request, "query", context)
        query, case = resolved.vector, resolved.case
        if case is not None:
            if request.exclude_query_case:
                search_filter = _with(search_filter, exclude_case_ids=(case.case_id,))
            if request.exclude_query_patient:
                search_filter = _with(search_filter, patient_not_in=tuple(search_filter.patient_not_in) + (case.patient_id,))
        elif request.exclude_query_case or request.exclude_query_patient:
            raise invalid("exclude_query_case" if request.exclude_query_case else "exclude_query_patient",
                          "only applies to a case_ref query; for other queries use filter.patient_not_in")

        # An empty filter selects everything: the store answers it as no filter (skip its checks).
        store_filter = None if search_filter.is_empty() else search_filter

        def fetch(n: int) -> tuple[list, bool]:
            per_target = [store.search(t, query, k=n, score_threshold=threshold, filter=store_filter).hits
                          for t in targets]
            return hit_lists.merge(per_target), all(len(h) < n for h in per_target)

        reply = pb.SearchResponse(model_version=model.model_version)
        want = offset + k
        if not request.group_by_patient:
            hits, _ = fetch(want)
            _add_hits(reply.hits, hits[offset:want])
            if explain is not None:
                assert self.explainer is not None
                self.explainer.explain_hits(self._query_side(resolved, "query"), reply.hits, explain, context)
            return reply
        n = want * GROUP_FETCH_FACTOR
        while True:
            if not context.is_active():
                raise ClientGone()
            hits, exhausted_all = fetch(min(n, GROUP_FETCH_CAP))
            groups = hit_lists.group_by_patient(hits)
            if len(groups) >= want or exhausted_all or n >= GROUP_FETCH_CAP:
                break
            n *= GROUP_FETCH_FACTOR
        for group in groups[offset:want]:
            reply.groups.append(pb.PatientGroup(patient_id=group.patient_id, best_score=group.best_score,
                                                hits=[_hit_pb(h) for h in group.hits]))
            reply.hits.append(_hit_pb(group.hits[0]))
        if explain is not None:
            # The best hit of each group, which reply.hits repeats: explained once, copied into its group.
            assert self.explainer is not None
            self.explainer.explain_hits(self._query_side(resolved, "query"), reply.hits, explain, context)
            for group, hit in zip(reply.groups, reply.hits):
                group.hits[0].explanation.CopyFrom(hit.explanation)
        return reply

    def _filter(self, request: pb.SearchRequest) -> SearchFilter:
        if not request.HasField("filter"):
            return SearchFilter()  # what the unset (empty) message gives, without reading its fields
        f = request.filter
        return SearchFilter(
            labels_any=tuple(f.labels_any), labels_all=tuple(f.labels_all), labels_none=tuple(f.labels_none),
            patient_in=tuple(f.patient_in), patient_not_in=tuple(f.patient_not_in),
            metadata_equals=dict(f.metadata_equals), time_from=f.time_from or None, time_to=f.time_to or None,
        )

    @rpc_errors
    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        model, _ = self._ready()
        explain = self._explain_settings(request, None)
        which = request.WhichOneof("labels")
        if which is None:
            raise invalid("label_set", "give a built-in label set (see ListLabelSets) or custom labels")
        assert self.labels is not None
        if which == "label_set":
            label_set = self.labels.builtin(request.label_set)
        else:
            label_set = self.labels.custom(request.custom)
        subject = self._query_vector(request, "subject", context)
        scores = self.labels.score(label_set, subject.vector, subject.modality)
        if request.top_k:
            scores = scores[: request.top_k]
        reply = pb.ClassifyResponse(
            labels=[pb.LabelScore(label=s.label, score=s.score, probability=s.probability) for s in scores],
            label_set=label_set.name, modality=MODALITY_TO_PB[subject.modality], model_version=model.model_version,
        )
        if explain is not None:
            assert self.explainer is not None
            self.explainer.explain_labels(self._query_side(subject, "subject"), label_set, reply.labels, explain,
                                          context)
        return reply

    @rpc_errors
    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        self._ready()
        assert self.explainer is not None
        return self.explainer.explain(request, context)

    @rpc_errors
    def ListLabelSets(self, request: pb.ListLabelSetsRequest, context: grpc.ServicerContext) -> pb.ListLabelSetsResponse:
        self._ready()
        assert self.labels is not None
        return pb.ListLabelSetsResponse(label_sets=self.labels.describe_all())

    @rpc_errors
    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        model, store = self._ready()
        stats = store.stats()
        kinds = sorted({m.index_kind for m in stats.modalities.values()})
        return pb.StatsResponse(
            cases=stats.cases, patients=stats.patients,
            modalities=[pb.ModalityCount(modality=MODALITY_TO_PB[name], vectors=m.vectors)
                        for name, m in stats.modalities.items()],
            index_kind=",".join(kinds), model_version=model.model_version,
            data_dir=str(self.config.data_dir.resolve()), dim=model.dim,
        )

    @rpc_stream_errors
    def Reindex(self, request: pb.ReindexRequest, context: grpc.ServicerContext) -> Iterator[pb.ReindexProgress]:
        model, store = self._ready()
        total = sum(sum(m.stale.values()) for m in store.stats().modalities.values())
        done = skipped = 0
        last_report = time.monotonic()
        pending: list[tuple[str, PreparedItem]] = []

        def flush() -> int:
            vectors = self._embed([item for _, item in pending], context)  # one forward pass per modality
            for (case_id, item), vector in zip(pending, vectors):
                store.update_vectors(case_id, {item.modality: Embedding(vector, model.model_version)})
            count = len(pending)
            pending.clear()
            return count

        # Re-embedded vectors get the live version, so the stale iterator (by vec_id, version != live)
        # never yields them again: one pass.
        for stale in store.iter_stale():
            if not context.is_active():
                raise ClientGone()
            if stale.raw is None:
                skipped += 1
                continue
            pending.append((stale.case_id, model.prepare_raw(stale.modality, stale.raw,
                                                             f"{stale.case_id}.{stale.modality}")))
            if len(pending) == self.config.max_batch:
                done += flush()
            if time.monotonic() - last_report > 0.5:
                last_report = time.monotonic()
                yield pb.ReindexProgress(done=done, total=total, skipped=skipped, model_version=model.model_version)
        if pending:
            done += flush()
        store.snapshot()
        yield pb.ReindexProgress(done=done, total=total, skipped=skipped, finished=True,
                                 model_version=model.model_version)


def _with(search_filter: SearchFilter, **changes: Any) -> SearchFilter:
    from dataclasses import replace

    return replace(search_filter, **changes)


def _hit_pb(hit: Any) -> pb.Hit:
    return pb.Hit(case_id=hit.case_id, modality=MODALITY_TO_PB[hit.modality], score=float(hit.score),
                  labels=hit.labels, metadata=hit.metadata, patient_id=hit.patient_id,
                  study_time=hit.study_time or "")


def _add_hits(field: Any, hits: list) -> None:
    """Append hits to a repeated Hit field, built in place (as `_hit_pb`, without a copy per hit)."""
    add = field.add
    for hit in hits:
        add(case_id=hit.case_id, modality=MODALITY_TO_PB[hit.modality], score=float(hit.score),
            labels=hit.labels, metadata=hit.metadata, patient_id=hit.patient_id, study_time=hit.study_time or "")
