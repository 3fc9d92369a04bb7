"""`open_source("kind:PATH?key=value")`: the one entry point to every data source.

A SOURCE string names a reader and a path; options follow after `?` (`ptbxl:/data/ptbxl?rate=100`) or
come as keyword arguments. `tribind inspect`, `tribind ingest` and `tribind eval --data` all take the
same strings. A plain path is a manifest (CSV / JSONL / Parquet) or a folder holding `manifest.csv`.

A `CaseSource` reads lazily: iterating it yields `CaseRecord`s and fills `.skipped` with
(record id, reason) for every record it had to leave out, so a caller can always say why a count is
lower than expected.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from training.data.records import CaseRecord


class SourceError(ValueError):
    """A SOURCE string or data folder that cannot be read; the message says what to pass instead."""


@dataclass(frozen=True)
class Skipped:
    """A record a reader left out: `reason` is a short category, `detail` the specifics (a path)."""

    record_id: str
    reason: str
    detail: str = ""

    def text(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class CaseSource:
    """An iterable of CaseRecord with `.skipped`, `.label_vocabulary` and a progress bar on stderr."""

    def __init__(
        self,
        name: str,
        produce: Callable[[], Iterator[CaseRecord | Skipped]],
        label_vocabulary: Sequence[str] = (),
        total: int | None = None,
        progress: bool | None = None,
        limit: int | None = None,
    ) -> None:
        self.name = name
        self._produce = produce
        self._vocabulary = list(label_vocabulary)
        self.total = total
        self.progress = progress
        self.limit = limit
        self.skipped: list[tuple[str, str]] = []
        self.read_count = 0

    @property
    def label_vocabulary(self) -> tuple[str, ...]:
        """Known labels first (the source's published vocabulary), then any met while reading."""
        return tuple(self._vocabulary)

    def __iter__(self) -> Iterator[CaseRecord]:
        from tqdm import tqdm

        self.skipped = []
        self.read_count = 0
        total = min(self.total, self.limit) if self.total and self.limit else self.total
        # progress=None: tqdm shows the bar only on a terminal, so logs and pipes stay clean.
        bar = tqdm(total=total, desc=self.name, unit="rec", disable=None if self.progress is None else not self.progress,
                   file=sys.stderr, leave=False)
        try:
            for item in self._produce():
                if isinstance(item, Skipped):
                    self.skipped.append((item.record_id, item.text()))
                    bar.update(1)
                    continue
                for label in item.labels:
                    if label not in self._vocabulary:
                        self._vocabulary.append(label)
                self.read_count += 1
                bar.update(1)
                yield item
                if self.limit is not None and self.read_count >= self.limit:
                    break
        finally:
            bar.close()
            if self.skipped and bar.disable is False:
                print(self.skip_summary_text(), file=sys.stderr)

    def skip_summary(self) -> dict[str, int]:
        """Skipped records counted by reason category."""
        return dict(Counter(text.split(":", 1)[0] for _, text in self.skipped).most_common())

    def skip_summary_text(self) -> str:
        parts = [f"{count} x {reason}" for reason, count in self.skip_summary().items()]
        return f"{self.name}: read {self.read_count}, skipped {len(self.skipped)} ({'; '.join(parts)})"


# kind -> "module:function"; each function takes (path: Path, **options) and returns a CaseSource.
READERS: dict[str, str] = {
    "manifest": "training.data.manifest:read_manifest",
    "phantom": "training.data.manifest:read_phantom_dir",
    "ptbxl": "training.data.ptbxl:read_ptbxl",
    "nih": "training.data.nih:read_nih",
    "wfdb": "training.data.wfdb_folder:read_wfdb_folder",
    "cinc": "training.data.cinc:read_cinc",
    "mimic-ecg": "training.data.mimic_ecg:read_mimic_ecg",
    "mimic-cxr": "training.data.mimic_cxr:read_mimic_cxr",
    "chexpert": "training.data.chexpert:read_chexpert",
    "iu": "training.data.iu_xray:read_iu_xray",
    "mimic": "training.data.pairing:read_mimic_pairs",
}


def parse_source(source: str) -> tuple[str, Path, dict[str, str]]:
    """'kind:PATH?k=v&k2=v2' -> (kind, path, options); a bare path is a manifest or a phantom folder."""
    text = str(source).strip()
    if not text:
        raise SourceError("empty SOURCE; pass e.g. ptbxl:/data/ptbxl, nih:/data/nih or a manifest.csv path")
    options: dict[str, str] = {}
    if "?" in text:
        text, query = text.split("?", 1)
        options = dict(parse_qsl(query, keep_blank_values=True))
    kind, sep, rest = text.partition(":")
    if sep and kind in READERS:
        return kind, Path(rest).expanduser(), options
    if sep and len(kind) > 1 and not Path(text).exists():
        known = ", ".join(f"{k}:PATH" for k in READERS if k != "manifest")
        raise SourceError(f"unknown source kind {kind!r}; use one of {known}, or a manifest path")
    path = Path(text).expanduser()
    if path.is_dir():
        return "phantom", path, options
    return "manifest", path, options


def open_source(source: str, **options: Any) -> CaseSource:
    """Open a SOURCE string (see module docstring); keyword options override `?k=v` options."""
    kind, path, parsed = parse_source(source)
    merged: dict[str, Any] = {**parsed, **options}
    if not path.exists():
        raise SourceError(f"{kind} source path {path} does not exist")
    module_name, function_name = READERS[kind].split(":")
    reader = getattr(importlib.import_module(module_name), function_name)
    return reader(path, **merged)


def common_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options every reader accepts: progress (bool) and limit (max records yielded)."""
    limit = options.pop("limit", None)
    progress = options.pop("progress", None)
    return {
        "limit": int(limit) if limit not in (None, "") else None,
        "progress": as_bool(progress) if progress is not None else None,
    }


def reject_unknown(kind: str, options: dict[str, Any]) -> None:
    if options:
        raise SourceError(f"{kind}: unknown option(s) {sorted(options)}")


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
