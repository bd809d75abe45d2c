//! PruMerge+: keep the CLS-attention outliers plus a uniform spatial scaffold, and fold similar tokens into them.
//!
//! ```text
//! Q1, Q3 = quartiles of the CLS attention a;  outliers = {i : a_i > Q3 + 1.5·(Q3 − Q1)}   (adaptive count)
//! step = max(1, int(int(N / |outliers|) / 3));  spatial = {0, step, 2·step, … < N − 1}
//! kept = outliers ∪ spatial;  x_i ← x_i + Σ_{j ∈ J_i} a_j·x_j,  J_i = the 32 most key-similar other tokens
//! extra = Σ_{j pruned} a_j·x_j                                                            (one synthetic token)
//! ```
//!
//! Adaptive: the outlier count is an output, and the budget is an upper bound — when the union exceeds `k` the
//! `k` tokens with the highest attention are kept \[project\]. Flat attention (no outlier) keeps the top-1 \[project\].
//! The merge is unnormalised, as in the reference (norms can grow). The extra token is returned in
//! `Selection::extra` (position: the last token's, ALGORITHMS.md §1.5). Complexity: `O(N log N + |kept|·N·Dk)`.
//! Source: Shang et al., "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models",
//! arXiv 2403.15388, 42Shawn/LLaVA-PruMerge `clip_encoder.py`.

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{percentile, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// PruMerge+.
#[derive(Debug, Clone, PartialEq)]
pub struct PruMergePlus {
    /// Neighbours merged into each kept token.
    pub neighbours: usize,
}

impl PruMergePlus {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 1] =
        [ParamSpec { name: "neighbours", default: "32", help: "key-similar tokens merged into each kept token" }];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(PruMergePlus { neighbours: p.get("neighbours")? })
    }
}

impl Pruner for PruMergePlus {
    fn name(&self) -> &'static str {
        "prumerge-plus"
    }

    fn requires(&self) -> &'static [Signal] {
        &[Signal::ClsAttention]
    }

    fn exact_budget(&self) -> bool {
        false
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let n = tokens.len();
        let a = tokens.require_cls_attention(self.name())?;
        let (q1, q3) = (percentile(a, 25.0), percentile(a, 75.0));
        let bound = q3 + 1.5 * (q3 - q1);
        let mut outliers: Vec<usize> = (0..n).filter(|&i| a[i] as f64 > bound).collect();
        if outliers.is_empty() {
            outliers = top_k(a, 1);
        }
        let step = ((n / outliers.len()) / 3).max(1);
        let mut chosen = vec![false; n];
        outliers.iter().for_each(|&i| chosen[i] = true);
        (0..n.saturating_sub(1)).step_by(step).for_each(|i| chosen[i] = true);
        let mut kept: Vec<usize> = (0..n).filter(|&i| chosen[i]).collect();
        let mut notes = vec![format!("adaptive: {} outliers, spatial step {step}", outliers.len())];
        if kept.len() > k {
            let scores: Vec<f32> = kept.iter().map(|&i| a[i]).collect();
            kept = top_k(&scores, k).into_iter().map(|p| kept[p]).collect();
            kept.sort_unstable();
            notes.push(format!("union capped to the budget {k} by attention"));
        }
        let mut is_kept = vec![false; n];
        kept.iter().for_each(|&i| is_kept[i] = true);
        let metric = backend.normalize_rows(tokens.keys().unwrap_or(tokens.features()))?;
        if tokens.keys().is_none() {
            notes.push("no keys: features used as the similarity metric".into());
        }
        let sims = backend.matmul_t(&backend.gather_rows(&metric, &kept)?, &metric)?;
        let groups: Vec<Vec<(usize, f32)>> = kept
            .iter()
            .enumerate()
            .map(|(r, &i)| {
                let mut row = sims[r * n..(r + 1) * n].to_vec();
                row[i] = f32::NEG_INFINITY;
                std::iter::once((i, 1.0))
                    .chain(top_k(&row, self.neighbours.min(n - 1)).into_iter().map(|j| (j, a[j])))
                    .collect()
            })
            .collect();
        let merged = backend.combine_rows(tokens.features(), &groups, false)?;
        let pruned: Vec<(usize, f32)> = (0..n).filter(|&j| !is_kept[j]).map(|j| (j, a[j])).collect();
        let extra = backend.combine_rows(tokens.features(), &[pruned], false)?;
        let mut s = Selection::pruned(kept, k);
        s.sizes = groups.iter().map(Vec::len).collect();
        s.merged = Some(merged);
        s.extra = Some(extra);
        s.notes = notes;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};

    #[test]
    fn outliers_and_scaffold_are_kept_and_the_extra_token_sums_the_rest() {
        let n = 24;
        let x = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| if j == 0 { 1.0 } else { i as f32 });
        let mut a = vec![0.01f32; n];
        a[5] = 0.5; // the one outlier
        let t = TokenSet::from_array(x).unwrap().with_cls_attention(a.clone()).unwrap();
        let s = prune(&CpuBackend, &PruMergePlus { neighbours: 2 }, &t, Budget::Keep(n)).unwrap();
        // Clamp: Keep(N) is the identity. Ask for fewer.
        assert_eq!(s.kept.len(), n);
        let s = prune(&CpuBackend, &PruMergePlus { neighbours: 2 }, &t, Budget::Keep(n - 1)).unwrap();
        // step = (24 / 1) / 3 = 8: scaffold 0, 8, 16 (< 23), plus outlier 5.
        assert_eq!(s.kept, vec![0, 5, 8, 16]);
        let extra = s.extra.unwrap();
        let rest: f32 = (0..n).filter(|i| ![0, 5, 8, 16].contains(i)).map(|_| 0.01f32).sum();
        assert!((extra[[0, 0]] - rest).abs() < 1e-5);
    }
}
