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

Supported, batch size 1 without padding:

- ``LlavaForConditionalGeneration`` (LLaVA-1.5: CLIP tower, one feature layer): images and video frames, all under
  the prompt's ``<image>`` placeholders, pruned together on a ``(frames, g, g)`` grid;
- ``LlavaOnevisionForConditionalGeneration``: a video (every frame pooled to ``ceil(g/2)²`` tokens, signals pooled
  the same way, the newline after the video always kept) or one any-resolution image (the packed sequence, row
  newlines included, pruned as a flat set; the signals packed by the model's own ``pack_image_features``) or
  several images (pass ``batch_num_images``: each image's base view and a newline after it, the base views pruned
  together on an ``(images, 1, g, g)`` grid of views, every newline kept). SigLIP has no CLS token: ``cls_attn`` is
  the mean attention each token receives, as in the engine.

- ``Qwen2_5_VLForConditionalGeneration`` and ``Qwen3VLForConditionalGeneration``: images of one size (pruned
  together on an ``(images, h/2, w/2)`` grid of merged tokens), images of different sizes (each its own span,
  pruned together as one flat sequence) or one video (``(t, h/2, w/2)``; Qwen3-VL's
  per-frame timestamps stay in the prompt and each frame's span holds what it kept). No CLS token: ``cls_attn`` is
  the mean attention each patch receives in its frame in the tower's last full-attention block, ``keys`` that
  block's keys before rotary embedding averaged over heads, both pooled over each merged token's 2 x 2 patches, as
  in the engine. Kept rows keep their ``(t, h, w)`` ids from the model's own ``get_rope_index``, the text after them
  and every generated token continue from the unpruned prompt's ids (transformers' ``rope_deltas``), and Qwen3-VL's
  DeepStack planes are gathered with the same keep set and added at the kept rows.

Refused with a :class:`tokensieve.TokensieveError` naming what is missing: images mixed with a video, in-decoder
rules (``in_llm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional


import tokensieve as ts
from tokensieve import TokensieveError


@dataclass
class _Prefill:
    """Position bookkeeping of the current prompt: its pruned length, original ids and the decode offset."""

    length: int
    position_ids: Any
    delta: int
    deepstack: Any = None


@dataclass
class _Span:
    """A prompt's visual span as its family lays it out: ``slots`` are the placeholder positions in order; the
    prunable tokens ``features`` ``[N, D]`` (with their ``signals`` and ``grid``) fill the slots not in ``fixed``, and
    ``tail`` fills those (rows that are always kept: LLaVA-OneVision's newline after a video, or after each of
    several images). ``fixed`` defaults to the last ``len(tail)`` slots. Synthetic rows (PruMerge+'s extra token)
    go after slot ``extra_after`` (default: the last prunable slot), as the engine places them."""

    slots: Any
    features: Any
    tail: Any
    signals: dict
    grid: Any
    fixed: Optional[list] = None
    extra_after: Optional[int] = None


_VISION_INPUTS = ("pixel_values", "pixel_values_videos", "image_sizes", "image_sizes_videos", "batch_num_images",
                  "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
_FAMILIES = {"LlavaForConditionalGeneration": "llava", "LlavaOnevisionForConditionalGeneration": "llava_onevision",
             "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl", "Qwen3VLForConditionalGeneration": "qwen3_vl"}
_QWEN = ("qwen2_5_vl", "qwen3_vl")


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
        self._family = _FAMILIES[type(model).__name__]
        self._deepstack: list = []
        self._grid_thw = None

    # -- patching ---------------------------------------------------------------------------------------------

    def _install(self) -> None:
        model, lm = self.model, self.model.model.language_model
        self._saved = {"generate": model.__dict__.get("generate"), "forward": model.__dict__.get("forward"),
                       "lm_forward": lm.__dict__.get("forward")}
        orig_generate, orig_forward, orig_lm = model.generate, model.forward, lm.forward

        def generate(*args: Any, input_ids=None, attention_mask=None, query_ids=None, **kw):
            if args:
                raise TokensieveError("pass generate()'s inputs by keyword (input_ids=..., pixel_values=...)")
            vision = {key: kw.pop(key) for key in _VISION_INPUTS if kw.get(key) is not None}
            if not any(key in vision for key in ("pixel_values", "pixel_values_videos")):
                self._prefill = None
                return orig_generate(input_ids=input_ids, attention_mask=attention_mask, **kw)
            embeds = self._prepare(input_ids, vision, attention_mask, query_ids)
            mask = embeds.new_ones(embeds.shape[:2], dtype=input_ids.dtype)
            new = orig_generate(inputs_embeds=embeds, attention_mask=mask, **kw)
            import torch

            return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

        def forward(*args: Any, input_ids=None, attention_mask=None, query_ids=None, **kw):
            vision = {key: kw.pop(key) for key in _VISION_INPUTS if kw.get(key) is not None}
            if input_ids is None or not any(key in vision for key in ("pixel_values", "pixel_values_videos")):
                return orig_forward(*args, input_ids=input_ids, attention_mask=attention_mask, **vision, **kw)
            embeds = self._prepare(input_ids, vision, attention_mask, query_ids)
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
                    if p.deepstack is not None:
                        kw["visual_pos_masks"], kw["deepstack_visual_embeds"] = p.deepstack
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
        model.__dict__.pop("_tokensieve_handle", None)

    # -- one prompt -------------------------------------------------------------------------------------------

    def _tap(self, run):
        """Runs ``run()`` (the model's own feature extraction) with hooks on the block that produces the feature
        layer; returns its output and that block's queries and keys ``[views, heads, T, hd]`` (float32)."""
        import torch

        cfg, tower = self.model.config, self.model.model.vision_tower
        layer = cfg.vision_feature_layer
        if not isinstance(layer, int):
            raise TokensieveError(f"vision_feature_layer {layer} (several layers) is not supported by the adapter")
        # transformers 5 flattened the vision models (`encoder` on the model); 4.x nests it under `vision_model`.
        blocks = (tower.vision_model if hasattr(tower, "vision_model") else tower).encoder.layers
        produced_by = (layer if layer >= 0 else len(blocks) + 1 + layer) - 1
        if not 0 <= produced_by < len(blocks):
            raise TokensieveError(f"vision_feature_layer {layer} does not exist: the tower has {len(blocks)} layers")
        attn = blocks[produced_by].self_attn
        seen = {}
        hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o)),
                 attn.k_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o))]
        try:
            with torch.no_grad():
                out = run()
        finally:
            for h in hooks:
                h.remove()
        heads = getattr(attn, "num_heads", None) or cfg.vision_config.num_attention_heads
        q, k = seen["q"].float(), seen["k"].float()
        b, t, d = k.shape
        hd = d // heads
        return out, q.view(b, t, heads, hd).transpose(1, 2), k.view(b, t, heads, hd).transpose(1, 2)

    def _signals(self, q: Any, k: Any, cls: bool):
        """The tower signals the method reads, per view and patch: ``cls_attn`` ``[V, P]`` (CLIP: the CLS row;
        SigLIP, which has no CLS: the mean attention each token receives, over heads and queries) and ``keys``
        ``[V, P, hd]`` (averaged over heads), as the engine computes them."""
        import torch

        skip = 1 if self.model.config.vision_feature_select_strategy == "default" else 0
        hd = k.shape[-1]
        out = {}
        if "cls_attn" in self._uses:
            if cls:
                out["cls_attn"] = torch.softmax(q[:, :, :1] @ k.transpose(2, 3) / math.sqrt(hd), -1).mean(1)[:, 0]
            else:
                out["cls_attn"] = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd), -1).mean((1, 2))
            out["cls_attn"] = out["cls_attn"][:, skip:]
        if "keys" in self._uses:
            out["keys"] = k.mean(1)[:, skip:]
        return out

    def _qwen_tap(self, run):
        """Runs ``run()`` (the model's own feature extraction) with a hook on the tower's last full-attention block;
        returns its output and the signals the method reads, per merged token in the output's order: the mean
        attention each patch receives in its frame (softmax over keys with the rotary embedding applied, mean over
        heads and queries) and the keys before rotary embedding averaged over heads, both pooled over each merged
        token's 2 x 2 patches, as the engine computes them (``models/src/qwen_vision.rs``)."""
        import torch

        if self._family == "qwen3_vl":
            from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision
        else:
            from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
        visual = self.model.model.visual
        # Qwen3-VL attends over whole frames in every block: the last one gives the signals.
        full = getattr(visual, "fullatt_block_indexes", None) or [len(visual.blocks) - 1]
        block = visual.blocks[max(full)]
        seen = {}

        def capture(module, args, kwargs):
            seen["x"] = args[0] if args else kwargs["hidden_states"]
            seen["cu"] = kwargs["cu_seqlens"]
            seen["rope"] = kwargs["position_embeddings"]

        hook = block.attn.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad():
                out = run()
        finally:
            hook.remove()
        if not self._uses & {"cls_attn", "keys"}:
            return out, {}
        attn = block.attn
        with torch.no_grad():
            x = seen["x"]
            q, k, _ = attn.qkv(x).reshape(x.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            cos, sin = seen["rope"]
            qr, kr = apply_rotary_pos_emb_vision(q.float(), k.float(), cos.float(), sin.float())
            unit = visual.spatial_merge_size ** 2
            signals = {}
            if "cls_attn" in self._uses:
                cu = seen["cu"].tolist()
                received = []
                for a, b in zip(cu[:-1], cu[1:]):
                    qf, kf = qr[a:b].transpose(0, 1), kr[a:b].transpose(0, 1)  # [H, P, hd]
                    scores = qf @ kf.transpose(1, 2) / math.sqrt(qf.shape[-1])
                    received.append(torch.softmax(scores, -1).mean((0, 1)))
                signals["cls_attn"] = torch.cat(received).reshape(-1, unit).mean(1)
            if "keys" in self._uses:
                keys = k.float().mean(1)
                signals["keys"] = keys.reshape(-1, unit, keys.shape[-1]).mean(1)
        if self._family == "qwen3_vl":
            return out, signals  # no windows: the tower keeps the output's order
        # Window order (the tower's) back to the output's (frame, row, column) order.
        from transformers.vision_utils import get_vision_window_index

        window, _ = get_vision_window_index(self._grid_thw, visual.spatial_merge_size, visual.window_size,
                                            visual.patch_size)
        reverse = torch.argsort(window.to(x.device))
        return out, {n: v[reverse] for n, v in signals.items()}

    def _qwen_span(self, input_ids: Any, vision: dict) -> _Span:
        """A Qwen-VL prompt's visual span: the merged tokens of its images (of one size: pruned together on an
        ``(images, h/2, w/2)`` grid; of different sizes: one flat sequence) or of its one video (``(t, h/2, w/2)``), as
        the engine lays them out; Qwen3-VL's
        DeepStack planes (one ``[N, D]`` per level) are kept aside for the kept rows."""
        import torch

        cfg, qwen = self.model.config, self.model.model
        ids = input_ids[0]
        if "pixel_values_videos" in vision and "pixel_values" in vision:
            raise TokensieveError("a prompt with both images and a video is not supported by the adapter yet")
        video = "pixel_values_videos" in vision
        grid = vision.get("video_grid_thw" if video else "image_grid_thw")
        if grid is None:
            raise TokensieveError(f"a Qwen-VL prompt needs {'video' if video else 'image'}_grid_thw with its "
                                  "pixels (the processor returns both)")
        if video and len(grid) != 1:
            raise TokensieveError(f"the adapter prunes one video at a time, got {len(grid)}")
        # Images of different sizes are one flat sequence of ragged units, as the engine prunes them.
        ragged = len({tuple(g.tolist()) for g in grid}) != 1
        self._grid_thw = grid
        if video:
            out, signals = self._qwen_tap(lambda: qwen.get_video_features(
                pixel_values_videos=vision["pixel_values_videos"], video_grid_thw=grid))
        else:
            out, signals = self._qwen_tap(lambda: qwen.get_image_features(
                pixel_values=vision["pixel_values"], image_grid_thw=grid))
        self._deepstack = [torch.cat(list(level)) for level in getattr(out, "deepstack_features", None) or []]
        merge = qwen.visual.spatial_merge_size
        t, h, w = (int(v) for v in grid[0])
        token = cfg.video_token_id if video else cfg.image_token_id
        return _Span(slots=(ids == token).nonzero().flatten(), features=torch.cat(list(out.pooler_output)),
                     tail=None, signals=signals, grid=None if ragged else (t * len(grid), h // merge, w // merge))

    def _qwen_positions(self, input_ids: Any, vision: dict) -> Any:
        """The unpruned prompt's M-RoPE ids ``[3, S]``: the model's own ``get_rope_index``."""
        import torch

        cfg = self.model.config
        types = torch.zeros_like(input_ids)
        types[input_ids == cfg.image_token_id] = 1
        types[input_ids == cfg.video_token_id] = 2
        grids = {"image_grid_thw": vision.get("image_grid_thw"), "video_grid_thw": vision.get("video_grid_thw")}
        if self._family == "qwen2_5_vl":
            grids["second_per_grid_ts"] = vision.get("second_per_grid_ts")
        positions, _ = self.model.model.get_rope_index(input_ids, mm_token_type_ids=types, **grids)
        return positions[:, 0]

    def _span(self, input_ids: Any, vision: dict) -> _Span:
        """The visual span of the prompt as the family lays it out (see :class:`_Span`)."""
        import torch

        if self._family in _QWEN:
            return self._qwen_span(input_ids, vision)
        cfg, llava = self.model.config, self.model.model
        layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
        ids = input_ids[0]
        if self._family == "llava":
            pixels = vision["pixel_values"]
            out, q, k = self._tap(lambda: llava.get_image_features(
                pixel_values=pixels, vision_feature_layer=layer, vision_feature_select_strategy=strategy))
            feats = list(out.pooler_output)
            signals = self._signals(q, k, cls=True)
            per = feats[0].shape[0]
            side = math.isqrt(per)
            return _Span(slots=(ids == cfg.image_token_id).nonzero().flatten(), features=torch.cat(feats),
                         tail=None, signals={n: v.reshape(-1, *v.shape[2:]) for n, v in signals.items()},
                         grid=(len(feats), side, side) if side * side == per else None)
        # LLaVA-OneVision.
        if "pixel_values_videos" in vision and "pixel_values" in vision:
            raise TokensieveError("a prompt with both images and a video is not supported by the adapter yet")
        if "pixel_values_videos" in vision:
            video = vision["pixel_values_videos"]
            if video.shape[0] != 1:
                raise TokensieveError(f"the adapter prunes one video at a time, got {video.shape[0]}")
            out, q, k = self._tap(lambda: llava.get_video_features(
                pixel_values_videos=video, vision_feature_layer=layer, vision_feature_select_strategy=strategy))
            packed = out.pooler_output[0]
            frames = video.shape[1]
            # Every frame's g x g map pooled to ceil(g/2)^2 as the model pools its tokens; the signals likewise.
            pool = llava.apply_pooling
            signals = {n: pool(v.reshape(frames, v.shape[1], -1)).reshape(-1, *v.shape[2:])
                       for n, v in self._signals(q, k, cls=False).items()}
            per = (packed.shape[0] - 1) // frames
            side = math.isqrt(per)
            return _Span(slots=(ids == cfg.video_token_id).nonzero().flatten(), features=packed[:-1],
                         tail=packed[-1:], signals=signals, grid=(frames, side, side))
        sizes = vision.get("image_sizes")
        pixels = vision["pixel_values"]
        if sizes is None:
            raise TokensieveError("a LLaVA-OneVision image prompt needs image_sizes with its pixels (the processor "
                                  "returns both)")
        aspect = getattr(cfg, "vision_aspect_ratio", "anyres_max_9")
        if len(sizes) > 1:
            return self._onevision_images(ids, pixels, sizes, aspect)
        out, q, k = self._tap(lambda: llava.get_image_features(
            pixel_values=pixels, image_sizes=sizes, vision_feature_layer=layer,
            vision_feature_select_strategy=strategy, vision_aspect_ratio=aspect))
        packed = torch.cat(list(out.pooler_output))
        # The packed sequence (base view, unpadded tile map, a newline per row) is pruned as one flat set; the
        # signals are packed by the model's own packing, a newline row carrying attention 0 and zero keys.
        signals = {}
        for name, v in self._signals(q, k, cls=False).items():
            rows = v.reshape(v.shape[0], v.shape[1], -1)
            zero = rows.new_zeros(rows.shape[-1])
            flat, _ = llava.pack_image_features([rows], sizes, image_newline=zero, vision_aspect_ratio=aspect)
            signals[name] = torch.cat(list(flat)).reshape(-1, *v.shape[2:])
        return _Span(slots=(ids == cfg.image_token_id).nonzero().flatten(), features=packed, tail=None,
                     signals=signals, grid=None)

    def _onevision_images(self, ids: Any, pixels: Any, sizes: Any, aspect: str) -> _Span:
        """Several LLaVA-OneVision images: each image's base view only (``batch_num_images``, as the model runs a
        multi-image prompt), a newline after each; the base views pruned together on a ``(images, 1, g, g)`` grid
        of views and every newline kept, as the engine does."""
        import torch

        cfg, llava = self.model.config, self.model.model
        layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
        count = len(sizes)
        out, q, k = self._tap(lambda: llava.get_image_features(
            pixel_values=pixels, image_sizes=sizes, vision_feature_layer=layer, vision_feature_select_strategy=strategy,
            vision_aspect_ratio=aspect, batch_num_images=torch.tensor([count])))
        images = list(out.pooler_output)  # each [g² + 1, D]: the base view, then the newline
        per = images[0].shape[0] - 1
        side = math.isqrt(per)
        signals = {n: v.reshape(-1, *v.shape[2:]) for n, v in self._signals(q, k, cls=False).items()}
        return _Span(slots=(ids == cfg.image_token_id).nonzero().flatten(),
                     features=torch.cat([f[:-1] for f in images]), tail=torch.cat([f[-1:] for f in images]),
                     signals=signals, grid=(count, 1, side, side) if side * side == per else None,
                     fixed=[(i + 1) * (per + 1) - 1 for i in range(count)], extra_after=count * (per + 1) - 1)

    def _prepare(self, input_ids: Any, vision: dict, attention_mask: Any, query_ids: Any):
        """The pruned prompt's input embeddings; records its position bookkeeping and the selection."""
        import torch

        if input_ids.shape[0] != 1:
            raise TokensieveError(f"the adapter prunes one prompt at a time (batch size 1), got {input_ids.shape[0]}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise TokensieveError("padded prompts are not supported by the adapter (attention_mask has zeros)")
        ids = input_ids[0]
        span = self._span(input_ids, vision)
        features, slots = span.features, span.slots
        tail = span.tail if span.tail is not None else features[:0]
        n = features.shape[0]
        if len(slots) != n + len(tail):
            raise TokensieveError(
                f"the prompt has {len(slots)} visual placeholders but the inputs give {n + len(tail)} tokens"
            )
        fixed = span.fixed if span.fixed is not None else list(range(n, len(slots)))
        is_fixed = torch.zeros(len(slots), dtype=torch.bool, device=ids.device)
        is_fixed[fixed] = True
        prunable = (~is_fixed).nonzero().flatten()
        embed = self.model.get_input_embeddings()
        query = None
        if "query" in self._uses:
            q_ids = query_ids if query_ids is not None else _text_after(ids, slots)
            with torch.no_grad():
                query = embed(torch.as_tensor(q_ids, device=ids.device).reshape(-1)).float()
        sel = ts.prune(features, self.method, self.keep, self.ratio, grid=span.grid, query=query,
                       **span.signals, **self.params)
        self.last = sel
        # Each slot's row (the selection's output at its kept prunable slots, the tail at the fixed ones), read in
        # prompt order for the kept slots.
        chosen = prunable[torch.as_tensor(sel.indices, dtype=torch.long, device=ids.device)]
        slot_rows = features.new_zeros(len(slots), features.shape[1])
        slot_rows[chosen] = sel.output.to(features.dtype)
        slot_rows[is_fixed] = tail.to(features.dtype)
        kept_slot = is_fixed.clone()
        kept_slot[chosen] = True
        rows = slot_rows[kept_slot]
        extra = sel.extra if sel.extra is not None else features[:0]
        is_slot = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        is_slot[slots] = True
        keep = ~is_slot
        keep[slots[kept_slot]] = True
        # Synthetic rows (PruMerge+'s extra token) sit after `extra_after` at the next ids; everything after them
        # moves up by their count (the engine's bookkeeping).
        last = int(slots[span.extra_after if span.extra_after is not None else int(prunable[-1])])
        positions = torch.arange(len(ids), device=ids.device)
        shifted = positions + (positions > last).long() * len(extra)
        new_ids, new_pos = ids[keep], shifted[keep]
        cut = int(keep[: last + 1].sum())
        with torch.no_grad():
            emb = embed(new_ids)
            emb[is_slot[keep]] = rows.to(emb.dtype)
            if len(extra):
                extra_pos = last + 1 + torch.arange(len(extra), device=ids.device)
                emb = torch.cat([emb[:cut], extra.to(emb.dtype), emb[cut:]])
                new_pos = torch.cat([new_pos[:cut], extra_pos, new_pos[cut:]])
        if self._family in _QWEN:
            # The kept rows' original (t, h, w) ids; the text after them and every generated token continue from
            # the unpruned prompt's ids (transformers' rope_deltas); extra rows take the last visual row's ids.
            full = self._qwen_positions(input_ids, vision)
            kept = full[:, keep]
            if len(extra):
                kept = torch.cat([kept[:, :cut], kept[:, cut - 1:cut].expand(3, len(extra)), kept[:, cut:]], 1)
            # DeepStack (Qwen3-VL): each kept row's planes (a merged row's are its representative's, the kept
            # index), added after the first decoder layers at the kept visual rows; extra rows get none (the
            # engine adds zeros there).
            mask = is_slot[keep]
            if len(extra):
                mask = torch.cat([mask[:cut], mask.new_zeros(len(extra)), mask[cut:]])
            index = torch.as_tensor(sel.indices, dtype=torch.long, device=ids.device)
            deepstack = [level[index].to(emb.dtype) for level in self._deepstack]
            self._prefill = _Prefill(length=emb.shape[0], position_ids=kept.unsqueeze(1),
                                     delta=int(full.max()) + 1 - emb.shape[0],
                                     deepstack=(mask.unsqueeze(0), deepstack) if deepstack else None)
        else:
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
        model: a ``LlavaForConditionalGeneration``, ``LlavaOnevisionForConditionalGeneration``,
            ``Qwen2_5_VLForConditionalGeneration`` or ``Qwen3VLForConditionalGeneration`` (transformers 5).
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
    if name not in _FAMILIES:
        raise TokensieveError(f"{name} is not supported by the adapter yet (supported: {', '.join(_FAMILIES)})")
    if getattr(model, "_tokensieve_handle", None) is not None:
        raise TokensieveError("the model is already patched by tokensieve.hf.apply: call handle.remove() first")
    handle = Handle(model, pruner, keep, ratio, params)
    handle._install()
    model._tokensieve_handle = handle
    return handle


__all__ = ["Handle", "apply"]
