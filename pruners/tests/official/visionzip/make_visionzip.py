"""Reference transcription of VisionZip's token selection and contextual merging, and the generator of
`visionzip.json`.

Transcribed (by reading, not copying) from dvlab-research/VisionZip at commit 3151f6d:
* `visionzip/main.py::visionzip(model, dominant, contextual)` hands the encoder `dominant - 1` (the CLS slot);
* `visionzip/utils.py::CLIPAttention_forward` returns the raw `k_proj` keys reshaped to heads, averaged over heads,
  as the metric of `layers[-2]`;
* `visionzip/clip_encoder.py::CLIPVisionTower_VisionZip.forward`, on `attentions[-2]`, `hidden_states[-2]`:
  - `cls_attention_sum = attn[:, :, 0, 1:].sum(heads)`; top-(dominant-1) patches (+1 for the CLS offset), with the
    CLS index 0 prepended; the dominant rows are taken with a mask (so CLS first, then patches ascending);
  - the other rows (CLS and dominant removed), in order: key metric normalised; `step = max(1, R // contextual)`,
    targets = `arange(0, R, step)[:contextual]`; every non-target goes to the target of highest key cosine
    (`argmax`, the first on ties); contextual = target hidden + (sum of assigned hidden) / max(1, count);
  - output = [dominant rows (CLS, patches ascending), contextual rows (target order)].

The inputs include the CLS row (index 0), as the encoder sees them; the Rust side gets the patch rows (1..), the
head-summed CLS attention over patches and the head-averaged keys, which is what tokensieve's token set holds.
`torch.topk` order on ties is unspecified; the inputs are continuous random values, so no ties occur.

Run: `python make_visionzip.py` (numpy + torch) rewrites `visionzip.json` next to this file.
"""

import json
import os

import numpy as np
import torch


def official_visionzip(attn_weights, hidden_states, metric, dominant, contextual):
    """`attn (B, H, 1+N, 1+N)` (only the CLS row is read), `hidden (B, 1+N, D)`, `metric (B, 1+N, Dk)`.

    `dominant`, `contextual` are the user's `visionzip(...)` arguments; the encoder receives `dominant - 1`.
    Returns the output rows `(B, dominant + contextual, D)` and, per output row, the encoder index it stands at
    (the dominant index, or the target's index for a contextual row)."""
    dominant_num = dominant - 1
    contextual_num = contextual
    cls_idx = 0
    cls_attention = attn_weights[:, :, cls_idx, cls_idx + 1:]
    cls_attention_sum = cls_attention.sum(dim=1)
    topk_indices = cls_attention_sum.topk(dominant_num, dim=1).indices + 1
    all_indices = torch.cat([torch.zeros((hidden_states.shape[0], 1), dtype=topk_indices.dtype), topk_indices], dim=1)
    mask = torch.ones_like(hidden_states[:, :, 0], dtype=torch.bool).scatter_(1, all_indices, False)
    dominant_tokens = hidden_states.masked_select(~mask.unsqueeze(-1)).view(
        hidden_states.shape[0], dominant_num + 1, hidden_states.shape[2])

    metric_filtered = metric[mask].view(hidden_states.shape[0], hidden_states.shape[1] - (dominant_num + 1),
                                        metric.shape[2])
    hidden_states_filtered = hidden_states.masked_select(mask.unsqueeze(-1)).view(
        hidden_states.shape[0], hidden_states.shape[1] - (dominant_num + 1), hidden_states.shape[2])
    metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)

    step = max(1, metric_normalized.shape[1] // contextual_num)
    target_indices = torch.arange(0, metric_normalized.shape[1], step)[:contextual_num]
    target_tokens = metric_normalized[:, target_indices, :]
    not_target = ~torch.isin(torch.arange(metric_normalized.shape[1]), target_indices)
    tokens_to_merge = metric_normalized[:, not_target, :]
    similarity = torch.bmm(tokens_to_merge, target_tokens.transpose(1, 2))
    assign_one_hot = torch.zeros(tokens_to_merge.shape[0], tokens_to_merge.shape[1], contextual_num,
                                 dtype=hidden_states_filtered.dtype)
    assign_one_hot.scatter_(2, similarity.argmax(dim=2).unsqueeze(-1), 1)
    counts = assign_one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
    hidden_to_merge = hidden_states_filtered[:, not_target, :]
    aggregated_hidden = torch.bmm(assign_one_hot.transpose(1, 2), hidden_to_merge) / counts
    target_hidden = hidden_states_filtered[:, target_indices, :]
    contextual_tokens = target_hidden + aggregated_hidden
    hidden_states_save = torch.cat([dominant_tokens, contextual_tokens], dim=1)

    # Bookkeeping for the comparison (not in the official code): the encoder index of every output row.
    dominant_at = torch.nonzero(~mask[0]).flatten()
    filtered_at = torch.nonzero(mask[0]).flatten()
    at = torch.cat([dominant_at, filtered_at[target_indices]])
    return hidden_states_save, at, counts[0, :, 0]


def inputs(kind, rng, n, d, dk, heads):
    """Encoder-side tensors with the CLS row at index 0."""
    if kind == "random":
        hidden = rng.standard_normal((1 + n, d))
        keys = rng.standard_normal((heads, 1 + n, dk))
    else:
        # Clustered: 5 centres in hidden and key space shared by cluster, plus noise.
        label = rng.integers(0, 5, 1 + n)
        hidden = (rng.standard_normal((5, d)) * 2.0)[label] + 0.2 * rng.standard_normal((1 + n, d))
        keys = (rng.standard_normal((heads, 5, dk)) * 2.0)[:, label] + 0.3 * rng.standard_normal((heads, 1 + n, dk))
    logits = rng.standard_normal((heads, 1 + n)) * 2.0
    cls_row = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    attn = np.zeros((1, heads, 1 + n, 1 + n), dtype=np.float32)
    attn[0, :, 0, :] = cls_row  # only the CLS row is read
    return (torch.from_numpy(attn), torch.from_numpy(hidden.astype(np.float32))[None],
            torch.from_numpy(keys.astype(np.float32)).mean(0)[None])


def f32(v):
    """The shortest decimal that reads back (as f32) to the same f32 value."""
    return [float(np.format_float_positional(x, unique=True, trim="-")) if abs(x) >= 1e-4 or x == 0
            else float(np.format_float_scientific(x, unique=True, trim="-"))
            for x in np.asarray(v, dtype=np.float32).ravel()]


def main():
    rng = np.random.default_rng(1604)
    n, d, dk, heads = 144, 24, 16, 4
    cases = []
    for kind in ["random", "clustered"]:
        attn, hidden, metric = inputs(kind, rng, n, d, dk, heads)
        runs = []
        # (dominant, contextual) as `visionzip(model, dominant, contextual)`; 27 + 5 = k 32 is the auto split of 32.
        for dom, ctx in [(27, 5), (54, 10), (10, 30), (40, 3)]:
            rows, at, counts = official_visionzip(attn, hidden, metric, dom, ctx)
            assert at[0] == 0, "the CLS token is the first dominant row"
            # Patch rows in ascending patch index, as tokensieve returns them.
            patch_at = (at[1:] - 1).tolist()
            order = sorted(range(len(patch_at)), key=lambda i: patch_at[i])
            kept = [patch_at[i] for i in order]
            out = rows[0, 1:][order]
            runs.append({"dominant": dom, "contextual": ctx, "k": dom + ctx, "kept": kept, "rows": f32(out.numpy()),
                         "official_rows": int(rows.shape[1]), "cls_row_is_hidden_0": bool(torch.equal(rows[0, 0],
                                                                                                       hidden[0, 0]))})
        cases.append({"name": kind, "n": n, "d": d, "dk": dk,
                      "features": f32(hidden[0, 1:].numpy()),
                      "cls_attention": f32(attn[0, :, 0, 1:].sum(0).numpy()),
                      "keys": f32(metric[0, 1:].numpy()), "runs": runs})
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "visionzip.json")
    with open(out, "w") as f:
        json.dump({"source": "dvlab-research/VisionZip visionzip/clip_encoder.py @3151f6d",
                   "generator": "make_visionzip.py", "cases": cases}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
