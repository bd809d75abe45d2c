"""Exports a Hugging Face `llava`, `llava_onevision`, `qwen2_5_vl` or `qwen3_vl` checkpoint to the ONNX layout of the
community exports (Transformers.js): OUT_DIR/ with the config, tokenizer and processor files, and OUT_DIR/onnx/ with

- vision_encoder.onnx: pixel_values [B, 3, S, S] -> image_features [B, N, D_text] (the configured feature layer,
  CLS dropped under the `default` strategy, the mlp2x_gelu projector), plus `attention` [B, N] (at the feature layer:
  CLIP's CLS row, or for SigLIP the attention each token receives, mean over heads and queries) and `keys`
  [B, N, d] (that block's keys, mean over heads), the signals attention-based pruners read, aligned with the tokens. OneVision's tile packing and video pooling stay outside the graph, as
  in the torch backend; OneVision's `image_newline` is written to onnx/export.json for it.
- embed_tokens.onnx: input_ids [B, S] -> inputs_embeds [B, S, D_text].
- decoder_model_merged.onnx: inputs_embeds [B, S, D], attention_mask [B, P+S], position_ids [B, S] and
  past_key_values.N.key/value [B, kv_heads, P, head_dim] (P may be 0: the same graph prefills and decodes) ->
  logits [B, 1, V] (the last position only; community exports return [B, S, V], and the Rust loader reads the last
  row of either) and present.N.key/value [B, kv_heads, P+S, head_dim].

The Qwen-VL families' vision graph (native-resolution patches with host-computed grid inputs) and their decoder
inputs (M-RoPE's [3, 1, S] position ids, Qwen3-VL's DeepStack rows and planes) are described in qwen_onnx.py.

    python models/export/export_onnx.py --model HF_DIR --out OUT_DIR [--precision fp32,fp16,q8,q4]

Precision variants are written next to the fp32 graphs with the community suffixes, and chosen at run time with
`--precision`: `_fp16` (float16 weights and inputs/outputs, onnxruntime.transformers.float16), `_quantized` (q8:
8-bit dynamic quantization of the weights, onnxruntime.quantization, uint8 as Transformers.js' `quantized`), `_q4`
(4-bit blocked MatMul weights, MatMulNBitsQuantizer, block 32; needs the `onnx-ir` package). Graphs over 2 GB keep
their weights in a `.onnx_data` file beside them.

Needs transformers, torch, onnx and onnxruntime (PyPI). Uses torch's TorchScript exporter (opset 17), eager
attention so the attention probabilities exist in the graph. The checkpoint is exported in float32 whatever dtype it
is stored in.
"""

import argparse
import json
import os
import shutil

import torch


class Decoder(torch.nn.Module):
    """The language model with its cache passed as flat tensors, as the merged-decoder layout has it."""

    def __init__(self, model, layers):
        super().__init__()
        self.lm = model.model.language_model
        self.head = model.lm_head
        self.layers = layers

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        return self.run(inputs_embeds, attention_mask, position_ids, past, {})

    def run(self, inputs_embeds, attention_mask, position_ids, past, extra):
        """The decoder over `inputs_embeds` after the cached `past`, with the family's `extra` keyword inputs."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True, **extra)
        presents = []
        # The cache grows in place (its field is `past_key_values` or `cache` depending on the model class).
        for layer in cache.layers[: self.layers]:
            presents += [layer.keys, layer.values]
        # Only the last position's logits: the next token needs no more, and the LM head over a long multimodal
        # prompt (S x D x V) is a sizeable share of the prefill (transformers' `logits_to_keep=1`).
        return (self.head(out.last_hidden_state[:, -1:]), *presents)


class VisionEncoder(torch.nn.Module):
    """The tower up to the feature layer and the projector, with the pruners' signals taken at the feature layer
    (what `attentions[vision_feature_layer]` holds): `attention`, CLIP's CLS row over the tokens or, for SigLIP
    (no CLS), the attention each token receives averaged over heads and queries; `keys`, that block's keys averaged
    over heads. Both are aligned with `image_features` (the CLS row and column dropped under `default`)."""

    def __init__(self, model, config):
        super().__init__()
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        self.layer = config.vision_feature_layer
        self.strategy = config.vision_feature_select_strategy
        self.clip = config.vision_config.model_type.startswith("clip")
        self.keys = []
        inner = getattr(self.tower, "vision_model", self.tower)
        # hidden_states[i] comes out of block i - 1: for a negative layer that is block `layer` itself.
        blocks = len(inner.encoder.layers)
        self.block = self.layer if self.layer < 0 else self.layer - 1
        inner.encoder.layers[self.block % blocks].self_attn.k_proj.register_forward_hook(
            lambda _m, _i, out: self.keys.append(out))
        self.heads = config.vision_config.num_attention_heads

    def forward(self, pixel_values):
        self.keys.clear()
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True, output_attentions=True)
        h = out.hidden_states[self.layer]
        skip = 1 if self.clip and self.strategy == "default" else 0
        features = self.projector(h[:, skip:])
        b, t, d = self.keys[-1].shape
        keys = self.keys[-1].reshape(b, t, self.heads, d // self.heads).mean(dim=2)[:, skip:]
        attentions = out.attentions[self.block]
        if self.clip:
            attention = attentions[:, :, 0, skip:].mean(dim=1)
        else:
            attention = attentions.mean(dim=(1, 2))
        return features, attention, keys


def export_llava(model, config, out_dir):
    """Writes vision_encoder.onnx and decoder_model_merged.onnx for a LLaVA or OneVision `model`; returns the
    encoder's outputs and export.json's decoder keys."""
    side = config.vision_config.image_size
    encoder = VisionEncoder(model, config).eval()
    outputs = ["image_features", "attention", "keys"]
    with torch.no_grad():
        torch.onnx.export(encoder, (torch.zeros(1, 3, side, side),),
                          os.path.join(out_dir, "vision_encoder.onnx"), input_names=["pixel_values"],
                          output_names=outputs, dynamic_axes={"pixel_values": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                          opset_version=17, dynamo=False)
        text = config.text_config
        layers, kv_heads = text.num_hidden_layers, text.num_key_value_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * layers)]
        pasts = [f"past_key_values.{i}.{t}" for i in range(layers) for t in ("key", "value")]
        presents = [f"present.{i}.{t}" for i in range(layers) for t in ("key", "value")]
        dynamic = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
                   "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"},
                   **{n: {0: "batch", 2: "past"} for n in pasts}, **{n: {0: "batch", 2: "total"} for n in presents}}
        torch.onnx.export(Decoder(model, layers), (torch.zeros(1, 3, text.hidden_size), torch.ones(1, 5, dtype=torch.long),
                                                   torch.arange(2, 5)[None], *past),
                          os.path.join(out_dir, "decoder_model_merged.onnx"),
                          input_names=["inputs_embeds", "attention_mask", "position_ids", *pasts],
                          output_names=["logits", *presents], dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return outputs, {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a llava, llava_onevision, qwen2_5_vl or qwen3_vl directory")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32 (always written), fp16, q8, q4")
    args = ap.parse_args()
    extra = [p for p in args.precision.split(",") if p and p != "fp32"]
    unknown = [p for p in extra if p not in ("fp16", "q8", "q4")]
    if unknown:
        raise SystemExit(f"--precision {','.join(unknown)}: choose among fp32, fp16, q8, q4")
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(args.model)
    from qwen_onnx import export as export_qwen, is_qwen

    if config.model_type not in ("llava", "llava_onevision") and not is_qwen(config):
        raise SystemExit(f"{args.model}: model_type {config.model_type} is not one of llava, llava_onevision, "
                         "qwen2_5_vl, qwen3_vl")
    model = AutoModelForImageTextToText.from_pretrained(args.model, attn_implementation="eager",
                                                        dtype=torch.float32).eval()
    os.makedirs(os.path.join(args.out, "onnx"), exist_ok=True)
    for name in os.listdir(args.model):
        if name.endswith(".json") and name != "reference.safetensors":
            shutil.copy(os.path.join(args.model, name), os.path.join(args.out, name))
    with torch.no_grad():
        embed = model.get_input_embeddings()
        torch.onnx.export(embed, (torch.zeros(1, 4, dtype=torch.long),), os.path.join(args.out, "onnx", "embed_tokens.onnx"),
                          input_names=["input_ids"], output_names=["inputs_embeds"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "inputs_embeds": {0: "batch", 1: "sequence"}},
                          opset_version=17, dynamo=False)
    if is_qwen(config):
        outputs, shape = export_qwen(model, config, os.path.join(args.out, "onnx"), opset=17)
    else:
        outputs, shape = export_llava(model, config, os.path.join(args.out, "onnx"))
    info = {"source": os.path.basename(os.path.normpath(args.model)), "vision_outputs": outputs, **shape}
    newline = getattr(model.model, "image_newline", None)
    if newline is not None:
        # OneVision's newline embedding: the packing around the encoder (tiles, pooled video) needs it.
        info["image_newline"] = [float(v) for v in newline.detach().float()]
    with open(os.path.join(args.out, "onnx", "export.json"), "w") as f:
        json.dump(info, f, indent=1)
    for stem in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        for precision in extra:
            write_variant(os.path.join(args.out, "onnx"), stem, precision)
    print(f"wrote {args.out}/onnx: vision_encoder.onnx ({', '.join(outputs)}), embed_tokens.onnx, "
          f"decoder_model_merged.onnx; variants: {', '.join(extra) or 'none'}")


SUFFIX = {"fp16": "_fp16", "q8": "_quantized", "q4": "_q4"}
TWO_GB = 2 ** 31 - 1


def write_variant(folder, stem, precision):
    """Writes `stem{suffix}.onnx` from the fp32 `stem.onnx`."""
    import onnx

    source = os.path.join(folder, f"{stem}.onnx")
    target = os.path.join(folder, f"{stem}{SUFFIX[precision]}.onnx")
    big = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(stem + ".onnx")) > TWO_GB

    def save(model):
        onnx.save_model(model, target, save_as_external_data=big, location=os.path.basename(target) + "_data")

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # keep_io_types=False: inputs and outputs become float16 too, as in the community fp16 exports.
        save(convert_float_to_float16(onnx.load(source), keep_io_types=False, disable_shape_infer=big))
    elif precision == "q8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(source, target, weight_type=QuantType.QUInt8, use_external_data_format=big)
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(source), block_size=32, is_symmetric=True)
        quantizer.process()
        save(quantizer.model.model)


if __name__ == "__main__":
    main()
