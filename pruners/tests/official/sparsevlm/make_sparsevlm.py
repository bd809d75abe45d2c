"""SparseVLM (v1) selection reference: a transcription of Gumpest/SparseVLMs, written from reading it:
`llava/model/language_model/modelling_sparse_llama.py` (`LlamaDynamicvitModel.forward`: the text raters and, at a
pruning layer, the policy and the "merge and cluster" block), `score.py` (`attn_postprocess_topk`) and `utils.py`
(`cluster_and_merge`), `USE_VERSION=1_0`. Also the seeded input generator; writes `sparsevlm.json` next to this file.

The official selection logic (B = 1):
    raters:  m = softmax_text(V T^T).mean over visual rows;  t_token_idx = where(m > m.mean())   (layer-0 input)
    at a pruning layer:  A = attention.mean(heads);  relation = A[raters + text_start, v_start:v_start+v_num].mean(0)
             kept = topk(relation, min(count, v_num - 1))
    recycle: pruned = where(kept mask == 0);  n_r = int(len(pruned) * 0.3) + 1;  best = topk(relation[pruned], n_r)
             candidates = layer_output[pruned][best] (in that score order);  cluster_num = int(n_r / 10) + 1
             cluster_and_merge(candidates, cluster_num): DPC-kNN with k = cluster_num neighbours (self included),
             centres = topk(delta * density), every token to its nearest centre (first centre on ties), a centre
             to itself, each cluster's mean (sum / (count + 1e-6)), in centre order
    the layer output becomes prefix | kept | merged | text

Readings taken: (1) the density noise `torch.rand * 1e-6` is replaced by the candidate order among exactly equal
densities (the earlier candidate, the better recycled score, counts as denser), and exactly equal centre scores go
to the earlier candidate; exact ties are real (with k = 1 every density is exp(0) = 1; with k = 2 mutual nearest
neighbours share their density). Apart from exact ties no decision (kept / recycled cut-offs, rater threshold,
densities, centre scores, assignments) may be within 1e-4 relative: the generator redraws a case that has one. (2) `count` stands for
the `sparse_token_list[layer_dict[layer_idx]]` entry. (3) The attention rows are what the decoder hands the rule:
the head mean of a causal softmax, rows of the text queries; random here. Float64 throughout.

Run: python make_sparsevlm.py   (numpy + torch; writes sparsevlm.json)
"""

import json
import os

import numpy as np
import torch

MARGINS = []


def rel_gap(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def cut_margin(kind, values, k):
    s = sorted(values, reverse=True)
    if 0 < k < len(s):
        MARGINS.append((kind, rel_gap(s[k - 1], s[k])))


def select_raters(hidden_states, v_token_start, text_token_start):
    v_t = hidden_states[:, v_token_start:text_token_start, :]
    t_t = hidden_states[:, text_token_start:, :]
    m_v_t = v_t @ t_t.transpose(1, 2)
    m_v_t = m_v_t.softmax(2).mean(1)
    MARGINS.extend(("rater", rel_gap(v, float(m_v_t.mean()))) for v in m_v_t[0].tolist())
    return torch.where(m_v_t > m_v_t.mean())


def attn_postprocess_topk(self_attn_weights, v_token_start, v_token_num, text_token_start, t_token_idx, count):
    self_attn_weights = self_attn_weights.mean(1)
    t_token_idx = t_token_idx[1] + text_token_start
    relation_vis_text = self_attn_weights[:, t_token_idx, v_token_start : v_token_start + v_token_num]
    relation_vis_text = relation_vis_text.mean(1)
    relation_vis = relation_vis_text
    s_flag = True
    if v_token_num != 0:
        mask = torch.zeros_like(relation_vis, dtype=bool)
        keep = min(count, v_token_num - 1)
        cut_margin("kept", relation_vis[0].tolist(), keep)
        _, indices = torch.topk(relation_vis, keep, dim=1)
        mask[0][indices] = 1
    else:
        mask = torch.ones_like(relation_vis_text, dtype=bool)
        s_flag = False
    return mask, s_flag, relation_vis_text


def index_points(points, idx):
    B = points.shape[0]
    view_shape = list(idx.shape)
    view_shape[1:] = [1] * (len(view_shape) - 1)
    repeat_shape = list(idx.shape)
    repeat_shape[0] = 1
    batch_indices = torch.arange(B, dtype=torch.long).view(view_shape).repeat(repeat_shape)
    return points[batch_indices, idx, :]


def cluster_and_merge(x, cluster_num):
    B, N, C = x.shape
    x1 = x[:, :, None, :]
    x2 = x[:, None, :, :]
    distance = (x1 - x2).norm(dim=-1, p=2)
    dist_matrix = distance / (C**0.5)
    dist_nearest, _ = torch.topk(dist_matrix, k=cluster_num, dim=-1, largest=False)
    density = (-(dist_nearest**2).mean(dim=-1)).exp()
    # (official: density += torch.rand(...) * 1e-6; replaced by the candidate order among exact ties, reading 1)
    index = torch.arange(N)
    tie = (density[:, None, :] == density[:, :, None]) & (index[None, None, :] < index[None, :, None])
    mask = ((density[:, None, :] > density[:, :, None]) | tie).type(x.dtype)
    dist_max = dist_matrix.flatten(1).max(dim=-1)[0][:, None, None]
    dist, _ = (dist_matrix * mask + dist_max * (1 - mask)).min(dim=-1)
    score = dist * density
    # torch.topk(score, k=cluster_num), exact ties to the earlier candidate (torch leaves their order unspecified)
    index_down = torch.stack(
        [torch.as_tensor(np.lexsort((np.arange(N), -score[b].numpy()))[:cluster_num]) for b in range(B)]
    )
    d = sorted(density[0].tolist())
    MARGINS.extend(("density", rel_gap(d[i], d[i + 1])) for i in range(N - 1) if d[i] != d[i + 1])
    s = sorted(score[0].tolist(), reverse=True)
    if cluster_num < N and s[cluster_num - 1] != s[cluster_num]:
        MARGINS.append(("score", rel_gap(s[cluster_num - 1], s[cluster_num])))

    dist_matrix = index_points(dist_matrix, index_down)
    if cluster_num > 1:
        for col in dist_matrix[0].t().tolist():
            col = sorted(col)
            MARGINS.append(("assignment", rel_gap(col[0], col[1])))
    idx_cluster = dist_matrix.argmin(dim=1)
    idx_batch = torch.arange(B)[:, None].expand(B, cluster_num)
    idx_tmp = torch.arange(cluster_num)[None, :].expand(B, cluster_num)
    idx_cluster[idx_batch.reshape(-1), index_down.reshape(-1)] = idx_tmp.reshape(-1)

    agg_weight = x.new_ones(B, N, 1)  # noqa: F841 (as in the official code, unused)
    token_weight = x.new_ones(B, N, 1)
    idx_batch = torch.arange(B)[:, None]
    idx = idx_cluster + idx_batch * cluster_num
    all_weight = token_weight.new_zeros(B * cluster_num, 1)
    all_weight.index_add_(dim=0, index=idx.reshape(B * N), source=token_weight.reshape(B * N, 1))
    all_weight = all_weight + 1e-6
    norm_weight = token_weight / all_weight[idx]
    x_merged = x.new_zeros(B * cluster_num, C)
    source = x * norm_weight
    x_merged.index_add_(dim=0, index=idx.reshape(B * N), source=source.reshape(B * N, C).type(x.dtype))
    return x_merged.reshape(B, cluster_num, C)


def pruning_layer(layer_output, attn, v_token_start, v_token_num, t_token_idx, count):
    """The inference branch of a sparse layer in `LlamaDynamicvitModel.forward` (v1, B = 1): kept offsets within
    the span and the recycled tokens."""
    text_token_start = v_token_start + v_token_num
    pred_score_vis, s_flag, relation_vis_text = attn_postprocess_topk(
        attn, v_token_start, v_token_num, text_token_start, t_token_idx, count
    )
    L = layer_output.shape[1]
    policy = torch.ones(1, L, dtype=layer_output.dtype)
    policy[:, v_token_start:text_token_start] = pred_score_vis.type(dtype=layer_output.dtype)
    policy[0, :v_token_start] = 1
    policy[0, text_token_start:] = 1
    kept = torch.where(pred_score_vis[0])[0].tolist()
    total_sparse_token_idx = torch.where(policy == 0)[1].unsqueeze(0)
    if not (s_flag and total_sparse_token_idx.shape[1] > 0):
        return kept, None
    total_sparse_token = layer_output[:, total_sparse_token_idx[0], :]
    merge_token_idx_stage1 = torch.where(pred_score_vis == 0)[1]
    merge_token_stage1 = relation_vis_text[0][merge_token_idx_stage1]
    merge_token_num_stage1 = int(merge_token_idx_stage1.shape[0] * 0.3) + 1
    cut_margin("recycled", merge_token_stage1.tolist(), merge_token_num_stage1)
    merge_token_stage2_idx = merge_token_stage1.topk(merge_token_num_stage1)[1]
    merge_token_stage2 = total_sparse_token[:, merge_token_stage2_idx, :]
    cluster_num = int(merge_token_stage2.shape[1] / 10) + 1
    if cluster_num == 0:
        cluster_num = merge_token_stage2.shape[1]
    merge_sparse_token = cluster_and_merge(merge_token_stage2, cluster_num)
    return kept, merge_sparse_token[0]


def f9(a):
    """float32 values as the shortest decimals that read back as the same float32 (9 significant digits)."""
    return [f9(v) for v in a] if np.ndim(a) > 0 else float("%.9g" % a)


def r32(a):
    return torch.as_tensor(np.float32(a).astype(np.float64))


def make_case(rng, name, prototypes, prefix, n, text, dim, heads, count):
    L = prefix + n + text

    def states(count_rows):
        if prototypes is None:
            return rng.standard_normal((count_rows, dim))
        pick = rng.integers(0, len(prototypes), size=count_rows)
        return prototypes[pick] + 0.4 * rng.standard_normal((count_rows, dim))

    x0 = r32(0.5 * states(L))[None]  # layer-0 input embeddings
    layer_output = r32(states(L))[None]
    logits = 2.0 * rng.standard_normal((1, heads, L, L))
    causal = np.triu(np.ones((L, L), dtype=bool), k=1)
    logits[:, :, causal] = -np.inf
    attn = torch.as_tensor(logits).softmax(-1)
    # The rule is handed the head mean of the text queries' rows, in float32 (the official code averages the heads
    # itself, in float64 here; the cut-off margins cover the rounding).
    rows = r32(attn.mean(1)[0, prefix + n :, :].numpy())

    MARGINS.clear()
    t_token_idx = select_raters(x0, prefix, prefix + n)
    kept, merged = pruning_layer(layer_output, attn, prefix, n, t_token_idx, count)
    worst = {}
    for kind, m in MARGINS:
        worst[kind] = min(worst.get(kind, float("inf")), m)
    if not all(m > 1e-4 for m in worst.values()):
        print(name, "near tie, redrawn:", worst)
        return None
    print(name, "n", n, "count", count, "raters", t_token_idx[1].tolist(), "kept", len(kept),
          "recycled", None if merged is None else merged.shape[0], {k: round(v, 5) for k, v in worst.items()})
    return {
        "name": name,
        "prefix": prefix,
        "visual": f9(x0[0, prefix : prefix + n].numpy()),
        "text": f9(x0[0, prefix + n :].numpy()),
        "rows": f9(rows.numpy()),
        "hidden": f9(layer_output[0, prefix : prefix + n].numpy()),
        "count": count,
        "raters": t_token_idx[1].tolist(),
        "kept": kept,
        "recycled": None if merged is None else f9(merged.numpy()),
        "margins": worst,
    }


def main():
    rng = np.random.default_rng(2410_04417)
    dim, heads, text = 16, 4, 7
    protos = 1.5 * rng.standard_normal((4, dim))
    cases = []
    for label, prototypes in [("random", None), ("clustered", protos)]:
        # (visual tokens, kept count): 1, 2 and 3 recycled clusters, and a count above n - 1.
        for n, count in [(40, 12), (60, 20), (80, 10), (20, 300)]:
            case = None
            while case is None:
                case = make_case(rng, f"{label}-{n}-{count}", prototypes, 3, n, text, dim, heads, count)
            cases.append(case)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sparsevlm.json")
    with open(path, "w") as f:
        json.dump({"source": "Gumpest/SparseVLMs modelling_sparse_llama.py, score.py, utils.py (v1)", "cases": cases}, f)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
