"""Reference transcription of D-CoDe's spatial token compression and the generator of `dcode.json`.

Written by us from reading the authors' code (hukcc/D-CoDe, not copied): `Dcode.py::token_select_and_merge` and
its helper `_merge_similar_tokens`.

The published walk, per frame: the `top_k` tokens by L2 norm in descending norm order; one cosine matrix of those
tokens (computed before any merge); for each position `i` still kept, `similar` = every position whose cosine with
`i` is >= the threshold (earlier ones and already discarded ones included, `i` itself too); when there is more than
one, row `i` is overwritten in place by the mean / element-wise max / activation-weighted mean of the *current* rows
of `similar`, and every position of `similar` but the first (lowest) is discarded, which can discard `i` itself.
The output is the kept rows in walk (activation) order, frame after frame.

Readings taken: `topk` ties are unspecified in torch and `>=` at the threshold is knife-edge; the generator rejects
inputs within 1e-5 of either. The fixture records, for every output row, the original index of the position it
was written at, in the official output order.
"""

import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def dcode(features, top_k, strategy, threshold):
    """`features` [T, N, D] -> (original index of every output row, output rows), in the official order."""
    T, N, D = features.shape
    top_k = min(top_k, N)
    indices, rows = [], []
    for f in range(T):
        frame = features[f]
        activation = frame.norm(dim=-1)
        order = torch.topk(activation, k=top_k).indices
        tokens = frame[order].clone()
        act = activation[order]
        unit = torch.nn.functional.normalize(tokens, p=2, dim=-1)
        similar_mask = unit @ unit.T >= threshold
        alive = torch.ones(top_k, dtype=torch.bool)
        for i in range(top_k):
            if not alive[i]:
                continue
            similar = similar_mask[i].nonzero(as_tuple=True)[0]
            if len(similar) <= 1:
                continue
            if strategy == "mean":
                tokens[i] = tokens[similar].mean(dim=0)
            elif strategy == "max":
                tokens[i] = tokens[similar].max(dim=0).values
            else:  # weighted_mean: weights from the original activations of the similar positions
                weights = act[similar] / act[similar].sum()
                tokens[i] = (weights[:, None] * tokens[similar]).sum(dim=0)
            alive[similar[1:]] = False
        indices += (order[alive] + f * N).tolist()
        rows.append(tokens[alive])
    return indices, torch.cat(rows)


def margin(features, top_k, threshold):
    gap = float("inf")
    for frame in features:
        a = frame.norm(dim=-1).sort(descending=True).values
        gap = min(gap, float(a[: top_k + 1].diff().abs().min()))
        order = torch.topk(frame.norm(dim=-1), k=top_k).indices
        unit = torch.nn.functional.normalize(frame[order], dim=-1)
        gap = min(gap, float((unit @ unit.T - threshold).abs().min()))
    return gap


def q(a):
    """Rounds to 4 decimals and returns the float32 every consumer parses from the text (decimal -> f64 -> f32)."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{v:.4f}") for v in a.ravel()]).reshape(a.shape).astype(np.float32)


def video(rng, frames, n, d, clustered):
    if not clustered:
        return q(rng.uniform(-1, 1, size=(frames, n, d)))
    # Directions spread along an arc (chains: a ~ b and b ~ c but a !~ c) and a few tight clusters, varied norms:
    # the in-place walk and a merge-each-token-once walk part ways on such inputs.
    e = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    phi = rng.uniform(0, np.pi, size=(frames, n, 1))
    phi[:, : n // 3] = rng.choice([0.3, 1.7, 2.6], size=(frames, n // 3, 1))
    arc = np.cos(phi) * e[0] + np.sin(phi) * e[1]
    scale = rng.uniform(0.5, 2.0, size=(frames, n, 1))
    return q(scale * (arc + 0.12 * rng.normal(size=(frames, n, d))))


def main():
    rng = np.random.default_rng(16_1)
    n, D = 24, 8
    cases = []
    for name, frames, clustered, top_k, strategy, threshold in [
        ("random, mean, theta 0.5", 3, False, 12, "mean", 0.5),
        ("clustered, mean, theta 0.8", 4, True, 14, "mean", 0.8),
        ("clustered, max, theta 0.8", 3, True, 14, "max", 0.8),
        ("clustered, weighted_mean, theta 0.7", 3, True, 16, "weighted_mean", 0.7),
    ]:
        for _ in range(200):
            x = torch.tensor(video(rng, frames, n, D, clustered))
            if margin(x, top_k, threshold) > 1e-5:
                break
        else:
            raise SystemExit(f"no tie-free input for {name}")
        indices, rows = dcode(x, top_k, strategy, threshold)
        cases.append({
            "name": name, "frames": frames, "tokens_per_frame": n, "d": D, "top_k": top_k,
            "merge": {"weighted_mean": "weighted"}.get(strategy, strategy), "theta": threshold,
            "features": [[float(f"{v:.4f}") for v in r] for r in x.reshape(-1, D).tolist()],
            "emitted": indices, "merged": rows.tolist(),
        })
    with open(os.path.join(HERE, "dcode.json"), "w") as f:
        json.dump({"cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
