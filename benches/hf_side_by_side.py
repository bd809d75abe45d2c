"""Side by side, in one run: Hugging Face transformers (what a user would run instead) against tokensieve's rows.

`make bench-hf` runs `tokensieve bench --json` on the torch and ONNX backends, saves the frames it sampled, then runs
this script, which times transformers on the same random checkpoint, frames, budgets, new tokens and threads, and
prints one markdown table with the ratios against transformers.

What transformers runs (the work tokensieve does for the same row):
- encode: `LlavaOnevisionModel.get_video_features` on the frames (the SigLIP tower, projector, 2x2 pooling and
  newline), resized (bicubic), rescaled and normalised here with Pillow and numpy as the checkpoint's
  preprocessor_config says. Not through transformers' video processor: it needs torchvision, and with torchvision
  installed transformers also switches its image processors to their torchvision versions, whose pixels differ from
  the ones the Python tests compare with; the pixel values do not change the timing.
- prefill: the Qwen2 language model on the prompt embeddings (the chat-format text around the visual rows), one
  forward with the cache; at a budget below 100 % the first `k` visual rows stand in for the kept ones (transformers
  has no pruner, and the decoder's work depends on the count only);
- decode: greedy steps with that cache, one token at a time (a hand-written loop: `generate` adds its own
  overhead, so this is the fastest transformers path and the ratios are conservative);
- `transformers generate`: the same prompt through `generate(inputs_embeds=..., do_sample=False)`, the call users
  make; its prefill column is the time to the first new token and its decode rate is timed between streamed tokens.

Both are timed twice: in f32 (the same arithmetic as `tokensieve --dtype f32`), and in the checkpoint's stored dtype
(`from_pretrained`'s default `dtype="auto"`, bf16 for the `onevision-0.5b` preset and for the published OneVision
checkpoints), which is what a user gets without asking and what `tokensieve --dtype auto` (the default) computes in
where the CPU has bf16 instructions. The first table's ratios are against the f32 hand-written loop; the second
gives each tokensieve row's ratios against the stored-dtype loop as well. `torch-f32` is tokensieve with
`--dtype f32`, `torch-q8` its torch backend with int8 decoder weights (`--precision q8`), `onnx-q8` ONNX Runtime's
q8 graphs.

Timings are medians of `--repeats`; the machine is shared, so read ratios, not absolute figures.

    python benches/hf_side_by_side.py --model DIR --frames DIR --rows torch.json onnx-fp32.json ... [--new-tokens 16]
"""

import argparse
import glob
import json
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration


def median_ms(fn, repeats):
    """Median wall time of `fn()` in ms over `repeats` runs, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), out


class Clock:
    """A `generate` streamer that only records when each new token arrives (the first `put` is the prompt)."""

    def __init__(self):
        self.start, self.times, self.prompt_seen = time.perf_counter(), [], False

    def put(self, value):
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self):
        pass


def transformers_rows(model_dir, frames_dir, budgets, new_tokens, repeats, dtype):
    """Rows per budget (the hand-written loop, then `generate`) with the model loaded in `dtype` (`"auto"`: as stored),
    timed as the module docstring says."""
    config = json.load(open(os.path.join(model_dir, "preprocessor_config.json")))
    paths = sorted(glob.glob(os.path.join(frames_dir, "*.png")))
    if not paths:
        raise SystemExit(f"{frames_dir}: no PNG frames (tokensieve sample --out writes them)")
    size = (config["size"]["width"], config["size"]["height"])
    mean, std = np.array(config["image_mean"]), np.array(config["image_std"])

    def prepared(path):
        rgb = Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        return ((np.asarray(rgb) * config["rescale_factor"] - mean) / std).transpose(2, 0, 1)

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).eval()
    name = "transformers" if model.dtype == torch.float32 else f"transformers {str(model.dtype).removeprefix('torch.')}"
    pixels = torch.from_numpy(np.stack([prepared(p) for p in paths])).to(model.dtype)[None]  # [1, F, 3, S, S]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm, head, embed = model.model.language_model, model.lm_head, model.get_input_embeddings()
    c = model.config
    before = tokenizer("<|im_start|>user\n", return_tensors="pt").input_ids
    after = tokenizer("\nDescribe the video.<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt").input_ids
    rows = []
    with torch.inference_mode():
        encode_ms, visual = median_ms(lambda: model.model.get_video_features(
            pixels, vision_feature_layer=c.vision_feature_layer,
            vision_feature_select_strategy=c.vision_feature_select_strategy).pooler_output, repeats)
        tokens = visual.shape[1] - 1  # the trailing newline is not a visual token
        for budget in budgets:
            kept = max(1, round(tokens * budget / 100)) if budget < 100 else tokens
            prompt = torch.cat([embed(before), visual[:, :kept], visual[:, -1:], embed(after)], dim=1)

            def prefill():
                out = lm(inputs_embeds=prompt, use_cache=True)
                return out.past_key_values, head(out.last_hidden_state[:, -1]).argmax(-1)

            prefill_ms, _ = median_ms(prefill, repeats)

            def decode():
                cache, token = prefill()
                start = time.perf_counter()
                for _ in range(new_tokens - 1):
                    out = lm(inputs_embeds=embed(token[:, None]), cache=cache, use_cache=True)
                    cache, token = out.past_key_values, head(out.last_hidden_state[:, -1]).argmax(-1)
                return (new_tokens - 1) / (time.perf_counter() - start)

            speeds = [decode() for _ in range(repeats)]
            rows.append({"system": name, "budget": f"{budget:g}%", "prefill_tokens": prompt.shape[1],
                         "encode_ms": encode_ms, "prefill_ms": prefill_ms,
                         "decode_tokens_per_s": statistics.median(speeds)})
            first, rates = [], []
            for _ in range(repeats):
                clock = Clock()
                model.generate(inputs_embeds=prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                               do_sample=False, streamer=clock)
                first.append((clock.times[0] - clock.start) * 1e3)
                rates.append((len(clock.times) - 1) / (clock.times[-1] - clock.times[0]))
            rows.append({"system": f"{name} generate", "budget": f"{budget:g}%",
                         "prefill_tokens": prompt.shape[1], "encode_ms": encode_ms,
                         "prefill_ms": statistics.median(first), "decode_tokens_per_s": statistics.median(rates)})
    return rows


def tokensieve_rows(path):
    """The rows of one `tokensieve bench --json` output, named after the file (`torch.json` -> `tokensieve torch`)."""
    name = "tokensieve " + os.path.basename(path).removesuffix(".json")
    return [{"system": name, "budget": r["budget"], "prefill_tokens": r["prefill_tokens"],
             "encode_ms": r["stage_ms"]["encode"], "prefill_ms": r["stage_ms"]["prefill"],
             "decode_tokens_per_s": r["decode_tokens_per_s"]} for r in json.load(open(path))["rows"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", required=True, help="folder of the PNG frames tokensieve sampled")
    parser.add_argument("--rows", nargs="+", required=True, help="tokensieve bench --json outputs")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours = [row for path in args.rows for row in tokensieve_rows(path)]
    budgets = sorted({float(r["budget"].rstrip("%")) for r in ours}, reverse=True)
    hf_rows = transformers_rows(args.model, args.frames, budgets, args.new_tokens, args.repeats, torch.float32)
    stored_rows = transformers_rows(args.model, args.frames, budgets, args.new_tokens, args.repeats, "auto")
    stored = stored_rows[0]["system"]
    if stored != "transformers":  # a checkpoint stored in f32 already has its rows
        hf_rows += stored_rows
    theirs = {r["budget"]: r for r in hf_rows if r["system"] == "transformers"}
    default = {r["budget"]: r for r in hf_rows if r["system"] == stored}
    print(f"{len(glob.glob(os.path.join(args.frames, '*.png')))} frames, {args.new_tokens} new tokens, "
          f"{torch.get_num_threads()} torch threads; ratios are against transformers' hand-written loop in this run "
          "(higher is faster)")
    print("| system | budget | prefill tokens | encode ms | prefill ms | decode tok/s |")
    print("|---|---|---:|---:|---:|---:|")
    for budget in budgets:
        hf = theirs[f"{budget:g}%"]
        same = lambda rows: [r for r in rows if float(r["budget"].rstrip("%")) == budget]
        for r in [hf] + [r for r in same(hf_rows) if r is not hf] + same(ours):
            speed = lambda ours_ms, hf_ms: "" if r is hf else f" ({hf_ms / ours_ms:.2f}x)"
            decode = "" if r is hf else f" ({r['decode_tokens_per_s'] / hf['decode_tokens_per_s']:.2f}x)"
            print(f"| {r['system']} | {r['budget']} | {r['prefill_tokens']} "
                  f"| {r['encode_ms']:.0f}{speed(r['encode_ms'], hf['encode_ms'])} "
                  f"| {r['prefill_ms']:.0f}{speed(r['prefill_ms'], hf['prefill_ms'])} "
                  f"| {r['decode_tokens_per_s']:.1f}{decode} |")
    print(f"\nagainst {stored} (the checkpoint's stored dtype, `from_pretrained`'s default), hand-written loop:")
    print("| system | budget | encode | prefill | decode |")
    print("|---|---|---:|---:|---:|")
    for r in ours:
        hf = default[r["budget"]]
        print(f"| {r['system']} | {r['budget']} | {hf['encode_ms'] / r['encode_ms']:.2f}x "
              f"| {hf['prefill_ms'] / r['prefill_ms']:.2f}x "
              f"| {r['decode_tokens_per_s'] / hf['decode_tokens_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
