"""Radiology report sections: FINDINGS and IMPRESSION out of a free-text MIMIC-CXR report.

MIMIC-CXR reports are upper-case headed sections (`EXAMINATION:`, `INDICATION:`, `FINDINGS:`,
`IMPRESSION:`, ...). The text modality keeps Findings then Impression (what the image shows, what it
means); indication and history are dropped because they leak the question rather than describe the
image. A report with neither section falls back to its last paragraph (often an unlabelled
impression), as in the MIMIC-CXR authors' section parser.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*([A-Z][A-Z /&()-]{2,40}):", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """Upper-case section name -> its text (whitespace collapsed)."""
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = " ".join(text[match.end():end].split())
        name = match.group(1).strip()
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def findings_impression(text: str) -> tuple[str, str]:
    """(findings, impression); the last paragraph is the impression when no section header exists."""
    sections = report_sections(text)
    findings = sections.get("FINDINGS", "")
    impression = sections.get("IMPRESSION", "") or sections.get("CONCLUSION", "")
    if not findings and not impression:
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
        impression = paragraphs[-1] if paragraphs else ""
        if ":" in impression.split(" ")[0]:
            impression = ""
    return findings, impression


def compose_report(findings: str, impression: str) -> str:
    parts = []
    if findings:
        parts.append(f"Findings: {findings}")
    if impression:
        parts.append(f"Impression: {impression}")
    return " ".join(parts)
