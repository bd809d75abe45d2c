//! CDPruner: conditional DPP — a determinantal point process over query-weighted cosine similarity, solved by fast
//! greedy MAP inference.
//!
//! The kernel `L = diag(r)·S·diag(r)` rewards tokens that are both relevant (`r`) and unlike each other (`S`, the
//! cosine matrix); the greedy MAP picks the token with the largest remaining conditional variance `d²`:
//!
//! ```text
//! r = minmax( mean_t( sign · cos(x_i, q_t) ) )             (sign = −1 as in the reference, CLIP-specific)
//! d²_i = L_ii;  for t < k:  j = argmax d²;  e = (L_j,: − C[:t, j]ᵀ C[:t, :]) / √d²_j;  C[t] = e;  d² −= e²
//! ```
//!
//! A row of `L` is `r_j · r ∘ (X̂ x̂_j)`, so the kernel is never stored: `O(k·N·D + k²·N)` time and `O(k·N)`
//! memory (the reference builds `N x N`). When `d²` is exhausted (duplicates, or a kernel of rank below `k`, as when
//! `N > D`) the rest is filled by relevance, highest first \[project\]. "Exhausted" is `d² <= max(1e-10, 1e-4·max d²₀)`:
//! in f32 a rank-deficient kernel leaves rounding residue of about 1e-7 instead of exact zeros, and an absolute
//! 1e-10 test would keep picking by rounding noise, differently on every backend \[project\]. A `relevance` signal is used as given (min-max scaled); optional
//! `theta` applies the reference's commented-out `exp(θ/(2(1−θ))·r)`.
//! Source: Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in
//! MLLMs", NeurIPS 2025 (arXiv 2506.10967), Theia-4869/CDPruner; greedy MAP from Chen et al. 2018.

use super::query::query_relevance;
use crate::backend::Backend;
use crate::columns::ColumnCache;
use crate::error::{PruneError, Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::primitives::{argmax, min_max, top_k};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;
use rayon::prelude::*;

/// CDPruner's conditional DPP.
#[derive(Debug, Clone, PartialEq)]
pub struct CdPruner {
    /// Sign applied to query cosines (−1 reproduces the reference).
    pub sign: f32,
    /// Relevance sharpening `θ ∈ [0, 1)`; 0 = off.
    pub theta: f32,
}

impl CdPruner {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 2] = [
        ParamSpec { name: "sign", default: "-1", help: "-1 (reference, CLIP-specific) or 1" },
        ParamSpec { name: "theta", default: "0", help: "relevance sharpening exp(θ/(2(1−θ))·r), 0 = off" },
    ];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        let sign = if p.choice("sign", &["1", "+1", "-1"])? == "-1" { -1.0 } else { 1.0 };
        let theta = p.float_in("theta", 0.0, 0.999)? as f32;
        Ok(CdPruner { sign, theta })
    }
}

impl Pruner for CdPruner {
    fn name(&self) -> &'static str {
        "cdpruner"
    }

    fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        let x = backend.normalize_rows(tokens.features())?;
        let raw = match (tokens.relevance(), tokens.query()) {
            (Some(r), _) => r.to_vec(),
            (None, Some(q)) => query_relevance(backend, &x, q, false, self.sign)?,
            (None, None) => return Err(PruneError::MissingSignal { method: self.name(), signal: Signal::Query }),
        };
        let mut r = min_max(&raw);
        if self.theta > 0.0 {
            let alpha = self.theta / (2.0 * (1.0 - self.theta));
            r.iter_mut().for_each(|v| *v = (alpha * *v).exp());
        }
        let n = tokens.len();
        let self_sim = backend.rowwise_dots(&x, &x)?;
        let mut d2: Vec<f32> = (0..n).map(|i| r[i] * r[i] * self_sim[i]).collect();
        let exhausted = d2.iter().copied().fold(0f32, f32::max) * 1e-4;
        let exhausted = exhausted.max(1e-10);
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(k);
        let mut kept = Vec::with_capacity(k);
        let mut taken = vec![false; n];
        let mut columns = ColumnCache::new(backend, &x);
        while kept.len() < k {
            let j = argmax(&d2).ok_or(PruneError::Backend("empty variance vector".into()))?;
            if d2[j] <= exhausted {
                break;
            }
            // The next picks are likely among the largest remaining conditional variances.
            let sims = columns.column(j, |m| top_k(&d2, m + 1))?;
            let inv = 1.0 / d2[j].sqrt();
            let coeffs: Vec<f32> = rows.iter().map(|c| c[j]).collect();
            // e = (r_j·r∘sims − Σ_t C[t][j]·C[t]) / √d²_j, accumulated row by row so each C[t] streams once.
            let mut e = vec![0f32; n];
            e.par_chunks_mut(2048).enumerate().for_each(|(chunk, out)| {
                let (start, len) = (chunk * 2048, out.len());
                for (o, i) in out.iter_mut().zip(start..) {
                    *o = r[j] * r[i] * sims[i];
                }
                for (c, row) in coeffs.iter().zip(&rows) {
                    out.iter_mut().zip(&row[start..start + len]).for_each(|(o, v)| *o -= c * v);
                }
                out.iter_mut().for_each(|o| *o *= inv);
            });
            d2.iter_mut().zip(&e).for_each(|(d, v)| *d -= v * v);
            d2[j] = f32::NEG_INFINITY;
            taken[j] = true;
            kept.push(j);
            rows.push(e);
        }
        let mut selection_note = None;
        if kept.len() < k {
            let rest: Vec<f32> = (0..n).map(|i| if taken[i] { f32::NEG_INFINITY } else { r[i] }).collect();
            let fill = top_k(&rest, k - kept.len());
            selection_note =
                Some(format!("kernel rank exhausted after {} picks; {} filled by relevance", kept.len(), fill.len()));
            kept.extend(fill);
        }
        let s = Selection::from_unsorted(kept, k);
        Ok(match selection_note {
            Some(note) => s.with_note(note),
            None => s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{prune, Budget, CpuBackend};
    use ndarray::array;

    #[test]
    fn first_pick_is_most_relevant_then_diverse() {
        // Relevance favours 0 and its near-copy 1; the DPP's second pick is the diverse 2, not the copy.
        // Token 3 has the lowest relevance, so min-max scaling gives it r = 0 and it can never be picked.
        let x = array![[1.0f32, 0.0], [0.995, 0.0998], [0.0, 1.0], [-0.7, -0.7]];
        let t = TokenSet::from_array(x).unwrap().with_relevance(vec![1.0, 0.95, 0.6, 0.0]).unwrap();
        let cd = CdPruner { sign: -1.0, theta: 0.0 };
        assert_eq!(prune(&CpuBackend, &cd, &t, Budget::Keep(1)).unwrap().kept, vec![0]);
        assert_eq!(prune(&CpuBackend, &cd, &t, Budget::Keep(2)).unwrap().kept, vec![0, 2]);
    }

    #[test]
    fn duplicates_exhaust_the_kernel_and_are_filled_by_relevance() {
        let x = array![[1.0f32, 0.0], [1.0, 0.0], [1.0, 0.0]];
        let t = TokenSet::from_array(x).unwrap().with_relevance(vec![0.2, 1.0, 0.5]).unwrap();
        let s = prune(&CpuBackend, &CdPruner { sign: -1.0, theta: 0.0 }, &t, Budget::Keep(2)).unwrap();
        assert_eq!(s.kept, vec![1, 2]);
        assert!(s.notes.iter().any(|n| n.contains("exhausted")));
    }

    #[test]
    fn needs_a_query_or_relevance() {
        let t = TokenSet::from_array(array![[1.0f32, 0.0], [0.0, 1.0]]).unwrap();
        let err = prune(&CpuBackend, &CdPruner { sign: -1.0, theta: 0.0 }, &t, Budget::Keep(1)).unwrap_err();
        assert!(matches!(err, PruneError::MissingSignal { signal: Signal::Query, .. }));
    }
}
