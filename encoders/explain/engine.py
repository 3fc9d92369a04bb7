"""Relevance of each input region for the cosine between an item's embedding and a target vector.

One forward pass per batch through the model's own attention capture (on a twin that shares the
model's weights, see `explaining_model`), one backward pass for Chefer's gradients. Rows of a batch
do not interact (eval mode, per-token LayerNorm), so the gradient of the SUM of the per-row scores
gives every row its own gradients: a batch of explanations costs about one backward pass.

Per modality (N tokens include one CLS for X-ray and ECG):
- X-ray: CLS row -> patch grid [gh, gw] -> linear interpolation between the token centres, where the
  stem makes each token look (`XrayEncoder.token_geometry`), onto the model input [S, S].
- ECG: tokens are time patches of all 12 leads (see encoders/ecg_encoder.py), so attention resolves
  time only. Each window's relevance is split over the leads in proportion to the lead's share of the
  evidence in that window: for Chefer the positive part of gradient x input summed over the window's
  samples (with the linear patch embedding this is exactly the lead's contribution to the token; with
  the patch_conv event branch, whose receptive field overlaps the neighbouring windows, the first-order
  contribution of the window's samples to the score); for rollout, which uses no gradient, the lead's
  signal energy in the window.
- Text: mean-pooled rows -> tokens -> words (sub-words summed, see words.py).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from encoders.errors import InvalidInputError
from encoders.explain.items import Item, check_item
from encoders.explain.relevance import (
    METHODS, attention_rollout, chefer_relevance, cls_readout, mean_pool_readout, query_row_readout,
)
from encoders.explain.words import merge_to_words, word_spans
from encoders.preprocess.leads import STANDARD_LEADS

# capture_attention switches module state (capture lists, the text tower's attention kernel). The
# service encodes from one thread per modality while another request may be explaining, so the
# explanation runs on a structural twin of the model that SHARES every parameter and buffer tensor
# (no second copy of the weights; in-place weight updates show in both) but has its own capture state.
# The lock keeps two explanations from sharing the twin's capture lists.
_LOCK = threading.Lock()
_TWINS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def explaining_model(model):
    """The weight-sharing twin of `model` that explanations run on (built once per model)."""
    twin = _TWINS.get(model)
    if twin is None:
        memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        cache = getattr(model.text, "_cache", None)
        if cache is not None:  # the frozen-prefix cache can be large and is not used under capture
            memo[id(cache)] = cache
        twin = copy.deepcopy(model, memo).eval()
        _TWINS[model] = twin
    return twin


@dataclass
class Explanation:
    """Relevance of one item for the score `score` = cos(item embedding, target)."""

    modality: str
    method: str
    score: float
    target: str
    relevance: np.ndarray                 # xray [gh, gw] patches; ecg [12, W] lead x window; text [n_words]
    heatmap: np.ndarray | None = None     # xray [S, S] on the model input; ecg [W] summed over leads
    token_origin_px: float = 0.0          # xray: model-input pixel at the centre of token (0, 0) ...
    token_stride_px: float = 0.0          # ... and between token centres (XrayEncoder.token_geometry)
    window_s: float = 0.0                 # ecg: seconds per window (one token)
    time_offset_s: float = 0.0            # ecg: file time of window 0 (long records are centre-cropped)
    lead_names: tuple[str, ...] = ()      # ecg: rows of `relevance`
    words: list[str] = field(default_factory=list)             # text
    spans: list[tuple[int, int]] = field(default_factory=list)  # text: character spans of the words
    truncated: bool = False               # text: words past the tokenizer's max_length got no relevance
    item_name: str = ""
    seconds: float = 0.0                  # wall time of this explanation (its share of the batch)

    def as_dict(self) -> dict:
        """JSON-ready: arrays as nested lists, floats rounded to 6 significant digits."""
        def rounded(array: np.ndarray | None):
            return None if array is None else np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(array).tolist()

        out = {"modality": self.modality, "method": self.method, "score": round(self.score, 6),
               "target": self.target, "item": self.item_name, "relevance": rounded(self.relevance),
               "seconds": round(self.seconds, 4)}
        if self.modality == "xray":
            out.update(grid=list(self.relevance.shape), token_origin_px=self.token_origin_px,
                       token_stride_px=self.token_stride_px)
        if self.modality == "ecg":
            out.update(time_relevance=rounded(self.heatmap), window_s=self.window_s,
                       time_offset_s=self.time_offset_s, lead_names=list(self.lead_names))
        if self.modality == "text":
            out.update(words=self.words, spans=[list(span) for span in self.spans], truncated=self.truncated)
        return out

    def normalised(self) -> np.ndarray:
        """`relevance` scaled to [0, 1] by its maximum (all zeros stay zeros)."""
        peak = float(np.max(self.relevance)) if self.relevance.size else 0.0
        return self.relevance / peak if peak > 0 else np.zeros_like(self.relevance)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InvalidInputError("method", f"must be one of {', '.join(METHODS)}, got {method!r}")


@contextlib.contextmanager
def _explaining(model, method: str) -> Iterator[dict[str, list[torch.Tensor]]]:
    hook = None
    if method == "chefer":
        # The text tower's frozen lower layers have no trainable input, so their attention would not be in
        # the graph; marking the embedding output as requiring grad puts every layer in it.
        def need_grad(_module, _inputs, output):
            return output if output.requires_grad else output.detach().requires_grad_(True)

        hook = model.text.base.get_input_embeddings().register_forward_hook(need_grad)
    grad = torch.enable_grad() if method == "chefer" else torch.no_grad()
    try:
        with _LOCK, grad, model.capture_attention(keep_graph=method == "chefer") as captured:
            yield captured
    finally:
        if hook is not None:
            hook.remove()


@torch.no_grad()
def embed_items(bundle, items: Sequence[Item]) -> torch.Tensor:
    """Unit embeddings [B, D] of items of one modality, through the ordinary (non-explaining) path."""
    modality = _one_modality(items)
    model = bundle.model
    if modality == "xray":
        return model.encode_xray(torch.stack([it.tensors["pixels"] for it in items]).float())
    if modality == "ecg":
        return model.encode_ecg(torch.stack([it.tensors["signals"] for it in items]),
                                torch.stack([it.tensors["lead_mask"] for it in items]))
    return model.encode_text(**bundle.tokenizer([it.text for it in items]))


def _one_modality(items: Sequence[Item]) -> str:
    if not items:
        raise InvalidInputError("items", "no items to explain")
    for i, item in enumerate(items):
        check_item(item, f"items[{i}]")
    modalities = {item.modality for item in items}
    if len(modalities) != 1:
        raise InvalidInputError("items", f"a batch must hold one modality, got {sorted(modalities)}")
    return modalities.pop()


def explain_batch(bundle, items: Sequence[Item], targets: torch.Tensor, method: str = "chefer",
                  descriptions: Sequence[str] | None = None) -> list[Explanation]:
    """Explain items[i] against targets[i] ([B, D] unit vectors; one [D] row is broadcast)."""
    _check_method(method)
    modality = _one_modality(items)
    targets = torch.as_tensor(targets, dtype=torch.float32).detach()
    if targets.ndim == 1:
        targets = targets.expand(len(items), -1)
    if targets.shape != (len(items), bundle.model.embed_dim):
        raise InvalidInputError("targets", f"expected [{len(items)}, {bundle.model.embed_dim}] target vectors, "
                                f"got {list(targets.shape)}")
    started = time.perf_counter()
    runner = {"xray": _explain_xray, "ecg": _explain_ecg, "text": _explain_text}[modality]
    out = runner(bundle, items, targets, method)
    share = (time.perf_counter() - started) / len(items)
    for i, explanation in enumerate(out):
        explanation.seconds = share
        explanation.target = descriptions[i] if descriptions is not None else ""
    return out


def _scores_and_relevance(model, captured_key: str, encode, targets: torch.Tensor, method: str,
                          extra_inputs: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Run `encode` under capture; (scores [B], relevance matrix [B, N, N], grads of extra_inputs)."""
    with _explaining(model, method) as captured:
        embedding = encode()
        scores = (embedding * targets).sum(dim=-1)
        attentions = captured[captured_key]
        if method == "chefer":
            grads = torch.autograd.grad(scores.sum(), [*attentions, *extra_inputs])
            relevance = chefer_relevance([a.detach() for a in attentions], list(grads[:len(attentions)]))
            extra_grads = list(grads[len(attentions):])
        else:
            relevance = attention_rollout(attentions)
            extra_grads = []
    return scores.detach(), relevance.detach(), extra_grads


def _explain_xray(bundle, items: Sequence[Item], targets: torch.Tensor, method: str) -> list[Explanation]:
    model = explaining_model(bundle.model)
    pixels = torch.stack([it.tensors["pixels"] for it in items]).float()
    scores, relevance, _ = _scores_and_relevance(model, "xray", lambda: model.encode_xray(pixels), targets, method)
    grid_h, grid_w = model.xray.vit.grid_size
    # Patch tokens only: registers (after them) hold global state and have no place on the film.
    grid = cls_readout(relevance)[:, :grid_h * grid_w].reshape(-1, grid_h, grid_w)
    weights = token_interpolation(model.xray)
    heat = torch.einsum("sg,bgh,th->bst", weights, grid, weights)
    origin, stride = model.xray.token_geometry()
    return [Explanation("xray", method, float(scores[i]), "", grid[i].numpy().copy(),
                        heatmap=heat[i].numpy().copy(), token_origin_px=origin, token_stride_px=stride,
                        item_name=item.name)
            for i, item in enumerate(items)]


def token_interpolation(xray) -> torch.Tensor:
    """[S, g] weights that spread a patch-grid map over the S model-input pixels of one axis: linear
    between the two token centres around a pixel, the edge value past the outermost centres.

    The centres are where the stem makes each token look (`XrayEncoder.token_geometry`). With a
    patch convolution this is exactly bilinear up-sampling (align_corners=False); with the conv stem
    it moves the map half a patch up and left, onto what the tokens saw.
    """
    origin, stride = xray.token_geometry()
    grid = xray.vit.grid_size[0]
    position = ((torch.arange(xray.image_size, dtype=torch.float64) - origin) / stride).clamp(0, grid - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=grid - 1)
    share = (position - low).float()
    weights = torch.zeros(xray.image_size, grid)
    rows = torch.arange(xray.image_size)
    weights[rows, low] += 1 - share
    weights[rows, high] += share
    return weights


def _explain_ecg(bundle, items: Sequence[Item], targets: torch.Tensor, method: str) -> list[Explanation]:
    model = explaining_model(bundle.model)
    signals = torch.stack([it.tensors["signals"] for it in items]).float()
    lead_mask = torch.stack([it.tensors["lead_mask"] for it in items])
    if method == "chefer":
        signals = signals.clone().requires_grad_(True)
    scores, relevance, grads = _scores_and_relevance(
        model, "ecg", lambda: model.encode_ecg(signals, lead_mask), targets, method,
        extra_inputs=[signals] if method == "chefer" else [])
    windows = model.ecg.n_patches
    # Time tokens only: a rhythm token (after them) has no place on the time axis.
    time_relevance = cls_readout(relevance)[:, :windows]        # [B, W]
    patch = model.ecg.patch
    x = signals.detach()[..., : windows * patch]
    if method == "chefer":
        evidence = (grads[0][..., : windows * patch] * x).reshape(*x.shape[:2], windows, patch).sum(-1).clamp(min=0)
    else:
        evidence = (x ** 2).reshape(*x.shape[:2], windows, patch).sum(-1)
    evidence = evidence * lead_mask.unsqueeze(-1).to(evidence.dtype)
    total = evidence.sum(dim=1, keepdim=True)
    present = lead_mask.to(evidence.dtype).unsqueeze(-1).expand_as(evidence)
    # A window with no positive lead evidence keeps its time relevance, spread evenly over present leads.
    share = torch.where(total > 0, evidence / total.clamp_min(1e-12), present / present.sum(1, keepdim=True))
    lead_time = time_relevance.unsqueeze(1) * share              # [B, 12, W]
    window_s = patch / float(bundle.config["ecg"]["sample_rate"])
    return [Explanation("ecg", method, float(scores[i]), "", lead_time[i].numpy().copy(),
                        heatmap=lead_time[i].sum(0).numpy().copy(), window_s=window_s,
                        time_offset_s=float(item.extra.get("window_start_s", 0.0)),
                        lead_names=tuple(STANDARD_LEADS), item_name=item.name)
            for i, item in enumerate(items)]


def _explain_text(bundle, items: Sequence[Item], targets: torch.Tensor, method: str) -> list[Explanation]:
    model = explaining_model(bundle.model)
    tokens = bundle.tokenizer([it.text for it in items])
    scores, relevance = _text_token_relevance(model, tokens, targets, method)
    token_relevance = relevance.numpy()
    out = []
    for i, item in enumerate(items):
        segmentation = word_spans(bundle, item.text)
        words = merge_to_words(token_relevance[i], segmentation)
        covered = segmentation.spans[-1][1] if segmentation.spans else 0
        out.append(Explanation("text", method, float(scores[i]), "", words, words=segmentation.words,
                               spans=segmentation.spans, truncated=bool(item.text[covered:].strip()),
                               item_name=item.name))
    return out


def _text_token_relevance(model, tokens: dict[str, torch.Tensor], targets: torch.Tensor,
                          method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B], relevance [B, L] of each token) read out the way the tower pools."""
    mask = tokens["attention_mask"]
    pooling = model.text.pooling
    if pooling not in ("mean_query", "sentence_query"):
        scores, relevance, _ = _scores_and_relevance(model, "text", lambda: model.encode_text(**tokens), targets, method)
        if pooling == "mean":
            return scores, mean_pool_readout(relevance, mask)
        if pooling == "cls":
            rows = torch.zeros(mask.shape[0], dtype=torch.long)
        else:  # "last": the last real token
            rows = (mask.to(torch.long) * torch.arange(mask.shape[1])).argmax(dim=1)
        picked = relevance[torch.arange(relevance.shape[0]), rows]
        eye = torch.nn.functional.one_hot(rows, mask.shape[1]).to(picked.dtype)
        return scores, (picked - eye).clamp(min=0) * mask.to(picked.dtype)
    # The top layer ran on one query row (per sentence): its [B, H, Q, L] attention is the last
    # captured. With no layer below it, the rows it reads carry only themselves (identity relevance).
    identity = torch.eye(mask.shape[1]).expand(mask.shape[0], -1, -1)
    rows = model.text.pooling_weights(tokens["input_ids"], mask)
    with _explaining(model, method) as captured:
        scores = (model.encode_text(**tokens) * targets).sum(dim=-1)
        attentions = captured["text"]
        below, top = attentions[:-1], attentions[-1]
        if method == "chefer":
            grads = torch.autograd.grad(scores.sum(), attentions)
            prefix = chefer_relevance([a.detach() for a in below], list(grads[:-1])) if below else identity
            relevance = query_row_readout(prefix, top.detach(), grads[-1], mask, rows)
        else:
            prefix = attention_rollout(below) if below else identity
            relevance = query_row_readout(prefix, top, None, mask, rows)
    return scores.detach(), relevance.detach()
