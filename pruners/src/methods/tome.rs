//! ToMe: bipartite soft matching — merge the most similar token pairs, half the tokens at most per round.
//!
//! ```text
//! A = tokens at even positions, B = odd positions;  scores = m̂_A m̂_Bᵀ   (m = keys averaged over heads)
//! each a ∈ A: best partner b(a) and edge e(a);  merge the r A-tokens with the largest e into their partners:
//! x_b ← (s_b x_b + Σ s_a x_a) / (s_b + Σ s_a),  s_b ← s_b + Σ s_a
//! ```
//!
//! In a ViT this runs once per block with a fixed `r`; here, outside the encoder, rounds repeat with
//! `r = min(current − k, |A|)` until `k` tokens remain, and the metric of a merged token is the mean of its members'
//! keys (ToMe recomputes keys per block; averaging is the closest stand-in without a forward pass). Because every
//! merge is a size-weighted mean, each output token is the plain mean of the original tokens it absorbed, which is
//! how it is computed. Each output keeps the index of its surviving B token; output is ascending (the reference
//! emits unmerged A then B). Without keys the features are the metric. Complexity `O(N²·Dk/4)` per round,
//! `O(log(N/k))` rounds. Source: Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023 (arXiv 2210.09461),
//! facebookresearch/ToMe `tome/merge.py::bipartite_soft_matching`.

use crate::backend::Backend;
use crate::error::Result;
use crate::params::Params;
use crate::primitives::{argmax, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// ToMe bipartite soft matching, repeated to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToMe;

impl ToMe {
    /// Builds from parameters (there are none).
    pub fn from_params(_: &Params) -> Result<Self> {
        Ok(ToMe)
    }
}

/// One round of bipartite soft matching over `metric` rows (already normalised): returns, for each of the `r`
/// merged A positions, `(a, b)` positions to merge. Exposed for encoders that merge inside their blocks.
pub fn bipartite_matches(scores: &[f32], a_len: usize, b_len: usize, r: usize) -> Vec<(usize, usize)> {
    let mut best = Vec::with_capacity(a_len);
    let mut edge = Vec::with_capacity(a_len);
    for a in 0..a_len {
        let row = &scores[a * b_len..(a + 1) * b_len];
        let b = argmax(row).unwrap_or(0);
        best.push(b);
        edge.push(row[b]);
    }
    top_k(&edge, r).into_iter().map(|a| (a, best[a])).collect()
}

impl Pruner for ToMe {
    fn name(&self) -> &'static str {
        "tome"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let metric = tokens.keys().unwrap_or(tokens.features());
        // Each current token: its representative (original index) and the original tokens it stands for.
        let mut current: Vec<(usize, Vec<usize>)> = (0..tokens.len()).map(|i| (i, vec![i])).collect();
        while current.len() > k {
            let groups: Vec<Vec<(usize, f32)>> =
                current.iter().map(|(_, m)| m.iter().map(|&i| (i, 1.0)).collect()).collect();
            let m = backend.normalize_rows(&backend.combine_rows(metric, &groups, true)?)?;
            let a_pos: Vec<usize> = (0..current.len()).step_by(2).collect();
            let b_pos: Vec<usize> = (1..current.len()).step_by(2).collect();
            let r = (current.len() - k).min(a_pos.len());
            let scores = backend.matmul_t(&backend.gather_rows(&m, &a_pos)?, &backend.gather_rows(&m, &b_pos)?)?;
            let matches = bipartite_matches(&scores, a_pos.len(), b_pos.len(), r);
            let mut absorbed = vec![false; current.len()];
            for &(a, b) in &matches {
                let moved = std::mem::take(&mut current[a_pos[a]].1);
                current[b_pos[b]].1.extend(moved);
                absorbed[a_pos[a]] = true;
            }
            current = current.into_iter().zip(absorbed).filter(|(_, gone)| !gone).map(|(c, _)| c).collect();
        }
        let groups = current.into_iter().map(|(rep, m)| (rep, m.into_iter().map(|i| (i, 1.0)).collect())).collect();
        Selection::merged(backend, tokens.features(), groups, true, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    #[test]
    fn merges_the_most_similar_pair_into_the_b_token() {
        // Positions: A = {0, 2}, B = {1, 3}. Token 2 is a copy of 3 -> merged into 3; 0 stays.
        let x = array![[1.0f32, 0.0], [0.0, 1.0], [0.7, 0.7], [0.72, 0.68]];
        let t = TokenSet::from_array(x).unwrap();
        let s = prune(&CpuBackend, &ToMe, &t, Budget::Keep(3)).unwrap();
        assert_eq!(s.kept, vec![0, 1, 3]);
        assert_eq!(s.sizes, vec![1, 1, 2]);
        let m = s.merged.unwrap();
        assert!((m[[2, 0]] - 0.71).abs() < 1e-6 && (m[[2, 1]] - 0.69).abs() < 1e-6);
    }

    #[test]
    fn repeated_rounds_reach_the_budget_and_conserve_tokens() {
        let x = ndarray::Array2::from_shape_fn((37, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f32 + 0.1 * j as f32);
        let t = TokenSet::from_array(x).unwrap();
        let s = prune(&CpuBackend, &ToMe, &t, Budget::Keep(5)).unwrap();
        assert_eq!(s.kept.len(), 5);
        assert_eq!(s.sizes.iter().sum::<usize>(), 37);
    }
}
