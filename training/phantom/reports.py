"""Radiology reports and ECG statement lists with the variety of real ones.

Paraphrases, negated findings ("no pneumothorax"), hedges ("possible"), sentences about nothing the
labels cover, and the odd typo keep keyword matching from solving the text modality. Report length is
decoupled from the number of findings: each report is given a target length in characters, drawn
independently of the labels, and is filled up to it with negations and incidental sentences, so a normal
study is not simply the short one.
"""

from __future__ import annotations

import numpy as np

_SIZE_WORDS = {"small": ("small", "trace", "small"), "moderate": ("moderate", "moderate-sized", "moderate"),
               "large": ("large", "large", "extensive")}
_HEDGES = ("possible {}", "probable {}", "likely {}", "findings suspicious for {}", "cannot exclude {}")

_POSITIVE = {
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly.", "Enlarged cardiac silhouette.",
                     "The cardiac silhouette is enlarged, cardiothoracic ratio approximately {ctr:.2f}.",
                     "Moderate enlargement of the cardiac silhouette."),
    "pulmonary_edema": ("{sev} pulmonary edema with perihilar haziness.", "Bilateral perihilar opacities consistent with {sev_l} pulmonary edema.",
                        "Interstitial and alveolar edema, {sev_l}.", "Vascular congestion with {sev_l} pulmonary oedema and Kerley B lines.",
                        "Findings of {sev_l} interstitial pulmonary edema."),
    "consolidation": ("Consolidation in the {lobe}.", "Airspace opacity in the {lobe} with air bronchograms, consistent with consolidation.",
                      "Focal consolidation of the {lobe}, which may represent pneumonia.", "Dense opacity in the {lobe} compatible with consolidation."),
    "pneumothorax": ("{size} {side} pneumothorax.", "There is a {size_l} {side} apical pneumothorax with a visible pleural line.",
                     "{size} {side}-sided pneumothorax without mediastinal shift.", "A {size_l} pneumothorax is present on the {side}."),
    "atelectasis": ("Plate-like atelectasis at the {side} base.", "{side_c} basilar atelectasis with volume loss.",
                    "Linear opacity in the {side} lower zone, consistent with subsegmental atelectasis.",
                    "Atelectasis in the {side} lower lung with mild elevation of the hemidiaphragm."),
}
_EFFUSION = ("{size} {side} pleural effusion.", "{size} {side}-sided pleural effusion blunting the costophrenic angle.",
             "There is a {size_l} {side} pleural effusion.", "{size} {side} effusion with a meniscus.",
             "Blunting of the {side} costophrenic angle due to a {size_l} pleural effusion.")
_BILATERAL_EFFUSION = ("Bilateral pleural effusions, {size_l} on the left and {size2} on the right.",
                       "Small-to-{size_l} bilateral pleural effusions.")

_NEGATIVE = {
    "cardiomegaly": ("Heart size is normal.", "The cardiac silhouette is within normal limits.", "No cardiomegaly.",
                     "Normal cardiomediastinal contours."),
    "pleural_effusion_left": ("No left pleural effusion.", "The left costophrenic angle is sharp."),
    "pleural_effusion_right": ("No right pleural effusion.", "The right costophrenic angle is clear."),
    "pleural_effusion": ("No pleural effusion.", "No pleural effusions.", "Costophrenic angles are sharp.",
                         "No effusion or pneumothorax."),
    "pulmonary_edema": ("No pulmonary edema.", "No evidence of pulmonary vascular congestion.", "No edema."),
    "consolidation": ("No focal consolidation.", "Lungs are clear.", "No focal airspace disease.",
                      "No consolidation to suggest pneumonia."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    "atelectasis": ("No atelectasis.", "No significant volume loss.", "Lung volumes are normal."),
}
_XRAY_INCIDENTAL = ("Degenerative changes of the thoracic spine.", "Surgical clips in the right upper quadrant.",
                    "The visualized osseous structures are intact.", "Old healed fracture of a left posterior rib.",
                    "The patient is slightly rotated.", "Limited inspiratory effort.",
                    "Calcification of the aortic knob.", "No free air below the diaphragm.",
                    "Soft tissues are unremarkable.", "Comparison is made with no prior studies.",
                    "Mild dextroconvex curvature of the thoracic spine.", "Overlying monitoring leads are noted.",
                    "The upper abdomen is unremarkable.", "Mild hyperinflation.",
                    "Single frontal view of the chest was obtained.", "The trachea is midline.",
                    "Partially imaged cervical spine is unremarkable.", "Mild degenerative changes of both shoulders.",
                    "Clinical history: shortness of breath.", "Clinical indication: preoperative assessment.",
                    "Thin-section imaging is not available for comparison.", "A nasogastric tube is not seen.",
                    "Findings were discussed with the referring team.", "Skin folds project over the lateral chest.")
_XRAY_NORMAL_IMPRESSION = ("No acute cardiopulmonary process.", "Normal chest radiograph.",
                           "No acute cardiopulmonary abnormality.", "No radiographic evidence of acute disease.")

_ECG_POSITIVE = {
    "atrial_fibrillation": ("Atrial fibrillation.", "Atrial fibrillation with {rate_word} ventricular response.",
                            "Irregularly irregular rhythm without discernible P waves, consistent with atrial fibrillation.",
                            "AF with ventricular rate {hr} bpm."),
    "sinus_tachycardia": ("Sinus tachycardia.", "Sinus tachycardia at {hr} bpm.", "Sinus rhythm, rate {hr} (tachycardic)."),
    "sinus_bradycardia": ("Sinus bradycardia.", "Marked sinus bradycardia at {hr} bpm.", "Sinus rhythm, slow, rate {hr}."),
    "first_degree_av_block": ("First degree AV block.", "Prolonged PR interval ({pr} ms), first-degree atrioventricular block.",
                              "1st degree AV block.", "PR prolongation consistent with first degree heart block."),
    "lbbb": ("Left bundle branch block.", "Complete left bundle branch block, QRS {qrs} ms.", "LBBB.",
             "Wide QRS with left bundle branch block morphology."),
    "rbbb": ("Right bundle branch block.", "Complete right bundle branch block (rsR' in V1).", "RBBB.",
             "Wide QRS ({qrs} ms) with right bundle branch block pattern."),
    "lvh": ("Left ventricular hypertrophy.", "Voltage criteria for left ventricular hypertrophy with repolarization abnormality.",
            "LVH with strain pattern.", "Increased QRS voltage consistent with LVH, lateral ST-T changes."),
    "anterior_stemi": ("ST elevation in V1-V4 consistent with acute anterior myocardial infarction.",
                       "Anterior ST-elevation MI.", "Acute anterior STEMI.",
                       "ST segment elevation in the anterior precordial leads, acute injury pattern."),
}
_ECG_NEGATIVE = {
    "atrial_fibrillation": ("Sinus rhythm.", "Normal sinus rhythm.", "Regular rhythm with P waves preceding each QRS."),
    "first_degree_av_block": ("Normal PR interval.", "PR interval within normal limits."),
    "lbbb": ("Normal intraventricular conduction.", "QRS duration normal.", "No bundle branch block."),
    "rbbb": ("No bundle branch block.", "Narrow QRS complexes."),
    "lvh": ("No voltage criteria for LVH.", "No evidence of ventricular hypertrophy."),
    "anterior_stemi": ("No acute ST changes.", "No ST elevation.", "No acute ischemic changes."),
}
_ECG_INCIDENTAL = ("Normal axis.", "Borderline T wave changes in lead III.", "Compared with prior tracing, no significant change.",
                   "Technically adequate tracing.", "Baseline artifact present.", "Occasional lead noise.",
                   "Poor R wave progression cannot be excluded due to lead placement.", "QT interval within normal limits.",
                   "Unconfirmed computer interpretation.", "Age and gender specific ECG analysis.", "Leftward axis.",
                   "Recorded at rest, supine.", "Electrode placement verified.", "Intermittent muscle artifact.",
                   "Clinical correlation recommended.", "Reviewed by cardiology.")
_ECG_NORMAL = ("Normal ECG.", "Normal sinus rhythm, normal ECG.", "Within normal limits.")


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(0, len(options)))]


def _typo(rng: np.random.Generator, text: str) -> str:
    """Swap, drop or double one letter of one longer word: what hurried dictation does."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha()]
    if not candidates:
        return text
    i = candidates[int(rng.integers(0, len(candidates)))]
    w = words[i]
    k = int(rng.integers(1, len(w) - 2))
    kind = rng.integers(0, 3)
    if kind == 0:
        w = w[:k] + w[k + 1] + w[k] + w[k + 2:]
    elif kind == 1:
        w = w[:k] + w[k + 1:]
    else:
        w = w[:k] + w[k] + w[k:]
    words[i] = w
    return " ".join(words)


def _hedge(rng: np.random.Generator, sentence: str) -> str:
    core = sentence.rstrip(".")
    core = core[0].lower() + core[1:]
    text = _pick(rng, _HEDGES).format(core)
    return text[0].upper() + text[1:] + "."


def radiology_report(labels: tuple[str, ...], attrs: dict, rng: np.random.Generator, target_chars: float = 400) -> str:
    """FINDINGS / IMPRESSION text of the case's chest film."""
    labs = set(labels)
    fmt = {"ctr": attrs.get("ctr", 0.5), "lobe": attrs.get("lobe", ""),
           "side": attrs.get("pneumothorax_side", attrs.get("atelectasis_side", "")),
           "sev": attrs.get("edema_severity", "mild").capitalize(), "sev_l": attrs.get("edema_severity", "mild")}
    positives: list[str] = []
    for lab in ("cardiomegaly", "pulmonary_edema", "consolidation", "pneumothorax", "atelectasis"):
        if lab not in labs:
            continue
        f = dict(fmt)
        if lab == "pneumothorax":
            size = _pick(rng, _SIZE_WORDS[attrs["pneumothorax_size"]])
            f.update(side=attrs["pneumothorax_side"], size=size.capitalize(), size_l=size)
        if lab == "atelectasis":
            f.update(side=attrs["atelectasis_side"], side_c=attrs["atelectasis_side"].capitalize())
        s = _pick(rng, _POSITIVE[lab]).format(**f)
        positives.append(_hedge(rng, s) if rng.random() < 0.15 else s)
    sides = [s for s in ("left", "right") if f"pleural_effusion_{s}" in labs]
    if len(sides) == 2 and rng.random() < 0.5:
        positives.append(_pick(rng, _BILATERAL_EFFUSION).format(
            size_l=attrs["effusion_left"], size2=attrs["effusion_right"]))
    else:
        for side in sides:
            size = _pick(rng, _SIZE_WORDS[attrs[f"effusion_{side}"]])
            s = _pick(rng, _EFFUSION).format(side=side, size=size.capitalize(), size_l=size)
            positives.append(_hedge(rng, s) if rng.random() < 0.1 else s)
    negatives = []
    for lab, options in _NEGATIVE.items():
        if lab == "pleural_effusion":
            if not sides:
                negatives.append(_pick(rng, options))
        elif lab not in labs and not (lab.startswith("pleural_effusion_") and not sides):
            negatives.append(_pick(rng, options))
    if positives:
        impression = " ".join(positives[: int(rng.integers(1, len(positives) + 1))])
    else:
        impression = _pick(rng, _XRAY_NORMAL_IMPRESSION)
    body = _fill(rng, positives, negatives, list(_XRAY_INCIDENTAL), target_chars - len(impression))
    text = f"FINDINGS: {' '.join(body)}\nIMPRESSION: {impression}"
    return _typo(rng, text) if rng.random() < 0.3 else text


def _fill(rng: np.random.Generator, positives: list[str], negatives: list[str], incidental: list[str],
          target_chars: float) -> list[str]:
    """Positives, then negations and incidental sentences until about `target_chars`, in random order.

    The target is drawn per report, independent of the findings, so length does not reveal how sick
    the patient is (the difficulty guard).
    """
    rng.shuffle(negatives)
    rng.shuffle(incidental)
    body = list(positives)
    pool = [s for pair in zip(negatives, incidental[: len(negatives)]) for s in pair]
    pool += incidental[len(negatives):] + negatives[len(incidental):]
    length = sum(len(b) + 1 for b in body)
    for sentence in pool:
        if length >= target_chars:
            break
        body.append(sentence)
        length += len(sentence) + 1
    order = rng.permutation(len(body))
    return [body[i] for i in order]


def ecg_statements(labels: tuple[str, ...], params: dict, rng: np.random.Generator, target_chars: float = 150) -> str:
    """One statement per line, like a machine-read and over-read ECG."""
    labs = set(labels)
    hr = int(round(params["heart_rate"]))
    fmt = {"hr": hr, "pr": int(round(params["pr_ms"] or 0)), "qrs": int(round(params["qrs_ms"])),
           "rate_word": "rapid" if hr > 110 else "controlled"}
    statements = []
    for lab in ("atrial_fibrillation", "sinus_tachycardia", "sinus_bradycardia", "first_degree_av_block",
                "lbbb", "rbbb", "lvh", "anterior_stemi"):
        if lab in labs:
            s = _pick(rng, _ECG_POSITIVE[lab]).format(**fmt)
            statements.append(_hedge(rng, s) if rng.random() < 0.1 and lab in ("lvh", "anterior_stemi") else s)
    negatives = []
    rhythm_named = labs & {"atrial_fibrillation", "sinus_tachycardia", "sinus_bradycardia"}
    for lab, options in _ECG_NEGATIVE.items():
        if lab in labs or (lab == "atrial_fibrillation" and rhythm_named):
            continue
        if lab == "atrial_fibrillation" and "first_degree_av_block" in labs:
            negatives.append("Sinus rhythm.")  # not "normal sinus rhythm" with a long PR
            continue
        if (lab == "rbbb" and "lbbb" in labs) or (lab == "first_degree_av_block" and "atrial_fibrillation" in labs):
            continue
        negatives.append(_pick(rng, options))
    if rng.random() < 0.6:
        statements.insert(0, f"Ventricular rate {hr} bpm.")
    if "normal" in labs and rng.random() < 0.5:
        statements.append(_pick(rng, _ECG_NORMAL))
    lines = _fill(rng, statements, negatives, list(_ECG_INCIDENTAL), target_chars)
    text = "\n".join(lines)
    return _typo(rng, text) if rng.random() < 0.2 else text
