"""IU X-ray / Open-i (Demner-Fushman et al., JAMIA 2016): report XML + PNG images.

Layout: `ecgen-radiology/<n>.xml` (NLMCXR_reports.tgz) and `NLMCXR_png/CXR<n>_<k>_IM-....png`. Each
XML holds `AbstractText Label="FINDINGS"` / `"IMPRESSION"`, MeSH terms (`<MeSH><major>...`) and one
`<parentImage id=...>` per image. One record per image; the report is the patient's, and since the
collection is de-identified per report, the report id is the patient id (no patient crosses splits:
hash split). Labels: the MeSH major terms' main heading (`Cardiomegaly/mild` -> `cardiomegaly`),
`normal` when the report is normal.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.records import CaseRecord
from training.data.report_sections import compose_report
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown
from training.data.splits import patient_split


def mesh_label(term: str) -> str:
    """'Pulmonary Disease, Chronic Obstructive/severe' -> 'pulmonary_disease_chronic_obstructive'."""
    heading = term.split("/")[0]
    return re.sub(r"[^a-z0-9]+", "_", heading.lower()).strip("_")


def read_iu_xray(path: str | Path, **options: Any) -> CaseSource:
    """IU X-ray under `path` (holding the report XMLs and PNGs, in any sub-folders)."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("iu", options)
    reports = sorted(root.rglob("*.xml"))
    if not reports:
        raise SourceError(f"no report XML under {root}; unpack NLMCXR_reports.tgz (ecgen-radiology/) there")
    images = {p.stem: p for p in root.rglob("*.png")}

    def produce() -> Iterator[CaseRecord | Skipped]:
        for xml_path in reports:
            try:
                tree = ElementTree.parse(xml_path).getroot()
            except ElementTree.ParseError as exc:
                yield Skipped(xml_path.stem, "unparseable XML", f"{xml_path}: {exc}")
                continue
            report_id = _attribute(tree, "uId") or f"CXR{xml_path.stem}"
            sections = {(node.get("Label") or "").upper(): (node.text or "").strip()
                        for node in tree.iter("AbstractText")}
            findings, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
            mesh = [(node.text or "").strip() for node in tree.iter("major") if (node.text or "").strip()]
            labels = tuple(dict.fromkeys(mesh_label(term) for term in mesh))
            image_ids = [node.get("id") for node in tree.iter("parentImage") if node.get("id")]
            if not image_ids:
                yield Skipped(report_id, "report without images", str(xml_path))
                continue
            patient = f"iu-{report_id}"
            for image_id in image_ids:
                image = images.get(image_id)
                if image is None:
                    yield Skipped(f"iu-{image_id}", "image file missing", f"{image_id}.png")
                    continue
                yield CaseRecord(
                    case_id=f"iu-{image_id}",
                    patient_id=patient,
                    xray_path=str(image),
                    report=compose_report(findings, impression) or None,
                    labels=labels,
                    split=patient_split(patient),
                    metadata={k: v for k, v in {
                        "source": "iu", "report_id": report_id, "findings": findings, "impression": impression,
                        "indication": sections.get("INDICATION", ""), "mesh": ";".join(mesh),
                    }.items() if v},
                )

    return CaseSource("iu", produce, (), total=len(reports), **common)


def _attribute(tree: ElementTree.Element, tag: str) -> str:
    node = tree.find(tag)
    return node.get("id", "") if node is not None else ""
