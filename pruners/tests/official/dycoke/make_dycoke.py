"""Reference transcription of DyCoke's two pruning rules and the generator of `dycoke.json`.

Written by us from reading the authors' code (KD-TAO/DyCoke, not copied):
- `ttm`: `llava/model/llava_arch.py::dycole_ttm` (temporal token merging before the decoder);
- `kv_steps`: `llava/model/language_model/modeling_qwen2.py`, `PrunableDynamicCache.dycoke_pruning` and
  `update_cache`, with the per-step reset of `kv_cache` in `Qwen2Model.forward` (decode-time KV selection), on given
  head-averaged attention rows of the layer before `dycoke_l`.

Readings taken where the official code is ambiguous or cannot run:
- `torch.stack` of an empty list raises in the official code when a stage has no frame pair (2nd stage for
  F <= 4 frames); the transcription runs that stage's loop as written (nothing to do) instead.
- `topk` ties are unspecified in torch; the generator rejects inputs whose cut is within 1e-5 of a tie.
- Token features are ids here: both rules only select rows, so the fixture stores the kept row indices in the order
  the official code emits them.

Run: `python make_dycoke.py` (seeded; rewrites dycoke.json next to this file).
"""

import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def ttm(x, n, dycoke_k):
    """`dycole_ttm` on `x` [F*n, D]: the row indices it emits, in its output order."""
    frames = x.shape[0] // n
    keep = int((1 - dycoke_k) * n)  # the official `merging_ratio = 1 - merging_ratio` then `int(ratio * n)`
    rows = lambda f: torch.arange(f * n, (f + 1) * n)
    emitted = []  # list index = frame index (the official `modified_image_feature`)
    # Stage 1: pairs (i, i + 1) for even i while i + 1 is a frame; an odd last frame is never appended.
    for i in range(0, frames - 1, 2):
        a = torch.nn.functional.normalize(x[rows(i)], p=2, dim=1)
        b = torch.nn.functional.normalize(x[rows(i + 1)], p=2, dim=1)
        sim = torch.nn.functional.cosine_similarity(a, b, dim=1)
        emitted.append(rows(i))
        emitted.append(rows(i + 1)[sim.topk(keep, largest=False).indices])
    # Stage 2: frame i + 2 re-pruned against frame i, for i = 0, 4, ... while i < F - 4 (the last window is skipped).
    for i in range(0, frames - 4, 4):
        sim = torch.nn.functional.cosine_similarity(x[rows(i)], x[rows(i + 2)], dim=1)
        emitted[i] = rows(i)
        emitted[i + 2] = rows(i + 2)[sim.topk(keep, largest=False).indices]
    return torch.cat(emitted).tolist() if emitted else []


def ttm_margin(x, n, dycoke_k):
    """Smallest gap at the keep/drop cut over every compared frame (to reject near-ties)."""
    frames = x.shape[0] // n
    keep = int((1 - dycoke_k) * n)
    rows = lambda f: slice(f * n, (f + 1) * n)
    pairs = [(i, i + 1) for i in range(0, frames - 1, 2)] + [(i, i + 2) for i in range(0, frames - 4, 4)]
    gap = float("inf")
    for r, f in pairs:
        sim = torch.nn.functional.cosine_similarity(x[rows(r)], x[rows(f)], dim=1).sort().values
        if 0 < keep < n:
            gap = min(gap, float(sim[keep] - sim[keep - 1]))
    return gap


def kv_steps(rows, start, length, prune, threshold=0.9):
    """DyCoke's decode-time KV rule over head-averaged attention rows (one per decode step).

    Per step: the image part of the row is compared (cosine) with the previous step's; the first step compares with
    0. Below the threshold `update_cache` selects the top `int(len * (1 - p))`; otherwise `kv_cache` stays `None`
    (it is reset at layer 0 of every step), so the deeper layers attend to the whole cache. Returns, per step, the
    selected image offsets ascending (the official gather list keeps prefix, selection, suffix; the order of the
    selected keys does not change attention) or None.
    """
    previous = None
    out = []
    for row in rows:
        image = row[start:start + length]
        similarity = 0 if previous is None else torch.nn.functional.cosine_similarity(image, previous, dim=0)
        previous = image
        if similarity < threshold:
            top = torch.topk(image, int(length * (1 - prune)), sorted=False)[1]
            out.append(sorted(top.tolist()))
        else:
            out.append(None)
    return out


def q(a):
    """Rounds to 4 decimals and returns the float32 every consumer parses from the text (decimal -> f64 -> f32)."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{v:.4f}") for v in a.ravel()]).reshape(a.shape).astype(np.float32)


def video(rng, frames, n, d, clustered):
    """Random tokens, or clustered ones: a few centres per video, frames drifting slowly with a few jumps."""
    if not clustered:
        return q(rng.uniform(-1, 1, size=(frames * n, d)))
    centres = rng.normal(size=(6, d))
    base = centres[rng.integers(0, 6, size=n)] + 0.3 * rng.normal(size=(n, d))
    out = []
    for f in range(frames):
        if f % 5 == 3:
            base = base.copy()
            moved = rng.random(n) < 0.5
            base[moved] = centres[rng.integers(0, 6, size=moved.sum())] + 0.3 * rng.normal(size=(moved.sum(), d))
        out.append(base + 0.08 * rng.normal(size=(n, d)))
    return q(np.concatenate(out))


def attention_rows(rng, steps, seq, clustered):
    """Head-averaged softmax rows over `seq` keys: independent (random) or drifting with jumps (clustered)."""
    heads = 4
    logits = rng.normal(size=(heads, seq)) * 2.0
    rows = []
    for t in range(steps):
        if not clustered:
            logits = rng.normal(size=(heads, seq)) * 2.0
        elif t % 4 == 3:
            logits = logits + rng.normal(size=(heads, seq)) * 3.0
        else:
            logits = logits + rng.normal(size=(heads, seq)) * 0.05
        p = torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=-1).mean(0)
        rows.append(p.numpy())
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def main():
    rng = np.random.default_rng(16_3)
    n, d = 16, 8  # 4 x 4 tokens per frame
    ttm_cases = []
    for name, frames, clustered in [
        ("random, 12 frames", 12, False),
        ("random, 9 frames (odd: the last frame is dropped)", 9, False),
        ("random, 4 frames (no second stage; the official code raises there)", 4, False),
        ("clustered, 8 frames (the last window's second stage is skipped)", 8, True),
        ("clustered, 11 frames", 11, True),
    ]:
        for _ in range(100):
            x = video(rng, frames, n, d, clustered)
            if ttm_margin(torch.tensor(x), n, 0.7) > 1e-5:
                break
        else:
            raise SystemExit(f"no tie-free input for {name}")
        ttm_cases.append({
            "name": name, "frames": frames, "h": 4, "w": 4, "d": d, "dycoke_k": 0.7,
            "features": [[float(f"{v:.4f}") for v in row] for row in x.astype(np.float64)],
            "emitted": ttm(torch.tensor(x), n, 0.7),
        })
    kv_cases = []
    for name, clustered, prune, start, length, seq in [
        ("random rows", False, 0.8, 5, 40, 60),
        ("drifting rows with jumps", True, 0.8, 5, 40, 60),
        ("drifting rows, p = 0.5", True, 0.5, 3, 30, 41),
    ]:
        for _ in range(100):
            rows = attention_rows(rng, 12, seq, clustered)
            image = rows[:, start:start + length]
            cos = torch.nn.functional.cosine_similarity(image[1:], image[:-1], dim=1)
            ranked = image.sort(dim=1, descending=True).values
            keep = int(length * (1 - prune))
            if (cos - 0.9).abs().min() > 1e-4 and (ranked[:, keep - 1] - ranked[:, keep]).min() > 1e-6:
                break
        else:
            raise SystemExit(f"no tie-free rows for {name}")
        kv_cases.append({
            "name": name, "prune": prune, "start": start, "length": length,
            "rows": rows.tolist(),  # float32 values, written exactly (shortest f64 repr)
            "selected": kv_steps(rows, start, length, prune),
        })
    with open(os.path.join(HERE, "dycoke.json"), "w") as f:
        json.dump({"ttm": ttm_cases, "kv": kv_cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
