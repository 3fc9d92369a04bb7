"""`tribind eval` on phantom cases: zero-shot AUROC and six-direction retrieval, beside a random init.

Definitions (also in README.md):
- zero_shot.<m>: for the labels of modality m (phantom label set, "normal" left out), CheXzero
  positive-vs-negative prompt-ensemble probabilities of the cases that have m; per-label AUROC and
  their mean (macro_auroc; labels with one class only are left out of the mean).
- retrieval."a->b": among cases with both a and b: r@1/5/10 (own case in the top k), gallery size,
  and label_p@10 = mean over queries of the share of the top 10 results that share at least one
  *relevant* label with the query. Relevant labels are the non-normal labels visible in both
  modalities (text sees all; xray its findings; ecg its findings); for xray<->ecg, which see disjoint
  findings, every non-normal label of the case counts (a case-level match). Queries with no relevant
  label are skipped (label_queries says how many counted).
- prompt_search.<xray|ecg>: search by a short text, as `tribind search --text` does: each positive prompt
  of each label (one sentence, e.g. "Left pleural effusion.") is a query on its own, ranked by raw
  cosine over the cases that have the modality; per_label = the share of the top 10 that carry the
  label, averaged over the label's prompts; macro_p@10 their mean; random_p@10 the labels' mean
  prevalence among those cases (what a random top 10 reads). Why beside label_p@10: a whole
  report names every finding, mostly negated, and retrieves by all of them together; one sentence
  has nothing else to lean on (session 17: a 37-minute run read text->xray label_p@10 0.97 while
  "Left pleural effusion." found 2-3 left effusions in its top 10, the bundled model 7-8).
- shared_traits.<xray|ecg>.<trait>: two-fold R^2 of a linear (ridge) probe from the modality's
  embedding to a trait both pictures show (heart_axis_deg, ctr, habitus; training/trait_probe.py):
  what the X-ray<->ECG pair can match a case by, beyond its findings.
- random_init: the same figures for a freshly initialised model of the same preset (seeded by --seed):
  what the metrics read when nothing was learned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import permutations
from typing import Any

import numpy as np
import torch

from encoders.factory import ModelBundle, create_model
from encoders.labelsets import LabelSet, load_labelset
from encoders.zero_shot import classify, embed_texts
from training.case_tensors import CaseTensors, embed_cases
from training.metrics import auroc, retrieval_metrics
from training.trait_probe import phantom_traits, shared_trait_probe

DIRECTIONS: tuple[tuple[str, str], ...] = tuple(permutations(("xray", "ecg", "text"), 2))


def relevant_labels(labelset: LabelSet, a: str, b: str) -> frozenset[str]:
    """Non-normal labels visible in both modalities (all non-normal ones when none is shared)."""
    def visible(m: str) -> set[str]:
        return {label.id for label in labelset.for_modality(m, include_both=False)}

    shared = visible(a) & visible(b)
    return frozenset(shared or visible("text"))


def _scored_modalities(data: CaseTensors, labelset: LabelSet) -> Iterator[tuple[str, list, torch.Tensor]]:
    """(modality, its findings, the rows of the cases that have it) for X-ray and ECG, where both exist."""
    for modality in ("xray", "ecg"):
        labels = labelset.for_modality(modality, include_both=False)
        rows = torch.nonzero(data.present(modality)).flatten()
        if labels and len(rows):
            yield modality, labels, rows


def zero_shot_metrics(bundle: ModelBundle, data: CaseTensors, embeddings: dict[str, torch.Tensor],
                      labelset: LabelSet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for modality, labels, rows in _scored_modalities(data, labelset):
        probs = classify(bundle, embeddings[modality][rows], labels).numpy()
        per_label = {}
        for k, label in enumerate(labels):
            truth = np.array([label.id in data.labels[int(i)] for i in rows])
            per_label[label.id] = auroc(truth, probs[:, k])
        defined = [v for v in per_label.values() if v is not None]
        out[modality] = {"per_label": per_label, "macro_auroc": float(np.mean(defined)) if defined else None,
                         "cases": int(len(rows))}
    return out


@torch.no_grad()
def prompt_search_metrics(bundle: ModelBundle, data: CaseTensors, embeddings: dict[str, torch.Tensor],
                          labelset: LabelSet, k: int = 10) -> dict[str, Any]:
    """Precision at k of each label's positive prompts used one by one as search queries (see module doc)."""
    out: dict[str, Any] = {}
    for modality, labels, rows in _scored_modalities(data, labelset):
        gallery = embeddings[modality][rows]
        top = min(k, len(rows))
        per_label, prevalence = {}, []
        for label in labels:
            hits = (embed_texts(bundle, list(label.positive)) @ gallery.T).topk(top, dim=1).indices
            per_label[label.id] = float(np.mean([[label.id in data.labels[int(rows[j])] for j in row]
                                                 for row in hits.tolist()]))
            prevalence.append(np.mean([label.id in data.labels[int(i)] for i in rows]))
        # random_p@10: what a random top k reads, the labels' mean prevalence in the gallery.
        out[modality] = {"per_label": per_label, "macro_p@10": float(np.mean(list(per_label.values()))),
                         "random_p@10": float(np.mean(prevalence)), "gallery": int(len(rows)), "k": top}
    return out


def retrieval_all(data: CaseTensors, embeddings: dict[str, torch.Tensor], labelset: LabelSet) -> dict[str, Any]:
    out = {}
    for a, b in DIRECTIONS:
        rows = torch.nonzero(data.present(a) & data.present(b)).flatten()
        relevant = relevant_labels(labelset, a, b)
        labels = [frozenset(data.labels[int(i)]) & relevant for i in rows]
        out[f"{a}->{b}"] = retrieval_metrics(embeddings[a][rows].numpy(), embeddings[b][rows].numpy(), labels, labels)
    return out


def evaluate_bundle(bundle: ModelBundle, data: CaseTensors, labelset: LabelSet,
                    traits: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """zero_shot and retrieval figures of one model on prepared cases; with `traits` (one value per
    case, `training.trait_probe.phantom_traits`), also shared_traits."""
    embeddings = embed_cases(bundle, data)
    result = {"model_version": bundle.model_version,
              "zero_shot": zero_shot_metrics(bundle, data, embeddings, labelset),
              "prompt_search": prompt_search_metrics(bundle, data, embeddings, labelset),
              "retrieval": retrieval_all(data, embeddings, labelset)}
    if traits is not None:
        result["shared_traits"] = shared_trait_probe(
            {m: embeddings[m].numpy() for m in ("xray", "ecg")},
            {m: data.present(m).numpy() for m in ("xray", "ecg")}, traits)
    return result


def random_init_like(bundle: ModelBundle, seed: int) -> ModelBundle:
    """A fresh, untrained model of the same config; shares the frozen text layers' cache with `bundle`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = create_model(bundle.config)
    fresh.model.text.share_prefix_cache(bundle.model.text)
    return fresh


def evaluate_phantom(bundle: ModelBundle, cases: int, seed: int, labelset: str = "phantom",
                     random_init: bool = True, missing_rate: float | None = None) -> dict[str, Any]:
    """The `tribind eval --data phantom` JSON object (see the module docstring)."""
    from training.phantom_dataset import DEFAULT_MISSING_RATE, phantom_case_tensors

    started = time.time()
    labels = load_labelset(labelset)
    data = phantom_case_tensors(bundle, cases, seed,
                                missing_rate=DEFAULT_MISSING_RATE if missing_rate is None else missing_rate)
    prepared = time.time()
    bundle.model.text.enable_prefix_cache()
    traits = phantom_traits(seed, len(data))
    result = evaluate_bundle(bundle, data, labels, traits)
    if random_init:
        baseline = evaluate_bundle(random_init_like(bundle, seed), data, labels, traits)
        result["random_init"] = baseline
    result.update({"cases": len(data), "seed": seed, "labelset": labels.name,
                   "data_seconds": round(prepared - started, 1), "seconds": round(time.time() - started, 1)})
    return result
