"""The contact sheet in the README: a few phantom films with their findings and two 12-lead ECGs.

The ECG plot follows the paper printout clinicians read: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm major
grid, leads in the 3x4 layout (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6, 2.5 s each) and a 10 s lead II
rhythm strip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.phantom.case import PhantomCase, generate_case
from training.phantom.latent import sample_latent

_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
_FINDING_COLOURS = {"cardiomegaly": "#e6194b", "pleural_effusion_left": "#3cb44b", "pleural_effusion_right": "#3cb44b",
                    "pulmonary_edema": "#ffe119", "consolidation": "#f58231", "pneumothorax": "#42d4f4",
                    "atelectasis": "#f032e6"}


def find_case(seed: int, want: set[str], modality: str, *, xray_size: int = 512, limit: int = 5000,
              avoid: set[str] = frozenset(), min_voltage: float = 0.0) -> PhantomCase:
    """The first case of population `seed` that has all labels in `want`, none in `avoid`, and `modality`.

    `min_voltage` skips low-voltage (broad habitus) ECGs, which are real but poor textbook examples.
    """
    for index in range(limit):
        latent = sample_latent(seed, index)
        if not want <= set(latent.labels) or avoid & set(latent.labels) or modality in latent.missing:
            continue
        case = generate_case(seed, index, xray_size=xray_size)
        if case.attributes["voltage"] >= min_voltage:
            return case
    raise LookupError(f"no case with {sorted(want)} and {modality} among the first {limit} of seed {seed}")


def plot_ecg(case: PhantomCase, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sig = case.ecg.astype(np.float64)
    fs = case.ecg_fs
    sig = sig - np.median(sig, axis=1, keepdims=True)
    idx = {name: i for i, name in enumerate(case.lead_names)}
    # Paper units: x in mm (25 mm/s), y in mm (10 mm/mV).
    row_h, width = 30.0, 250.0
    height = row_h * 4 + 5
    fig = plt.figure(figsize=(width / 25.4 * 0.62, height / 25.4 * 0.62), dpi=110)
    ax = fig.add_axes((0, 0, 1, 0.94))
    for xm in np.arange(0, width + 0.1, 1.0):
        ax.axvline(xm, color="#f4c7c7" if xm % 5 else "#e08c8c", lw=0.3 if xm % 5 else 0.6, zorder=0)
    for ym in np.arange(0, height + 0.1, 1.0):
        ax.axhline(ym, color="#f4c7c7" if ym % 5 else "#e08c8c", lw=0.3 if ym % 5 else 0.6, zorder=0)
    seg = int(2.5 * fs)
    for r, names in enumerate(_LAYOUT):
        base = height - (r + 1) * row_h + 8
        for c, name in enumerate(names):
            part = sig[idx[name], c * seg:(c + 1) * seg]
            t = np.arange(part.size) / fs * 25 + c * 62.5
            ax.plot(t, base + part * 10, color="black", lw=0.6)
            ax.text(c * 62.5 + 1.5, base + 9, name, fontsize=7)
    base = 12.0
    t = np.arange(sig.shape[1]) / fs * 25
    ax.plot(t, base + sig[idx["II"]] * 10, color="black", lw=0.6)
    ax.text(1.5, base + 9, "II", fontsize=7)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=8, y=0.995)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_xrays(cases: list[PhantomCase], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = int(np.ceil(len(cases) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.7), dpi=90)
    for ax, case in zip(np.ravel(axes), cases):
        ax.imshow(case.xray, cmap="gray", vmin=0, vmax=255)
        for label, mask in case.xray_masks.items():
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=[_FINDING_COLOURS[label]], linewidths=0.6)
        findings = [lab for lab in case.labels if lab in _FINDING_COLOURS] or ["no finding"]
        ax.set_title("\n".join(", ".join(findings[i:i + 2]) for i in range(0, len(findings), 2)), fontsize=6.5)
        ax.set_axis_off()
    for ax in np.ravel(axes)[len(cases):]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_contact_sheet(out_dir: str | Path, seed: int = 1, xray_size: int = 256) -> list[Path]:
    """Write phantom_xrays.png, phantom_ecg_af.png and phantom_ecg_lbbb.png; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = ({"normal"}, {"cardiomegaly", "pulmonary_edema"}, {"pleural_effusion_right"}, {"pneumothorax"},
              {"consolidation"}, {"atelectasis"})
    xray_findings = set(_FINDING_COLOURS)
    # Each film shows its finding alone (no other X-ray finding), so the sheet reads as a teaching set.
    films = [find_case(seed, w, "xray", xray_size=xray_size, avoid=xray_findings - w) for w in wanted]
    paths = [out / "phantom_xrays.png", out / "phantom_ecg_af.png", out / "phantom_ecg_lbbb.png"]
    plot_xrays(films, paths[0])
    af = find_case(seed, {"atrial_fibrillation"}, "ecg", xray_size=64, avoid={"lbbb", "rbbb"}, min_voltage=0.9)
    plot_ecg(af, paths[1], f"{af.case_id}: atrial fibrillation, {af.attributes['heart_rate']:.0f} bpm "
                           f"(25 mm/s, 10 mm/mV)")
    lbbb = find_case(seed, {"lbbb"}, "ecg", xray_size=64, avoid={"atrial_fibrillation", "anterior_stemi"},
                     min_voltage=1.1)
    plot_ecg(lbbb, paths[2], f"{lbbb.case_id}: left bundle branch block, QRS {lbbb.attributes['qrs_ms']:.0f} ms "
                             f"(25 mm/s, 10 mm/mV)")
    return paths
