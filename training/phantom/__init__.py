"""Synthetic paired cases (chest X-ray + 12-lead ECG + reports) whose truth is known.

The demo case library, the test data and the ground truth for explanations. See README.md.
Importing this package loads numpy, scipy and PIL only (no torch), so process-pool workers start fast.
"""

from training.phantom.case import PhantomCase, generate_case, generate_cases
from training.phantom.labels import ALL_LABELS, ECG_LABELS, XRAY_LABELS
from training.phantom.writer import MANIFEST_COLUMNS, write_phantom

__all__ = ["ALL_LABELS", "ECG_LABELS", "MANIFEST_COLUMNS", "XRAY_LABELS", "PhantomCase", "generate_case",
           "generate_cases", "write_phantom"]
