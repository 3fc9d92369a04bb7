"""In-process unit tests of the service building blocks (no server): batching, auth, errors, hit merging."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from encoders.errors import InvalidInputError
from index.errors import CaseNotFound, InvalidRequest, VersionMismatch
from index.records import Hit
from protos.tribind.v1 import tribind_pb2 as pb
from service import auth, hits
from service.batching import MicroBatcher
from service.convert import ecg_signal_to_array, vector_to_array
from service.errors import ClientGone, ServiceError, status_for


def test_microbatcher_merges_concurrent_callers_and_keeps_order():
    seen_batches: list[int] = []

    def encode(inputs: list[float]) -> np.ndarray:
        seen_batches.append(len(inputs))
        time.sleep(0.01)
        return np.asarray([[x, -x] for x in inputs], dtype=np.float32)

    batcher = MicroBatcher("t", encode, max_batch=16, max_wait_s=0.05)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = batcher.encode([float(i), float(i) + 0.5])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for i in range(8):
        np.testing.assert_array_equal(results[i], [[i, -i], [i + 0.5, -(i + 0.5)]])
    assert sum(seen_batches) == 16
    assert max(seen_batches) > 2, f"concurrent inputs were never batched together: {seen_batches}"
    assert all(n <= 16 for n in seen_batches)


def test_microbatcher_skips_inputs_of_departed_callers():
    gate = threading.Event()
    encoded: list[str] = []

    def encode(inputs: list[str]) -> np.ndarray:
        gate.wait(5)
        encoded.extend(inputs)
        return np.zeros((len(inputs), 1), dtype=np.float32)

    batcher = MicroBatcher("t", encode, max_batch=1, max_wait_s=0.0)
    blocker = threading.Thread(target=batcher.encode, args=(["first"],))
    blocker.start()
    time.sleep(0.1)  # "first" is now inside encode, holding the worker
    with pytest.raises(ClientGone):
        batcher.encode(["gone"], is_active=lambda: False)
    gate.set()
    blocker.join()
    assert batcher.encode(["after"]).shape == (1, 1)
    batcher.close()
    assert encoded == ["first", "after"]


def test_microbatcher_hands_encoder_errors_to_every_caller():
    def encode(inputs):
        raise RuntimeError("boom")

    batcher = MicroBatcher("t", encode, max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.encode([1, 2])
    batcher.close()


def test_bearer_parsing_and_constant_time_match():
    assert auth._bearer([("authorization", "Bearer abc")]) == "abc"
    assert auth._bearer([("Authorization", "bearer  abc ")]) == "abc"
    assert auth._bearer([("authorization", "Basic abc")]) is None
    assert auth._bearer([("x-other", "Bearer abc")]) is None
    assert auth._matches("abc", ("zzz", "abc"))
    assert not auth._matches("ab", ("abc",))
    assert not auth._matches("abc", ())


def test_keys_file_skips_comments_and_rejects_empty(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# ops team\nkey-one\n\n  key-two  \n")
    assert auth.read_keys_file(path) == ("key-one", "key-two")
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no API key"):
        auth.read_keys_file(path)


@pytest.mark.parametrize(
    "exc, code, fragment",
    [
        (InvalidInputError("items[0].text", "is empty"), grpc.StatusCode.INVALID_ARGUMENT, "items[0].text: is empty"),
        (InvalidRequest("k", "must be 1..10"), grpc.StatusCode.INVALID_ARGUMENT, "k: must be 1..10"),
        (CaseNotFound("c1"), grpc.StatusCode.NOT_FOUND, "'c1' is not in the store"),
        (VersionMismatch("a", "b", "reindex"), grpc.StatusCode.FAILED_PRECONDITION, "mismatch"),
        (ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many"), grpc.StatusCode.RESOURCE_EXHAUSTED, "too many"),
        (KeyError("secret internals"), grpc.StatusCode.INTERNAL, "incident"),
        (ZeroDivisionError("x"), grpc.StatusCode.INTERNAL, "incident"),
    ],
)
def test_status_mapping_never_unknown_and_hides_internals(exc, code, fragment):
    got_code, message = status_for(exc)
    assert got_code == code
    assert fragment in message
    assert "Traceback" not in message and "secret internals" not in message


def _hit(case_id: str, patient: str, score: float, modality: str = "xray") -> Hit:
    return Hit(case_id, patient, modality, score, (), {}, None)


def test_merge_orders_by_score_with_stable_ties():
    merged = hits.merge([[_hit("b", "p1", 0.9), _hit("c", "p2", 0.5)], [_hit("a", "p3", 0.9, "text")]])
    assert [(h.case_id, h.modality) for h in merged] == [("a", "text"), ("b", "xray"), ("c", "xray")]


def test_group_by_patient_orders_groups_by_best_hit():
    groups = hits.group_by_patient([_hit("a", "p1", 0.2), _hit("b", "p2", 0.8), _hit("c", "p1", 0.9)])
    assert [g.patient_id for g in groups] == ["p1", "p2"]
    assert [h.case_id for h in groups[0].hits] == ["c", "a"]
    assert groups[0].best_score == pytest.approx(0.9)


def test_ecg_signal_checks_shape_rate_and_values():
    ok = pb.EcgSignal(samples=[0.1] * 6, n_leads=2, n_samples=3, lead_names=["I", "II"], sampling_rate_hz=100)
    signal, rate, leads = ecg_signal_to_array(ok, "ecg")
    assert signal.shape == (2, 3) and rate == 100.0 and leads == ["I", "II"]
    bad = [
        (pb.EcgSignal(samples=[0.1] * 5, n_leads=2, n_samples=3, lead_names=["I", "II"], sampling_rate_hz=100), "samples"),
        (pb.EcgSignal(samples=[0.1] * 6, n_leads=2, n_samples=3, lead_names=["I"], sampling_rate_hz=100), "lead_names"),
        (pb.EcgSignal(samples=[0.1] * 6, n_leads=2, n_samples=3, lead_names=["I", "II"], sampling_rate_hz=-5), "rate"),
        (pb.EcgSignal(samples=[0.1] * 5 + [float("nan")], n_leads=2, n_samples=3, lead_names=["I", "II"],
                      sampling_rate_hz=100), "NaN"),
    ]
    for message, fragment in bad:
        with pytest.raises(ServiceError) as info:
            ecg_signal_to_array(message, "ecg")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in info.value.message


def test_query_vectors_are_normalised_and_checked():
    v = vector_to_array(pb.Vector(modality=pb.MODALITY_TEXT, values=[3.0, 4.0]), 2, "vector")
    np.testing.assert_allclose(v, [0.6, 0.8], rtol=1e-6)
    for values in ([1.0], [0.0, 0.0], [float("inf"), 1.0]):
        with pytest.raises(ServiceError):
            vector_to_array(pb.Vector(modality=pb.MODALITY_TEXT, values=values), 2, "vector")
