"""The committed stubs are exactly what `make protos` generates from the committed .proto."""

from __future__ import annotations

from pathlib import Path

from protos import generate


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path):
    written = generate.generate(tmp_path)
    assert written, "protoc wrote nothing"
    for fresh in written:
        relative = fresh.relative_to(tmp_path)
        committed = generate.REPO_ROOT / relative
        assert committed.is_file(), f"{relative} is missing: run `make protos` and commit the stubs"
        assert committed.read_text() == fresh.read_text(), f"{relative} is stale: run `make protos` and commit the stubs"


def test_api_surface_has_every_rpc_and_explanations():
    from protos.tribind.v1 import tribind_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["Tribind"]
    assert service.full_name == "tribind.v1.Tribind"
    assert {m.name for m in service.methods} == {
        "Embed", "Upsert", "Delete", "GetCase", "Search", "Classify", "ListLabelSets", "Stats", "Reindex", "Explain"}
    for request in (pb.SearchRequest, pb.ClassifyRequest):
        assert {"explain", "explain_options"} <= set(request.DESCRIPTOR.fields_by_name)
    assert pb.Hit.DESCRIPTOR.fields_by_name["explanation"].message_type.name == "Explanation"
    assert pb.LabelScore.DESCRIPTOR.fields_by_name["explanation"].message_type.name == "Explanation"
