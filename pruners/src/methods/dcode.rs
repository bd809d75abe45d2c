//! D-CoDe spatial compression: per frame, keep the tokens with the largest activation norm, then merge kept tokens
//! that are near-duplicates of each other.
//!
//! ```text
//! a_i = ‖x_i‖₂;  order = top-k(a) per frame (descending);  cos = cosine matrix of the kept tokens (before merging)
//! for i in order, while i is kept:  similar = {j in order : cos(i, j) ≥ θ}  (earlier, discarded and i included)
//!     if |similar| > 1:  x_i ← merge(current x_j, j ∈ similar)  (in place);  discard similar ∖ {its first}
//! ```
//!
//! `mode=reference` (default) is the published walk, hukcc/D-CoDe `Dcode.py::token_select_and_merge` /
//! `_merge_similar_tokens`, with its three strategies (`merge=mean | max | weighted`, the official
//! `weighted_mean`: weights `a_j / Σ a` of the original activations). Because the walk writes in place and compares
//! with earlier tokens, a token can be merged into `i` and `i` then discarded (its merge lost) and a token can count
//! in two outputs (ALGORITHMS.md §3.5); the reference mode reproduces that (tracked as coefficients over the
//! frame's original rows, or as member sets for `max`, where the max of maxes is the max of the union).
//! `mode=fixed` \[project, opt-in\]: cosines of the original features, every kept token lands in exactly one
//! group `{i} ∪ {alive j after i : cos ≥ θ}`, the representative is the group's highest-activation member.
//! Output order \[contract\]: the official code emits each frame's survivors in walk (activation) order; a
//! [`Selection`] is ascending by original index (ALGORITHMS.md §1.4), so the same rows come out in index order.
//! Budget \[project\]: `top_k` per frame (official default 288; `auto` splits `k` evenly over frames); merging only
//! lowers the count, so the output is at most `k`. Ties in activation break by the lowest index (torch leaves them
//! unspecified). Defaults `θ = 0.8`, `merge = mean`, as the official signature. Complexity
//! `O(N·D + F·top_k²·D)` (plus `O(top_k²)` coefficients per frame in reference mode).
//! Source: "D-CoDe: Scaling Image-Pretrained VLMs to Video via Dynamic Compression and Question Decomposition",
//! EMNLP 2025 (arXiv 2510.08818). Proof: `pruners/tests/official_dcode.rs` against the transcription
//! `tests/official/dcode/make_dcode.py`.

use crate::backend::Backend;
use crate::error::Result;
use crate::params::{ParamSpec, Params};
use crate::primitives::{split_proportional, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// D-CoDe spatial compression.
#[derive(Debug, Clone, PartialEq)]
pub struct DCoDe {
    /// Tokens kept per frame before merging; `None` splits the budget evenly.
    pub top_k: Option<usize>,
    /// Merge threshold on cosine similarity (> 1 disables merging).
    pub theta: f32,
    /// `mean`, `max` (element-wise) or `weighted` (by activation).
    pub merge: &'static str,
    /// `reference` (the published walk) or `fixed`.
    pub mode: &'static str,
}

impl DCoDe {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 4] = [
        ParamSpec { name: "top_k", default: "auto", help: "tokens kept per frame before merging (auto = k / frames)" },
        ParamSpec { name: "theta", default: "0.8", help: "cosine threshold for merging" },
        ParamSpec { name: "merge", default: "mean", help: "mean | max | weighted (by activation)" },
        ParamSpec {
            name: "mode",
            default: "reference",
            help: "reference (the published in-place walk) | fixed (each token merged exactly once)",
        },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let top_k = match p.text("top_k")? {
            "auto" => None,
            _ => Some(p.int_at_least("top_k", 1)?),
        };
        Ok(DCoDe {
            top_k,
            theta: p.float_in("theta", -1.0, 2.0)? as f32,
            merge: p.choice("merge", &["mean", "max", "weighted"])?,
            mode: p.choice("mode", &["reference", "fixed"])?,
        })
    }

    /// Groups of `order` positions for one frame, fixed algorithm: (representative position, member positions).
    fn groups_fixed(&self, sims: &[f32], t: usize) -> Vec<(usize, Vec<usize>)> {
        let mut alive = vec![true; t];
        let mut groups = Vec::new();
        for i in 0..t {
            if !alive[i] {
                continue;
            }
            let mut group = vec![i];
            for j in i + 1..t {
                if alive[j] && sims[i * t + j] >= self.theta {
                    alive[j] = false;
                    group.push(j);
                }
            }
            groups.push((i, group));
        }
        groups
    }

    /// The published in-place walk over one frame's `t` kept tokens (walk order, activations `act`): the survivors
    /// with their coefficients over the frame's original rows (for `max`, the member set, coefficients 1).
    fn groups_reference(&self, sims: &[f32], t: usize, act: &[f32]) -> Vec<(usize, Vec<(usize, f32)>)> {
        let mut coef: Vec<Vec<f32>> =
            (0..t).map(|i| (0..t).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
        let mut alive = vec![true; t];
        for i in 0..t {
            if !alive[i] {
                continue;
            }
            let similar: Vec<usize> = (0..t).filter(|&j| sims[i * t + j] >= self.theta).collect();
            // The official code merges only when more than one position is similar (normally `i` and another).
            if similar.len() <= 1 {
                continue;
            }
            let total: f32 = similar.iter().map(|&j| act[j]).sum();
            let mut merged = vec![0f32; t];
            for &j in &similar {
                let weight = match self.merge {
                    "weighted" => act[j] / total,
                    _ => 1.0 / similar.len() as f32,
                };
                for (m, c) in merged.iter_mut().zip(&coef[j]) {
                    *m = if self.merge == "max" {
                        if *c != 0.0 {
                            1.0
                        } else {
                            *m
                        }
                    } else {
                        *m + weight * c
                    };
                }
            }
            coef[i] = merged;
            similar.iter().skip(1).for_each(|&j| alive[j] = false);
        }
        (0..t)
            .filter(|&i| alive[i])
            .map(|i| (i, coef[i].iter().enumerate().filter(|(_, c)| **c != 0.0).map(|(j, c)| (j, *c)).collect()))
            .collect()
    }
}

impl Pruner for DCoDe {
    fn name(&self) -> &'static str {
        "dcode"
    }

    fn exact_budget(&self) -> bool {
        false
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let layout = tokens.layout();
        let per_frame = layout.tokens_per_frame(n);
        let frames = layout.frame_count();
        let shares = match self.top_k {
            Some(t) => vec![t.min(per_frame); frames],
            None => split_proportional(k, &vec![1.0; frames], &vec![per_frame; frames]),
        };
        let norms = backend.row_norms(tokens.features())?;
        let x = backend.normalize_rows(tokens.features())?;
        // (representative, weighted members) over global indices, for every frame.
        let mut out: Vec<(usize, Vec<(usize, f32)>)> = Vec::new();
        let mut max_groups: Vec<Vec<usize>> = Vec::new();
        for (f, &share) in shares.iter().enumerate() {
            let base = f * per_frame;
            let frame_norms = &norms[base..(base + per_frame).min(n)];
            let order: Vec<usize> = top_k(frame_norms, share).into_iter().map(|i| base + i).collect();
            let t = order.len();
            if t == 0 {
                continue;
            }
            let g = backend.gather_rows(&x, &order)?;
            let sims = backend.matmul_t(&g, &g)?;
            if self.mode == "reference" {
                let act: Vec<f32> = order.iter().map(|&i| norms[i]).collect();
                for (rep, members) in self.groups_reference(&sims, t, &act) {
                    max_groups.push(members.iter().map(|&(j, _)| order[j]).collect());
                    out.push((order[rep], members.into_iter().map(|(j, c)| (order[j], c)).collect()));
                }
                continue;
            }
            for (rep, members) in self.groups_fixed(&sims, t) {
                let weighted = members
                    .iter()
                    .map(|&j| (order[j], if self.merge == "weighted" { norms[order[j]] } else { 1.0 }))
                    .collect();
                max_groups.push(members.iter().map(|&j| order[j]).collect());
                out.push((order[rep], weighted));
            }
        }
        let mut perm: Vec<usize> = (0..out.len()).collect();
        perm.sort_by_key(|&p| out[p].0);
        let kept: Vec<usize> = perm.iter().map(|&p| out[p].0).collect();
        let merged = if self.merge == "max" {
            let groups: Vec<Vec<usize>> = perm.iter().map(|&p| max_groups[p].clone()).collect();
            backend.max_rows(tokens.features(), &groups)?
        } else {
            let groups: Vec<Vec<(usize, f32)>> = perm.iter().map(|&p| out[p].1.clone()).collect();
            backend.combine_rows(tokens.features(), &groups, self.mode == "fixed")?
        };
        let mut s = Selection::pruned(kept, k);
        s.sizes = perm.iter().map(|&p| out[p].1.len()).collect();
        s.merged = Some(merged);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    fn dcode(mode: &'static str) -> DCoDe {
        DCoDe { top_k: None, theta: 0.8, merge: "mean", mode }
    }

    #[test]
    fn keeps_high_norm_tokens_and_merges_each_exactly_once() {
        // Norms: 0 -> 3, 1 -> 2.9 (same direction as 0), 2 -> 2 (orthogonal), 3 -> 0.1 (dropped by top-k).
        let x = array![[3.0f32, 0.0], [2.9, 0.1], [0.0, 2.0], [0.1, 0.0]];
        let t = TokenSet::from_array(x).unwrap();
        let s = prune(&CpuBackend, &dcode("fixed"), &t, Budget::Keep(3)).unwrap();
        assert_eq!(s.kept, vec![0, 2]);
        assert_eq!(s.sizes, vec![2, 1]);
        assert_eq!(s.sizes.iter().sum::<usize>(), 3, "each top-k token counted once");
        let m = s.merged.unwrap();
        assert!((m[[0, 0]] - 2.95).abs() < 1e-6 && (m[[0, 1]] - 0.05).abs() < 1e-6);
    }

    #[test]
    fn reference_mode_reproduces_the_double_counting_bug() {
        // Walk order by norm: a(0), b(1), c(2). a~b and b~c but a≁c. Fixed: {a, b}, {c}.
        // Reference: a merges {a, b} and kills b; c is similar to b (dead) and itself: similar = [b, c] -> c gets
        // mean(b_current, c) and, since b comes first, c is killed: only a survives and b is counted twice.
        let deg = |d: f32, r: f32| [r * d.to_radians().cos(), r * d.to_radians().sin()];
        // A fourth, weak token falls outside the top-3 so the budget is a real cut.
        let rows: Vec<f32> = [deg(0.0, 3.0), deg(30.0, 2.0), deg(60.0, 1.0), deg(180.0, 0.1)].concat();
        let x = ndarray::Array2::from_shape_vec((4, 2), rows).unwrap();
        let t = TokenSet::from_array(x).unwrap();
        let mut d = dcode("fixed");
        d.theta = 0.85;
        let fixed = prune(&CpuBackend, &d, &t, Budget::Keep(3)).unwrap();
        assert_eq!(fixed.kept, vec![0, 2]);
        d.mode = "reference";
        let reference = prune(&CpuBackend, &d, &t, Budget::Keep(3)).unwrap();
        assert_eq!(reference.kept, vec![0]);
    }
}
