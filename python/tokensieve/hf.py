"""Pruning inside a loaded transformers model: ``tokensieve.hf.apply(model, pruner="todre", ratio=0.25)``.

The adapter does what ``tokensieve ask`` does, in the user's own model:

1. taps the vision tower for the signals the method reads (CLS -> patch attention, averaged over heads, and the
   keys averaged over heads, both from the block that produces the feature layer, ``vision_feature_layer``; read
   from that block's ``q_proj``/``k_proj`` outputs, so any attention implementation gives them);
2. prunes the projected visual tokens of all images of the prompt together (``grid = (images, g, g)``), with the
   question's input embeddings as the query for query-aware methods;
3. shortens the prompt to the kept placeholders (merged rows where the method merges, PruMerge+'s extra token after
   the last visual token) and keeps every kept row's original position id; the text after the visual tokens and
   every generated token continue from the unpruned sequence's positions (``--positions original``).

``model.generate(input_ids=..., pixel_values=..., ...)`` and ``model(input_ids=..., pixel_values=...)`` then run on
the kept tokens; ``generate`` returns the prompt's ids followed by the new tokens, as it does unpatched, and a direct
call returns the logits of the shortened prompt. ``handle.last`` holds the last :class:`tokensieve.Selection`;
``handle.remove()`` restores the model.

Supported: ``LlavaForConditionalGeneration`` (LLaVA-1.5 layout: CLIP tower, one feature layer, ``default`` or
``full`` strategy), batch size 1 without padding. Other classes (LLaVA-OneVision's any-res packing, Qwen-VL) and
in-decoder rules (``in_llm``) are refused with a :class:`tokensieve.TokensieveError` naming what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import tokensieve as ts
from tokensieve import TokensieveError


@dataclass
class _Prefill:
    """Position bookkeeping of the current prompt: its pruned length, original ids and the decode offset."""

    length: int
    position_ids: Any
    delta: int


class Handle:
    """An applied adapter: ``last`` is the last selection, ``remove()`` undoes the patch."""

    def __init__(self, model: Any, method: str, keep: Optional[int], ratio: Optional[float], params: dict):
        self.model = model
        self.method = method
        self.keep = keep
        self.ratio = ratio
        self.params = params
        self.last: Optional[ts.Selection] = None
        self._prefill: Optional[_Prefill] = None
        info = {m["name"]: m for m in ts.methods()}
        name = method.split(":", 1)[0]
        if name not in info:
            raise TokensieveError(f"unknown method `{name}` (see tokensieve.methods())")
        self._uses = set(info[name]["uses"])
        self._saved = {}

    # -- patching ---------------------------------------------------------------------------------------------

    def _install(self) -> None:
        model, lm = self.model, self.model.model.language_model
        self._saved = {"generate": model.__dict__.get("generate"), "forward": model.__dict__.get("forward"),
                       "lm_forward": lm.__dict__.get("forward")}
        orig_generate, orig_forward, orig_lm = model.generate, model.forward, lm.forward

        def generate(*args: Any, input_ids=None, pixel_values=None, attention_mask=None, query_ids=None, **kw):
            if args:
                raise TokensieveError("pass generate()'s inputs by keyword (input_ids=..., pixel_values=...)")
            if pixel_values is None:
                self._prefill = None
                return orig_generate(input_ids=input_ids, attention_mask=attention_mask, **kw)
            embeds = self._prepare(input_ids, pixel_values, attention_mask, query_ids)
            mask = embeds.new_ones(embeds.shape[:2], dtype=input_ids.dtype)
            new = orig_generate(inputs_embeds=embeds, attention_mask=mask, **kw)
            import torch

            return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

        def forward(*args: Any, input_ids=None, pixel_values=None, attention_mask=None, query_ids=None, **kw):
            if pixel_values is None or input_ids is None:
                return orig_forward(*args, input_ids=input_ids, pixel_values=pixel_values,
                                    attention_mask=attention_mask, **kw)
            embeds = self._prepare(input_ids, pixel_values, attention_mask, query_ids)
            mask = embeds.new_ones(embeds.shape[:2], dtype=input_ids.dtype)
            return orig_forward(*args, inputs_embeds=embeds, attention_mask=mask, **kw)

        def lm_forward(*args: Any, **kw):
            p = self._prefill
            x = kw.get("inputs_embeds") if kw.get("inputs_embeds") is not None else kw.get("input_ids")
            if p is not None and x is not None:
                cache = kw.get("cache", kw.get("past_key_values"))
                past = cache.get_seq_length() if cache is not None else 0
                n = x.shape[1]
                if past == 0 and n == p.length:
                    kw["position_ids"] = p.position_ids
                elif past == 0:
                    self._prefill = None  # a new prompt that was not pruned
                else:
                    import torch

                    kw["position_ids"] = (torch.arange(n, device=x.device) + past + p.delta).unsqueeze(0)
            return orig_lm(*args, **kw)

        model.generate, model.forward, lm.forward = generate, forward, lm_forward

    def remove(self) -> None:
        """Restores the model's own ``generate``, ``forward`` and language-model ``forward``."""
        model, lm = self.model, self.model.model.language_model
        for obj, attr, key in ((model, "generate", "generate"), (model, "forward", "forward"),
                               (lm, "forward", "lm_forward")):
            if self._saved.get(key) is None:
                obj.__dict__.pop(attr, None)
            else:
                setattr(obj, attr, self._saved[key])
        self._prefill = None

    # -- one prompt -------------------------------------------------------------------------------------------

    def _signals(self, pixel_values: Any):
        """Projected tokens ``[F·P, D]`` of every image and the tower signals the method reads, flattened alike."""
        import torch

        cfg, llava = self.model.config, self.model.model
        layer = cfg.vision_feature_layer
        if not isinstance(layer, int):
            raise TokensieveError(f"vision_feature_layer {layer} (several layers) is not supported by the adapter")
        strategy = cfg.vision_feature_select_strategy
        blocks = llava.vision_tower.vision_model.encoder.layers
        produced_by = (layer if layer >= 0 else len(blocks) + 1 + layer) - 1
        if not 0 <= produced_by < len(blocks):
            raise TokensieveError(f"vision_feature_layer {layer} does not exist: the tower has {len(blocks)} layers")
        attn = blocks[produced_by].self_attn
        seen = {}
        hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o)),
                 attn.k_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o))]
        try:
            with torch.no_grad():
                out = llava.get_image_features(pixel_values=pixel_values, vision_feature_layer=layer,
                                               vision_feature_select_strategy=strategy)
        finally:
            for h in hooks:
                h.remove()
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        features = torch.cat(list(feats), dim=0)
        frames = len(feats)
        heads = attn.num_heads if hasattr(attn, "num_heads") else cfg.vision_config.num_attention_heads
        q, k = seen["q"].float(), seen["k"].float()
        b, t, d = k.shape
        hd = d // heads
        q = q.view(b, t, heads, hd).transpose(1, 2)
        k = k.view(b, t, heads, hd).transpose(1, 2)
        skip = 1 if strategy == "default" else 0
        signals = {}
        if "cls_attn" in self._uses:
            rows = torch.softmax(q[:, :, :1] @ k.transpose(2, 3) / math.sqrt(hd), dim=-1)  # [F, heads, 1, T]
            signals["cls_attn"] = rows.mean(1)[:, 0, skip:].reshape(-1)
        if "keys" in self._uses:
            signals["keys"] = k.mean(1)[:, skip:].reshape(-1, hd)
        per = features.shape[0] // frames
        side = math.isqrt(per)
        grid = (frames, side, side) if side * side == per else None
        return features, signals, grid

    def _prepare(self, input_ids: Any, pixel_values: Any, attention_mask: Any, query_ids: Any):
        """The pruned prompt's input embeddings; records its position bookkeeping and the selection."""
        import torch

        if input_ids.shape[0] != 1:
            raise TokensieveError(f"the adapter prunes one prompt at a time (batch size 1), got {input_ids.shape[0]}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise TokensieveError("padded prompts are not supported by the adapter (attention_mask has zeros)")
        cfg = self.model.config
        ids = input_ids[0]
        slots = (ids == cfg.image_token_id).nonzero().flatten()
        features, signals, grid = self._signals(pixel_values)
        if len(slots) != features.shape[0]:
            raise TokensieveError(
                f"the prompt has {len(slots)} image placeholders but the images give {features.shape[0]} tokens"
            )
        embed = self.model.get_input_embeddings()
        query = None
        if "query" in self._uses:
            q_ids = query_ids if query_ids is not None else _text_after(ids, slots)
            with torch.no_grad():
                query = embed(torch.as_tensor(q_ids, device=ids.device).reshape(-1)).float()
        sel = ts.prune(features, self.method, self.keep, self.ratio, grid=grid, query=query, **signals,
                       **self.params)
        self.last = sel
        kept = sel.indices.tolist()
        rows = sel.output
        extra = sel.extra if sel.extra is not None else rows[:0]
        kept_slots = slots[kept]
        is_slot = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        is_slot[slots] = True
        keep = ~is_slot
        keep[kept_slots] = True
        positions = torch.arange(len(ids), device=ids.device)
        last = int(slots[-1])
        # PruMerge+'s extra rows sit after the last visual token at the next ids; the text after shifts by them.
        shifted = positions + (positions > last).long() * len(extra)
        new_ids = ids[keep]
        new_pos = shifted[keep]
        cut = int(keep[: last + 1].sum())
        with torch.no_grad():
            emb = embed(new_ids)
            emb[new_ids == cfg.image_token_id] = rows.to(emb.dtype)
            if len(extra):
                extra_pos = last + 1 + torch.arange(len(extra), device=ids.device)
                emb = torch.cat([emb[:cut], extra.to(emb.dtype), emb[cut:]])
                new_pos = torch.cat([new_pos[:cut], extra_pos, new_pos[cut:]])
        self._prefill = _Prefill(length=emb.shape[0], position_ids=new_pos.unsqueeze(0),
                                 delta=len(ids) + len(extra) - emb.shape[0])
        return emb.unsqueeze(0)


def _text_after(ids: Any, slots: Any) -> list:
    """The prompt's tokens after its last visual token: the question, when no ``query_ids`` are given."""
    return ids[int(slots[-1]) + 1 :].tolist()


def apply(model: Any, pruner: str = "todre", ratio: Optional[float] = None, keep: Optional[int] = None,
          in_llm: Optional[str] = None, **params: Any) -> Handle:
    """Patches a loaded transformers model so that its prompts' visual tokens are pruned with ``pruner``.

    Args:
        model: a ``LlavaForConditionalGeneration`` (transformers >= 5).
        pruner: a method from :func:`tokensieve.methods`, optionally with parameters (``"todre:pivot=cls"``).
        ratio: fraction of the visual tokens to keep, or ``keep``: how many.
        in_llm: an in-decoder rule (FastV, ...); not available in the adapter yet.
        **params: method parameters, as for :func:`tokensieve.prune`.

    Returns:
        A :class:`Handle`; ``generate`` and ``forward`` also accept ``query_ids`` (the question's token ids, the
        query of query-aware methods; default: the prompt's text after its last visual token).
    """
    if in_llm is not None:
        raise TokensieveError(f"in-decoder rules ({in_llm}) are not available in the transformers adapter yet; "
                              "`tokensieve ask --in-llm` runs them")
    if (ratio is None) == (keep is None):
        raise TokensieveError("give ratio=R or keep=K")
    name = type(model).__name__
    if name != "LlavaForConditionalGeneration":
        raise TokensieveError(f"{name} is not supported by the adapter yet (LlavaForConditionalGeneration is)")
    handle = Handle(model, pruner, keep, ratio, params)
    handle._install()
    return handle


__all__ = ["Handle", "apply"]
_ = np  # numpy is the package's dependency; torch and transformers come with the model
