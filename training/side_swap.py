"""Side-swapped reports as hard negatives for the X-ray tower: teach it which side a finding is on.

Why: session 20's checkpoint (tiny-1228df984afc78d3) reads an effusion but hardly its side. Its left
and right effusion margins are 0.99 correlated, and a logistic probe on its film embeddings tells a
left-only from a right-only effusion at AUROC 0.70. In a batch of 32 few reports differ from the
film's own report only in a side, so the contrastive loss seldom asks for laterality. This term
asks for it directly: each film must score its own report above the same report with left and right
exchanged in its finding sentences. It is NegCLIP's idea (Yuksekgonul et al. 2023, "When and why
vision-language models behave like bags-of-words, and what to do about it"), with a swap in place of a
word shuffle.

Only sentences that name a lateral chest finding are swapped (effusion, pneumothorax, consolidation,
atelectasis, a lobe, an angle or a base...). Side words in other sentences are left alone:
- cardiac anatomy ("left bundle branch block", "left ventricular hypertrophy") is not a side of the film;
- incidentals ("clips in the right upper quadrant") are seldom drawn, so the film cannot tell them apart.
A report with no swappable sentence gets no negative.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
import torch.nn.functional as F

from encoders.factory import ModelBundle
from encoders.sentences import split_sentences
from training.case_tensors import CaseTensors, embed_cases

_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_LATERAL_FINDING = re.compile(
    r"effusion|pneumothora|consolidat|atelecta|opacit|lobe|costophrenic|hemidiaphragm|\bbas(e|al|ilar)\b|apical|"
    r"lower (zone|lung)|upper (zone|lung)|hemithorax", re.IGNORECASE)
_CARDIAC = re.compile(r"bundle|ventric|axis|atri(al|um)", re.IGNORECASE)


def _swap_word(match: re.Match) -> str:
    word = match.group(0)
    other = "right" if word.lower() == "left" else "left"
    return other.capitalize() if word[0].isupper() else other


def swap_sides(report: str) -> str | None:
    """`report` with left and right exchanged in its lateral-finding sentences; None when no sentence
    qualifies (the film could not tell the two reports apart)."""
    changed = False
    out = []
    for sentence in split_sentences(report):
        if _SIDE.search(sentence) and _LATERAL_FINDING.search(sentence) and not _CARDIAC.search(sentence):
            sentence = _SIDE.sub(_swap_word, sentence)
            changed = True
        out.append(sentence)
    return " ".join(out) if changed else None


def side_swap_table(bundle: ModelBundle, data: CaseTensors, device: torch.device, precision: str,
                    batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, D] unit embeddings of every case's side-swapped report by the text tower in eval mode,
    [N] bool: the case has one). For a frozen text tower: computed once, like the frozen-tower cache."""
    swapped = [swap_sides(r) if r is not None else None for r in data.reports]
    has = torch.tensor([s is not None for s in swapped], dtype=torch.bool)
    if not has.any():
        return torch.zeros(len(data), bundle.model.embed_dim), has
    view = replace(data, reports=swapped, has_text=has)
    table = embed_cases(bundle, view, batch_size=batch_size, modalities=("text",), device=device,
                        precision=precision)["text"]
    return table, has


def side_swap_loss(xray: torch.Tensor, report: torch.Tensor, swapped: torch.Tensor, valid: torch.Tensor,
                   logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean over `valid` rows of -log softmax([s x.t, s x.t'])[0]: the film against its own report `t`
    and that report side-swapped `t'` (all [B, D] unit rows; `valid` [B] bool). 0 with no valid row."""
    if not bool(valid.any()):
        return logit_scale * 0.0
    x, t, t_swapped = xray[valid], report[valid], swapped[valid]
    logits = logit_scale * torch.stack([(x * t).sum(-1), (x * t_swapped).sum(-1)], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long, device=x.device))
