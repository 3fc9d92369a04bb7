"""Every RPC against a real server subprocess (test preset, 24 seeded phantom cases), through the SDK.

One server for the module; tests that write use their own case ids and clean up, so the order of
tests does not matter.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from protos.tribind.v1 import tribind_pb2 as pb
from service.client import InvalidArgument, NotFound, TribindError
from service.client_types import (
    CaseInput,
    SearchFilter,
    case_ref,
    ecg_item,
    text_item,
    vector,
    xray_item,
)
from test_service_harness import ServerProcess, reap_servers  # noqa: F401 (autouse: no server outlives its module)

SEEDED = 24
MAX_MESSAGE_MB = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("api"), "--max-message-mb", str(MAX_MESSAGE_MB),
                         "--max-k", "50", "--max-concurrent-rpcs", "4", seed_cases=SEEDED).start()
    yield proc
    assert proc.terminate() == 0, "".join(proc.stderr[-30:])


@pytest.fixture(scope="module")
def client(server):
    with server.client(max_message_bytes=4 * 1024 * 1024) as c:
        yield c


@pytest.fixture(scope="module")
def seeded(client):
    """The seeded cases with their raw inputs, by id."""
    return {f"ph0-{i:06d}": client.get_case(f"ph0-{i:06d}", include_media=True, include_vectors=True)
            for i in range(SEEDED)}


@pytest.fixture(scope="module")
def full_case(seeded):
    """A seeded case with all three modalities."""
    return next(c for c in seeded.values() if set(c.modalities) == {"xray", "ecg", "text"})


def test_health_serving_and_reflection_lists_every_rpc(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="tribind.v1.Tribind"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "tribind.v1.Tribind" in services and "grpc.health.v1.Health" in services
        from google.protobuf.descriptor_pool import DescriptorPool

        service = DescriptorPool(database).FindServiceByName("tribind.v1.Tribind")
        assert {m.name for m in service.methods} == {
            "Embed", "Upsert", "Delete", "GetCase", "Search", "Classify", "ListLabelSets", "Stats", "Reindex",
            "Explain"}


def test_stats_counts_the_seeded_library(client, seeded):
    stats = client.stats()
    assert stats.cases == SEEDED
    assert stats.patients == len({c.patient_id for c in seeded.values()})
    for modality in ("xray", "ecg", "text"):
        assert stats.vectors[modality] == sum(modality in c.modalities for c in seeded.values())
    assert stats.dim == 32 and stats.model_version.startswith("test-")
    assert stats.index_kind == "flat" and stats.data_dir


def test_embed_every_input_kind_matches_the_stored_vectors(client, full_case, tmp_path):
    import wfdb

    signal, fs, leads = full_case.ecg
    wfdb.wrsamp("rec", fs=fs, units=["mV"] * len(leads), sig_name=leads, p_signal=signal.T.astype(np.float64),
                fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
                write_dir=str(tmp_path))
    result = client.embed([
        xray_item(full_case.xray), ecg_item(signal, fs, leads), ecg_item(record=tmp_path / "rec"),
        text_item(full_case.report),
    ])
    assert result.modalities == ["xray", "ecg", "ecg", "text"]
    assert result.model_version == full_case.model_version
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.vectors[0], full_case.vectors["xray"], atol=1e-5)
    np.testing.assert_allclose(result.vectors[1], full_case.vectors["ecg"], atol=1e-5)
    np.testing.assert_allclose(result.vectors[2], full_case.vectors["ecg"], atol=1e-3)  # 1 uV WFDB quantisation
    np.testing.assert_allclose(result.vectors[3], full_case.vectors["text"], atol=1e-5)


def test_upsert_get_idempotent_and_delete(client, full_case):
    before = client.stats().cases
    signal, fs, leads = full_case.ecg
    case = CaseInput(case_id="api-roundtrip", patient_id="api-p1", study_time="2190-01-02T03:04:05",
                     labels=["cardiomegaly"], metadata={"site": "A"}, xray=full_case.xray,
                     ecg=ecg_item(signal, fs, leads), report="Cardiomegaly. ECG: sinus rhythm.")
    reply = client.upsert([case])
    assert list(reply.case_ids) == ["api-roundtrip"] and reply.vectors_written == 3
    client.upsert([case])  # idempotent: same case again
    assert client.stats().cases == before + 1
    got = client.get_case("api-roundtrip", include_media=True, include_vectors=True)
    assert got.xray == full_case.xray and got.report == case.report
    assert got.labels == ["cardiomegaly"] and got.metadata == {"site": "A"} and got.patient_id == "api-p1"
    assert got.study_time == "2190-01-02T03:04:05" and got.modalities == ["xray", "ecg", "text"]
    np.testing.assert_allclose(got.ecg[0], signal, atol=1e-6)
    assert got.ecg[1] == fs and got.ecg[2] == leads
    # a precomputed-vector case: vectors from Embed, no raw input
    embedded = client.embed([text_item("right pleural effusion")])
    client.upsert([CaseInput(case_id="api-vector", patient_id="api-p2", vectors={"text": embedded.vectors[0]},
                             model_version=embedded.model_version)])
    hit = client.search(vector(embedded.vectors[0], "text"), targets=["text"], k=1).hits[0]
    assert hit.case_id == "api-vector" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert client.delete(["api-roundtrip", "api-vector"]) == 2
    assert client.stats().cases == before
    with pytest.raises(NotFound):
        client.get_case("api-roundtrip")
    assert client.delete(["api-roundtrip"], ignore_missing=True) == 0


def test_search_query_kinds_agree_and_page(client, full_case):
    by_case = client.search(case_ref(full_case.case_id, "text"), targets=["xray"], k=10)
    by_vector = client.search(vector(full_case.vectors["text"], "text", full_case.model_version), targets=["xray"], k=10)
    by_item = client.search(text_item(full_case.report), targets=["xray"], k=10)
    ids = [h.case_id for h in by_case.hits]
    assert ids == [h.case_id for h in by_vector.hits] == [h.case_id for h in by_item.hits]
    scores = [h.score for h in by_case.hits]
    assert scores == sorted(scores, reverse=True) and len(ids) == 10
    page2 = client.search(case_ref(full_case.case_id, "text"), targets=["xray"], k=5, offset=5)
    assert [h.case_id for h in page2.hits] == ids[5:10]
    cut = scores[4]
    above = client.search(case_ref(full_case.case_id, "text"), targets=["xray"], k=10, score_threshold=cut)
    assert [h.case_id for h in above.hits] == [i for i, s in zip(ids, scores) if s >= cut]
    both = client.search(case_ref(full_case.case_id, "ecg"), targets=["xray", "text"], k=50)  # > all 2 x 24
    assert {h.modality for h in both.hits} == {"xray", "text"}
    assert [h.score for h in both.hits] == sorted((h.score for h in both.hits), reverse=True)
    selfless = client.search(case_ref(full_case.case_id, "ecg"), k=50, exclude_query_case=True)
    assert full_case.case_id not in {h.case_id for h in selfless.hits}
    no_patient = client.search(case_ref(full_case.case_id, "ecg"), k=50, exclude_query_patient=True)
    assert full_case.patient_id not in {h.patient_id for h in no_patient.hits}
    grouped = client.search(case_ref(full_case.case_id, "ecg"), targets=["xray", "text"], k=5, group_by_patient=True)
    assert len(grouped.hits) == len(grouped.groups) == 5
    assert len({h.patient_id for h in grouped.hits}) == 5
    for hit in grouped.hits:
        assert grouped.groups[hit.patient_id][0] == hit


def test_filters_select_exactly_the_matching_cases(client, seeded, full_case):
    everything = client.search(case_ref(full_case.case_id, "text"), targets=["text"], k=50).hits
    assert len(everything) == sum("text" in c.modalities for c in seeded.values())
    labels = sorted({label for c in seeded.values() for label in c.labels})
    some_label, other_label = labels[0], labels[-1]
    patients = sorted({c.patient_id for c in seeded.values()})[:3]
    times = sorted(c.study_time for c in seeded.values())
    middle = times[len(times) // 2]
    sex = full_case.metadata["sex"]
    cases = [
        (SearchFilter(labels_any=[some_label, other_label]), lambda c: bool({some_label, other_label} & set(c.labels))),
        (SearchFilter(labels_all=[some_label, "normal"]), lambda c: {some_label, "normal"} <= set(c.labels)),
        (SearchFilter(labels_none=[some_label]), lambda c: some_label not in c.labels),
        (SearchFilter(patient_in=patients), lambda c: c.patient_id in patients),
        (SearchFilter(patient_not_in=patients), lambda c: c.patient_id not in patients),
        (SearchFilter(metadata_equals={"sex": sex}), lambda c: c.metadata.get("sex") == sex),
        (SearchFilter(time_from=middle), lambda c: c.study_time >= middle),
        (SearchFilter(time_to=middle), lambda c: c.study_time < middle),
    ]
    for search_filter, keep in cases:
        hits = client.search(case_ref(full_case.case_id, "text"), targets=["text"], k=50, filter=search_filter).hits
        expected = {h.case_id for h in everything if keep(seeded[h.case_id])}
        assert {h.case_id for h in hits} == expected, search_filter


def test_classify_label_sets_custom_labels_and_cases(client, full_case):
    sets = {s.name: s for s in client.list_label_sets()}
    assert {"phantom", "chexpert14", "nih14", "ptbxl_super", "ptbxl_statements"} <= set(sets)
    result = client.classify(xray_item(full_case.xray), label_set="phantom")
    assert result.modality == "xray" and result.label_set == "phantom"
    names = [s.label for s in result.labels]
    assert "pleural_effusion_left" in names and "atrial_fibrillation" not in names  # only X-ray-visible labels
    probs = [s.probability for s in result.labels]
    assert probs == sorted(probs, reverse=True) and all(0.0 < p < 1.0 for p in probs)
    ecg = client.classify(case_ref(full_case.case_id, "ecg"), label_set="phantom", top_k=3)
    assert len(ecg.labels) == 3 and "atrial_fibrillation" in [s.label for s in client.classify(
        case_ref(full_case.case_id, "ecg"), label_set="phantom").labels]
    custom = client.classify(text_item("big heart"), labels=["cardiomegaly", ("effusion", ["fluid in the pleura"])])
    assert sorted(s.label for s in custom.labels) == ["cardiomegaly", "effusion"] and custom.label_set == "custom"


def test_message_size_limit_boundary(client):
    limit = MAX_MESSAGE_MB * 1024 * 1024
    overhead = pb.EmbedRequest(items=[pb.Item(text="x" * 1000)]).ByteSize() - 1000
    fits = "word " * ((limit - overhead - 16) // 5)
    assert client.embed([text_item(fits)]).vectors.shape == (1, 32)
    too_big = "x" * (limit - overhead + 16)
    with pytest.raises(TribindError) as info:
        client.embed([text_item(too_big)])
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_concurrency_limit_answers_resource_exhausted_and_nothing_else(server, full_case):
    signal, fs, leads = full_case.ecg
    heavy = [ecg_item(signal, fs, leads)] * 12  # ~0.7 MB: under the 1 MB message limit

    def call(_: int) -> str:
        with server.client(retries=0) as c:
            try:
                c.embed(heavy)
                return "OK"
            except TribindError as exc:
                return exc.code.name

    with ThreadPoolExecutor(max_workers=48) as pool:
        outcomes = list(pool.map(call, range(48)))
    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED"}, outcomes


def test_deadline_is_reported_and_server_stays_healthy(client, full_case):
    with pytest.raises(TribindError) as info:
        client._call(client._stub.Search, pb.SearchRequest(item=pb.Item(text="effusion"), k=5), idempotent=False,
                     timeout_s=0.0001)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.search(text_item("effusion"), k=3).hits


def test_errors_are_readable_for_sdk_users(client):
    with pytest.raises(InvalidArgument, match=r"k: is 0; ask for 1..50"):
        client.search(text_item("effusion"), k=0)

