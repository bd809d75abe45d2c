"""Reference transcription of FastVID (DySeg + STPrune with DTM) and the generator of `fastvid.json`.

Written by us from reading the authors' code (LunarShen/FastVID, not copied):
`fastvid_llavaonevision/LLaVA-NeXT/llava/model/language_model/modeling_qwen2.py`, the `FastVID` block of
`Qwen2Model.forward` (DySeg, anchor-token distribution, ATS, the parallel density scores, DTM for single-frame
and for multi-frame segments, the final sort by original index).

Inputs of the official block and what stands for them here:
- `frame_global_features` come from a separate pooled embedding of each frame (the vision abstract); the harness
  below gives the transcription the project's stand-in, the mean of the frame's L2-normalised tokens, so both
  sides segment the same video;
- `frame_attn_weights` is the per-token attention (the project's CLS-attention signal), `hidden_states` the tokens;
- `fastvid_retention_ratio` enters only as `frame_retain_num = int(n * ratio)`; the fixture stores that count `R`
  and the Rust test asks for the budget `F * R`.

Readings taken:
- the density gets `torch.rand(...) * 1e-6` of noise to break ties; the transcription leaves it out, and the
  generator rejects inputs whose densities or cut scores lie within 1e-5 of a tie, where the noise could matter;
- `topk`/`argmax` ties are unspecified/first-index in torch; inputs near a tie are rejected the same way.
"""

import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def fastvid(x, attn, global_features, R, c, tau, d, p, beta):
    """The official block on one video: `x` [F, n, D] tokens, `attn` [F, n], `global_features` [F, G].

    Returns (kept original indices ascending, merged rows in that order, the segment sizes).
    """
    F, n, D = x.shape
    all_idx = torch.arange(F * n).view(F, n)
    # DySeg: cut after frame t when cos(g_t, g_t+1) < tau, and at the c - 1 least similar transitions.
    g = global_features / global_features.norm(dim=1, keepdim=True)
    sim = (g[:-1] * g[1:]).sum(dim=1)
    cuts = torch.unique(torch.cat([torch.topk(sim, c - 1, largest=False).indices,
                                   torch.nonzero(sim < tau, as_tuple=False).squeeze(1)])).sort().values
    bounds = torch.cat([torch.tensor([-1]), cuts, torch.tensor([F - 1])])
    sizes = bounds.diff().tolist()

    salient_num = R - int(R * d)
    context_num = R - salient_num
    # Anchor distribution: in a segment of L frames, every p-th frame counted from its end gets
    # (context_num * L) // ceil(L / p) anchors; the other frames none.
    per_frame = torch.zeros(F, dtype=torch.int64)
    offset = 0
    for L in sizes:
        share = (context_num * L) // ((L + p - 1) // p)
        from_end = torch.arange(L - 1, -1, -1)
        per_frame[offset:offset + L][from_end % p == 0] = share
        offset += L

    kept, rows = [], []
    # ATS: the salient tokens of every frame, by attention.
    salient = torch.topk(attn, salient_num, dim=1).indices
    for f in range(F):
        kept += all_idx[f, salient[f]].tolist()
        rows += [x[f, salient[f]]]
    # Per frame, over its non-salient tokens (ascending order): DPC-kNN density scores.
    mask = torch.ones(F, n, dtype=torch.bool)
    mask.scatter_(1, salient, False)
    rest = torch.arange(n).unsqueeze(0).expand(F, -1)[mask].view(F, n - salient_num)
    tokens = torch.stack([x[f, rest[f]] for f in range(F)])  # [F, m, D]
    rest_idx = torch.stack([all_idx[f, rest[f]] for f in range(F)])
    dist = torch.cdist(tokens, tokens) / D ** 0.5
    nearest = torch.topk(dist, k=4, dim=-1, largest=False).values
    density = (-(nearest ** 2).mean(dim=-1)).exp()
    denser = (density[:, None, :] > density[:, :, None]).float()  # [f, i, j]: j is denser than i
    dmax = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = (dist * denser + dmax * (1 - denser)).min(dim=-1).values
    score = delta * density

    def merge(anchor_tokens, members):
        """Each member joins its most similar anchor (cosine, first on ties); the anchor becomes
        w * anchor + (1 - w) * mean(members), w = max(1 / (count + 1), beta), members including the anchor itself."""
        a = anchor_tokens / anchor_tokens.norm(dim=-1, keepdim=True)
        u = members / members.norm(dim=-1, keepdim=True)
        assign = torch.zeros(members.shape[0], anchor_tokens.shape[0])
        assign.scatter_(1, (u @ a.T).argmax(dim=1, keepdim=True), 1)
        count = assign.sum(dim=0).unsqueeze(-1)
        w = (1 / (count + 1)).clamp(min=beta)
        mean = assign.T @ members / count.clamp(min=1)
        return w * anchor_tokens + (1 - w) * mean

    # DTM for single-frame anchors: frames whose anchor count equals context_num merge within the frame.
    for f in range(F):
        if per_frame[f] == context_num:
            pick = torch.topk(score[f], context_num).indices
            kept += rest_idx[f, pick].tolist()
            rows += [merge(tokens[f, pick], tokens[f])]
    # DTM for multi-frame segments: every anchor frame (count > context_num) takes its top anchors and merges, into
    # them, every non-salient token of the whole segment (anchor frames separately: a token joins one anchor of
    # each anchor frame).
    start = 0
    for L in sizes:
        if L > 1:
            share = int(per_frame[start + L - 1])
            segment = tokens[start:start + L].reshape(-1, D)
            for f in range(start, start + L):
                if per_frame[f] > context_num:
                    pick = torch.topk(score[f], share).indices
                    kept += rest_idx[f, pick].tolist()
                    rows += [merge(tokens[f, pick], segment)]
        start += L
    kept = torch.tensor(kept)
    rows = torch.cat(rows)
    order = torch.argsort(kept)
    return kept[order].tolist(), rows[order], sizes, (density, score, salient_num, context_num, per_frame)


def margins(x, attn, R, d, out):
    """Smallest gaps that decide the result: attention at the salient cut, densities, scores at every anchor cut."""
    density, score, salient_num, context_num, per_frame = out
    gap = float("inf")
    ranked = attn.sort(dim=1, descending=True).values
    gap = min(gap, float((ranked[:, salient_num - 1] - ranked[:, salient_num]).min()))
    for f in range(density.shape[0]):
        s = density[f].sort().values
        gap = min(gap, float(s.diff().min()))
        k = int(per_frame[f])
        if 0 < k < score.shape[1]:
            s = score[f].sort(descending=True).values
            gap = min(gap, float(s[k - 1] - s[k]))
    return gap


def q(a):
    """Rounds to 4 decimals and returns the float32 every consumer parses from the text (decimal -> f64 -> f32)."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{v:.4f}") for v in a.ravel()]).reshape(a.shape).astype(np.float32)


def dec(v):
    """The 4-decimal text of a value made by `q` (parses back to the same float32)."""
    return float(f"{v:.4f}")


def video(rng, frames, n, d, clustered):
    if not clustered:
        return q(rng.uniform(-1, 1, size=(frames, n, d)))
    centres = rng.normal(size=(5, d))
    base = centres[rng.integers(0, 5, size=n)] + 0.4 * rng.normal(size=(n, d))
    out = []
    for f in range(frames):
        if f in (4, 7):  # scene changes: DySeg cuts there
            base = centres[rng.integers(0, 5, size=n)] + 0.4 * rng.normal(size=(n, d))
        out.append(base + 0.1 * rng.normal(size=(n, d)))
    return q(np.stack(out))


def main():
    rng = np.random.default_rng(16_2)
    h = w = 4
    n, D = h * w, 8
    cases = []
    for name, frames, clustered, R, c, tau, d, p, beta in [
        ("random, 6 frames, c = 2", 6, False, 8, 2, 0.9, 0.4, 4, 0.6),
        ("clustered, 10 frames, scene cuts, c = 2", 10, True, 6, 2, 0.9, 0.4, 4, 0.6),
        ("clustered, 10 frames, p = 2, d = 0.5", 10, True, 6, 3, 0.95, 0.5, 2, 0.6),
        ("random, 9 frames, tau = -1 (top-c cuts only), c = 3, beta = 0.2", 9, False, 7, 3, -1.0, 0.4, 3, 0.2),
    ]:
        for _ in range(200):
            x = torch.tensor(video(rng, frames, n, D, clustered))
            attn = torch.tensor(q(rng.uniform(0, 1, size=(frames, n))))
            g = torch.nn.functional.normalize(x, dim=-1).mean(dim=1)  # the project's stand-in global feature
            kept, rows, sizes, out = fastvid(x, attn, g, R, c, tau, d, p, beta)
            if margins(x, attn, R, d, out) > 1e-5:
                break
        else:
            raise SystemExit(f"no tie-free input for {name}")
        cases.append({
            "name": name, "frames": frames, "h": h, "w": w, "d": D, "retain_per_frame": R,
            "params": f"fastvid:tau={tau},segments={c},d={d},p={p},beta={beta}",
            "features": [[dec(v) for v in r] for r in x.reshape(-1, D).tolist()],
            "attention": [dec(v) for v in attn.reshape(-1).tolist()],
            "segments": sizes, "kept": kept, "merged": rows.tolist(),
        })
    with open(os.path.join(HERE, "fastvid.json"), "w") as f:
        json.dump({"cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
