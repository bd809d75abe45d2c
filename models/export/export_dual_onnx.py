"""Exports a transformers `CLIPModel` or `SiglipModel` (a dual image-text encoder, the `--relevance clip:/siglip:`
providers) to ONNX: OUT_DIR/ with config.json, the tokenizer and processor files, and OUT_DIR/onnx/ with

- vision_model.onnx: pixel_values [B, 3, S, S] -> image_embeds [B, E] (`get_image_features`), patch_embeds_last and
  patch_embeds_penultimate [B, N, E]: the joint-space patch embeddings of hidden_states[-1] and [-2] (CLIP:
  `visual_projection(post_layernorm(h[:, 1:]))`, CDPruner's; SigLIP: the pooling head applied to each patch alone,
  see models/src/dual_encoder.rs);
- text_model.onnx: input_ids [R, P] (P = max_position_embeddings, the rows the caller cut and padded) ->
  text_embeds [R, P, E]: the projection (CLIP's text_projection, SigLIP's head) of every position after the final
  layer norm; the caller reads the pooled position (CLIP's first eos, SigLIP's last).

    python models/export/export_dual_onnx.py --model HF_DIR --out OUT_DIR

The export checks itself against transformers (1e-5) before it returns. TorchScript exporter, opset 17, float32,
eager attention. Needs transformers, torch, onnx and onnxruntime (PyPI).
"""

import argparse
import os
import shutil

import numpy as np
import torch


class Vision(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.clip = model.config.model_type == "clip"

    def patches(self, hidden):
        vm = self.model.vision_model
        if self.clip:
            return self.model.visual_projection(vm.post_layernorm(hidden[:, 1:]))
        x = vm.post_layernorm(hidden)
        attn = vm.head.attention
        d = x.shape[-1]
        h = attn.out_proj(torch.nn.functional.linear(x, attn.in_proj_weight[2 * d:], attn.in_proj_bias[2 * d:]))
        return h + vm.head.mlp(vm.head.layernorm(h))

    def forward(self, pixel_values):
        out = self.model.vision_model(pixel_values=pixel_values, output_hidden_states=True)
        pooled = out.pooler_output
        image = self.model.visual_projection(pooled) if self.clip else pooled
        return image, self.patches(out.hidden_states[-1]), self.patches(out.hidden_states[-2])


class Text(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.clip = model.config.model_type == "clip"

    def forward(self, input_ids):
        states = self.model.text_model(input_ids=input_ids).last_hidden_state
        return self.model.text_projection(states) if self.clip else self.model.text_model.head(states)


def main():
    from transformers import AutoModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager", dtype=torch.float32).eval()
    if model.config.model_type not in ("clip", "siglip"):
        raise SystemExit(f"{args.model}: model_type {model.config.model_type!r} is not clip or siglip")
    os.makedirs(os.path.join(args.out, "onnx"), exist_ok=True)
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "preprocessor_config.json"]:
        if os.path.exists(os.path.join(args.model, name)):
            shutil.copy(os.path.join(args.model, name), os.path.join(args.out, name))
    side = model.config.vision_config.image_size
    positions = model.config.text_config.max_position_embeddings
    vision, text = Vision(model), Text(model)
    vision_path = os.path.join(args.out, "onnx", "vision_model.onnx")
    text_path = os.path.join(args.out, "onnx", "text_model.onnx")
    with torch.inference_mode():
        torch.onnx.export(vision, (torch.zeros(1, 3, side, side),), vision_path, input_names=["pixel_values"],
                          output_names=["image_embeds", "patch_embeds_last", "patch_embeds_penultimate"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"},
                                        "patch_embeds_last": {0: "batch"}, "patch_embeds_penultimate": {0: "batch"}},
                          opset_version=17, dynamo=False)
        torch.onnx.export(text, (torch.ones(2, positions, dtype=torch.long),), text_path, input_names=["input_ids"],
                          output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "rows"}, "text_embeds": {0: "rows"}},
                          opset_version=17, dynamo=False)
    check(vision, text, vision_path, text_path, side, positions, model.config.text_config.vocab_size)
    print(f"wrote {args.out}")


def check(vision, text, vision_path, text_path, side, positions, vocab):
    """The graphs against the wrappers they were traced from, on other inputs than the trace's."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, side, side, generator=gen)
    ids = torch.randint(0, vocab, (3, positions), generator=gen)
    with torch.inference_mode():
        want = [t.numpy() for t in vision(pixels)] + [text(ids).numpy()]
    got = ort.InferenceSession(vision_path).run(None, {"pixel_values": pixels.numpy()})
    got += ort.InferenceSession(text_path).run(None, {"input_ids": ids.numpy()})
    for name, a, b in zip(["image_embeds", "patch_embeds_last", "patch_embeds_penultimate", "text_embeds"], want, got):
        diff = float(np.abs(a - b).max())
        if diff > 1e-5:
            raise SystemExit(f"{name}: the ONNX graph differs from transformers by {diff}")


if __name__ == "__main__":
    main()
