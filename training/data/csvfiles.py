"""Reading the published CSV tables, plain or gzipped, as dict rows (stdlib only: 100k-row tables
read in about a second, and pandas is not a declared dependency)."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path


def find_table(folder: Path, *names: str) -> Path | None:
    """The first of `names` (also tried with .gz) that exists in `folder`."""
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV or CSV.gz file as dicts (keys stripped of surrounding spaces)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(text)
        if reader.fieldnames:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        for row in reader:
            yield {key: (value or "").strip() for key, value in row.items() if key is not None}


def write_rows(path: Path, rows: list[dict[str, object]], fieldnames: list[str] | None = None) -> None:
    """Write dict rows as CSV (gzipped when the name ends in .gz); used to build miniature trees."""
    fieldnames = fieldnames or list(rows[0].keys())
    opener = gzip.open if path.suffix == ".gz" else open
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in fieldnames})
