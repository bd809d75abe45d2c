"""Straightforward PyTorch implementations of the greedy selectors, timed on the CPU.

This is the peer a user would otherwise pick: the formulas of ALGORITHMS.md written the way the reference repos
write them (DivPrune, IDPruner/AngelSlim and CDPruner build the full N x N similarity or kernel matrix; ToDRE and
k-center use one matrix-vector product per pick). Called by benches/pruners.rs; prints {method: median ms} as JSON.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F


def todre(x, k, pivot):
    xn = F.normalize(x, dim=-1)
    s = xn @ xn[pivot]
    s[pivot] = float("inf")
    kept = [pivot]
    for _ in range(k - 1):
        c = int(torch.argmin(s))
        kept.append(c)
        s += xn @ xn[c]
        s[c] = float("inf")
    return sorted(kept)


def kcenter(x, k, pivot):
    xn = F.normalize(x, dim=-1)
    m = 1 - xn @ xn[pivot]
    m[pivot] = -float("inf")
    kept = [pivot]
    for _ in range(k - 1):
        c = int(torch.argmax(m))
        kept.append(c)
        m = torch.minimum(m, 1 - xn @ xn[c])
        m[c] = -float("inf")
    return sorted(kept)


def divprune(x, k):
    xn = F.normalize(x, dim=-1)
    dist = 1 - xn @ xn.T
    dist.fill_diagonal_(float("inf"))
    first = int(torch.argmax(dist.min(dim=1).values))
    dist.fill_diagonal_(0)
    kept = [first]
    running = dist[first].clone()
    running[first] = -float("inf")
    for _ in range(k - 1):
        c = int(torch.argmax(running))
        kept.append(c)
        running = torch.minimum(running, dist[c])
        running[kept] = -float("inf")
    return sorted(kept)


def mmr(x, k, importance, lam=0.5):
    imp = (importance - importance.min()) / (importance.max() - importance.min() + 1e-6)
    xn = F.normalize(x, dim=-1)
    sim = xn @ xn.T
    maxsim = torch.full_like(imp, -2.0)
    taken = torch.zeros_like(imp, dtype=torch.bool)
    kept = []
    for _ in range(k):
        score = imp.clone() if not kept else lam * imp - (1 - lam) * maxsim
        score[taken] = -float("inf")
        c = int(torch.argmax(score))
        kept.append(c)
        taken[c] = True
        maxsim = torch.maximum(maxsim, sim[c])
    return sorted(kept)


def cdpruner(x, k, query):
    xn = F.normalize(x, dim=-1)
    rel = -(xn @ F.normalize(query, dim=-1).T).mean(dim=1)
    rel = (rel - rel.min()) / (rel.max() - rel.min() + 1e-6)
    kernel = rel[:, None] * (xn @ xn.T) * rel[None, :]
    n = x.shape[0]
    cis = torch.zeros(k, n)
    d2 = torch.diagonal(kernel).clone()
    kept = []
    for t in range(k):
        j = int(torch.argmax(d2))
        kept.append(j)
        e = (kernel[j] - cis[:t, j] @ cis[:t]) / torch.sqrt(d2[j])
        cis[t] = e
        d2 -= e * e
        d2[j] = -float("inf")
    return sorted(kept)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(a.n, a.d) * 2 - 1
    cls = torch.rand(a.n)
    query = torch.rand(8, a.d) * 2 - 1
    pivot = int(torch.argmax(cls))
    runs = {
        "todre": lambda: todre(x, a.k, pivot),
        "kcenter": lambda: kcenter(x, a.k, pivot),
        "divprune": lambda: divprune(x, a.k),
        "mmr": lambda: mmr(x, a.k, cls),
        "cdpruner": lambda: cdpruner(x, a.k, query),
    }
    out = {}
    with torch.inference_mode():
        for name, run in runs.items():
            times = []
            for _ in range(a.repeats):
                start = time.perf_counter()
                run()
                times.append((time.perf_counter() - start) * 1e3)
            out[name] = sorted(times)[len(times) // 2]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
