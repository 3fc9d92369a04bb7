"""Explanations served: the Explain RPC, and `explain` on Search and Classify, against a real server
subprocess (test preset, random init, seeded phantom cases), through the SDK and the raw stub.

Covers: every subject kind (X-ray, ECG, text, stored case), pairwise, case evidence, PNG bytes, shapes
and finiteness, determinism, that explaining leaves every score unchanged, the honest answer for a hit
whose raw input is not stored, the CLI's --server mode, and the bad-input matrix with its status codes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image

from protos.tribind.v1 import tribind_pb2 as pb
from protos.tribind.v1 import tribind_pb2_grpc as pb_grpc
from service.client import InvalidArgument, NotFound
from service.client_types import (
    CaseInput,
    ExplainOptions,
    SearchFilter,
    case_ref,
    ecg_item,
    text_item,
    vector,
    xray_item,
)
from test_service_harness import REPO_ROOT, ServerProcess, reap_servers  # noqa: F401 (autouse: no server outlives its module)

SEEDED = 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The `test` preset: 32 px X-ray in 8 px patches; 2 s of ECG at 50 Hz in 10-sample windows.
GRID = 32 // 8
WINDOWS = 50 * 2 // 10
VECTOR_ONLY = "explain-vector-only"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("explain"), "--max-k", "50", seed_cases=SEEDED).start()
    yield proc
    assert proc.terminate() == 0, "".join(proc.stderr[-30:])


@pytest.fixture(scope="module")
def client(server):
    with server.client(max_message_bytes=16 * 1024 * 1024) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.TribindStub(channel)


@pytest.fixture(scope="module")
def seeded(client):
    return {f"ph0-{i:06d}": client.get_case(f"ph0-{i:06d}", include_media=True, include_vectors=True)
            for i in range(SEEDED)}


@pytest.fixture(scope="module")
def full_case(seeded):
    return next(c for c in seeded.values() if set(c.modalities) == {"xray", "ecg", "text"})


@pytest.fixture(scope="module")
def partial_case(seeded):
    return next(c for c in seeded.values() if not {"xray", "ecg"} <= set(c.modalities))


@pytest.fixture(scope="module")
def vector_only(client, full_case):
    """A case upserted as a precomputed X-ray vector: the store has no raw input to explain."""
    client.upsert([CaseInput(VECTOR_ONLY, "explain-p-vec", labels=["normal"],
                             vectors={"xray": full_case.vectors["xray"]}, model_version=full_case.model_version)])
    yield VECTOR_ONLY
    client.delete([VECTOR_ONLY], ignore_missing=True)


def _items(case) -> dict:
    signal, rate, leads = case.ecg
    return {"xray": xray_item(case.xray), "ecg": ecg_item(signal, rate, leads), "text": text_item(case.report)}


def _check_side(side, modality: str, text: str | None = None) -> None:
    assert side is not None and side.modality == modality
    assert side.method == "chefer"
    values = side.relevance
    assert np.isfinite(values).all() and (values >= 0).all() and values.max() > 0 and np.isfinite(side.score)
    if modality == "xray":
        assert values.shape == (GRID, GRID)
    elif modality == "ecg":
        assert values.shape == (12, WINDOWS) and len(side.lead_names) == 12
        assert side.time_relevance.shape == (WINDOWS,)
        np.testing.assert_allclose(side.time_relevance, values.sum(axis=0), rtol=1e-4, atol=1e-7)
        assert side.window_s == pytest.approx(10 / 50)
    else:
        assert values.shape == (len(side.words),) == (len(side.spans),) and side.words
        if text is not None:
            assert [text[a:b] for a, b in side.spans] == side.words


def _png_size(data: bytes | None) -> tuple[int, int]:
    assert data and data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_explain_rpc_is_listed():
    service = pb.DESCRIPTOR.services_by_name["Tribind"]
    assert service.methods_by_name["Explain"].input_type.name == "ExplainRequest"


@pytest.mark.parametrize("modality", ["xray", "ecg", "text"])
def test_explain_each_item_kind_against_a_label(client, full_case, modality):
    label = {"xray": "cardiomegaly", "ecg": "atrial_fibrillation", "text": "pleural effusion"}[modality]
    result = client.explain(_items(full_case)[modality], label=label,
                            options=ExplainOptions(include_png=modality != "text"))
    e = result.explanation
    assert result.model_version == full_case.model_version
    _check_side(e.subject, modality, full_case.report if modality == "text" else None)
    assert e.other is None and e.evidence == [] and e.note == ""
    assert e.score == pytest.approx(e.subject.score)
    assert e.subject.target.startswith("label ")
    if modality == "text":
        assert "pleural_effusion_left+pleural_effusion_right" in e.subject.target  # a spelling pools both ids
        assert e.png is None
    else:
        width, height = _png_size(e.png)
        assert width > 100 and height > 100


def test_explain_free_text_target_and_rollout(client, full_case):
    e = client.explain(xray_item(full_case.xray), text="blunted costophrenic angle",
                       options=ExplainOptions(method="rollout")).explanation
    assert e.subject.method == "rollout" and e.subject.target.startswith("text ")
    assert e.subject.relevance.shape == (GRID, GRID) and np.isfinite(e.subject.relevance).all()
    # Where the grid sits on the model input comes over the wire (the test preset's patch stem: nominal patches).
    assert e.subject.token_stride_px > 0 and e.subject.token_origin_px == (e.subject.token_stride_px - 1) / 2


def test_explain_stored_case_matches_the_item_it_was_made_from(client, full_case):
    by_case = client.explain(case_ref(full_case.case_id, "ecg"), label="lbbb").explanation
    signal, rate, leads = full_case.ecg
    by_item = client.explain(ecg_item(signal, rate, leads), label="lbbb").explanation
    _check_side(by_case.subject, "ecg")
    assert by_case.subject.item == f"case {full_case.case_id} ecg"
    np.testing.assert_allclose(by_case.subject.relevance, by_item.subject.relevance, rtol=1e-4, atol=1e-6)
    assert by_case.score == pytest.approx(by_item.score, abs=1e-5)


def test_contrast_label_explains_the_classify_score(client, full_case):
    subject = xray_item(full_case.xray)
    scores = {s.label: s.score for s in client.classify(subject, label_set="phantom").labels}
    e = client.explain(subject, label="pneumothorax", contrast=True).explanation
    assert e.score == pytest.approx(scores["pneumothorax"], abs=1e-4)


def test_pairwise_items_and_stored_cases(client, full_case, seeded):
    items = _items(full_case)
    pair = client.explain(items["xray"], other=items["text"], options=ExplainOptions(include_png=True)).explanation
    _check_side(pair.subject, "xray")
    _check_side(pair.other, "text", full_case.report)
    vectors = full_case.vectors
    assert pair.score == pytest.approx(float(vectors["xray"] @ vectors["text"]), abs=1e-4)
    # Both sides explain the same cosine: each is its item against the other's embedding.
    assert pair.subject.score == pytest.approx(pair.score, abs=1e-4)
    assert pair.other.score == pytest.approx(pair.score, abs=1e-4)
    single_height = _png_size(client.explain(items["xray"], label="cardiomegaly",
                                             options=ExplainOptions(include_png=True)).explanation.png)[1]
    assert _png_size(pair.png)[1] > single_height  # both sides stacked

    other = next(c for c in seeded.values() if c.case_id != full_case.case_id and "ecg" in c.modalities)
    stored = client.explain(case_ref(full_case.case_id, "xray"), other=case_ref(other.case_id, "ecg")).explanation
    _check_side(stored.subject, "xray")
    _check_side(stored.other, "ecg")
    assert stored.score == pytest.approx(float(vectors["xray"] @ other.vectors["ecg"]), abs=1e-5)
    assert stored.other.item == f"case {other.case_id} ecg"


def test_label_evidence_is_the_nearest_cases_carrying_the_label(client, seeded, full_case):
    with_xray = [c for c in seeded.values() if c.xray is not None and c.case_id != full_case.case_id]
    label, count = Counter(label for c in with_xray for label in c.labels).most_common(1)[0]
    assert count >= 2, "the seeded library is too small for an evidence test"
    e = client.explain(case_ref(full_case.case_id, "xray"), label=label,
                       options=ExplainOptions(evidence_k=2, include_png=True)).explanation
    assert len(e.evidence) == 2
    carriers = {c.case_id for c in with_xray if label in c.labels}
    subject = full_case.vectors["xray"]
    for evidence in e.evidence:
        assert evidence.case_id in carriers and label in evidence.labels  # never the subject itself
        assert evidence.score == pytest.approx(float(subject @ seeded[evidence.case_id].vectors["xray"]), abs=1e-5)
        _check_side(evidence.relevance, "xray")
        assert evidence.relevance.target == e.subject.target
        _png_size(evidence.png)
    assert e.evidence[0].score >= e.evidence[1].score  # nearest first
    # The nearest carriers of the label, in the library's own ranking.
    nearest = client.search(case_ref(full_case.case_id, "xray"), targets=["xray"], k=2, exclude_query_case=True,
                            filter=SearchFilter(labels_any=[label], patient_not_in=["explain-p-vec"])).hits
    assert [h.case_id for h in nearest] == [ev.case_id for ev in e.evidence]


def test_explanations_are_deterministic(stub, full_case):
    request = pb.ExplainRequest(item=pb.Item(text=full_case.report),
                                target=pb.ExplainTarget(case_ref=pb.CaseRef(case_id=full_case.case_id,
                                                                            modality=pb.MODALITY_XRAY)))
    first, second = stub.Explain(request, timeout=120), stub.Explain(request, timeout=120)
    assert first.explanation.subject.values and first.explanation.other.values
    assert list(first.explanation.subject.values) == list(second.explanation.subject.values)
    assert list(first.explanation.other.values) == list(second.explanation.other.values)
    assert first.explanation.score == second.explanation.score


def test_concurrent_explanations_leave_other_requests_alone(client, full_case):
    """Explanations capture attention on the engine's twin of the model, never on the served one: plain
    requests running beside them get exactly their usual vectors, and each explanation its usual arrays."""
    items = _items(full_case)
    alone = client.explain(items["text"], other=items["xray"]).explanation
    vectors = client.embed([items["xray"], items["ecg"], items["text"]]).vectors

    def explain(_):
        return client.explain(items["text"], other=items["xray"]).explanation

    def embed(_):
        return client.embed([items["xray"], items["ecg"], items["text"]]).vectors

    with ThreadPoolExecutor(max_workers=4) as pool:
        explained = [pool.submit(explain, i) for i in range(3)]
        embedded = [pool.submit(embed, i) for i in range(6)]
        for future in embedded:
            np.testing.assert_allclose(future.result(), vectors, atol=1e-6)
        for future in explained:
            e = future.result()
            np.testing.assert_allclose(e.subject.relevance, alone.subject.relevance, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(e.other.relevance, alone.other.relevance, rtol=1e-5, atol=1e-9)


def test_search_explain_leaves_scores_unchanged_and_explains_each_hit(client, full_case):
    query = xray_item(full_case.xray)
    others = SearchFilter(patient_not_in=["explain-p-vec"])  # whatever other tests upserted
    plain = client.search(query, k=8, filter=others)
    explained = client.search(query, k=8, filter=others, explain=True)
    assert [(h.case_id, h.modality, h.score) for h in explained.hits] == [(h.case_id, h.modality, h.score)
                                                                          for h in plain.hits]
    assert all(h.explanation is None for h in plain.hits)
    for hit in explained.hits:
        e = hit.explanation
        assert e.score == hit.score and e.note == ""
        _check_side(e.subject, "xray")
        _check_side(e.other, hit.modality)
        assert e.subject.item == "query" and e.other.item == f"case {hit.case_id} {hit.modality}"
        assert e.subject.score == pytest.approx(hit.score, abs=1e-4)  # the query against the hit's stored vector
        assert e.other.score == pytest.approx(hit.score, abs=1e-4)    # the hit's input against the query vector


def test_search_explain_grouped_by_patient(client, full_case):
    query = text_item(full_case.report)
    plain = client.search(query, k=3, group_by_patient=True)
    result = client.search(query, k=3, group_by_patient=True, explain=ExplainOptions(method="rollout"))
    assert [(h.case_id, h.score) for h in result.hits] == [(h.case_id, h.score) for h in plain.hits]
    for hit in result.hits:
        assert hit.explanation.subject.method == "rollout"
        best = result.groups[hit.patient_id][0]
        assert best.case_id == hit.case_id
        np.testing.assert_array_equal(best.explanation.subject.relevance, hit.explanation.subject.relevance)


def test_hit_without_stored_input_is_explained_on_the_query_side_only(client, full_case, vector_only):
    only = SearchFilter(patient_in=["explain-p-vec"])
    hit = client.search(xray_item(full_case.xray), targets=["xray"], k=1, filter=only, explain=True).hits[0]
    assert hit.case_id == vector_only
    e = hit.explanation
    assert e.other is None and "precomputed" in e.note and "query" in e.note
    _check_side(e.subject, "xray")
    assert e.subject.score == pytest.approx(hit.score, abs=1e-4)
    # A raw vector query has no input either: only the hit side is explained.
    query = vector(full_case.vectors["text"], "text", full_case.model_version)
    hit = client.search(query, targets=["xray"], k=1, explain=True,
                        filter=SearchFilter(patient_in=[full_case.patient_id])).hits[0]
    assert hit.explanation.subject is None and "raw vector" in hit.explanation.note
    _check_side(hit.explanation.other, "xray")
    # Classify of that case: the scores as without explain, the subject left unexplained and said so.
    plain = client.classify(case_ref(vector_only, "xray"), label_set="phantom").labels
    labels = client.classify(case_ref(vector_only, "xray"), label_set="phantom", explain=True).labels
    assert [(s.label, s.score) for s in labels] == [(s.label, s.score) for s in plain]
    for label in labels:
        assert label.explanation.subject is None and "precomputed" in label.explanation.note
        assert label.explanation.score == label.score
    # Explain against the stored case: the subject against the stored vector, `other` unset.
    e = client.explain(text_item(full_case.report), other=case_ref(vector_only, "xray")).explanation
    assert e.other is None and "precomputed" in e.note
    assert e.score == pytest.approx(float(full_case.vectors["text"] @ full_case.vectors["xray"]), abs=1e-4)


def test_classify_explain_leaves_scores_unchanged_and_explains_each_label(client, full_case):
    subject = case_ref(full_case.case_id, "ecg")
    plain = client.classify(subject, label_set="phantom")
    explained = client.classify(subject, label_set="phantom", explain=ExplainOptions(evidence_k=1))
    assert [(s.label, s.score, s.probability) for s in explained.labels] == [
        (s.label, s.score, s.probability) for s in plain.labels]
    assert all(s.explanation is None for s in plain.labels)
    for label in explained.labels:
        e = label.explanation
        assert e.score == label.score
        _check_side(e.subject, "ecg")
        # The explained number is LabelScore.score: positive minus negative prompt ensemble.
        assert e.subject.score == pytest.approx(label.score, abs=1e-4)
        assert e.subject.target == f"label {label.label} (positive - negative prompts)"
        for evidence in e.evidence:
            assert label.label in evidence.labels and evidence.case_id != full_case.case_id
            _check_side(evidence.relevance, "ecg")


def test_classify_explain_custom_labels(client, full_case):
    result = client.classify(text_item(full_case.report), labels=["effusion", ("big heart", ["cardiomegaly"])],
                             explain=True)
    for label in result.labels:
        _check_side(label.explanation.subject, "text", full_case.report)
        assert label.explanation.subject.score == pytest.approx(label.score, abs=1e-4)


def test_cli_explain_asks_the_server(server, full_case, tmp_path):
    out = tmp_path / "heat.png"
    run = subprocess.run(
        [sys.executable, "-m", "tribind", "explain", "--server", server.target, "--case", full_case.case_id,
         "--modality", "xray", "--label", "cardiomegaly", "--out", str(out), "--json"],
        cwd=REPO_ROOT, env=server.env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["sides"][0]["modality"] == "xray" and printed["out"] == str(out)
    assert np.asarray(printed["sides"][0]["relevance"]).shape == (GRID, GRID)
    _png_size(out.read_bytes())
    missing = subprocess.run(
        [sys.executable, "-m", "tribind", "explain", "--server", server.target, "--case", "nope", "--modality", "xray",
         "--label", "cardiomegaly"], cwd=REPO_ROOT, env=server.env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr


def test_sdk_errors_are_typed(client, full_case):
    with pytest.raises(InvalidArgument, match="target.label"):
        client.explain(text_item("a report"), label="no such finding")
    with pytest.raises(NotFound, match="nope"):
        client.explain(case_ref("nope", "xray"), label="cardiomegaly")
    with pytest.raises(ValueError, match="exactly one target"):
        client.explain(text_item("a report"), label="normal", text="also this")


def _label(label: str, **fields) -> pb.ExplainTarget:
    return pb.ExplainTarget(label=label, **fields)


def _ref(case_id: str, modality: int = pb.MODALITY_XRAY) -> pb.CaseRef:
    return pb.CaseRef(case_id=case_id, modality=modality)


def _missing_modality(case) -> int:
    return pb.MODALITY_ECG if "ecg" not in case.modalities else pb.MODALITY_XRAY


TEXT = pb.Item(text="Small left pleural effusion.")

# (name, rpc, request builder(cases), expected code, fragment the message must contain)
MATRIX = [
    ("no-subject", "Explain", lambda c: pb.ExplainRequest(target=_label("normal")), INVALID, "subject"),
    ("no-target", "Explain", lambda c: pb.ExplainRequest(item=TEXT), INVALID, "target"),
    ("unknown-method", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=_label("normal"), options=pb.ExplainOptions(method="gradcam")),
     INVALID, "options.method"),
    ("unknown-label", "Explain", lambda c: pb.ExplainRequest(item=TEXT, target=_label("flux capacitor")), INVALID,
     "target.label"),
    ("empty-label", "Explain", lambda c: pb.ExplainRequest(item=TEXT, target=_label(" ")), INVALID, "target.label"),
    ("unknown-label-set", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=_label("normal", label_set="../../etc/passwd")), INVALID,
     "target.label_set"),
    ("evidence-too-many", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=_label("normal"), options=pb.ExplainOptions(evidence_k=11)),
     INVALID, "options.evidence_k"),
    ("evidence-for-text-target", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=pb.ExplainTarget(text="effusion"),
                                 options=pb.ExplainOptions(evidence_k=2)), INVALID, "options.evidence_k"),
    ("contrast-on-text-target", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=pb.ExplainTarget(text="effusion", contrast=True)), INVALID,
     "target.contrast"),
    ("empty-text-target", "Explain", lambda c: pb.ExplainRequest(item=TEXT, target=pb.ExplainTarget(text="  ")),
     INVALID, "target.text"),
    ("bad-image", "Explain",
     lambda c: pb.ExplainRequest(item=pb.Item(xray=pb.XRayImage(data=b"\x89PNG broken")), target=_label("normal")),
     INVALID, "item.xray"),
    ("bad-target-item", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=pb.ExplainTarget(item=pb.Item(text=""))), INVALID, "target.item"),
    ("unknown-case", "Explain", lambda c: pb.ExplainRequest(case_ref=_ref("nope"), target=_label("normal")),
     NOT_FOUND, "nope"),
    ("unknown-target-case", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=pb.ExplainTarget(case_ref=_ref("nope-either"))), NOT_FOUND,
     "nope-either"),
    ("case-empty-id", "Explain", lambda c: pb.ExplainRequest(case_ref=_ref(""), target=_label("normal")), INVALID,
     "case_ref.case_id"),
    ("case-no-modality", "Explain",
     lambda c: pb.ExplainRequest(case_ref=_ref(c["full"].case_id, pb.MODALITY_UNSPECIFIED), target=_label("normal")),
     INVALID, "case_ref.modality"),
    ("case-missing-modality", "Explain",
     lambda c: pb.ExplainRequest(case_ref=_ref(c["partial"].case_id, _missing_modality(c["partial"])),
                                 target=_label("normal")), INVALID, "case_ref.modality"),
    ("target-case-missing-modality", "Explain",
     lambda c: pb.ExplainRequest(item=TEXT, target=pb.ExplainTarget(
         case_ref=_ref(c["partial"].case_id, _missing_modality(c["partial"])))), INVALID, "target.case_ref.modality"),
    ("case-without-raw-input", "Explain",
     lambda c: pb.ExplainRequest(case_ref=_ref(c["vector_only"]), target=_label("normal")), INVALID,
     "case_ref.modality"),
    ("search-k-too-big", "Search", lambda c: pb.SearchRequest(item=TEXT, k=33, explain=True), INVALID, "k:"),
    ("search-evidence", "Search",
     lambda c: pb.SearchRequest(item=TEXT, k=3, explain=True, explain_options=pb.ExplainOptions(evidence_k=1)),
     INVALID, "explain_options.evidence_k"),
    ("search-unknown-method", "Search",
     lambda c: pb.SearchRequest(item=TEXT, k=3, explain=True, explain_options=pb.ExplainOptions(method="lime")),
     INVALID, "explain_options.method"),
    ("search-options-without-explain", "Search",
     lambda c: pb.SearchRequest(item=TEXT, k=3, explain_options=pb.ExplainOptions(include_png=True)), INVALID,
     "explain_options"),
    ("classify-unknown-method", "Classify",
     lambda c: pb.ClassifyRequest(item=TEXT, label_set="phantom", explain=True,
                                  explain_options=pb.ExplainOptions(method="shap")), INVALID, "explain_options.method"),
    ("classify-evidence-too-many", "Classify",
     lambda c: pb.ClassifyRequest(item=TEXT, label_set="phantom", explain=True,
                                  explain_options=pb.ExplainOptions(evidence_k=100)), INVALID,
     "explain_options.evidence_k"),
    ("classify-unknown-case", "Classify",
     lambda c: pb.ClassifyRequest(case_ref=_ref("nope"), label_set="phantom", explain=True), NOT_FOUND, "nope"),
]


@pytest.mark.parametrize("name, rpc, build, code, fragment", MATRIX, ids=[row[0] for row in MATRIX])
def test_bad_explain_request_gets_its_code(stub, full_case, partial_case, vector_only, name, rpc, build, code,
                                           fragment):
    cases = {"full": full_case, "partial": partial_case, "vector_only": vector_only}
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, rpc)(build(cases), timeout=120)
    error = caught.value
    assert error.code() == code, f"{name}: {error.code()} {error.details()}"
    assert fragment in error.details(), f"{name}: {error.details()!r} does not mention {fragment!r}"
    assert "Traceback" not in error.details()
