"""`TribindClient`: the Python SDK. Typed methods mirroring the RPCs, numpy in and out.

    from service.client import TribindClient
    from service.client_types import text_item, xray_item
    with TribindClient("127.0.0.1:50051") as client:
        result = client.search(text_item("large left pleural effusion"), targets=["xray"], k=10)

Calls that are safe to repeat (every read, Upsert - idempotent by case_id - and Delete with
ignore_missing) are retried with exponential backoff while the server is UNAVAILABLE (starting,
restarting, briefly unreachable). Errors arrive as `TribindError` subclasses whose message is the
server's "field: reason".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from protos.tribind.v1 import tribind_pb2 as pb
from protos.tribind.v1 import tribind_pb2_grpc as pb_grpc
from service.client_types import (
    PB_TO_MODALITY,
    CaseInput,
    Classification,
    Embeddings,
    ExplainOptions,
    ExplainResult,
    Explanation,
    Hit,
    LabelScore,
    SearchFilter,
    SearchResult,
    Stats,
    StoredCase,
    explanation_or_none,
    modality_pb,
)

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


class TribindError(Exception):
    """A failed call: `code` is the gRPC status code, `message` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


class InvalidArgument(TribindError):
    pass


class NotFound(TribindError):
    pass


class VersionMismatch(TribindError):
    pass


class AuthError(TribindError):
    """UNAUTHENTICATED (no or wrong key) or PERMISSION_DENIED (a read-only key writing)."""


class ResourceExhausted(TribindError):
    pass


class Unavailable(TribindError):
    pass


_ERROR_TYPES: dict[grpc.StatusCode, type[TribindError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: VersionMismatch,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def error_from_rpc(exc: grpc.RpcError) -> TribindError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return _ERROR_TYPES.get(code, TribindError)(code, details or code.name)


class TribindClient:
    """A connection to a tribind server. Use as a context manager or call `close()`."""

    def __init__(
        self,
        target: str = DEFAULT_SERVER,
        api_key: str | None = None,
        *,
        root_certificates: bytes | str | Path | None = None,
        timeout_s: float = 60.0,
        retries: int = 4,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """`root_certificates` (PEM bytes or a file) switches to TLS; None is plaintext (loopback, trusted nets)."""
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if root_certificates is not None:
            pem = root_certificates if isinstance(root_certificates, bytes) else Path(root_certificates).read_bytes()
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(pem), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.TribindStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries

    def __enter__(self) -> "TribindClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], request: Any, *, idempotent: bool, timeout_s: float | None = None) -> T:
        attempts = 1 + (self.retries if idempotent else 0)
        delay = 0.2
        for attempt in range(attempts):
            try:
                return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                    raise error_from_rpc(exc) from None
                time.sleep(delay)
                delay = min(delay * 2, 3.0)
        raise AssertionError("unreachable")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the health service says SERVING (the model and the library are loaded)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service="tribind.v1.Tribind"), timeout=2.0)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.2)
        raise Unavailable(grpc.StatusCode.UNAVAILABLE, f"{self.target} not SERVING after {timeout_s:.0f} s (last: {last})")

    # -- RPCs -------------------------------------------------------------------------------------

    def embed(self, items: Sequence[pb.Item]) -> Embeddings:
        reply = self._call(self._stub.Embed, pb.EmbedRequest(items=list(items)), idempotent=True)
        vectors = np.asarray([list(v.values) for v in reply.embeddings], dtype=np.float32).reshape(len(items), -1)
        return Embeddings(vectors, [PB_TO_MODALITY.get(v.modality, "") for v in reply.embeddings], reply.model_version)

    def upsert(self, cases: Sequence[CaseInput | pb.Case]) -> pb.UpsertResponse:
        messages = [c.to_pb() if isinstance(c, CaseInput) else c for c in cases]
        return self._call(self._stub.Upsert, pb.UpsertRequest(cases=messages), idempotent=True)

    def delete(self, case_ids: Sequence[str], ignore_missing: bool = False) -> int:
        request = pb.DeleteRequest(case_ids=list(case_ids), ignore_missing=ignore_missing)
        return int(self._call(self._stub.Delete, request, idempotent=ignore_missing).deleted)

    def get_case(self, case_id: str, include_media: bool = False, include_vectors: bool = False) -> StoredCase:
        request = pb.GetCaseRequest(case_id=case_id, include_media=include_media, include_vectors=include_vectors)
        return StoredCase.from_pb(self._call(self._stub.GetCase, request, idempotent=True))

    def search(
        self,
        query: pb.Item | pb.CaseRef | pb.Vector,
        targets: Sequence[str] = (),
        k: int = 10,
        offset: int = 0,
        score_threshold: float | None = None,
        filter: SearchFilter | None = None,
        exclude_query_case: bool = False,
        exclude_query_patient: bool = False,
        group_by_patient: bool = False,
        explain: bool | ExplainOptions = False,
    ) -> SearchResult:
        """`explain` (True, or ExplainOptions) attaches a pairwise explanation to each hit (at most 32 hits)."""
        request = pb.SearchRequest(
            targets=[modality_pb(t) for t in targets], k=k, offset=offset,
            exclude_query_case=exclude_query_case, exclude_query_patient=exclude_query_patient,
            group_by_patient=group_by_patient,
        )
        _set_query(request, query)
        _set_explain(request, explain)
        if score_threshold is not None:
            request.score_threshold = score_threshold
        if filter is not None:
            request.filter.CopyFrom(filter.to_pb())
        reply = self._call(self._stub.Search, request, idempotent=True)
        groups = {g.patient_id: [Hit.from_pb(h) for h in g.hits] for g in reply.groups}
        return SearchResult([Hit.from_pb(h) for h in reply.hits], groups, reply.model_version)

    def classify(
        self,
        subject: pb.Item | pb.CaseRef,
        label_set: str | None = None,
        labels: Sequence[str | tuple[str, Sequence[str]]] | None = None,
        top_k: int = 0,
        explain: bool | ExplainOptions = False,
    ) -> Classification:
        """Zero-shot labels of an item or stored case: a built-in `label_set`, or custom `labels`
        (names, or (name, prompts) pairs). `explain` (True, or ExplainOptions, e.g. with evidence_k)
        attaches to each label the subject's relevance for its score."""
        request = pb.ClassifyRequest(top_k=top_k)
        _set_query(request, subject)
        _set_explain(request, explain)
        if labels is not None:
            for entry in labels:
                name, prompts = (entry, ()) if isinstance(entry, str) else entry
                request.custom.labels.append(pb.CustomLabel(name=name, prompts=list(prompts)))
        elif label_set is not None:
            request.label_set = label_set
        reply = self._call(self._stub.Classify, request, idempotent=True)
        return Classification(
            [LabelScore(s.label, float(s.score), float(s.probability), explanation_or_none(s)) for s in reply.labels],
            reply.label_set, PB_TO_MODALITY.get(reply.modality, ""), reply.model_version,
        )

    def explain(
        self,
        subject: pb.Item | pb.CaseRef,
        *,
        label: str | None = None,
        text: str | None = None,
        other: pb.Item | pb.CaseRef | None = None,
        label_set: str = "",
        contrast: bool = False,
        options: ExplainOptions | None = None,
        timeout_s: float | None = None,
    ) -> ExplainResult:
        """Which regions of `subject` drive its cosine with exactly one target: a `label` of `label_set`
        (default phantom; `contrast`: positive minus negative prompts, = Classify's score), a free `text`,
        or `other` (an item or a stored case: pairwise, both sides are explained)."""
        given = [name for name, value in (("label", label), ("text", text), ("other", other)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one target: label, text or other (got {', '.join(given) or 'none'})")
        request = pb.ExplainRequest()
        if not _set_item_or_case(request, subject):
            raise TypeError(f"cannot explain a {type(subject).__name__}; use an Item or a CaseRef")
        target = request.target
        target.label_set = label_set
        target.contrast = contrast
        if label is not None:
            target.label = label
        elif text is not None:
            target.text = text
        elif not _set_item_or_case(target, other):
            raise TypeError(f"cannot explain against a {type(other).__name__}; use an Item or a CaseRef")
        if options is not None:
            request.options.CopyFrom(options.to_pb())
        reply = self._call(self._stub.Explain, request, idempotent=True, timeout_s=timeout_s)
        return ExplainResult(Explanation.from_pb(reply.explanation), reply.model_version)

    def list_label_sets(self) -> list[pb.LabelSet]:
        return list(self._call(self._stub.ListLabelSets, pb.ListLabelSetsRequest(), idempotent=True).label_sets)

    def stats(self) -> Stats:
        reply = self._call(self._stub.Stats, pb.StatsRequest(), idempotent=True)
        return Stats(
            cases=reply.cases, patients=reply.patients,
            vectors={PB_TO_MODALITY.get(m.modality, "?"): int(m.vectors) for m in reply.modalities},
            index_kind=reply.index_kind, model_version=reply.model_version, data_dir=reply.data_dir, dim=reply.dim,
        )

    def reindex(self, timeout_s: float = 3600.0) -> Iterator[pb.ReindexProgress]:
        """Progress messages until the server has re-embedded every stored input."""
        try:
            yield from self._stub.Reindex(pb.ReindexRequest(), timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None


def _set_explain(request: pb.SearchRequest | pb.ClassifyRequest, explain: bool | ExplainOptions) -> None:
    if isinstance(explain, ExplainOptions):
        request.explain = True
        request.explain_options.CopyFrom(explain.to_pb())
    else:
        request.explain = bool(explain)


def _set_item_or_case(message: Any, value: Any) -> bool:
    """Put an Item or a CaseRef into `message`'s `item` / `case_ref` oneof; False for anything else."""
    if isinstance(value, pb.Item):
        message.item.CopyFrom(value)
    elif isinstance(value, pb.CaseRef):
        message.case_ref.CopyFrom(value)
    else:
        return False
    return True


def _set_query(request: pb.SearchRequest | pb.ClassifyRequest, query: pb.Item | pb.CaseRef | pb.Vector) -> None:
    if _set_item_or_case(request, query):
        return
    if isinstance(query, pb.Vector) and isinstance(request, pb.SearchRequest):
        request.vector.CopyFrom(query)
    else:
        raise TypeError(f"cannot query with a {type(query).__name__}; use an Item, a CaseRef or (Search only) a Vector")
