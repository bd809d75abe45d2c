"""Reference transcription of VisPruner's token selection, and the generator of `vispruner.json`.

Transcribed (by reading, not copying) from Theia-4869/VisPruner, `llava/model/llava_arch.py`,
`LlavaMetaForCausalLM.encode_images`, at commit aefa01a:

* the attention is the vision tower's `attentions[select_layer]` (layer -2 for LLaVA-1.5), CLS row, patch columns,
  `(B, H, N)`, averaged over heads; the features are `hidden_states[select_layer]` patch rows, before the projector;
* `T_imp = int(T * r)` tokens by descending attention (`argsort`); the residual is the rest, in that order;
* while `R > T_div`: `r' = min(8, R - T_div)`; A = residual[0::2], B = residual[1::2]; each A token scores its
  highest cosine to B; the A tokens are argsorted by descending score and the first `r'` dropped; the residual
  becomes [the surviving A tokens in descending-score order, then all of B in their order];
* kept = important + residual, applied as a mask (so the decoder sees them in index order).

The official loop breaks (a tensor-shape error in the `expand`) when R is odd with more than one survivor, or when
`r'` exceeds |A|; the generator only emits cases where the official code runs, and says so per case.
Ties and near-ties: `torch.argsort` is not stable, and the Rust side sums its dot products in another order (and
each CPU's SIMD kernel in its own), so two scores within a few f32 ulps may swap there. Every sort the loop does
(attention, then each round's scores) is therefore checked for a gap of at least `MARGIN` between neighbours; inputs
that miss it are drawn again, and the smallest gap is recorded per case. A clustered draw that passes on one CPU
and not on another is exactly what this guards against.

Run: `python make_vispruner.py` (numpy + torch) rewrites `vispruner.json` next to this file.
"""

import json
import os

import numpy as np
import torch


MARGIN = 1e-5


def smallest_gap(values):
    """The smallest distance between two neighbours of `values` once sorted (inf for fewer than two)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    return float(np.diff(v).min()) if v.size > 1 else float("inf")


def official_vispruner(image_features, image_attentions, visual_token_num, important_ratio):
    """`image_features (B, N, C)`, `image_attentions (B, H, N)` -> `(index_masks (B, N), mean attention, gap)`, as
    encode_images does; `gap` is the smallest neighbour distance over every sort (not part of the official code)."""
    B, N, C = image_features.shape
    important_token_num = int(visual_token_num * important_ratio)
    diverse_token_num = visual_token_num - important_token_num

    image_attentions = image_attentions.mean(dim=1)
    gap = smallest_gap(image_attentions.numpy())
    token_indices = image_attentions.argsort(dim=-1, descending=True)
    important_indices = token_indices[:, :important_token_num]
    residual_indices = token_indices[:, important_token_num:]

    image_normalized = image_features / image_features.norm(dim=-1, keepdim=True)
    while diverse_token_num > 0:
        R = residual_indices.shape[1]
        r = min(8, R - diverse_token_num)
        if r <= 0:
            break
        batch = torch.arange(B).unsqueeze(-1)
        residual_tokens = image_normalized[batch.expand(-1, R), residual_indices]
        a, b = residual_tokens[..., ::2, :], residual_tokens[..., 1::2, :]
        scores = (a @ b.transpose(-1, -2)).max(dim=-1).values
        gap = min(gap, smallest_gap(scores.numpy()))
        distinct_indices = scores.argsort(dim=-1, descending=True)[:, r:]
        residual_indices = torch.cat(
            [residual_indices[..., ::2][batch.expand(-1, R // 2 - r), distinct_indices], residual_indices[..., 1::2]],
            dim=-1,
        )

    if diverse_token_num > 0:
        selected_indices = torch.cat([important_indices, residual_indices], dim=-1)
    else:
        selected_indices = important_indices
    index_masks = torch.zeros(B, N, dtype=torch.bool)
    index_masks.scatter_(1, selected_indices, True)
    return index_masks, image_attentions, gap


def attention_order_variant(features, attention, visual_token_num, important_ratio):
    """The loop the project had before (residual kept in attention-rank order), to show the fixture tells them apart."""
    n = features.shape[0]
    imp = int(visual_token_num * important_ratio)
    div = visual_token_num - imp
    ranked = list(np.argsort(-attention, kind="stable"))
    important, residual = ranked[:imp], ranked[imp:]
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    while len(residual) > div:
        drop = min(8, len(residual) - div)
        a, b = residual[0::2], residual[1::2]
        red = (x[a] @ x[b].T).max(axis=1) if b else np.zeros(len(a))
        gone = set(np.array(a)[np.argsort(-red, kind="stable")[:drop]].tolist())
        residual = [i for i in residual if i not in gone]
    return sorted(int(i) for i in important + residual)


def inputs(kind, rng, n, d, heads):
    if kind == "random":
        x = rng.standard_normal((n, d))
    else:
        # Clustered: 6 centres, each token a centre plus noise (cosine to its cluster mates about 0.94), so every
        # token has near-duplicates; tighter clusters put scores within f32 noise of each other (see MARGIN).
        centres = rng.standard_normal((6, d)) * 2.0
        x = centres[rng.integers(0, 6, n)] + 0.5 * rng.standard_normal((n, d))
    logits = rng.standard_normal((heads, 1 + n)) * 2.0
    attn = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return x.astype(np.float32), attn[:, 1:].astype(np.float32)


def f32(v):
    """The shortest decimal that reads back (as f32) to the same f32 value."""
    return [float(np.format_float_positional(x, unique=True, trim="-")) if abs(x) >= 1e-4 or x == 0
            else float(np.format_float_scientific(x, unique=True, trim="-"))
            for x in np.asarray(v, dtype=np.float32).ravel()]


def main():
    rng = np.random.default_rng(16)
    n, d, heads = 64, 32, 4
    cases = []
    for kind in ["random", "clustered"]:
        for draw in range(1, 10001):
            x, attn = inputs(kind, rng, n, d, heads)
            runs, gap = [], float("inf")
            for t, ratio in [(16, 0.5), (32, 0.5), (20, 0.5), (40, 0.25), (48, 0.5), (24, 0.0), (24, 1.0)]:
                masks, mean, g = official_vispruner(torch.from_numpy(x)[None], torch.from_numpy(attn)[None], t, ratio)
                gap = min(gap, g)
                kept = torch.nonzero(masks[0]).flatten().tolist()
                assert len(kept) == t
                old = attention_order_variant(x, mean[0].numpy(), t, ratio)
                runs.append({"k": t, "important_ratio": ratio, "kept": kept,
                             "old_loop_agrees": len(set(kept) & set(old))})
            if gap >= MARGIN:
                break
        else:
            raise SystemExit(f"no {kind} draw has every sort separated by {MARGIN}")
        print(kind, "draw", draw, "smallest gap", gap)
        cases.append({"name": kind, "n": n, "d": d, "features": f32(x), "cls_attention": f32(mean[0].numpy()),
                      "smallest_gap": gap, "draws": draw, "runs": runs})
        for r in runs:
            print(kind, r["k"], r["important_ratio"], "old loop agrees on", r["old_loop_agrees"], "of", r["k"])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vispruner.json")
    with open(out, "w") as f:
        json.dump({"source": "Theia-4869/VisPruner llava/model/llava_arch.py::encode_images @aefa01a",
                   "generator": "make_vispruner.py", "cases": cases}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
