"""The Qwen-VL half of export_onnx.py: `qwen2_5_vl` and `qwen3_vl` checkpoints to ONNX graphs that
tokensieve's `onnx` backend runs (OUT_DIR/onnx/vision_encoder.onnx, embed_tokens.onnx, decoder_model_merged.onnx).

vision_encoder.onnx encodes ONE temporal patch (an image, or two frames of a video) of P patches. Every temporal
patch is its own attention sequence in transformers (`cu_seqlens`), so the host runs the graph once per temporal
patch and the result is exact. What transformers computes from `grid_thw` with Python loops (`vision_utils`: rotary
position ids, the window order, the window lengths, Qwen3-VL's interpolation taps) cannot be traced into a graph
with dynamic shapes; transformers' own answer for graph capture is to precompute them (the helpers' `kwargs`), and
so does this graph: they are inputs the host computes from the grid (tokensieve's `qwen_grid` module).

Inputs (P patches, U = spatial_merge_size², Wn windows of at most W patches):
- `pixel_values` [P, C·T·p²] f32, in the processor's order (merge blocks row by row);
- `position_ids` [P, 2] i64, each patch's (row, col) in that order (`get_vision_position_ids`);
- Qwen2.5-VL: `window_index` [P/U] i64 (merge units in window order, `get_vision_window_index`), `reverse_index`
  [P/U] (its inverse permutation), `window_rows` [Wn, W] i64 (each window's rows in window order, padded with 0),
  `window_valid` [Wn, W] bool (the real ones) and `real_rows` [P] i64 (where each row sits in the padded
  [Wn·W] batch): the window attention runs as a batch of windows with a key mask, O(P·W), never a P x P mask;
- Qwen3-VL: `interp_indices` [P, 4] i64 and `interp_weights` [P, 4] f32, the bilinear taps that resample the
  learned position table to the grid (`get_vision_interpolation_indices_and_weights`).

Outputs (merged tokens in (row, col) order): `image_features` [P/U, D_text]; `attention` [P/U], the attention each
patch receives in the last full-attention block (softmax over keys, mean over heads and queries) pooled over the
merged token's U patches; `keys` [P/U, head_dim], that block's keys before rotary averaged over heads, pooled; and
for Qwen3-VL `deepstack` [levels, P/U, D_text], the DeepStack mergers' planes.

decoder_model_merged.onnx is the merged decoder of export_onnx.py with `position_ids` [3, 1, S] (M-RoPE's temporal,
height and width rows) and, for Qwen3-VL, `deepstack_rows` [R] i64 and `deepstack_embeds` [levels, R, D]: level l
is added to rows `deepstack_rows` of the hidden states after decoder layer l (transformers'
`_deepstack_process`; R = 0 on decoding steps).

The attention of the vision blocks is written out here (the blocks' own weights and norms, transformers' rotary
helper) because transformers' eager path splits sequences with `lengths.tolist()`, which a trace freezes; before
writing the graph, `check_vision` runs this module and transformers' tower on random patches of a grid that needs
window padding and fails unless they agree within 1e-5.
"""

import os

import torch

from export_onnx import Decoder


def is_qwen(config):
    """Whether `config` is a Qwen-VL family this module exports."""
    return config.model_type in ("qwen2_5_vl", "qwen3_vl")


class QwenVisionEncoder(torch.nn.Module):
    """The tower on one temporal patch with host-computed grid inputs, returning tokens and signals."""

    def __init__(self, model, config):
        super().__init__()
        self.tower = model.model.visual
        vc = config.vision_config
        self.qwen3 = config.model_type == "qwen3_vl"
        self.heads = vc.num_heads
        self.unit = vc.spatial_merge_size ** 2
        self.full = set(range(vc.depth)) if self.qwen3 else set(vc.fullatt_block_indexes)
        self.signal = max(self.full)
        self.deepstack = list(vc.deepstack_visual_indexes) if self.qwen3 else []

    def attend(self, blk, x, cos, sin, windows):
        """One block's attention on rows `x` [N, D]; `windows` = (rows, valid, real) for a windowed block, None for
        full attention. Returns the projected output, and the keys (mean over heads) and received attention [N]
        (full attention only)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

        n, d = x.shape
        h = self.heads
        qkv = blk.attn.qkv(x).reshape(n, 3, h, d // h).permute(1, 0, 2, 3)
        q, k, v = qkv[0], qkv[1], qkv[2]
        keys = k.mean(dim=1)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        scale = blk.attn.scaling
        if windows is None:
            qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
            probs = torch.softmax(torch.matmul(qh, kh.transpose(1, 2)) * scale, dim=-1, dtype=torch.float32)
            out = torch.matmul(probs, vh).transpose(0, 1).reshape(n, d)
            received = probs.mean(dim=(0, 1))
        else:
            rows, valid, real = windows
            wn, w = rows.shape[0], rows.shape[1]

            def batch(t):
                return t[rows.reshape(-1)].reshape(wn, w, h, d // h).transpose(1, 2)

            mask = torch.where(valid, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
            scores = torch.matmul(batch(q), batch(k).transpose(2, 3)) * scale + mask
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            out = torch.matmul(probs, batch(v)).transpose(1, 2).reshape(wn * w, d)[real]
            received = None
        return blk.attn.proj(out), keys, received

    def run(self, pixel_values, position_ids, window_index=None, reverse_index=None, window_rows=None,
            window_valid=None, real_rows=None, interp_indices=None, interp_weights=None):
        x = self.tower.patch_embed(pixel_values)
        n = x.shape[0]
        if self.qwen3:
            x = x + (self.tower.pos_embed(interp_indices) * interp_weights[:, :, None]).sum(1)

        def permute(t):
            if window_index is None:
                return t
            return t.reshape(n // self.unit, self.unit, -1)[window_index].reshape(n, -1)

        x = permute(x)
        cos, sin = self.tower.rotary_pos_emb(x, position_ids)
        cos, sin = permute(cos), permute(sin)
        windows = (window_rows, window_valid, real_rows)
        keys = received = None
        planes = []
        for i, blk in enumerate(self.tower.blocks):
            out, k, r = self.attend(blk, blk.norm1(x), cos, sin, None if i in self.full else windows)
            if i == self.signal:
                keys, received = k, r
            x = x + out
            x = x + blk.mlp(blk.norm2(x))
            if i in self.deepstack:
                planes.append(self.tower.deepstack_merger_list[self.deepstack.index(i)](x))

        def unwind(t):
            return t if reverse_index is None else t[reverse_index]

        def pool(t):
            return unwind(t.reshape(n // self.unit, self.unit, -1).mean(dim=1))

        outputs = [unwind(self.tower.merger(x)), pool(received[:, None]).reshape(-1), pool(keys)]
        if self.qwen3:
            outputs.append(torch.stack([unwind(p) for p in planes]))
        return tuple(outputs)

    def forward(self, *inputs):
        names = self.input_names()
        return self.run(**dict(zip(names, inputs)))

    def input_names(self):
        if self.qwen3:
            return ["pixel_values", "position_ids", "interp_indices", "interp_weights"]
        return ["pixel_values", "position_ids", "window_index", "reverse_index", "window_rows", "window_valid",
                "real_rows"]

    def output_names(self):
        return ["image_features", "attention", "keys"] + (["deepstack"] if self.qwen3 else [])

    def grid_inputs(self, config, grid_hw):
        """The host inputs of one temporal patch of `grid_hw` patches, from transformers' own helpers."""
        from transformers import vision_utils as vu

        vc = config.vision_config
        h, w = grid_hw
        grid = torch.tensor([[1, h, w]])
        position_ids = vu.get_vision_position_ids(grid, vc.spatial_merge_size)
        if self.qwen3:
            side = int(vc.num_position_embeddings ** 0.5)
            idx, wt = vu.get_vision_interpolation_indices_and_weights(
                grid, num_grid_per_side=side, mode="bilinear", align_corners=True,
                spatial_merge_size=vc.spatial_merge_size)
            return [position_ids, idx, wt]
        index, cu = vu.get_vision_window_index(grid, vc.spatial_merge_size, vc.window_size, vc.patch_size)
        lengths = (cu[1:] - cu[:-1]).tolist()
        width = max(lengths)
        rows = torch.zeros(len(lengths), width, dtype=torch.long)
        valid = torch.zeros(len(lengths), width, dtype=torch.bool)
        real = []
        start = 0
        for i, length in enumerate(lengths):
            rows[i, :length] = torch.arange(start, start + length)
            valid[i, :length] = True
            real += [i * width + j for j in range(length)]
            start += length
        return [position_ids, index, torch.argsort(index), rows, valid, torch.tensor(real)]


def check_vision(encoder, model, config, grid_hw=(6, 10)):
    """The wrapper against transformers' tower on random patches of one temporal patch (6 x 10 patches: windows
    that need padding on Qwen2.5-VL's 4 x 4-patch windows of the tiny fixtures); exits unless they agree."""
    vc = config.vision_config
    h, w = grid_hw
    values = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
    pixels = torch.randn(h * w, values, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.model.visual(pixels, grid_thw=torch.tensor([[1, h, w]]))
        got = encoder(pixels, *encoder.grid_inputs(config, grid_hw))
    diff = (got[0] - want.pooler_output).abs().max().item()
    if diff > 1e-5:
        raise SystemExit(f"the exported vision graph differs from transformers' tower by {diff}")
    if encoder.qwen3:
        planes = torch.stack(list(want.deepstack_features))
        diff = (got[3] - planes).abs().max().item()
        if diff > 1e-5:
            raise SystemExit(f"the exported DeepStack planes differ from transformers' by {diff}")


class QwenDecoder(Decoder):
    """The merged decoder with M-RoPE's [3, 1, S] position ids and, for Qwen3-VL, DeepStack rows and planes."""

    def __init__(self, model, layers, levels):
        super().__init__(model, layers)
        self.levels = levels
        if levels:
            # A dense scatter instead of transformers' boolean-mask indexing, so the rows are a graph input.
            self.lm._deepstack_process = self.add_plane

    @staticmethod
    def add_plane(hidden, rows, plane):
        return hidden.index_add(1, rows, plane.unsqueeze(0).to(hidden.dtype))

    def forward(self, inputs_embeds, attention_mask, position_ids, *rest):
        if not self.levels:
            return super().forward(inputs_embeds, attention_mask, position_ids, *rest)
        rows, planes, past = rest[0], rest[1], rest[2:]
        extra = {"visual_pos_masks": rows, "deepstack_visual_embeds": [planes[i] for i in range(self.levels)]}
        return self.run(inputs_embeds, attention_mask, position_ids, past, extra)


def export(model, config, out_dir, opset):
    """Writes vision_encoder.onnx and decoder_model_merged.onnx for a Qwen-VL `model`; returns the encoder's
    outputs and export.json's decoder keys."""
    encoder = QwenVisionEncoder(model, config).eval()
    check_vision(encoder, model, config)
    inputs = encoder.input_names()
    names = encoder.output_names()
    grid = encoder.grid_inputs(config, (6, 10))
    vc = config.vision_config
    pixels = torch.zeros(60, vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2)
    axes = {"pixel_values": {0: "patches"}, "position_ids": {0: "patches"}, "window_index": {0: "units"},
            "reverse_index": {0: "units"}, "window_rows": {0: "windows", 1: "width"},
            "window_valid": {0: "windows", 1: "width"}, "real_rows": {0: "patches"},
            "interp_indices": {0: "patches"}, "interp_weights": {0: "patches"},
            "image_features": {0: "units"}, "attention": {0: "units"}, "keys": {0: "units"},
            "deepstack": {1: "units"}}
    with torch.no_grad():
        torch.onnx.export(encoder, (pixels, *grid), os.path.join(out_dir, "vision_encoder.onnx"),
                          input_names=inputs, output_names=names,
                          dynamic_axes={k: v for k, v in axes.items() if k in inputs + names},
                          opset_version=opset, dynamo=False)
    text = config.text_config
    layers, kv_heads = text.num_hidden_layers, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    levels = len(vc.deepstack_visual_indexes) if config.model_type == "qwen3_vl" else 0
    past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * layers)]
    pasts = [f"past_key_values.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    presents = [f"present.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    stack_names = ["deepstack_rows", "deepstack_embeds"] if levels else []
    stack = [torch.tensor([0, 2]), torch.zeros(levels, 2, text.hidden_size)] if levels else []
    dynamic = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {1: "batch", 2: "sequence"}, "logits": {0: "batch"},
               "deepstack_rows": {0: "rows"}, "deepstack_embeds": {1: "rows"},
               **{n: {0: "batch", 2: "past"} for n in pasts}, **{n: {0: "batch", 2: "total"} for n in presents}}
    inputs = ["inputs_embeds", "attention_mask", "position_ids", *stack_names, *pasts]
    with torch.no_grad():
        torch.onnx.export(QwenDecoder(model, layers, levels),
                          (torch.zeros(1, 3, text.hidden_size), torch.ones(1, 5, dtype=torch.long),
                           torch.arange(2, 5).view(1, 1, 3).expand(3, 1, 3).contiguous(), *stack, *past),
                          os.path.join(out_dir, "decoder_model_merged.onnx"), input_names=inputs,
                          output_names=["logits", *presents],
                          dynamic_axes={k: v for k, v in dynamic.items() if k in inputs + ["logits", *presents]},
                          opset_version=opset, dynamo=False)
    return names, {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "deepstack_levels": levels}
