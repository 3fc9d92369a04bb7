"""CheXpert and IU X-ray readers on miniature trees in the published layout."""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.data.csvfiles import write_rows
from training.data.sources import open_source

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                   "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{n}"/>
  <pmcId id="{n}"/>
  <docSource>CXR</docSource>
  <IUXRId id="{n}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied">
    <Article PubModel="Electronic">
      <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Positive TB test</AbstractText>
        <AbstractText Label="FINDINGS">{findings}</AbstractText>
        <AbstractText Label="IMPRESSION">{impression}</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH>
{mesh}
  </MeSH>
{images}
</eCitation>
"""


def _jpg(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 20), value, dtype=np.uint8)).save(path)


def test_chexpert_paths_views_and_uncertainty_policy(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    rows = [
        {"Path": "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Sex": "Female", "Age": "68",
         "Frontal/Lateral": "Frontal", "AP/PA": "AP", "No Finding": "1.0", "Support Devices": "1.0"},
        {"Path": "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Sex": "Female", "Age": "87",
         "Frontal/Lateral": "Frontal", "AP/PA": "AP", "Cardiomegaly": "-1.0", "Edema": "-1.0", "Lung Opacity": "1.0",
         "Pleural Effusion": "0.0", "Fracture": ""},
        {"Path": "CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg", "Sex": "Female", "Age": "87",
         "Frontal/Lateral": "Lateral", "AP/PA": "", "Cardiomegaly": "1.0"},
        {"Path": "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", "Sex": "Male", "Age": "41",
         "Frontal/Lateral": "Frontal", "AP/PA": "PA"},   # image file not shipped
    ]
    write_rows(root / "train.csv", rows, CHEXPERT_HEADER)
    write_rows(root / "valid.csv", [
        {"Path": "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Sex": "Male", "Age": "73",
         "Frontal/Lateral": "Frontal", "AP/PA": "AP", "Cardiomegaly": "1.0", "Edema": "0.0"}], CHEXPERT_HEADER)
    for row in rows[:3]:
        _jpg(tmp_path / row["Path"])
    _jpg(tmp_path / "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")

    source = open_source(f"chexpert:{root}")
    records = {r.case_id: r for r in source}
    assert set(records) == {"chexpert-patient00001-study1-view1_frontal", "chexpert-patient00002-study2-view1_frontal",
                            "chexpert-patient64541-study1-view1_frontal"}
    uncertain = records["chexpert-patient00002-study2-view1_frontal"]
    assert uncertain.labels == ("Lung Opacity",)                       # U-Zeros; 0 and blank negative
    assert uncertain.metadata["uncertain_labels"] == "Cardiomegaly;Edema"
    assert uncertain.patient_id == "chexpert-patient00002" and uncertain.split == "train"
    assert records["chexpert-patient64541-study1-view1_frontal"].split == "val"
    assert dict(source.skip_summary()) == {"view filtered out": 1, "image file missing": 1}
    paper = {r.case_id: r for r in open_source(f"chexpert:{root}?uncertain=paper")}
    assert paper["chexpert-patient00002-study2-view1_frontal"].labels == ("Lung Opacity", "Edema")  # CheXpert column order
    assert len(list(open_source(f"chexpert:{root}", views=""))) == 4


def test_iu_xray_reports_mesh_and_images(tmp_path):
    reports = tmp_path / "ecgen-radiology"
    reports.mkdir()
    (reports / "1.xml").write_text(IU_XML.format(
        n=1, findings="The cardiac silhouette and mediastinum size are within normal limits.",
        impression="Normal chest x-XXXX.", mesh="    <major>normal</major>",
        images='  <parentImage id="CXR1_1_IM-0001-3001"><caption>PA</caption></parentImage>\n'
               '  <parentImage id="CXR1_1_IM-0001-4001"><caption>Lateral</caption></parentImage>'))
    (reports / "2.xml").write_text(IU_XML.format(
        n=2, findings="Heart size is enlarged. Small right effusion.", impression="Cardiomegaly.",
        mesh="    <major>Cardiomegaly/mild</major>\n    <major>Pleural Effusion/right/small</major>",
        images='  <parentImage id="CXR2_IM-0652-1001"><caption>PA</caption></parentImage>'))
    (reports / "3.xml").write_text("<eCitation><uId id='CXR3'/>")  # truncated download
    for image_id in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"):
        _jpg(tmp_path / "NLMCXR_png" / f"{image_id}.png")

    source = open_source(f"iu:{tmp_path}")
    records = list(source)
    assert [r.case_id for r in records] == ["iu-CXR1_1_IM-0001-3001", "iu-CXR1_1_IM-0001-4001"]
    assert records[0].report == ("Findings: The cardiac silhouette and mediastinum size are within normal limits. "
                                 "Impression: Normal chest x-XXXX.")
    assert records[0].labels == ("normal",) and records[0].patient_id == records[1].patient_id == "iu-CXR1"
    assert records[0].split == records[1].split
    reasons = {rid: text for rid, text in source.skipped}
    assert reasons["iu-CXR2_IM-0652-1001"].startswith("image file missing")
    assert any(text.startswith("unparseable XML") for text in reasons.values())
    from training.data.iu_xray import mesh_label

    assert mesh_label("Pleural Effusion/right/small") == "pleural_effusion"
