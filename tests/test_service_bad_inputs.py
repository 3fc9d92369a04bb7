"""The bad-input matrix: each bad request gets its expected status code and a "field: reason" message,
and leaves the library exactly as it was (Stats and a reference case compared before and after)."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from PIL import Image

from protos.tribind.v1 import tribind_pb2 as pb
from protos.tribind.v1 import tribind_pb2_grpc as pb_grpc
from test_service_harness import ServerProcess, reap_servers  # noqa: F401 (autouse: no server outlives its module)

SEEDED = 6
REF = "ph0-000000"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("bad"), "--max-k", "50", seed_cases=SEEDED).start()
    yield proc
    assert proc.terminate() == 0


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.TribindStub(channel)


@pytest.fixture(scope="module")
def info(stub):
    stats = stub.Stats(pb.StatsRequest())
    ref = stub.GetCase(pb.GetCaseRequest(case_id=REF, include_media=True, include_vectors=True))
    text_only = next(c for c in (stub.GetCase(pb.GetCaseRequest(case_id=f"ph0-{i:06d}")) for i in range(SEEDED))
                     if pb.MODALITY_ECG not in c.modalities or pb.MODALITY_XRAY not in c.modalities)
    return {"version": stats.model_version, "dim": stats.dim, "partial_case": text_only}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _ecg(**overrides) -> pb.Item:
    fields = dict(samples=list(np.sin(np.arange(12 * 500) / 10.0).astype(np.float32) * 0.5), n_leads=12,
                  n_samples=500, lead_names=["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"],
                  sampling_rate_hz=100.0)
    fields.update(overrides)
    return pb.Item(ecg=pb.Ecg(signal=pb.EcgSignal(**fields)))


def _unit(dim: int) -> list[float]:
    v = np.ones(dim, dtype=np.float32)
    return list(v / np.linalg.norm(v))


def _case(case_id: str = "bad-new", **fields) -> pb.Case:
    base = dict(case_id=case_id, patient_id="bad-p", report="Small left pleural effusion.")
    base.update(fields)
    return pb.Case(**base)


Row = tuple[str, str, Callable[[dict], object], grpc.StatusCode, str]

# (name, rpc, request builder(info), expected code, fragment the message must contain)
MATRIX: list[Row] = [
    ("embed-no-items", "Embed", lambda i: pb.EmbedRequest(), INVALID, "items"),
    ("embed-empty-item", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item()]), INVALID, "items[0]"),
    ("embed-undecodable-image", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item(xray=pb.XRayImage(data=b"not an image"))]),
     INVALID, "items[0].xray"),
    ("embed-empty-image", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item(xray=pb.XRayImage())]), INVALID, "xray"),
    ("embed-truncated-png", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item(xray=pb.XRayImage(data=_png()[:80]))]),
     INVALID, "xray"),
    ("embed-ecg-wrong-shape", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(n_samples=499)]), INVALID, "samples"),
    ("embed-ecg-lead-count", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(lead_names=["I", "II"])]), INVALID,
     "lead_names"),
    ("embed-ecg-zero-rate", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(sampling_rate_hz=0.0)]), INVALID,
     "sampling_rate_hz"),
    ("embed-ecg-absurd-rate", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(sampling_rate_hz=1e7)]), INVALID,
     "sampling_rate_hz"),
    ("embed-ecg-nan", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(samples=[float("nan")] + [0.1] * (12 * 500 - 1))]),
     INVALID, "NaN"),
    ("embed-ecg-inf", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(samples=[0.1] * (12 * 500 - 1) + [float("inf")])]),
     INVALID, "Inf"),
    ("embed-ecg-no-standard-lead", "Embed", lambda i: pb.EmbedRequest(items=[_ecg(lead_names=[f"X{n}" for n in range(12)])]),
     INVALID, "ecg"),
    ("embed-ecg-no-source", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item(ecg=pb.Ecg())]), INVALID, "ecg"),
    ("embed-wfdb-garbage", "Embed",
     lambda i: pb.EmbedRequest(items=[pb.Item(ecg=pb.Ecg(wfdb=pb.WfdbRecord(header=b"\x00garbage", signal=b"\x01\x02")))]),
     INVALID, "wfdb"),
    ("embed-empty-text", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item(text="   ")]), INVALID, "items[0].text"),
    ("embed-too-many-items", "Embed", lambda i: pb.EmbedRequest(items=[pb.Item(text="a")] * 513), EXHAUSTED, "513"),
    ("upsert-no-cases", "Upsert", lambda i: pb.UpsertRequest(), INVALID, "cases"),
    ("upsert-no-case-id", "Upsert", lambda i: pb.UpsertRequest(cases=[_case("")]), INVALID, "cases[0].case_id"),
    ("upsert-no-patient", "Upsert", lambda i: pb.UpsertRequest(cases=[_case(patient_id="")]), INVALID, "patient_id"),
    ("upsert-no-inputs", "Upsert", lambda i: pb.UpsertRequest(cases=[_case(report="")]), INVALID, "cases[0]"),
    ("upsert-bad-time", "Upsert", lambda i: pb.UpsertRequest(cases=[_case(study_time="yesterday")]), INVALID,
     "study_time"),
    ("upsert-duplicate-ids", "Upsert", lambda i: pb.UpsertRequest(cases=[_case(), _case()]), INVALID, "duplicates"),
    ("upsert-one-bad-of-two", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case("bad-ok"), _case("bad-img", xray=pb.XRayImage(data=b"GIF89a..."))]),
     INVALID, "cases[1].xray"),
    ("upsert-vector-wrong-dim", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case(report="", vectors=[pb.Vector(modality=pb.MODALITY_TEXT, values=[1.0],
                                                                           model_version=i["version"])])]),
     INVALID, "vectors"),
    ("upsert-vector-no-version", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case(report="", vectors=[pb.Vector(modality=pb.MODALITY_TEXT,
                                                                           values=_unit(i["dim"]))])]),
     INVALID, "model_version"),
    ("upsert-vector-other-model", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case(report="", vectors=[pb.Vector(modality=pb.MODALITY_TEXT, values=_unit(i["dim"]),
                                                                           model_version="other-model")])]),
     PRECONDITION, "other-model"),
    ("upsert-vector-not-unit", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case(report="", vectors=[pb.Vector(modality=pb.MODALITY_TEXT,
                                                                           values=[2.0] * i["dim"],
                                                                           model_version=i["version"])])]),
     INVALID, "norm"),
    ("upsert-vector-no-modality", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case(report="", vectors=[pb.Vector(values=_unit(i["dim"]),
                                                                           model_version=i["version"])])]),
     INVALID, "modality"),
    ("upsert-text-twice", "Upsert",
     lambda i: pb.UpsertRequest(cases=[_case(vectors=[pb.Vector(modality=pb.MODALITY_TEXT, values=_unit(i["dim"]),
                                                                 model_version=i["version"])])]),
     INVALID, "second text"),
    ("search-k-zero", "Search", lambda i: pb.SearchRequest(item=pb.Item(text="effusion"), k=0), INVALID, "k:"),
    ("search-k-too-big", "Search", lambda i: pb.SearchRequest(item=pb.Item(text="effusion"), k=51), INVALID, "k:"),
    ("search-offset-too-deep", "Search", lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, offset=10**6), INVALID,
     "offset"),
    ("search-no-query", "Search", lambda i: pb.SearchRequest(k=5), INVALID, "query"),
    ("search-unknown-case", "Search",
     lambda i: pb.SearchRequest(case_ref=pb.CaseRef(case_id="nope", modality=pb.MODALITY_TEXT), k=5), NOT_FOUND, "nope"),
    ("search-case-no-modality", "Search", lambda i: pb.SearchRequest(case_ref=pb.CaseRef(case_id=REF), k=5), INVALID,
     "case_ref.modality"),
    ("search-case-missing-modality", "Search",
     lambda i: pb.SearchRequest(case_ref=pb.CaseRef(
         case_id=i["partial_case"].case_id,
         modality=pb.MODALITY_ECG if pb.MODALITY_ECG not in i["partial_case"].modalities else pb.MODALITY_XRAY), k=5),
     INVALID, "has no"),
    ("search-vector-wrong-dim", "Search",
     lambda i: pb.SearchRequest(vector=pb.Vector(modality=pb.MODALITY_TEXT, values=[1.0, 0.0]), k=5), INVALID, "values"),
    ("search-vector-zero", "Search",
     lambda i: pb.SearchRequest(vector=pb.Vector(modality=pb.MODALITY_TEXT, values=[0.0] * i["dim"]), k=5), INVALID,
     "zero"),
    ("search-vector-other-model", "Search",
     lambda i: pb.SearchRequest(vector=pb.Vector(modality=pb.MODALITY_TEXT, values=_unit(i["dim"]), model_version="old"),
                                k=5), PRECONDITION, "old"),
    ("search-bad-time-filter", "Search",
     lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, filter=pb.Filter(time_from="last tuesday")), INVALID,
     "time_from"),
    ("search-inverted-time-range", "Search",
     lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, filter=pb.Filter(time_from="2200-01-01", time_to="2100-01-01")),
     INVALID, "time_to"),
    ("search-empty-label-in-filter", "Search",
     lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, filter=pb.Filter(labels_any=[""])), INVALID, "labels_any"),
    ("search-threshold-out-of-range", "Search",
     lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, score_threshold=2.0), INVALID, "score_threshold"),
    ("search-exclude-self-without-case", "Search",
     lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, exclude_query_case=True), INVALID, "exclude_query_case"),
    ("search-unknown-target", "Search", lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=5, targets=[7]), INVALID,
     "targets[0]"),
    ("search-explain-page-too-big", "Search", lambda i: pb.SearchRequest(item=pb.Item(text="e"), k=33, explain=True),
     INVALID, "k:"),
    ("classify-unknown-label-set", "Classify",
     lambda i: pb.ClassifyRequest(item=pb.Item(text="e"), label_set="../../etc/passwd"), INVALID, "label_set"),
    ("classify-no-labels", "Classify", lambda i: pb.ClassifyRequest(item=pb.Item(text="e")), INVALID, "label_set"),
    ("classify-no-subject", "Classify", lambda i: pb.ClassifyRequest(label_set="phantom"), INVALID, "subject"),
    ("classify-custom-empty-name", "Classify",
     lambda i: pb.ClassifyRequest(item=pb.Item(text="e"), custom=pb.CustomLabels(labels=[pb.CustomLabel(name=" ")])),
     INVALID, "custom.labels[0].name"),
    ("classify-custom-duplicate", "Classify",
     lambda i: pb.ClassifyRequest(item=pb.Item(text="e"), custom=pb.CustomLabels(
         labels=[pb.CustomLabel(name="a"), pb.CustomLabel(name="a")])), INVALID, "twice"),
    ("classify-bad-image", "Classify",
     lambda i: pb.ClassifyRequest(item=pb.Item(xray=pb.XRayImage(data=b"\x89PNG broken")), label_set="phantom"), INVALID,
     "xray"),
    ("delete-unknown-id", "Delete", lambda i: pb.DeleteRequest(case_ids=[REF, "nope"]), NOT_FOUND, "nope"),
    ("delete-no-ids", "Delete", lambda i: pb.DeleteRequest(), INVALID, "case_ids"),
    ("get-unknown-id", "GetCase", lambda i: pb.GetCaseRequest(case_id="nope"), NOT_FOUND, "nope"),
    ("get-empty-id", "GetCase", lambda i: pb.GetCaseRequest(), INVALID, "case_id"),
]


def _state(stub) -> tuple:
    stats = stub.Stats(pb.StatsRequest())
    ref = stub.GetCase(pb.GetCaseRequest(case_id=REF, include_media=True, include_vectors=True))
    probe = [stub.GetCase(pb.GetCaseRequest(case_id=c)) for c in ("bad-new", "bad-ok", "bad-img", "")
             if c and _exists(stub, c)]
    return stats.SerializeToString(deterministic=True), ref.SerializeToString(deterministic=True), len(probe)


def _exists(stub, case_id: str) -> bool:
    try:
        stub.GetCase(pb.GetCaseRequest(case_id=case_id))
        return True
    except grpc.RpcError as exc:
        assert exc.code() == NOT_FOUND
        return False


def test_the_matrix_is_big_and_distinct():
    assert len(MATRIX) >= 30
    assert len({row[0] for row in MATRIX}) == len(MATRIX)


@pytest.mark.parametrize("name, rpc, build, code, fragment", MATRIX, ids=[row[0] for row in MATRIX])
def test_bad_request_is_refused_and_changes_nothing(stub, info, name, rpc, build, code, fragment):
    before = _state(stub)
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, rpc)(build(info), timeout=60)
    error = caught.value
    assert error.code() == code, f"{name}: {error.code()} {error.details()}"
    assert fragment in error.details(), f"{name}: {error.details()!r} does not mention {fragment!r}"
    assert "Traceback" not in error.details()
    assert _state(stub) == before
