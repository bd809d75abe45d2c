"""CDPruner reference: a transcription of Theia-4869/CDPruner `llava/model/llava_arch.py`,
`LlavaMetaForCausalLM.encode_images` (the part after the vision tower), written from reading it, plus the seeded
input generator that writes `cdpruner.json` next to this file.

Official logic, line by line (B = 1 here):
    image_normalized = image_features / ||image_features||          (no epsilon)
    similarity = image_normalized @ image_normalized^T               (float32)
    image_embeds, text_embeds normalised;  relevance = mean_m(-(image_embeds @ text_embeds^T))
    relevance = (relevance - min + 1e-6) / (max - min)               (epsilon in the numerator)
    kernel = relevance[:, None] * similarity * relevance[None, :]
    di2s = diag(kernel);  for i < T: j = argmax(di2s) (first maximum); e = (kernel[j] - cis[:i, j] @ cis[:i]) / sqrt(di2s[j])
                                     cis[i] = e;  di2s -= e^2;  di2s[j] = -inf
    kept = sort(select_idx)

Readings taken: (1) `image_features` are the projected features the project prunes; in the "relevance" cases the
CLIP `image_embeds`/`text_embeds` are separate random matrices and the raw relevance `mean_m(-cos)` (before the
min-max) is handed to tokensieve as its relevance signal; in the "query" cases `image_embeds` are the pruned
features themselves and `text_embeds` the query rows (tokensieve's `--query` path, `sign = -1`).
(2) The reference runs in float64 here so that the picks do not depend on float32 rounding; every case records the
smallest relative gap between the chosen `di2s` and the runner-up, and the generator refuses a case whose gap is
below 1e-3 (a pick that float32 could flip). (3) `T` stays below the kernel rank (D = 32): past it the official
`sqrt` of a non-positive `di2s` gives NaN.

Run: python make_cdpruner.py   (numpy + torch; writes cdpruner.json)
"""

import json
import os

import numpy as np
import torch


def official_cdpruner(image_features, image_embeds, text_embeds, visual_token_num):
    """Kept indices (sorted) and the smallest relative argmax gap of the greedy loop."""
    x = torch.as_tensor(image_features, dtype=torch.float64)[None]  # (B, N, D)
    B, N, _ = x.shape
    image_normalized = x / x.norm(dim=-1, keepdim=True)
    similarity = torch.matmul(image_normalized, image_normalized.transpose(1, 2))

    e = torch.as_tensor(image_embeds, dtype=torch.float64)[None]
    t = torch.as_tensor(text_embeds, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True)
    t = t / t.norm(dim=-1, keepdim=True)
    relevance = torch.matmul(e, t.t())
    relevance = (-relevance).mean(dim=-1)
    raw = relevance.clone()
    relevance = (relevance - relevance.min() + 1e-6) / (relevance.max() - relevance.min())

    kernel = relevance.unsqueeze(2) * similarity * relevance.unsqueeze(1)

    cis = torch.zeros((visual_token_num, B, N), dtype=torch.float64)
    di2s = torch.diagonal(kernel, dim1=1, dim2=2).clone()
    select_idx = torch.empty((visual_token_num, B), dtype=torch.long)
    gap = float("inf")
    for i in range(visual_token_num):
        j = torch.argmax(di2s, dim=-1)
        top2 = torch.topk(di2s[0], 2).values
        if N - i >= 2:
            gap = min(gap, float((top2[0] - top2[1]) / top2[0]))
        assert float(di2s[0, j]) > 0, "kernel exhausted: T exceeds its rank"
        select_idx[i] = j
        eis = (kernel[torch.arange(B), j] - torch.einsum("tb,tbn->bn", cis[:i, torch.arange(B), j], cis[:i])) / torch.sqrt(
            di2s[torch.arange(B), j]
        ).unsqueeze(-1)
        cis[i, :, :] = eis
        di2s -= torch.square(eis)
        di2s[torch.arange(B), j] = -float("inf")
    select_idx = torch.sort(select_idx.t()).values
    return select_idx[0].tolist(), raw[0].tolist(), gap


def r32(a):
    """Rounds to float32 so that the fixture holds exactly what the Rust side reads."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def f9(a):
    """float32 values as the shortest decimals that read back as the same float32 (9 significant digits)."""
    return [f9(v) for v in a] if np.ndim(a) > 0 else float("%.9g" % a)


def make_case(name, features, query, counts):
    """A query-path case: `image_embeds` are the pruned features, `text_embeds` the query rows."""
    features, query = r32(features), r32(query)
    out = {"name": name, "mode": "query", "features": f9(features), "query": f9(query), "runs": []}
    for k in counts:
        kept, _, gap = official_cdpruner(features, features, query, k)
        assert gap > 1e-3, f"{name} k={k}: near tie ({gap})"
        out["runs"].append({"k": k, "kept": kept, "min_gap": gap})
    return out


def relevance_case(name, features, raw, counts):
    """A relevance-signal case: the raw relevance `mean_m(-cos)` is the input (the float32 the Rust side reads)."""
    features = r32(features)
    raw = r32(raw)
    out = {"name": name, "mode": "relevance", "features": f9(features), "relevance": f9(raw), "runs": []}
    for k in counts:
        kept, _, gap = official_from_raw(features, raw, k)
        assert gap > 1e-3, f"{name} k={k}: near tie ({gap})"
        out["runs"].append({"k": k, "kept": kept, "min_gap": gap})
    return out


def official_from_raw(features, raw, k):
    """The official function from the min-max line on, starting from a given raw relevance `mean_m(-cos)`."""
    # Embeds whose cosine with the single text vector (1, 0) is -raw_i: e_i = (-raw_i, sqrt(1 - raw_i^2)).
    raw = np.asarray(raw, dtype=np.float64)
    assert np.all(np.abs(raw) < 1)
    embeds = np.stack([-raw, np.sqrt(1 - raw**2)], axis=1)
    kept, got_raw, gap = official_cdpruner(features, embeds, np.array([[1.0, 0.0]]), k)
    assert np.allclose(got_raw, raw, atol=1e-12)
    return kept, got_raw, gap


def main():
    rng = np.random.default_rng(20251116)
    n, d, m = 120, 32, 4
    cases = []

    # Random: iid Gaussian features, CLIP-side embeds and text; raw relevance from them.
    feats = rng.standard_normal((n, d))
    embeds = rng.standard_normal((n, 16))
    text = rng.standard_normal((m, 16))
    e = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    raw = (-(e @ t.T)).mean(axis=1)
    cases.append(relevance_case("random-relevance", feats, raw, [1, 10, 24]))

    # Random, query path: image_embeds are the features, text_embeds the query.
    query = rng.standard_normal((m, d))
    cases.append(make_case("random-query", feats, query, [1, 10, 24]))

    # Clustered: 6 centres, tokens = centre + 0.35 noise; relevance follows the cluster (some clusters relevant).
    centres = rng.standard_normal((6, d))
    label = rng.integers(0, 6, size=160)
    feats = centres[label] + 0.35 * rng.standard_normal((160, d))
    raw = 0.3 * np.tanh(rng.standard_normal(6))[label] + 0.05 * rng.standard_normal(160)
    cases.append(relevance_case("clustered-relevance", feats, raw, [1, 6, 20]))
    query = centres[:2] + 0.2 * rng.standard_normal((2, d))
    cases.append(make_case("clustered-query", feats, query, [1, 6, 20]))

    # Hand-built: token 1 duplicates token 0, token 2 is orthogonal and the least relevant. With the epsilon in the
    # numerator token 2 keeps r = 1e-6 / (max - min) > 0, so after token 0 the official loop takes it (its d^2 =
    # 1e-12 against the duplicate's 0); a min-max with the epsilon in the denominator would give it r = 0.
    # (Exact-arithmetic reading: in float32 the duplicate's rounding residue, about 1e-8, could win instead.)
    dup = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    cases.append(relevance_case("duplicate-and-least-relevant", dup, np.array([0.9, 0.8, 0.0]), [2]))

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cdpruner.json")
    with open(path, "w") as f:
        json.dump({"source": "Theia-4869/CDPruner llava/model/llava_arch.py encode_images", "cases": cases}, f)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
