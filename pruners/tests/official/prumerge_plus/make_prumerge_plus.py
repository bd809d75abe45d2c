"""Reference transcription of PruMerge+ (the adaptive `plus` path), and the generator of `prumerge_plus.json`.

Transcribed (by reading, not copying) from 42Shawn/LLaVA-PruMerge at commit 097c041,
`llava/model/multimodal_encoder/clip_encoder.py`, `CLIPVisionTower.token_prune_merge_advanced_plus` with
`if_adaptive=True` (what `forward` calls) and `outlier_dectection`:

* q, k = the hooked outputs of `layers[23].self_attn.q_proj` / `k_proj`: full width C (all heads, one matrix);
  `attn = softmax(q @ k.T * C**-0.5)` over CLS + patches, one head; `cls_attn = attn[:, 0, 1:]`;
* `outlier_dectection`: numpy float32 `Q1, Q3 = percentile(25, 75)`, `upper = Q3 + 1.5 (Q3 - Q1)`,
  `ratio = #(cls_attn > upper) / N`;
* `idx = topk(cls_attn, int(N * ratio))` (descending); `step_length = int(1 / ratio)`;
  spatial = `arange(0, 575, int(step_length / 3))` minus the topk ones, appended after them;
* every kept token i (in idx order) adds `sum_j cls_attn_j * x_j` over its 32 most key-cosine-similar tokens j among
  all other tokens (the other kept ones and the pruned ones, features unmerged), keys = `k[:, 1:]` full width;
* one extra token `sum over pruned j of cls_attn_j * x_j`, appended last;
* features x = `hidden_states[-2]` patch rows (before the projector).

Readings taken: the official code hard-codes 575 (= N - 1 for LLaVA-1.5's 576 patches); with other N it would index
past the end, so the transcription uses `N - 1`. `int(N * ratio)` and `int(1 / ratio)` are kept as float
expressions: for some N they differ from the integer count (e.g. N = 196 with one outlier keeps 0 by topk, N = 186
with two outliers has step_length 92 not 93); at N = 576 they agree for every count below 200. `torch.topk` order on
ties is unspecified; the inputs are continuous, so no ties occur.

Run: `python make_prumerge_plus.py` (numpy + torch) rewrites `prumerge_plus.json` next to this file.
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F


def official_cls_attention(q, k):
    """`q, k (B, 1+N, C)` hooked projections -> `cls_attn (B, N)`: one full-width head."""
    C = q.shape[-1]
    attn = F.softmax((q @ k.transpose(-2, -1)) * C ** -0.5, dim=-1)
    return attn[:, 0, 1:]


def head_mean_cls_attention(q, k, heads):
    """What a multi-head mean would hand instead (for the record only)."""
    B, T, C = q.shape
    dh = C // heads
    qh = q.view(B, T, heads, dh).transpose(1, 2)
    kh = k.view(B, T, heads, dh).transpose(1, 2)
    attn = F.softmax((qh @ kh.transpose(-2, -1)) * dh ** -0.5, dim=-1)
    return attn[:, :, 0, 1:].mean(1)


def outlier_dectection(attn):
    attn_np = attn.to(dtype=torch.float32).cpu().numpy().flatten()
    Q1 = np.percentile(attn_np, 25)
    Q3 = np.percentile(attn_np, 75)
    IQR = Q3 - Q1
    upper_bound = Q3 + 1.5 * IQR
    outlier_indices = np.where((attn_np > upper_bound))[0]
    return len(outlier_indices) / len(attn_np), len(outlier_indices)


def complement_idx(idx, dim):
    """The indices of 0..dim not in idx, ascending (the official helper's result)."""
    a = torch.arange(dim).expand(idx.shape[0], -1)
    masked = torch.scatter(a, -1, idx, 0)
    compl, _ = torch.sort(masked, dim=-1)
    return compl[:, idx.shape[1]:]


def official_prumerge_plus(image_features, Key_wo_cls, cls_attn):
    """`image_features (B, N, C)`, `Key_wo_cls (B, N, C)`, `cls_attn (B, N)` -> (output rows, idx, outlier count)."""
    B, N, C = image_features.shape
    reduction_ratio, count = outlier_dectection(cls_attn)
    _, idx = torch.topk(cls_attn, int(N * reduction_ratio), dim=1, largest=True)
    step_length = int(1 / reduction_ratio)
    arithmetic_sequence = torch.arange(0, N - 1, int(step_length / 3))  # official: 575
    original_tensor_1d = idx.flatten()
    filtered_sequence = torch.tensor([x for x in arithmetic_sequence if x not in original_tensor_1d],
                                     dtype=torch.long)
    idx = torch.cat((idx, filtered_sequence.unsqueeze(0)), dim=1)

    index = idx.unsqueeze(-1).expand(-1, -1, C)
    x_others = torch.gather(image_features, dim=1, index=index)
    x_others_attn = torch.gather(cls_attn, dim=1, index=idx)
    Key_others = torch.gather(Key_wo_cls, dim=1, index=index)
    compl = complement_idx(idx, N)
    non_topk = torch.gather(image_features, dim=1, index=compl.unsqueeze(-1).expand(-1, -1, C))
    non_topk_Key = torch.gather(Key_wo_cls, dim=1, index=compl.unsqueeze(-1).expand(-1, -1, C))
    non_topk_attn = torch.gather(cls_attn, dim=1, index=compl)
    Key_others_norm = F.normalize(Key_others, p=2, dim=-1)
    non_topk_Key_norm = F.normalize(non_topk_Key, p=2, dim=-1)

    B, left_tokens, C = x_others.size()
    updated_x_others = torch.zeros_like(x_others)
    for b in range(B):
        for i in range(left_tokens):
            key_others_norm = Key_others_norm[b, i, :].unsqueeze(0).unsqueeze(0)
            rest_x_others = torch.cat([x_others[b, :i, :].unsqueeze(0), x_others[b, i + 1:, :].unsqueeze(0),
                                       non_topk[b, :, :].unsqueeze(0)], dim=1)
            rest_x_others_attn = torch.cat([x_others_attn[b, :i].unsqueeze(0), x_others_attn[b, i + 1:].unsqueeze(0),
                                            non_topk_attn[b, :].unsqueeze(0)], dim=1)
            rest_Keys = torch.cat([Key_others_norm[b, :i, :].unsqueeze(0), Key_others_norm[b, i + 1:, :].unsqueeze(0),
                                   non_topk_Key_norm[b, :, :].unsqueeze(0)], dim=1)
            cos_sim_matrix = torch.bmm(key_others_norm, rest_Keys.transpose(1, 2))
            _, cluster_indices = torch.topk(cos_sim_matrix, k=int(32), dim=2, largest=True)
            cluster_tokens = rest_x_others[:, cluster_indices.squeeze(), :]
            weights = rest_x_others_attn[:, cluster_indices.squeeze()].unsqueeze(-1)
            weighted_avg = torch.sum(cluster_tokens * weights, dim=1)
            updated_x_others[b, i, :] = x_others[b, i, :] + weighted_avg
    extra_one_token = torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1, keepdim=True)
    return torch.cat([updated_x_others, extra_one_token], dim=1), idx, count


def f32(v):
    """The shortest decimal that reads back (as f32) to the same f32 value."""
    return [float(np.format_float_positional(x, unique=True, trim="-")) if abs(x) >= 1e-4 or x == 0
            else float(np.format_float_scientific(x, unique=True, trim="-"))
            for x in np.asarray(v, dtype=np.float32).ravel()]


def quantised(rng, shape, scale=1.0):
    return np.round(rng.standard_normal(shape) * scale, 3)


def crafted_attention(rng, n, outliers):
    """Attention with exactly `outliers` IQR outliers (the rest lie in a narrow band)."""
    a = 0.004 + 0.002 * rng.random(n)
    a[rng.choice(n, outliers, replace=False)] = 0.05 + 0.05 * rng.random(outliers)
    return (a / a.sum()).astype(np.float32)


def main():
    rng = np.random.default_rng(2403)
    c = 16
    cases = []
    specs = [("random", 144, None), ("clustered", 144, None), ("n196_one_outlier", 196, 1),
             ("n186_two_outliers", 186, 2), ("n77_five_outliers", 77, 5)]
    for name, n, crafted in specs:
        if name == "clustered":
            label = rng.integers(0, 5, 1 + n)
            x = np.round((rng.standard_normal((5, c)) * 2)[label] + 0.3 * rng.standard_normal((1 + n, c)), 3)
        else:
            x = quantised(rng, (1 + n, c))
        q = quantised(rng, (1 + n, c), 2.0)
        k = np.round(x @ rng.standard_normal((c, c)) * 0.5 + 0.2 * rng.standard_normal((1 + n, c)), 3)
        xt, qt, kt = (torch.from_numpy(m.astype(np.float32))[None] for m in (x, q, k))
        if crafted is None:
            cls_attn = official_cls_attention(qt, kt)
        else:
            cls_attn = torch.from_numpy(crafted_attention(rng, n, crafted))[None]
        features, keys = xt[:, 1:], kt[:, 1:]
        rows, idx, count = official_prumerge_plus(features, keys, cls_attn)
        idx = idx[0].tolist()
        order = sorted(range(len(idx)), key=lambda i: idx[i])
        head_mean = outlier_dectection(head_mean_cls_attention(qt, kt, 4))[1] if crafted is None else None
        cases.append({
            "name": name, "n": n, "d": c, "features": f32(features[0].numpy()), "keys": f32(keys[0].numpy()),
            "cls_attention": f32(cls_attn[0].numpy()), "outliers": count, "kept": sorted(idx),
            "rows": f32(rows[0, :-1][order].numpy()), "extra": f32(rows[0, -1].numpy()),
            "official_order": idx, "head_mean_outliers": head_mean,
        })
        print(name, "outliers", count, "topk", int(n * (count / n)), "kept", len(idx), "head-mean outliers", head_mean)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prumerge_plus.json")
    with open(out, "w") as f:
        json.dump({"source": "42Shawn/LLaVA-PruMerge llava/model/multimodal_encoder/clip_encoder.py @097c041 "
                             "token_prune_merge_advanced_plus", "generator": "make_prumerge_plus.py",
                   "cases": cases}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
