"""HoliTom (outer-LLM stage) reference: a transcription of cokeshao/HoliTom `holitom/llava_arch.py`,
`LlavaMetaForCausalLM_holitom`, written from reading it: `cluster_dpc_knn`, `select_static_windows`,
`get_static_dynamic_features`, `merge_tokens_by_clustering`, `merge_tokens_by_attention_density`,
`merge_tokens_by_density`, `holitom` and the video branch of `prepare_inputs_labels_for_multimodal` (from the
pooled features on). Also the seeded input generator; writes `holitom.json` next to this file.

The official logic (one video, `F` frames of `n` pooled tokens):
    feature_sim[t] = cos(x[t], x[t+1]) per position
    DP over frames: dp[i] = max(dp[i-1], max_{2 <= w <= min(i+1, W)} dp[i-w] + count[i-w+1, i]) (strict >, shortest
        window first), count[s, e] = #{p static over s..e} * (e - s)
    r' = min(r / ((F*n - dp[-1]) / (F*n)), 1)
    per window: static positions (all transitions > tau) -> their mean over the window's frames;
        dynamic tokens of each frame: dominant = round(ceil(n_d r') (1 - D)) by attention, contextual =
        ceil(n_d r') - dominant DPC-kNN centres (k = min(K, contextual)) of the rest;
        static tokens: round(n_s r') DPC-kNN centres (k = min(K, that));
        a centre with members becomes Beta * centre + (1 - Beta) * mean(members) (NO_BETA unset: the Beta branch)
    DPC-kNN: dist = cdist / sqrt(D); density = exp(-mean of the k smallest dist^2) (self included);
        delta = min dist to a denser token (the matrix maximum for the densest); centres = topk(delta * density);
        centres sorted by index; every other token joins the nearest centre.

Readings taken: (1) the `torch.rand * 1e-6` density noise is replaced by the index order: among exactly equal
densities the lower index counts as denser. Exact ties are real here: with `k = min(K, cluster_num) = 1` every
density is exp(0) = 1, and the official centre is then a random token (the noise's densest); the lower index is
the reading taken; likewise exactly equal scores (the densest and a token whose nearest denser one is at the
matrix maximum) go to the lower index in the centre top-k. Apart from exact ties the generator asserts that no two densities, scores or assignment
distances are within 1e-4 relative, so the noise could not change anything. (2) Float64 throughout, with `cdist` computed by differences, not the mm trick.
(3) The output is the set of (index, feature) pairs: a static token's index is its position in the window's first
frame, a dynamic or centre token its own `frame * n + position` (the order of the official concatenation and of
the grid newline insertion is the LLM's arrangement, not the selection). (4) `attn` is the saliency as the
pipeline hands it: the official one is the last SigLIP layer's attention averaged over heads and queries, pooled
by the same `get_2dPool` as the features; here it is random positive.

Run: python make_holitom.py   (numpy + torch; writes holitom.json)
"""

import json
import math
import os

import numpy as np
import torch

MARGINS = []  # (kind, relative margin) of every decision a float32 implementation could flip


def rel_gap(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def cluster_dpc_knn(x, cluster_num, k=7):
    batch_size, seq_len, embed_dim = x.shape
    dist_matrix = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / (embed_dim**0.5)
    dist_nearest, _ = torch.topk(dist_matrix, k, dim=-1, largest=False)
    density = (-(dist_nearest**2).mean(dim=-1)).exp()
    # (official: density += torch.rand(...) * 1e-6; replaced by the index order among exact ties, see reading 1)
    index = torch.arange(seq_len)
    tie = (density[:, None, :] == density[:, :, None]) & (index[None, None, :] < index[None, :, None])
    mask = ((density[:, None, :] > density[:, :, None]) | tie).type(x.dtype)
    dist_max = dist_matrix.flatten(1).max(dim=-1).values[:, None, None]
    dist, _ = (dist_matrix * mask + dist_max * (1 - mask)).min(dim=-1)
    score = dist * density
    # score.topk(cluster_num), with exact ties to the lower index (torch leaves their order unspecified)
    index_center = torch.stack(
        [torch.as_tensor(np.lexsort((np.arange(seq_len), -score[b].numpy()))[:cluster_num]) for b in range(batch_size)]
    )
    for b in range(batch_size):
        d = sorted(density[b].tolist())
        MARGINS.extend(("density", rel_gap(d[i], d[i + 1])) for i in range(len(d) - 1) if d[i] != d[i + 1])
        s = sorted(score[b].tolist(), reverse=True)
        if cluster_num < len(s) and s[cluster_num - 1] != s[cluster_num]:
            MARGINS.append(("score", rel_gap(s[cluster_num - 1], s[cluster_num])))
    return index_center, dist_matrix


def select_static_windows(feature_sim, batch_size, tau, max_window_size):
    def get_pruned_static_count_vectorized(feature_sim, batch_size, tau):
        similarity_matrix = torch.ones((batch_size, batch_size, feature_sim.shape[1]), dtype=torch.float64)
        for start in range(batch_size - 1):
            cum_similarity = torch.cumprod(feature_sim[start:] > tau, dim=0)
            similarity_matrix[start, start + 1 : start + 1 + len(cum_similarity)] = cum_similarity
        window_lengths = torch.arange(batch_size).unsqueeze(0) - torch.arange(batch_size).unsqueeze(1)
        window_lengths = window_lengths.clamp(min=0)
        return (similarity_matrix.sum(dim=-1) * window_lengths).float()

    pruned_static_count = get_pruned_static_count_vectorized(feature_sim, batch_size, tau)
    dp = torch.zeros(batch_size)
    prev = torch.zeros(batch_size, dtype=torch.long)
    for i in range(batch_size):
        max_val = dp[i - 1] if i > 0 else 0
        best_j = i
        for window_size in range(2, min(i + 1, max_window_size) + 1):
            j = i - window_size
            current_val = (dp[j] if j >= 0 else 0) + pruned_static_count[j + 1, i]
            if current_val > max_val:
                max_val = current_val
                best_j = j + 1
        dp[i] = max_val
        prev[i] = best_j
    selected_frames = []
    i = batch_size - 1
    while i >= 0:
        selected_frames.append((prev[i].item(), i))
        i = prev[i].item() - 1
    return selected_frames[::-1], dp[-1].item()


def merge_tokens_by_clustering(feat, target_indices, dist_matrix, cluster_num, Beta):
    batch_size, seq_len, _ = feat.shape
    all_indices = torch.arange(seq_len).unsqueeze(0).expand(batch_size, -1)
    non_target_indices = torch.zeros((batch_size, seq_len - cluster_num), dtype=torch.long)
    for b in range(batch_size):
        non_target_indices[b] = all_indices[b][~torch.isin(all_indices[b], target_indices[b])]
    non_target_feat = torch.gather(feat, 1, non_target_indices.unsqueeze(-1).expand(-1, -1, feat.size(-1)))
    dist_matrix = torch.gather(dist_matrix, 1, non_target_indices.unsqueeze(-1).expand(-1, -1, dist_matrix.size(-1)))
    dist_matrix = torch.gather(dist_matrix, 2, target_indices.unsqueeze(1).expand(-1, dist_matrix.size(1), -1))
    idx_cluster = torch.argmin(dist_matrix, dim=-1)
    if cluster_num > 1:
        for row in dist_matrix.reshape(-1, cluster_num).tolist():
            row = sorted(row)
            MARGINS.append(("assignment", rel_gap(row[0], row[1])))
    cluster_tokens = []
    for b in range(batch_size):
        batch_tokens = []
        for i in range(cluster_num):
            mask = idx_cluster[b] == i
            if mask.any():
                cluster_means = non_target_feat[b][mask].mean(dim=0)
                batch_tokens.append(Beta * feat[b][target_indices[b][i]] + (1 - Beta) * cluster_means)
            else:
                batch_tokens.append(feat[b][target_indices[b][i]])
        cluster_tokens.append(torch.stack(batch_tokens))
    return torch.stack(cluster_tokens)


def merge_tokens_by_attention_density(feat, attn, pos, retain_ratio, D, Beta, K):
    batch_size, seq_len, embed_dim = feat.shape
    dominant_num = round(math.ceil(seq_len * retain_ratio) * (1 - D))
    contextual_num = math.ceil(seq_len * retain_ratio) - dominant_num
    if dominant_num > 0:
        all_indices = attn.topk(dominant_num, dim=1).indices
        mask = torch.ones_like(feat[:, :, 0], dtype=torch.bool).scatter_(1, all_indices, False)
        dominant_tokens = feat.masked_select(~mask.unsqueeze(-1)).view(batch_size, dominant_num, embed_dim)
        dominant_pos = pos.masked_select(~mask).view(batch_size, dominant_num)
    else:
        mask = torch.ones_like(feat[:, :, 0], dtype=torch.bool)
        dominant_tokens = torch.empty((batch_size, 0, embed_dim), dtype=feat.dtype)
        dominant_pos = torch.empty((batch_size, 0), dtype=torch.long)
    if contextual_num > 0:
        feat_filtered = feat.masked_select(mask.unsqueeze(-1)).view(batch_size, seq_len - dominant_num, embed_dim)
        contextual_pos = pos.masked_select(mask).view(batch_size, seq_len - dominant_num)
        target_indices, dist_matrix = cluster_dpc_knn(feat_filtered, contextual_num, k=min(K, contextual_num))
        target_indices = torch.sort(target_indices, dim=-1)[0]
        contextual_pos = torch.stack([contextual_pos[b][target_indices[b]] for b in range(batch_size)])
        contextual_tokens = merge_tokens_by_clustering(feat_filtered, target_indices, dist_matrix, contextual_num, Beta)
    else:
        contextual_tokens = torch.empty((batch_size, 0, embed_dim), dtype=feat.dtype)
        contextual_pos = torch.empty((batch_size, 0), dtype=torch.long)
    image_feat = torch.stack([torch.cat([dominant_tokens[b], contextual_tokens[b]]) for b in range(batch_size)])
    image_pos = torch.stack([torch.cat([dominant_pos[b], contextual_pos[b]]) for b in range(batch_size)])
    return image_feat, image_pos


def merge_tokens_by_density(feat, pos, retain_ratio, Beta, K):
    batch_size, seq_len, embed_dim = feat.shape
    cluster_num = round(seq_len * retain_ratio)
    if cluster_num > 0:
        target_indices, dist_matrix = cluster_dpc_knn(feat, cluster_num, k=min(K, cluster_num))
        target_indices = torch.sort(target_indices, dim=-1)[0]
        image_pos = torch.stack([pos[b][target_indices[b]] for b in range(batch_size)])
        image_feat = merge_tokens_by_clustering(feat, target_indices, dist_matrix, cluster_num, Beta)
    else:
        image_feat = torch.empty((batch_size, 0, embed_dim), dtype=feat.dtype)
        image_pos = torch.empty((batch_size, 0), dtype=torch.long)
    return image_feat, image_pos


def get_static_dynamic_features(image_feat, attn_weights, selected_frames, feature_sim, tau):
    _, seq_len, embed_dim = image_feat.shape
    static_feat_list, dynamic_feat_list, dynamic_attn_list, static_pos_list, dynamic_pos_list = [], [], [], [], []
    for start, end in selected_frames:
        all_indices = torch.arange(seq_len).unsqueeze(0)
        if start == end:
            static_feat_list.append(torch.empty((0, embed_dim), dtype=image_feat.dtype))
            dynamic_feat_list.append(image_feat[start : end + 1])
            dynamic_attn_list.append(attn_weights[start : end + 1])
            static_pos_list.append(torch.empty((0, seq_len), dtype=torch.long))
            dynamic_pos_list.append(all_indices)
        else:
            windows_size = end - start + 1
            mask = torch.all(feature_sim[start:end, :] > tau, dim=0)
            static_feat_list.append(image_feat[start : end + 1, mask].mean(dim=0))
            dynamic_feat_list.append(image_feat[start : end + 1, ~mask])
            dynamic_attn_list.append(attn_weights[start : end + 1, ~mask])
            static_pos_list.append(all_indices[:, mask].expand(1, -1))
            dynamic_pos_list.append(all_indices[:, ~mask].expand(windows_size, -1))
    return static_feat_list, dynamic_feat_list, dynamic_attn_list, static_pos_list, dynamic_pos_list


def holitom(static_feat, dynamic_feat, dynamic_attn, static_pos, dynamic_pos, window_size, retain_ratio, D, Beta, K):
    """The `mm_newline_position != "grid"` path, returning (static, static_pos, dynamic, dynamic_pos)."""
    dynamic_feat, dynamic_pos = merge_tokens_by_attention_density(
        dynamic_feat, dynamic_attn, dynamic_pos, retain_ratio, D, Beta, K
    )
    if window_size == 1:
        return None, None, dynamic_feat, dynamic_pos
    static_feat, static_pos = merge_tokens_by_density(static_feat.unsqueeze(0), static_pos, retain_ratio, Beta, K)
    return static_feat, static_pos, dynamic_feat, dynamic_pos


def official_holitom(features, attn, retain_ratio, tau, D, Beta, K, max_window_size):
    """features [F, n, C] (pooled), attn [F, n]. Returns (sorted global indices, features in that order, windows)."""
    pooled_image_feat = torch.as_tensor(features, dtype=torch.float64)
    attn_weights = torch.as_tensor(attn, dtype=torch.float64)
    batch_size, seq_len, _ = pooled_image_feat.shape
    normed = torch.nn.functional.normalize(pooled_image_feat, p=2, dim=-1)
    feature_sim = torch.nn.functional.cosine_similarity(normed[:-1], normed[1:], dim=-1)
    MARGINS.extend(("tau", abs(v - tau)) for v in feature_sim.flatten().tolist())
    selected_frames, total_reduced = select_static_windows(feature_sim, batch_size, tau, max_window_size)
    total_tokens = batch_size * seq_len
    retain_ratio = min(retain_ratio / ((total_tokens - total_reduced) / total_tokens), 1)
    static_feat, dynamic_feat, dynamic_attn, static_pos, dynamic_pos = get_static_dynamic_features(
        pooled_image_feat, attn_weights, selected_frames, feature_sim, tau
    )
    out = {}
    for idx, (start, end) in enumerate(selected_frames):
        window_size = end - start + 1
        s, sp, dyn, dp = holitom(
            static_feat[idx], dynamic_feat[idx], dynamic_attn[idx], static_pos[idx], dynamic_pos[idx],
            window_size, retain_ratio, D, Beta, K,
        )
        if s is not None:
            for f, p in zip(s[0], sp[0].tolist()):
                out[start * seq_len + p] = f
        for t in range(dyn.shape[0]):
            for f, p in zip(dyn[t], dp[t].tolist()):
                key = (start + t) * seq_len + int(p)
                assert key not in out
                out[key] = f
    kept = sorted(out)
    return kept, [out[i].tolist() for i in kept], [[a, b - a + 1] for a, b in selected_frames]


def f9(a):
    """float32 values as the shortest decimals that read back as the same float32 (9 significant digits)."""
    return [f9(v) for v in a] if np.ndim(a) > 0 else float("%.9g" % a)


def video(rng, frames, n, dim, prototypes, noise, persist, cuts):
    """Frames of `n` tokens: each position keeps its previous token (plus small noise) with probability `persist`,
    except at the frames in `cuts`; a new token is a prototype plus noise (or pure noise without prototypes)."""

    def fresh(count):
        if prototypes is None:
            return rng.standard_normal((count, dim))
        return prototypes[rng.integers(0, len(prototypes), size=count)] + noise * rng.standard_normal((count, dim))

    x = np.zeros((frames, n, dim))
    x[0] = fresh(n)
    for f in range(1, frames):
        keep = rng.random(n) < (0.0 if f in cuts else persist)
        x[f] = fresh(n)
        x[f][keep] = x[f - 1][keep] + 0.08 * rng.standard_normal((int(keep.sum()), dim))
    logits = 1.5 * rng.standard_normal((frames, n))
    attn = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.float32(x).astype(np.float64), np.float32(attn).astype(np.float64)


RUNS = [
    # ratio, tau, D, beta, K, max_window: the official defaults (D = 0, K = 7) with the paper's tau for 10 %,
    # then the D = 0.5 split, a smaller K, the 0.80 tau and a short window limit.
    {"ratio": 0.25, "tau": 0.65, "d": 0.0, "beta": 0.6, "k": 7, "max_window": 1024},
    {"ratio": 0.3, "tau": 0.65, "d": 0.5, "beta": 0.6, "k": 7, "max_window": 1024},
    {"ratio": 0.15, "tau": 0.8, "d": 0.5, "beta": 0.6, "k": 3, "max_window": 2},
]


def main():
    rng = np.random.default_rng(2505_21334)
    frames, h, w, dim = 8, 4, 4, 16
    n = h * w
    cases = []
    protos = 2.0 * rng.standard_normal((5, dim))
    for name, prototypes, noise, cuts in [("random", None, 0.0, {5, 6}), ("clustered", protos, 0.45, {4})]:
        x, attn = video(rng, frames, n, dim, prototypes, noise, persist=0.7, cuts=cuts)
        case = {"name": name, "frames": frames, "height": h, "width": w, "features": f9(x.reshape(-1, dim)),
                "attention": f9(attn.reshape(-1)), "runs": []}
        for run in RUNS:
            MARGINS.clear()
            kept, feats, windows = official_holitom(
                x, attn, run["ratio"], run["tau"], run["d"], run["beta"], run["k"], run["max_window"]
            )
            worst = {}
            for kind, m in MARGINS:
                worst[kind] = min(worst.get(kind, float("inf")), m)
            assert all(m > 1e-4 for m in worst.values()), f"{name} {run}: a near tie {worst}"
            case["runs"].append(dict(run, kept=kept, merged=f9(np.array(feats)), windows=windows, margins=worst))
            print(name, run, "windows", windows, "kept", len(kept), {k: round(v, 5) for k, v in worst.items()})
        cases.append(case)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "holitom.json")
    with open(path, "w") as f:
        json.dump({"source": "cokeshao/HoliTom holitom/llava_arch.py", "cases": cases}, f)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
